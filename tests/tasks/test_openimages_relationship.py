"""Open Images relationship detector: pair formation and pair labels by hand, triplet scores, the
DataModule's relationships aligned to the image, and train -> test through the real experiment
config with the written Kaggle submission re-scored by the scoring CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from core.data import DataFormatError
from core.training import evaluate, train
from datamodules.openimages_vrd import OpenImagesRelationshipDataModule
from datamodules.synthetic.openimages import LEAVES, generate_openimages
from tasks.openimages.relationship.model import (
    RelationshipDetector,
    ordered_pairs,
    pair_targets,
    rank_triplets,
    relationship_entities,
    union_boxes,
)

pytestmark = pytest.mark.usefixtures("one_thread")

A = [10.0, 10.0, 50.0, 50.0]
A_SHIFTED = [11.0, 10.0, 51.0, 50.0]  # IoU with A 39*40 / (2*1600 - 39*40) = 0.951 >= 0.9: the same entity
B = [60.0, 20.0, 100.0, 80.0]
C = [5.0, 60.0, 40.0, 110.0]
D = [20.0, 10.0, 60.0, 50.0]  # A's class, IoU with A 30*40 / (2*1600 - 1200) = 0.6: another entity


def test_ordered_pairs_are_every_subject_object_pair_of_two_boxes():
    assert ordered_pairs(3).tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    assert ordered_pairs(1).shape == (0, 2) and ordered_pairs(0).shape == (0, 2)


def test_entities_and_pair_labels_on_a_hand_made_image():
    """Relationships: A' holds B, A on C, A' at B (two relationships for one pair); the box file has
    A, B, C and D. A and A' (same class, IoU 0.95) are one entity; D (IoU 0.6) is another."""
    boxes, labels, s_idx, o_idx = relationship_entities(
        boxes=torch.tensor([A, B, C, D]),
        labels=torch.tensor([0, 2, 1, 0]),
        subject_boxes=torch.tensor([A_SHIFTED, A, A_SHIFTED]),
        subject_labels=torch.tensor([0, 0, 0]),
        object_boxes=torch.tensor([B, C, B]),
        object_labels=torch.tensor([2, 1, 2]),
    )
    assert boxes.tolist() == [A_SHIFTED, B, C, D] and labels.tolist() == [0, 2, 1, 0]
    assert s_idx.tolist() == [0, 0, 0] and o_idx.tolist() == [1, 2, 1]
    # relationships: 0 at, 1 on, 2 holds, 3 under -> target columns r + 1, column 0 "no relationship"
    pairs, targets = pair_targets(4, s_idx, o_idx, torch.tensor([2, 1, 0]), num_relationships=4)
    assert len(pairs) == 12
    by_pair = {tuple(p): t.tolist() for p, t in zip(pairs.tolist(), targets)}
    assert by_pair[(0, 1)] == [0.0, 0.5, 0.0, 0.5, 0.0]  # A holds B and A at B
    assert by_pair[(0, 2)] == [0.0, 0.0, 1.0, 0.0, 0.0]  # A on C
    for pair in set(by_pair) - {(0, 1), (0, 2)}:  # the reverse directions, D's pairs, B-C: none
        assert by_pair[pair] == [1.0, 0.0, 0.0, 0.0, 0.0], pair


def test_union_box_and_triplet_score_is_the_product_of_the_three():
    assert union_boxes(torch.tensor([A]), torch.tensor([B])).tolist() == [[10.0, 10.0, 100.0, 80.0]]
    pairs = torch.tensor([[0, 1], [1, 0]])
    box_scores = torch.tensor([0.9, 0.5])
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]])  # no relationship, r0, r1
    pair, relationship, scores = rank_triplets(pairs, box_scores, probs, k=3)
    # 0.45 * 0.6 = 0.27 (pair 0, r0), 0.45 * 0.3 = 0.135 (pair 0, r1), 0.45 * 0.2 = 0.09 (pair 1, r0)
    assert pair.tolist() == [0, 0, 1] and relationship.tolist() == [0, 1, 0]
    assert scores.tolist() == pytest.approx([0.27, 0.135, 0.09])


