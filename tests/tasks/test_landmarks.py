"""The landmark system end to end on a small generated GLDv2: the experiment recipes through
fast_dev_run; a short run whose submissions, scored by the CLI, equal the logged test metrics
(global and D2R, Public and Private) and which eval.py reproduces from the checkpoint; the test
phase on 2 gloo processes equal to one process; predict.py equal to the task on the same files;
the models, the D2R kernel and the faiss indexes on small hand-checked cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.resolvers import PROJECT_ROOT
from core.training import train
from tasks.landmarks.d2r import (
    ASMKImage,
    ASMKInvertedFile,
    RegionalAggregator,
    RegionalIndex,
    region_members,
    select_local_features,
)
from tasks.landmarks.model import AttentionHead, GlobalDescriptor, landmark_detector
from tasks.landmarks.module import detector_recall
from tasks.landmarks.search import alpha_query_expansion, build_index, search

pytestmark = pytest.mark.usefixtures("one_thread")

# task.pretrained=false: the recipes start from ImageNet weights; the generated copy trains from scratch.
QUICK = ["logger=csv", "callbacks.rich_progress_bar=null", "data.num_workers=0", "task.pretrained=false"]
D2R_SMALL = ["task.d2r.codebook_size=8", "task.detector.score_threshold=0.0"]


@pytest.mark.parametrize(
    "experiment, extra",
    [
        ("landmarks_global", []),
        ("landmarks_d2r", D2R_SMALL),
        ("landmarks_d2r", [*D2R_SMALL, "task.d2r.aggregation=rasmk", "task.search.query_expansion=true"]),
        ("landmarks_d2r", [*D2R_SMALL, "task.d2r.aggregation=rasmk", "task.d2r.retrieval=index"]),
        ("landmarks_d2r", [*D2R_SMALL, "task.d2r.retrieval=index", "task.attention=null"]),
    ],
)
def test_experiments_run_fast_dev_run(experiment, extra, cfg_train, small_data):
    cfg = cfg_train([f"experiment={experiment}", "trainer=debug", *small_data("gldv2"), *QUICK, *extra])
    metrics = train(cfg)
    assert "val/gap" in metrics


@pytest.mark.slow
def test_short_run_submissions_score_as_logged(cfg_train, cfg_eval, small_data, tmp_path):
    run_dir = tmp_path / "run"
    cfg = cfg_train(
        ["experiment=landmarks_d2r", *small_data("gldv2"), *QUICK, *D2R_SMALL, "trainer.max_epochs=2"], run_dir
    )
    train(cfg)
    logged = json.loads((run_dir / "landmarks_results.json").read_text())
    root = cfg.data.root
    for variant, suffix in (("global", ""), ("d2r", "_d2r")):
        for track, name in (("recognition", "gap"), ("retrieval", "map100")):
            out = tmp_path / f"{track}{suffix}.json"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tasks.landmarks.evaluate",
                    str(run_dir / f"submission_{track}{suffix}.csv"),
                    "--solution",
                    f"{root}/{track}_solution_v2.1.csv",
                    "--track",
                    track,
                    "--out",
                    str(out),
                ],
                cwd=PROJECT_ROOT,
                check=True,
                capture_output=True,
            )
            scored = json.loads(out.read_text())
            for usage in ("public", "private"):
                assert scored[usage] == pytest.approx(logged[f"test/{name}_{variant}_{usage}"], abs=1e-9)
    from PIL import Image

    with Image.open(run_dir / "retrieval_examples.png") as picture:  # rows of query + 5 results, 2 caption lines
        assert picture.size == (6 * 102, cfg.task.figure_queries * (96 + 6 + 24))
    # The validation split (held-out training images vs the rest) is scored for both variants (the
    # figures themselves are worked by hand in test_validation_split_figures_by_hand).
    assert {k for k in logged if k.startswith("val_split/")} == {
        f"val_split/{m}_{v}" for m in ("map100", "gap") for v in ("global", "d2r")
    }
    assert 0.0 <= logged["test/detector_recall50"] <= 1.0  # measured on boxes_split2 (held out)
    # eval.py on the saved checkpoint reproduces every test figure.
    from core.training import evaluate

    eval_dir = tmp_path / "eval"
    ckpt = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]  # what train's test used
    overrides = ["experiment=landmarks_d2r", *small_data("gldv2"), "data.num_workers=0", "task.pretrained=false"]
    overrides += D2R_SMALL
    evaluate(cfg_eval([*overrides, f"ckpt_path={ckpt}"], eval_dir))
    again = json.loads((eval_dir / "landmarks_results.json").read_text())
    assert again == pytest.approx(logged, abs=1e-6)


def test_descriptor_and_detector_train_every_parameter():
    model = GlobalDescriptor("test_resnet", dim=16)
    descriptors, local = model(torch.rand(2, 3, 64, 64))
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(2), atol=1e-5) and local.shape[-1] == 4
    (descriptors.sum() + local.mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    detector = landmark_detector("test_resnet", 64).train()
    target = [{"boxes": torch.tensor([[8.0, 10.0, 40.0, 60.0]]), "labels": torch.tensor([1])}]
    losses = detector([torch.rand(3, 64, 64)], target)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def test_regions_and_selective_match_kernel_by_hand():
    # Four features at the cell centres of a 2x2 map: the whole image, then a box over the left column.
    points = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    members = region_members(points, np.array([[0.0, 0.0, 0.5, 1.0]]))
    assert [m.tolist() for m in members] == [[0, 1, 2, 3], [0, 2]]
    codebook = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    agg = RegionalAggregator(codebook, alpha=3.0, tau=0.0, binary=False)
    local = np.array([[0.9, 0.1], [0.8, 0.2]], dtype=np.float32)
    local /= np.linalg.norm(local, axis=1, keepdims=True)
    image = agg.rasmk(local, points[:2], np.zeros((0, 4)))
    # Both features quantise to word 0 ([0.9,0.1] and [0.8,0.2] normalised are nearer (1,0)).
    assert image.words.tolist() == [0]
    assert agg.asmk_similarity(image, image) == pytest.approx(1.0)  # a unit vector with itself, gamma = 1
    assert agg.selective(np.array([-0.5, 0.5])).tolist() == [0.0, 0.125]  # tau = 0 cuts negatives; 0.5^3
    vlad = agg.rvlad(local, points[:2], np.zeros((0, 4)))
    assert vlad.shape == (4,) and np.linalg.norm(vlad) == pytest.approx(1.0)
    # ASMK*: the residual sum (0.9-1 + 0.8-1, 0.1 + 0.2) = (-0.3, 0.3) keeps its signs only: bits 0, 1.
    binary = RegionalAggregator(codebook, binary=True).rasmk(local, points[:2], np.zeros((0, 4)))
    assert np.unpackbits(binary.vectors, axis=1, count=2).tolist() == [[0, 1]]


def _bits(*rows):
    return np.packbits(np.array(rows, dtype=bool), axis=1)


def test_asmk_star_inverted_file_by_hand():
    """ASMK* on 4-bit signatures: u = 1 - 2 h / 4, sigma(u) = u^3 for u > 0, K = gamma(X) gamma(Y) sum_c sigma(u_c)."""
    agg = RegionalAggregator(np.eye(4, dtype=np.float32)[:3], alpha=3.0, tau=0.0, binary=True)  # 3 words, d = 4
    query = ASMKImage(np.array([0, 2]), _bits([1, 1, 1, 1], [0, 0, 0, 0]))
    database = [
        # shares word 0 at Hamming 1 (u = 0.5, sigma 0.125); 2 words: gamma 1/sqrt(2)
        ASMKImage(np.array([0, 1]), _bits([1, 1, 1, 0], [1, 0, 1, 0])),
        # shares word 0 exactly (u = 1) and word 2 at Hamming 4 (u = -1: cut); 2 words
        ASMKImage(np.array([0, 2]), _bits([1, 1, 1, 1], [1, 1, 1, 1])),
        ASMKImage(np.array([1]), _bits([1, 1, 1, 1])),  # no shared word
        # word 2 at Hamming 2: u = 0, not above tau
        ASMKImage(np.array([2]), _bits([1, 1, 0, 0])),
    ]
    gamma_q = 1 / np.sqrt(2)
    expected = [gamma_q * 0.125 / np.sqrt(2), gamma_q * 1.0 / np.sqrt(2), 0.0, 0.0]
    inverted = ASMKInvertedFile(agg, database)
    assert inverted.posting(0)[0].tolist() == [0, 1] and inverted.posting(2)[0].tolist() == [1, 3]
    assert inverted.scores(query) == pytest.approx(expected)
    assert [agg.asmk_similarity(query, x) for x in database] == pytest.approx(expected)
    sims, ids = inverted.search([query], 3)
    assert ids.tolist() == [[1, 0, -1]] and sims[0, :2] == pytest.approx([0.5, 0.0625])
    # Re-ranking a shortlist reads the same kernel.
    index = RegionalIndex(agg, "rasmk", database)
    assert index.similarity([query], np.array([[3, 0, -1]])) == pytest.approx(np.array([[0.0, 0.0625, 0.0]]))


def test_regional_index_whole_and_shortlist_equal_brute_force():
    rng = np.random.default_rng(0)
    codebook = rng.normal(size=(6, 8)).astype(np.float32)
    for binary in (False, True):
        agg = RegionalAggregator(codebook, binary=binary)
        images = []
        for _ in range(30):
            local = rng.normal(size=(12, 8)).astype(np.float32)
            local /= np.linalg.norm(local, axis=1, keepdims=True)
            points = rng.random((12, 2))
            images.append((local, points, np.array([[0.0, 0.0, 0.5, 0.5]])))
        for aggregation in ("rasmk", "rvlad"):
            reps = [agg.represent(aggregation, *im) for im in images]
            queries, database = reps[:5], reps[5:]
            if aggregation == "rasmk":
                brute = np.array([[agg.asmk_similarity(q, x) for x in database] for q in queries])
            else:
                brute = np.stack(queries) @ np.stack(database).T
            index = RegionalIndex(agg, aggregation, database)
            sims, ids = index.search(queries, 4)
            assert sims == pytest.approx(np.sort(brute, axis=1)[:, ::-1][:, :4], abs=1e-5)
            assert np.take_along_axis(brute, ids, 1) == pytest.approx(sims, abs=1e-5)
            shortlist = np.array([[3, 1, -1]] * 5)
            expected = np.where(shortlist >= 0, np.take_along_axis(brute, np.clip(shortlist, 0, None), 1), 0.0)
            assert index.similarity(queries, shortlist) == pytest.approx(expected, abs=1e-5)


def test_local_features_are_the_best_attention_cells():
    local_map = np.arange(8, dtype=np.float32).reshape(2, 2, 2) + 1  # C = 2, h = w = 2
    scores = np.array([[0.1, 0.9], [0.5, 0.2]])
    features, points = select_local_features(local_map, scores, max_features=2)
    # cell (0, 1) then (1, 0): their (x, y) centres and L2-normalised channel vectors
    assert points.tolist() == [[0.75, 0.25], [0.25, 0.75]]
    assert features == pytest.approx(np.array([[2, 6], [3, 7]]) / np.linalg.norm([[2, 6], [3, 7]], axis=1)[:, None])
    assert select_local_features(local_map, scores, threshold=0.3)[1].tolist() == [[0.75, 0.25], [0.25, 0.75]]
    assert len(select_local_features(local_map, scores, threshold=5.0)[0]) == 1  # the best cell stays
    assert len(select_local_features(local_map)[0]) == 4  # no attention: every cell


def test_attention_head_learns_from_the_classification_loss_only():
    """DELF: attention-weighted pooling + a landmark classifier; the backbone's map is detached."""
    head = AttentionHead(channels=6, num_classes=3, hidden=4)
    local = torch.rand(2, 6, 3, 3, requires_grad=True)
    logits, scores = head.logits(local)
    assert logits.shape == (2, 3) and scores.shape == (2, 3, 3) and bool((scores > 0).all())  # softplus
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert local.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_retrieval_picture_writes_ids_scores_and_right_wrong(tmp_path):
    from PIL import Image, ImageDraw

    from tasks.landmarks.visualize import (
        LINE_HEIGHT,
        NOT_RELEVANT,
        QUERY,
        RELEVANT,
        caption_font,
        framed_thumbnail_rows,
    )

    paths = []
    for n, colour in enumerate(["red", "blue", "green"]):
        paths.append(tmp_path / f"{n}.jpg")
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    captions = [["query", "0123456789abcdef"], ["right 0.912", "aaa1"], ["wrong 0.500", "bbb2"]]
    rows = [[(paths[0], QUERY, captions[0]), (paths[1], RELEVANT, captions[1]), (paths[2], NOT_RELEVANT, captions[2])]]
    picture = np.asarray(framed_thumbnail_rows(rows, thumb=96))
    assert picture.shape == (96 + 6 + 2 * LINE_HEIGHT, 3 * 102, 3)
    assert picture[0, 102 + 1].tolist() == list(RELEVANT) and picture[0, 204 + 1].tolist() == list(NOT_RELEVANT)
    for c, (lines, colour) in enumerate(zip(captions, (QUERY, RELEVANT, NOT_RELEVANT))):
        # The caption band under each image is exactly its lines drawn in the frame's colour.
        band = Image.new("RGB", (102, 2 * LINE_HEIGHT), "white")
        draw = ImageDraw.Draw(band)
        for n, text in enumerate(lines):
            draw.text((3, n * LINE_HEIGHT), text, fill=colour, font=caption_font())
        assert np.array_equal(picture[102:, c * 102 : (c + 1) * 102], np.asarray(band))
        assert (np.asarray(band) != 255).any()


