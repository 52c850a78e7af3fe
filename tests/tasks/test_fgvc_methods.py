"""FGVC6 graders, EM prior re-estimation, EMD domain similarity and the long-tail samplers, each on
cases worked by hand from its definition."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.resolvers import PROJECT_ROOT
from datamodules.fgvc.sampling import class_sampler, sampling_weights
from tasks.fgvc import protocol
from tasks.fgvc.metrics import CategorizationAccuracy, MacroF1, SampleF2, TopKError
from tasks.fgvc.prior import adjust_posteriors, em_prior
from tasks.fgvc.transfer import Domain, choose_subset, domain_similarity, emd, ground_distance, rank_source_classes

# Three images, four classes. Ranked labels: A 1,2,0,3 (true 2); B 0,2,1,3 (true 0); C 3,0,1,2 (true 2).
SCORES = torch.tensor([[0.10, 0.60, 0.25, 0.05], [0.70, 0.10, 0.15, 0.05], [0.30, 0.20, 0.10, 0.40]])
TARGETS = torch.tensor([2, 0, 2])


def test_top_k_error_by_hand():
    # top-1: A wrong, B right, C wrong -> 2/3; top-3: A hit (2 is second), B hit, C miss (2 is last) -> 1/3
    for k, expected in ((1, 2 / 3), (3, 1 / 3)):
        metric = TopKError(k)
        metric.update(SCORES, TARGETS)
        assert float(metric.compute()) == pytest.approx(expected)
        ranked = np.argsort(-SCORES.numpy(), 1)
        assert protocol.top_k_error(ranked, TARGETS.numpy(), k) == pytest.approx(expected)


def test_accuracy_by_hand():
    metric = CategorizationAccuracy()
    metric.update(SCORES[:2], TARGETS[:2])
    metric.update(SCORES[2:], TARGETS[2:])
    assert float(metric.compute()) == pytest.approx(1 / 3)


def test_macro_f1_by_hand_over_labels_that_occur():
    # predicted 1, 0, 3 against 2, 0, 2: label 0 F1 = 1; labels 1 (fp), 2 (2 fn), 3 (fp) F1 = 0 -> 1/4.
    # Labels 4 and 5 occur nowhere and are left out of the mean (scikit-learn's macro average).
    metric = MacroF1(num_classes=6)
    metric.update(torch.nn.functional.pad(SCORES, (0, 2), value=-1.0), TARGETS)
    assert float(metric.compute()) == pytest.approx(0.25)
    assert protocol.macro_f1(np.array([1, 0, 3]), np.array([2, 0, 2])) == pytest.approx(0.25)
    # A half-right label: predicted 0, 0 against 0, 1: label 0 P = 1/2, R = 1 -> F1 = 2/3; label 1 -> 0.
    assert protocol.macro_f1(np.array([0, 0]), np.array([0, 1])) == pytest.approx((2 / 3 + 0) / 2)


# iMet: truth {0,2}, {1}, {2}; probabilities per attribute 0, 1, 2.
F2_PROBS = torch.tensor([[0.9, 0.6, 0.2], [0.1, 0.8, 0.3], [0.4, 0.3, 0.2]])
F2_TRUTH = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_sample_f2_by_hand_at_a_fixed_threshold():
    # t = 0.5: {0,1} vs {0,2}: tp 1 fp 1 fn 1 -> 5/(5+4+1) = 0.5; {1} vs {1} -> 1; nothing above 0.5 on
    # the third image -> its top label {0} vs {2} -> 0. Mean 0.5.
    metric = SampleF2(threshold=0.5, thresholds=[0.25, 0.5, 0.7])
    metric.update(F2_PROBS, F2_TRUTH)
    assert float(metric.compute()) == pytest.approx(0.5)
    predicted = protocol.threshold_predictions(F2_PROBS.numpy(), 0.5)
    assert protocol.sample_f2(predicted, F2_TRUTH.numpy() > 0) == pytest.approx(0.5)


def test_sample_f2_tunes_the_threshold_on_the_grid():
    # t = 0.25: 0.5, {1,2} vs {1}: 5/(5+0+1), {0,1} vs {2}: 0 -> (0.5 + 5/6)/3 = 0.4444
    # t = 0.7 : {0} vs {0,2}: 5/(5+4) = 0.5556, 1, {0} vs {2}: 0 -> 0.5185 (the best); t = 0.5: 0.5
    metric = SampleF2(thresholds=[0.25, 0.5, 0.7])
    metric.update(F2_PROBS, F2_TRUTH)
    assert float(metric.compute()) == pytest.approx((5 / 9 + 1) / 3)
    assert metric.selected_threshold == 0.7
    best = protocol.best_threshold(F2_PROBS.numpy(), F2_TRUTH.numpy() > 0, [0.25, 0.5, 0.7])
    assert best == (0.7, pytest.approx((5 / 9 + 1) / 3))


def test_metrics_refuse_an_empty_set():
    for metric in (TopKError(1), CategorizationAccuracy(), SampleF2(), MacroF1(3)):
        with pytest.raises(ValueError):
            metric.compute()


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, submission, solution, expected",
    [
        # top-1 on the first label only: 7 right, 8 wrong (its second label would be right)
        ("inaturalist2019", "id,predicted\n1,7 3\n2,4 8\n", "id,predicted\n1,7\n2,8\n", 0.5),
        # top-3: 9 is third for id b, absent for id c
        (
            "ifood2019",
            "img_name,label\na.jpg,1 2 3\nb.jpg,5 6 9\nc.jpg,1 2 3\n",
            "img_name,label\na.jpg,3\nb.jpg,9\nc.jpg,4\n",
            1 / 3,
        ),
        # F2 per sample: {1,2} vs {1,3}: 5/(5+4+1) = 0.5; {4} vs {4}: 1 -> 0.75
        ("imet2019", "id,attribute_ids\nx,1 2\ny,4\n", "id,attribute_ids\nx,1 3\ny,4\n", 0.75),
        ("iwildcam2019", "Id,Predicted\na,1\nb,0\nc,3\n", "Id,Category\na,2\nb,0\nc,2\n", 0.25),
        ("icassava2019", "Id,Category\nt-0.jpg,cbb\nt-1.jpg,cmd\n", "Id,Category\nt-0.jpg,cbb\nt-1.jpg,cgm\n", 0.5),
    ],
)
def test_scoring_command_by_hand(tmp_path, name, submission, solution, expected):
    sub, sol = _write(tmp_path / "sub.csv", submission), _write(tmp_path / "sol.csv", solution)
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.fgvc.evaluate", name, str(sub), str(sol), "--json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    value = json.loads(proc.stdout)[protocol.competition(name).metric_name]
    assert value == pytest.approx(expected)


def test_scoring_command_imports_neither_torch_nor_pandas():
    heavy = "('torch', 'pandas', 'lightning')"
    code = f"import sys, tasks.fgvc.evaluate; print(sorted(m for m in {heavy} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_scorer_rejects_a_wrong_header_and_missing_ids(tmp_path):
    comp = protocol.competition("iwildcam2019")
    sol = _write(tmp_path / "sol.csv", "Id,Category\na,1\nb,2\n")
    with pytest.raises(ValueError, match=r"sub.csv:1: submission header must be 'Id,Predicted' or 'Id,Category'"):
        protocol.score_files(comp, _write(tmp_path / "sub.csv", "id,predicted\na,1\n"), sol)
    with pytest.raises(ValueError, match="1 ids of the solution are missing"):
        protocol.score_files(comp, _write(tmp_path / "sub.csv", "Id,Category\na,1\n"), sol)
    with pytest.raises(ValueError, match=r"sub.csv:3: id 'a' appears twice"):
        protocol.score_files(comp, _write(tmp_path / "sub.csv", "Id,Category\na,1\na,2\n"), sol)


def test_submission_headers_are_each_competitions():
    headers = {name: protocol.submission_text(c, [], []).strip() for name, c in protocol.COMPETITIONS.items()}
    assert headers == {
        "inaturalist2019": "id,predicted",
        "herbarium2019": "Id,Category",
        "ifood2019": "img_name,label",
        "imaterialist_product2019": "id,predicted",
        "imet2019": "id,attribute_ids",
        "iwildcam2019": "Id,Predicted",
        "icassava2019": "Id,Category",
    }
    text = protocol.submission_text(protocol.COMPETITIONS["imet2019"], ["x"], [["3", "17"]])
    assert text == "id,attribute_ids\nx,3 17\n"


# Submission rows quoted from each competition's published example (docs/fgvc.md names the sources).
PUBLISHED_SUBMISSIONS = {
    # visipedia/herbarium_comp 2019/README_2019.md, "Submission File Format"
    "herbarium2019": ("Id,Category\n00000.jpg,0 1 2\n00001.jpg,10 11 12\n00002.jpg,20 21 22\n", "00001.jpg", "10"),
    # Kaggle inaturalist-2019-fgvc6, "Submission File"
    "inaturalist2019": ("id,predicted\n268243,71 108 339 341 560\n268244,333 729 838 418 785\n", "268244", "333"),
    # Kaggle iwildcam-2019-fgvc6, "Submission Format"
    "iwildcam2019": (
        "Id,Predicted\n58857ccf-23d2-11e8-a6a3-ec086b02610b,1\n591e4006-23d2-11e8-a6a3-ec086b02610b,5\n",
        "591e4006-23d2-11e8-a6a3-ec086b02610b",
        "5",
    ),
    # the same two rows as pandas writes a sample submission with its index (",Id,Category")
    "iwildcam2019_indexed": (
        ",Id,Category\n0,58857ccf-23d2-11e8-a6a3-ec086b02610b,1\n1,591e4006-23d2-11e8-a6a3-ec086b02610b,5\n",
        "591e4006-23d2-11e8-a6a3-ec086b02610b",
        "5",
    ),
    # karansikka1/iFood_2019 README.md, "Submission File Format"
    "ifood2019": ("image_name,label1 label2 label3\ntest_0001.jpg,0 1 10\ntest_0002.jpg,1 3 5\n", "test_0002.jpg", "1"),
    # msight-tech/imaterialist-product-2019 README.md, "Evaluation"
    "imaterialist_product2019": (
        "id,predicted\n20dc3e9e6ca73cfa3ad4d13d1d7526b8.jpg,11 23 58\n"
        "c0ff6e315816bb1b27b48687924d41c9.jpg,123 456 789\n",
        "c0ff6e315816bb1b27b48687924d41c9.jpg",
        "123",
    ),
}


@pytest.mark.parametrize("key", sorted(PUBLISHED_SUBMISSIONS))
def test_grader_reads_the_published_submission_examples(tmp_path, key):
    text, item, first = PUBLISHED_SUBMISSIONS[key]
    comp = protocol.competition(key.removesuffix("_indexed"))
    rows = protocol.read_label_file(_write(tmp_path / "sub.csv", text), comp, "submission")
    assert rows[item][0] == first and len(rows) == text.count("\n") - 1


def test_grader_finds_columns_by_name_in_either_order(tmp_path):
    comp = protocol.competition("icassava2019")
    sub = _write(tmp_path / "sub.csv", "Category,Id\ncbb,test-img-0.jpg\ncmd,test-img-1.jpg\n")
    sol = _write(tmp_path / "sol.csv", "Id,Category\ntest-img-0.jpg,cbb\ntest-img-1.jpg,cgm\n")
    assert protocol.score_files(comp, sub, sol) == pytest.approx(0.5)


# --- EM prior estimation ----------------------------------------------------------------------------


def test_em_on_confident_posteriors_gives_the_class_frequencies():
    # Certain posteriors: every E-step returns them unchanged, so the prior is their mean: 3/4, 1/4.
    posteriors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    estimate = em_prior(posteriors, np.array([0.5, 0.5]))
    assert estimate.converged and estimate.prior == pytest.approx([0.75, 0.25])


def test_adjusting_posteriors_is_bayes_rule():
    # p_t(w|x) = (0.5, 0.5) under p_t = (0.5, 0.5); new priors (0.8, 0.2) -> (0.8, 0.2)
    assert adjust_posteriors(np.array([[0.5, 0.5]]), [0.5, 0.5], [0.8, 0.2])[0] == pytest.approx([0.8, 0.2])
    # p_t(w|x) = (0.25, 0.75) under (0.5, 0.5), new (0.75, 0.25): 0.25*1.5 : 0.75*0.5 = 1 : 1
    assert adjust_posteriors(np.array([[0.25, 0.75]]), [0.5, 0.5], [0.75, 0.25])[0] == pytest.approx([0.5, 0.5])


def test_em_recovers_a_known_prior_from_synthetic_posteriors():
    """Three 1-D Gaussian classes (means 0, 1.5, 3; sd 1); a Bayes-optimal classifier trained under
    priors (0.2, 0.3, 0.5); a test set drawn under (0.6, 0.3, 0.1). EM finds the test prior from the
    exact posteriors to within sampling error, and the adjusted posteriors classify better."""
    rng = np.random.default_rng(0)
    means, train_prior, test_prior = np.array([0.0, 1.5, 3.0]), np.array([0.2, 0.3, 0.5]), np.array([0.6, 0.3, 0.1])
    labels = rng.choice(3, size=20000, p=test_prior)
    x = rng.normal(means[labels], 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - means[None, :]) ** 2)
    posteriors = likelihood * train_prior
    posteriors /= posteriors.sum(1, keepdims=True)
    estimate = em_prior(posteriors, train_prior)
    assert estimate.converged
    assert estimate.prior == pytest.approx(test_prior, abs=0.02)
    before = (posteriors.argmax(1) == labels).mean()
    after = (estimate.posteriors.argmax(1) == labels).mean()
    assert after > before + 0.05


# --- EMD and domain similarity ----------------------------------------------------------------------


def test_emd_by_hand():
    # Half the mass at 0 and half at 2 against all of it at 1: each half moves 1 -> 1.
    assert emd([0.5, 0.5], [1.0], ground_distance([[0.0], [2.0]], [[1.0]])) == pytest.approx(1.0)
    # (1/4, 3/4) against (3/4, 1/4) on points 0 and 1: 1/2 of the mass moves 1 -> 0.5; counts are normalized.
    cost = ground_distance([[0.0], [1.0]], [[0.0], [1.0]])
    assert emd([0.25, 0.75], [0.75, 0.25], cost) == pytest.approx(0.5)
    assert emd([1, 3], [3, 1], cost) == pytest.approx(0.5)
    # In 2-D: (0,0) to (3,4) is 5.
    assert emd([1.0], [1.0], ground_distance([[0.0, 0.0]], [[3.0, 4.0]])) == pytest.approx(5.0)


def test_domain_similarity_and_source_class_ranking():
    target = Domain(np.array([[4.0], [6.0]]), np.array([10, 10]), ["t0", "t1"])
    source = Domain(np.array([[0.0], [5.0], [10.0]]), np.array([30, 20, 10]), ["far_low", "near", "far_high"])
    ranking = rank_source_classes(source, target)
    # class at 5: EMD 1 (each target half 1 away); classes at 0 and 10: EMD 5 (tie -> lower index first)
    assert [r["class_name"] for r in ranking] == ["near", "far_low", "far_high"]
    assert ranking[0]["emd"] == pytest.approx(1.0) and ranking[0]["similarity"] == pytest.approx(math.exp(-0.01))
    assert ranking[1]["similarity"] == pytest.approx(math.exp(-0.05))
    # whole source: weights (1/2, 1/3, 1/6) against (1/2, 1/2) at 4 and 6: move 1/2 from 0 to 4 (2),
    # 1/3 from 5 (to 6 or 4: 1/3), 1/6 from 10 to 6 (2/3) -> 3.
    assert domain_similarity(source, target) == pytest.approx(math.exp(-0.01 * 3.0))
    assert [r["class_name"] for r in choose_subset(ranking, top_k=2)] == ["near", "far_low"]
    assert [r["class_name"] for r in choose_subset(ranking, max_images=25)] == ["near"]


# --- samplers -----------------------------------------------------------------------------------------


def test_sampler_weights_give_balanced_and_square_root_class_shares():
    labels = [0] * 16 + [1] * 4 + [2] * 1
    for mode, power in (("class_balanced", 0.0), ("sqrt", 0.5), ("instance", 1.0)):
        weights = sampling_weights(labels, mode)
        shares = np.array([weights[np.array(labels) == c].sum() for c in range(3)])
        expected = np.array([16, 4, 1], float) ** power
        assert shares / shares.sum() == pytest.approx(expected / expected.sum())
    sampler = class_sampler(labels, "class_balanced", seed=0, num_samples=30000)
    drawn = np.bincount(np.array(labels)[list(sampler)], minlength=3) / 30000
    assert drawn == pytest.approx([1 / 3] * 3, abs=0.015)
    assert class_sampler(labels, "instance") is None
    with pytest.raises(ValueError, match="sampler='balanced'"):
        sampling_weights(labels, "balanced")


def test_calibration_recovers_a_known_temperature_and_bias():
    """Labels drawn from softmax(z); the network reports 3 z + (1, 0, -1): temperature scaling finds
    T = 3, and the bias-corrected form also removes the class biases (b = -(1, 0, -1)/3 up to a
    shared constant)."""
    from tasks.fgvc.prior import calibrated_posteriors, fit_calibration

    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, (20000, 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = (rng.random((20000, 1)) > p.cumsum(1)).sum(1)
    reported = 3 * z
    temperature, _ = fit_calibration(reported, labels, bias=False)
    assert temperature == pytest.approx(3.0, rel=0.05)
    temperature, biases = fit_calibration(reported + np.array([1.0, 0.0, -1.0]), labels, bias=True)
    assert temperature == pytest.approx(3.0, rel=0.05)
    assert biases - biases.mean() == pytest.approx(-np.array([1.0, 0.0, -1.0]) / 3, abs=0.05)
    recovered = calibrated_posteriors(reported + np.array([1.0, 0.0, -1.0]), temperature, biases)
    assert np.abs(recovered - p).mean() < 0.01


# --- the prior EM starts from: the one the calibrated posteriors carry ----------------------------------


def test_em_fixed_point_of_a_two_class_case_worked_by_hand():
    """Posteriors carrying the prior (0.8, 0.2): 14 samples at (16/17, 1/17) (likelihood ratio
    (16/1) / (0.8/0.2) = 4) and 11 at (1/2, 1/2) (ratio 1/4). With test prior pi the adjusted
    posteriors are (6/7, 1/7) and (3/11, 8/11) at pi = 0.6, whose class-0 mean is
    (14 * 6/7 + 11 * 3/11) / 25 = 15/25 = 0.6: the EM fixed point is (0.6, 0.4)."""
    posteriors = np.array([[16 / 17, 1 / 17]] * 14 + [[0.5, 0.5]] * 11)
    estimate = em_prior(posteriors, np.array([0.8, 0.2]))
    assert estimate.converged and estimate.prior == pytest.approx([0.6, 0.4], abs=1e-6)
    assert estimate.posteriors[0] == pytest.approx([6 / 7, 1 / 7], abs=1e-6)
    assert estimate.posteriors[-1] == pytest.approx([3 / 11, 8 / 11], abs=1e-6)
    # Started from the wrong prior (a class-balanced sampler's (1/2, 1/2)) the same posteriors read as
    # ratios 16 and 1: the fixed point solves 14 * 16 / (15 pi + 1) + 11 * 1 = 25 -> 15 pi + 1 = 16, pi = 1
    # (class 0 only; EM creeps towards that boundary): a different answer from the same data.
    wrong = em_prior(posteriors, np.array([0.5, 0.5]))
    assert wrong.prior[0] > 0.95


def test_rebasing_log_posteriors_is_bayes_rule_by_hand():
    from tasks.fgvc.prior import rebase_log_posteriors

    # (1/2, 1/2) under a balanced sampler's (1/2, 1/2), moved to (0.8, 0.2): (0.8, 0.2)
    rebased = rebase_log_posteriors(np.log([[0.5, 0.5]]), [0.5, 0.5], [0.8, 0.2])
    assert np.exp(rebased[0]) == pytest.approx([0.8, 0.2])
    # (0.2, 0.8) under (0.25, 0.75) -> ratios 0.8 : 1.0667 times (0.5, 0.5) -> (3/7, 4/7)
    rebased = rebase_log_posteriors(np.log([[0.2, 0.8]]), [0.25, 0.75], [0.5, 0.5])
    assert np.exp(rebased[0]) == pytest.approx([3 / 7, 4 / 7])


def test_class_frequencies_keep_absent_classes_above_zero():
    from tasks.fgvc.prior import class_frequencies

    # counts (3, 1, 0) + 1/2 each = (3.5, 1.5, 0.5) over 5.5
    assert class_frequencies(np.array([0, 0, 0, 1]), 3) == pytest.approx([3.5 / 5.5, 1.5 / 5.5, 0.5 / 5.5])


def _gaussian_classes(prior, n, rng, means=np.array([0.0, 1.0, 2.0])):
    labels = rng.choice(len(prior), size=n, p=prior)
    return rng.normal(means[labels], 1.0), labels


@pytest.mark.parametrize("sampler_prior", [(0.7, 0.2, 0.1), (0.45, 0.33, 0.22), (1 / 3, 1 / 3, 1 / 3)])
def test_em_after_calibration_is_harmless_without_shift_and_helps_under_shift(sampler_prior):
    """Three 1-D Gaussian classes (means 0, 1, 2) with natural prior (0.7, 0.2, 0.1); the "network" is
    Bayes-optimal under the prior the sampler trained it with (instance, about square-root,
    class-balanced). Calibration on a natural validation split, then EM: without a test shift the
    error matches calibration alone, under the reversed prior it drops well below it. The old recipe
    (EM from the sampler's prior after calibration) is clearly worse without shift for the balanced
    sampler: its posteriors carry the validation prior, not the sampler's."""
    from tasks.fgvc.prior import fit_prior_calibration

    rng = np.random.default_rng(1)
    natural, means = np.array([0.7, 0.2, 0.1]), np.array([0.0, 1.0, 2.0])
    sampler_prior = np.array(sampler_prior)

    def network(x):  # log p_t(w|x) under the sampler's prior
        z = -0.5 * (x[:, None] - means[None, :]) ** 2 + np.log(sampler_prior)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    x_val, y_val = _gaussian_classes(natural, 3000, rng)
    calibration = fit_prior_calibration(network(x_val), y_val, sampler_prior, "bcts")
    assert calibration.reference_prior == pytest.approx(natural, abs=0.02)  # the validation frequencies
    for test_prior, must_gain in ((natural, False), (natural[::-1].copy(), True)):
        x, y = _gaussian_classes(test_prior, 6000, rng)
        calibrated = calibration.posteriors(network(x))
        no_em = (calibrated.argmax(1) != y).mean()
        with_em = (em_prior(calibrated, calibration.reference_prior).posteriors.argmax(1) != y).mean()
        if must_gain:
            assert with_em < no_em - 0.1
        else:
            assert with_em <= no_em + 0.01
            old = (em_prior(calibrated, sampler_prior).posteriors.argmax(1) != y).mean()
            if sampler_prior[0] < 0.5:  # balanced-ish samplers: the wrong start prior costs accuracy
                assert old > with_em + 0.02


def test_map_em_by_hand():
    """Certain posteriors (3 of class 0, 1 of class 1) leave every E-step unchanged; with a Dirichlet
    prior of 4 pseudo-samples at (1/2, 1/2) the M-step fixed point is ((3 + 2) / 8, (1 + 2) / 8)."""
    posteriors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    estimate = em_prior(posteriors, np.array([0.5, 0.5]), prior_strength=4.0)
    assert estimate.converged and estimate.prior == pytest.approx([5 / 8, 3 / 8])
    # 0 pseudo-samples is the maximum-likelihood EM of the paper: the class frequencies
    assert em_prior(posteriors, np.array([0.5, 0.5])).prior == pytest.approx([0.75, 0.25])


def test_the_task_refuses_a_negative_prior_strength(cfg_train):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    cfg = cfg_train(["task=fgvc", "data=inaturalist2019", "task.backbone=resnet10t", "task.em_prior_strength=-1"])
    with pytest.raises(InstantiationException, match="task.em_prior_strength=-1"):
        instantiate(cfg.task, _convert_="all")