def test_every_parameter_learns_from_the_losses():
    torch.manual_seed(0)
    model = RelationshipDetector(num_classes=4, num_relationships=3, num_attributes=2)
    model.train()
    images = [torch.rand(3, 120, 160) for _ in range(2)]
    empty = torch.zeros(0, 4)
    targets = [
        {"boxes": torch.tensor([A, B]), "labels": torch.tensor([0, 2]), "group_of": torch.tensor([False, False]),
         "known": torch.tensor([0, 2]), "subject_boxes": torch.tensor([A]), "subject_labels": torch.tensor([0]),
         "object_boxes": torch.tensor([B]), "object_labels": torch.tensor([2]), "relationships": torch.tensor([1]),
         "attribute_boxes": torch.tensor([B]), "attribute_labels": torch.tensor([2]), "attributes": torch.tensor([1])},
        {"boxes": torch.tensor([C]), "labels": torch.tensor([1]), "group_of": torch.tensor([False]),
         "known": torch.tensor([1]), "subject_boxes": empty, "subject_labels": torch.zeros(0, dtype=torch.long),
         "object_boxes": empty, "object_labels": torch.zeros(0, dtype=torch.long),
         "relationships": torch.zeros(0, dtype=torch.long)},
    ]  # fmt: skip
    losses = model.losses(images, targets)
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_relationship",
        "loss_attribute",
    }
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    model.eval()
    with torch.no_grad():
        out = model(images, attribute_relationship=2)
    for triplets in out:
        assert len(triplets["scores"]) <= 100
        assert (triplets["scores"][:-1] >= triplets["scores"][1:]).all()  # best first
        attribute = triplets["object_is_attribute"]
        # "is" (2) only with an attribute and the subject's own box; pairs never get it
        assert ((triplets["relationships"] == 2) == attribute).all() and attribute.any()
        assert torch.equal(triplets["subject_boxes"][attribute], triplets["object_boxes"][attribute])
        assert (triplets["object_labels"][attribute] < 2).all()
        detections = triplets["detections"]
        for k in torch.where(attribute)[0].tolist():  # score = detection score * p(attribute) <= detection score
            box = torch.where((detections["boxes"] == triplets["subject_boxes"][k]).all(1))[0][0]
            assert triplets["scores"][k] <= detections["scores"][box]


@pytest.fixture(scope="module")
def vrd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vrd") / "oi"
    return generate_openimages(root, num_train=12, num_val=8, num_test=8, seed=3)


def test_datamodule_sample_carries_the_relationships_aligned_to_the_image(vrd_root):
    from datamodules.openimages_relationships import read_relationships

    dm = OpenImagesRelationshipDataModule(
        str(vrd_root), num_classes=9, num_relationships=4, num_attributes=2, image_size=[160, 120]
    )
    dm.setup()
    assert dm.relationship_names == ["at", "on", "holds", "under"]
    assert dm.entity_names[:5] == [m for m, *_ in LEAVES] and dm.entity_classes[:5] == [0, 1, 2, 3, 4]
    assert dm.entity_classes[5:] == [-1, -1]  # the attributes: no detection class
    relationships, _ = read_relationships(vrd_root / "validation-annotations-vrd.csv")
    val = dm._datasets["val"]
    assert [r["image_id"] for r in val.records] == sorted(relationships)  # the track's images only
    checked = 0
    torch.manual_seed(0)
    for split in ("val", "train"):
        dataset = dm._datasets[split]
        for index in range(len(dataset)):
            item = dataset[index]
            rows = read_relationships(vrd_root / f"{dataset.split}-annotations-vrd.csv")[0][item["image_name"]]
            assert item["relationships"].tolist() == [dm.relationship_names.index(r.relationship) for r in rows]
            boxes = torch.tensor([r.box1 for r in rows]) * torch.tensor([160.0, 120, 160, 120])
            if item["flipped"]:
                boxes = torch.stack([160 - boxes[:, 2], boxes[:, 1], 160 - boxes[:, 0], boxes[:, 3]], 1)
            assert torch.allclose(item["subject_boxes"], boxes, atol=1e-3)
            for box, entity in zip(item["subject_boxes"], item["subject_labels"].tolist()):
                # the same object in the box file (same class and box, flipped alike)...
                cls = dm.entity_classes[entity]
                same = (item["labels"] == cls) & torch.isclose(item["boxes"], box, atol=1e-3).all(1)
                assert same.any()
                # ... and drawn there in its class's colour (checked where no other box covers the centre)
                cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
                others = [b for b in item["boxes"] if not torch.isclose(b, box, atol=1e-3).all()]
                if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in others):
                    continue
                colour = torch.tensor(LEAVES[cls][2], dtype=torch.float32) / 255
                assert (item["image"][:, cy, cx] - colour).abs().max() < 0.2
                checked += 1
    assert checked >= 3
    assert any(dm._datasets["train"][i]["flipped"] for i in range(len(dm._datasets["train"])))


def test_a_relationship_outside_the_label_maps_names_the_file(vrd_root, tmp_path):
    root = tmp_path / "oi"
    shutil.copytree(vrd_root, root)
    path = root / "validation-annotations-vrd.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",rides"  # the first relationship row
    path.write_text("\n".join(lines) + "\n")
    dm = OpenImagesRelationshipDataModule(str(root), num_classes=9, num_relationships=4, num_attributes=2)
    with pytest.raises(DataFormatError, match="validation-annotations-vrd.csv.*'rides'"):
        dm.setup()
    dm = OpenImagesRelationshipDataModule(
        str(root), num_classes=9, num_relationships=4, num_attributes=2, skip_corrupt=True
    )
    dm.setup()
    assert dm.skipped_samples == 1


RUN = [
    "experiment=openimages_relationship",
    "data.generator.num_train=128",
    "data.generator.num_val=16",
    "data.generator.num_test=16",
    "data.batch_size=8",
    "trainer.max_epochs=5",
    "trainer.num_sanity_val_steps=0",
    "task.optimizer.lr=0.004",
]