def test_validation_split_figures_by_hand():
    """Validation queries (held-out training images) against the other training images: 2-d
    descriptors at known angles, so the ranking, mAP@100 and GAP are worked by hand."""
    from tasks.landmarks.module import LandmarkRetrievalTask

    task = LandmarkRetrievalTask("test_resnet", num_classes=2, image_size=64, search={"knn": 1})
    task.test_results = {}
    angles = np.radians([30, 0, 20, 90, 180])  # gallery: val 0 (label 0), db 1 (0), val 2 (1), db 3 (1), db 4 (0)
    gallery = {"global": np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32), "regional": None}
    gallery["aggregator"] = None
    labels = np.array([0, 0, 1, 1, 0])
    is_val = np.array([True, False, True, False, False])
    task._score_validation_split(gallery, labels, ["aaa0", "aaa1", "aaa2", "aaa3", "aaa4"], is_val, np.array([7, 9]))
    # Query 0 (30 deg): db 1 (cos 30), db 3 (cos 60), db 4 (cos 150); relevant 1 and 4: AP = (1/1 + 2/3) / 2.
    # Query 2 (20 deg): db 1 (cos 20), db 3 (cos 70), db 4; relevant 3 at rank 2: AP = 1/2.
    assert task.test_results["val_split/map100_global"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    # 1-NN: query 2 -> landmark 7 (wrong) at cos 20 = 0.94, query 0 -> 7 (right) at 0.87: GAP = (1/2) / 2.
    assert task.test_results["val_split/gap_global"] == pytest.approx(0.25)


def test_detector_recall_by_hand():
    truth = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]
    # The first box found exactly, the second overlapped by a quarter (IoU 0.25): recall 1/2.
    detected = np.array([[0.0, 0.0, 0.5, 0.5], [0.75, 0.75, 1.0, 1.0]])
    assert detector_recall([(truth, detected)]) == 0.5
    assert detector_recall([(truth, detected), ([[0.1, 0.1, 0.2, 0.2]], np.zeros((0, 4)))]) == pytest.approx(1 / 3)