ATTRIBUTE_OF = {"/m/0sy001": "/m/0sy201", "/m/0sy005": "/m/0sy202"}  # Car is Wooden, Ball is Transparent


def add_attribute_relationships(root):
    """An attribute signal the generator does not write: "Car is Wooden" and "Ball is Transparent"
    for every Car and Ball of the relationship files (the subject's box twice, as published)."""
    for split in ("train", "validation", "test"):
        path = root / f"{split}-annotations-vrd.csv"
        lines = path.read_text().splitlines()
        seen, extra = set(), []
        for line in lines[1:]:
            f = line.split(",")
            for label, box in ((f[1], f[3:7]), (f[2], f[7:11])):
                if label in ATTRIBUTE_OF and (f[0], label, *box) not in seen:
                    seen.add((f[0], label, *box))
                    extra.append(",".join([f[0], label, ATTRIBUTE_OF[label], *box, *box, "is"]))
        path.write_text("\n".join(lines + extra) + "\n")
    names = root / "challenge-2019-relationships-description.csv"
    names.write_text(names.read_text() + "is,is\n")


@pytest.mark.slow
@pytest.mark.parametrize("attributes", [False, True], ids=["generated", "with_is_attributes"])
def test_train_then_test_writes_a_submission_the_cli_rescores_to_the_logged_score(
    cfg_train, cfg_eval, tmp_path, attributes
):
    """A short training run through the experiment config; its Kaggle test submission, scored by
    ``python -m tasks.openimages.evaluate --track relationship`` against the test split's files under
    the challenge's names, gives the logged test score and its three parts, and eval.py on the best
    checkpoint (loaded from the file alone) gives the same test score. With "is" rows added,
    the attribute triplets are predicted, mostly with the right attribute."""
    root = tmp_path / "oi"
    overrides = [*RUN, f"data.root={root}"]
    if attributes:
        generate_openimages(root, num_train=128, num_val=16, num_test=16, image_size=(160, 120), seed=0)
        add_attribute_relationships(root)
        overrides.append("data.num_relationships=5")
    cfg = cfg_train(overrides, run_dir=tmp_path / "run")
    metrics = train(cfg)
    assert {"val/score", "test/score", "test/map_relationship", "test/recall50_relationship"} <= set(metrics)
    assert metrics["test/score"] > 0  # the comparison below is not of two zeros
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for src, dst in [
        ("test-annotations-vrd.csv", "challenge-2019-validation-vrd.csv"),
        ("test-annotations-human-imagelabels-boxable.csv", "challenge-2019-validation-vrd-labels.csv"),
        ("challenge-2019-classes-vrd.csv", "challenge-2019-classes-vrd.csv"),
        ("challenge-2019-attributes-description.csv", "challenge-2019-attributes-description.csv"),
        ("challenge-2019-relationships-description.csv", "challenge-2019-relationships-description.csv"),
    ]:
        shutil.copy(root / src, annotations / dst)
    submission = tmp_path / "run" / "test_submission.csv"
    out = tmp_path / "scored.json"
    subprocess.run(
        [sys.executable, "-m", "tasks.openimages.evaluate", str(submission), "--annotations", str(annotations),
         "--track", "relationship", "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    scored = json.loads(out.read_text())
    for key in ("score", "map_relationship", "recall50_relationship", "map_phrase"):
        assert scored[key] == pytest.approx(float(metrics[f"test/{key}"]), abs=1e-6), key
    pictures = list((tmp_path / "run").rglob("*.png"))
    assert any("relationships" in str(p) for p in pictures)
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_checkpoint"]
    evaluated = evaluate(cfg_eval([*overrides, f"ckpt_path={best}"], run_dir=tmp_path / "eval"))
    assert evaluated["test/score"] == pytest.approx(float(metrics["test/score"]), abs=1e-6)
    if attributes:
        from tasks.openimages.relationship.protocol import read_relationship_submission

        rows = [r for image in read_relationship_submission(submission).values() for r in image]
        right = [score for score, r in rows if r.relationship == "is" and ATTRIBUTE_OF.get(r.label1) == r.label2]
        wrong = [score for score, r in rows if r.relationship == "is" and ATTRIBUTE_OF.get(r.label1) != r.label2]
        print("is AP", scored["per_relationship_AP"]["is"], len(right), len(wrong))
        assert all(r.box1 == r.box2 for _, r in rows if r.relationship == "is")
        assert scored["per_relationship_AP"]["is"] > 0
        assert len(right) >= 4 * len(wrong) and right  # the attribute of the class, not any attribute


def test_experiment_fast_dev_run(cfg_train, tmp_path):
    cfg = cfg_train(
        ["experiment=openimages_relationship", "trainer=debug", "data.batch_size=4",
         f"data.root={tmp_path / 'oi'}", "data.generator.num_train=8", "data.generator.num_val=6",
         "data.generator.num_test=6"],
        run_dir=tmp_path / "run",
    )  # fmt: skip
    metrics = train(cfg)
    assert "test/score" in metrics
    assert (tmp_path / "run" / "test_submission.csv").read_text().startswith("ImageId,PredictionString\n")