def test_approximate_index_finds_the_flat_neighbours():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:50] + 0.01 * rng.normal(size=(50, 16)).astype(np.float32)
    _, flat = search(build_index(x, "flat"), q, 1)
    assert flat[:, 0].tolist() == list(range(50))
    for kind in ("hnsw", "ivf"):
        _, approx = search(build_index(x, kind, nlist=16, nprobe=8), q, 1)
        assert (approx[:, 0] == flat[:, 0]).mean() >= 0.9
    _, expanded = alpha_query_expansion(build_index(x, "flat"), q, x, 3)
    assert expanded[:, 0].tolist() == list(range(50))


@pytest.mark.slow
def test_predict_product_equals_the_task_on_the_same_files(cfg_train, small_data, tmp_path):
    import csv

    from core.prediction import predict
    from datamodules.gldv2 import GLDv2DataModule
    from tasks.landmarks.module import LandmarkRetrievalTask
    from tests.conftest import compose_config

    run_dir = tmp_path / "run"
    cfg = cfg_train(
        ["experiment=landmarks_global", *small_data("gldv2"), *QUICK, "trainer.max_epochs=1", "test=false"], run_dir
    )
    train(cfg)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    root = cfg.data.root
    out = tmp_path / "pred"
    overrides = [
        "task=landmarks",
        f"ckpt_path={ckpt}",
        f"input={root}/test",
        f"product.writer.index={root}/index",
        "product.writer.top_k=3",
    ]
    predict(compose_config("predict", overrides, out, tmp_path / "data"))
    with open(out / "recognition.csv", newline="") as f:
        recognition = {Path(r["id"]).stem: r["landmarks"] for r in csv.DictReader(f)}
    with open(out / "retrieval.csv", newline="") as f:
        retrieval = {Path(r["id"]).stem: [Path(i).stem for i in r["images"].split()] for r in csv.DictReader(f)}
    # The same images through the DataModule and the task loaded from the checkpoint.
    dm = GLDv2DataModule(root, num_classes=cfg.data.num_classes, image_size=cfg.data.image_size, num_workers=0)
    dm.setup()
    task = LandmarkRetrievalTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        q = torch.stack([dm.datasets["test"][i]["image"] for i in range(len(dm.ids["test"]))])
        x = torch.stack([dm.datasets["index"][i]["image"] for i in range(len(dm.ids["index"]))])
        qd, xd = task.descriptor(q)[0].numpy(), task.descriptor(x)[0].numpy()
        score, cls = task.arcface.get_cosine(task.descriptor(q)[0]).max(1)
    assert set(recognition) == set(dm.ids["test"])
    for n, query in enumerate(dm.ids["test"]):
        landmark, s = recognition[query].split()
        assert int(landmark) == dm.landmark_ids[int(cls[n])] and float(s) == pytest.approx(float(score[n]), abs=1e-4)
    _, ids = search(build_index(xd, "flat"), qd, 3)
    for n, query in enumerate(dm.ids["test"]):
        assert retrieval[query] == [dm.ids["index"][i] for i in ids[n]]
    assert (out / "retrieval_examples.png").exists()


@pytest.mark.slow
def test_ddp_test_phase_equals_one_process(small_data, shared_data_dir, cfg_eval, tmp_path):
    """train.py on 2 gloo processes (each extracts its shard, descriptors gathered before search):
    every test figure equals eval.py's on one process with the same checkpoint, and the
    submissions hold every test query once."""
    from core.training import evaluate
    from tests.helpers import read_metrics, run_entry

    data = small_data("gldv2")
    logs = tmp_path / "logs"
    args = ["experiment=landmarks_d2r", *data, *QUICK, *D2R_SMALL, "trainer=ddp_cpu", "trainer.max_epochs=1"]
    run_entry("train.py", [*args, f"paths.log_dir={logs}", f"paths.data_dir={shared_data_dir}", "run_id=ddp"])
    (run_dir,) = logs.glob("*/runs/ddp")
    ddp = json.loads((run_dir / "landmarks_results.json").read_text())
    best = read_metrics(run_dir)["best_checkpoint"]
    eval_dir = tmp_path / "eval"
    evaluate(
        cfg_eval(["experiment=landmarks_d2r", *data, "data.num_workers=0", *D2R_SMALL, f"ckpt_path={best}"], eval_dir)
    )
    single = json.loads((eval_dir / "landmarks_results.json").read_text())
    assert single == pytest.approx(ddp, abs=1e-9) and len(single) == 13  # 8 test, 4 val_split, detector
    root = Path(data[-1].split("=", 1)[1])  # small_data pins data.root last
    queries = len((root / "test.csv").read_text().splitlines()) - 1
    assert len((run_dir / "submission_retrieval_d2r.csv").read_text().splitlines()) - 1 == queries
