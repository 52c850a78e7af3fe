"""Open Images instance segmentation: Mask R-CNN's mask loss under the challenge's label rules, the
segmentation DataModule's samples, and the experiment config through the real training path, whose
Kaggle submission the scoring CLI re-scores to the logged test mAP."""

from __future__ import annotations

import functools
import shutil

import pytest
import torch

from core.training import train
from datamodules.openimages import OpenImagesSegmentationDataModule, attach_masks
from datamodules.openimages_files import ImageBoxes
from datamodules.openimages_masks import InstanceMask
from datamodules.synthetic.openimages import generate_openimages
from tasks.openimages.evaluate import score_segmentation
from tasks.openimages.model import challenge_detection_losses, mask_rcnn
from tasks.openimages.submission import decode_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch():
    """Two images: a segmented instance of class 0 (verified: 0, 2), and a group-of box of class 1 with
    no mask (verified: 1, 2). Class 3 is neither annotated nor verified anywhere."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 160, generator=g) for _ in range(2)]
    first = torch.zeros(1, 120, 160, dtype=torch.bool)
    first[0, 20:60, 15:55] = True
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([0]),
         "group_of": torch.tensor([False]), "known": torch.tensor([0, 2]),
         "masks": first, "has_mask": torch.tensor([True])},
        {"boxes": torch.tensor([[50.0, 20.0, 150.0, 100.0]]), "labels": torch.tensor([1]),
         "group_of": torch.tensor([True]), "known": torch.tensor([1, 2]),
         "masks": torch.zeros(1, 120, 160, dtype=torch.bool), "has_mask": torch.tensor([False])},
    ]  # fmt: skip
    return images, targets


def _losses(model, images, targets):
    torch.manual_seed(1)  # the same proposal sampling for every call
    return challenge_detection_losses(model, images, targets)


def test_mask_rcnn_losses_with_the_label_rules_and_a_gradient_for_every_parameter():
    torch.manual_seed(0)
    model = mask_rcnn(num_classes=4)
    model.train()
    images, targets = _batch()
    losses = _losses(model, images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    sum(losses.values()).backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing
    # class 3 is neither annotated nor verified: no softmax holds its logit, so its row gets no gradient
    cls = model.roi_heads.box_predictor.cls_score
    assert cls.weight.grad[3 + 1].abs().sum() == 0 and cls.weight.grad[2 + 1].abs().sum() > 0
    # the mask loss is on the ground-truth class's channel only: class 1's (group-of, no mask) and
    # class 3's mask channels get no gradient, class 0's does
    mask_out = model.roi_heads.mask_predictor.mask_fcn_logits
    assert mask_out.weight.grad[1 + 1].abs().sum() == 0 and mask_out.weight.grad[3 + 1].abs().sum() == 0
    assert mask_out.weight.grad[0 + 1].abs().sum() > 0


def test_group_of_boxes_are_left_out_of_the_mask_loss():
    torch.manual_seed(0)
    model = mask_rcnn(num_classes=4)
    model.train()
    images, targets = _batch()
    reference = _losses(model, images, targets)["loss_mask"]
    # whatever mask a group-of box were given, it is no target...
    targets[1]["masks"] = torch.ones(1, 120, 160, dtype=torch.bool)
    assert _losses(model, images, targets)["loss_mask"] == reference
    # ... and by default (no has_mask) a group-of box has none, a plain box has one
    for t in targets:
        del t["has_mask"]
    assert _losses(model, images, targets)["loss_mask"] == reference
    # with its mask counted, the loss changes: the check above is not vacuous
    targets[1]["has_mask"] = torch.tensor([True])
    assert _losses(model, images, targets)["loss_mask"] != reference
    # an image whose only instance is group-of: a mask loss of 0 that still backpropagates
    only_group = _losses(model, images[1:], [{**targets[1], "has_mask": torch.tensor([False])}])
    assert only_group["loss_mask"] == 0 and only_group["loss_mask"].requires_grad


def test_datamodule_sample_has_masks_aligned_with_boxes(tmp_path):
    gen = functools.partial(generate_openimages, num_train=6, num_val=4, num_test=2)
    dm = OpenImagesSegmentationDataModule(str(tmp_path / "oi"), num_classes=9, batch_size=4, generator=gen)
    dm.prepare_data()
    dm.setup()
    seen_group = seen_mask = 0
    for item in next(iter(dm.val_dataloader())):
        h, w = item["image"].shape[-2:]
        assert item["masks"].shape == (len(item["boxes"]), h, w) and item["masks"].dtype == torch.bool
        assert item["eval_masks"].shape == (len(item["eval_boxes"]), item["original_size"][1], item["original_size"][0])
        assert item["has_mask"].tolist() == [
            not g for g in item["group_of"].tolist()
        ]  # generator: group-of unsegmented
        for box, mask, has, group in zip(item["boxes"], item["masks"], item["has_mask"], item["group_of"]):
            if not has:
                assert not mask.any()
                seen_group += bool(group)
                continue
            seen_mask += 1
            ys, xs = torch.where(mask)
            extent = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            assert (extent - box).abs().max() <= 1.5, (extent, box)  # the mask fills its box (nearest resize)
        # each expanded ground-truth row carries the mask of the box it copies
        source = torch.tensor(dm._datasets["val"].records[item["image_id"]]["eval_source"], dtype=torch.long)
        assert torch.equal(item["eval_masks"], item["masks"][source])  # input size = JPEG size here
    assert seen_mask and seen_group
    # a flipped training sample flips its masks with its boxes
    train = dm._datasets["train"]
    torch.manual_seed(0)
    flips = [train[i] for i in range(len(train))]
    for item in flips:
        for box, mask in zip(item["boxes"], item["masks"]):
            if mask.any():
                xs = torch.where(mask)[1]
                assert abs(xs.min().item() - box[0].item()) <= 1.5 and abs(xs.max().item() + 1 - box[2].item()) <= 1.5
    assert any(item["flipped"] for item in flips) and not all(item["flipped"] for item in flips)


def test_masks_join_boxes_of_equal_class_and_coordinates(tmp_path):
    """The official join: a mask goes to the (non-group-of) box of its class with its coordinates; a
    mask matching no box is an instance of its own; boxes without a mask keep None."""
    boxes = ImageBoxes(
        labels=["/m/a", "/m/a", "/m/b", "/m/a"],
        boxes=[(0.1, 0.1, 0.5, 0.5), (0.2, 0.2, 0.6, 0.6), (0.1, 0.1, 0.5, 0.5), (0.0, 0.0, 1.0, 1.0)],
        group_of=[False, False, False, True],
    )

    def mask(label, box, name):
        return InstanceMask("img", label, name, box, tmp_path / name, 0.9, "")

    masks = [
        mask("/m/a", (0.2, 0.2, 0.6, 0.6), "m1"),  # the second box
        mask("/m/b", (0.1, 0.1, 0.5, 0.5), "m2"),  # the third box (same coordinates as the first, other class)
        mask("/m/a", (0.0, 0.0, 1.0, 1.0), "m3"),  # only a group-of box has these: an instance of its own
    ]
    merged, paths = attach_masks(boxes, masks, tmp_path / "seg.csv", {"/m/a": 0, "/m/b": 1})
    assert [p.name if p else None for p in paths] == [None, "m1", "m2", None, "m3"]
    assert merged.labels == ["/m/a", "/m/a", "/m/b", "/m/a", "/m/a"]
    assert merged.group_of == [False, False, False, True, False] and merged.boxes[4] == (0.0, 0.0, 1.0, 1.0)
    assert len(boxes.labels) == 4  # the caller's boxes are left as they were
    with pytest.raises(Exception, match=r"seg\.csv: class '/m/c' of image img is not in the class list"):
        attach_masks(boxes, [mask("/m/c", (0.1, 0.1, 0.5, 0.5), "m4")], tmp_path / "seg.csv", {"/m/a": 0})


def test_unreadable_mask_png_is_an_error_or_skipped_and_counted(tmp_path):
    gen = functools.partial(generate_openimages, num_train=2, num_val=2, num_test=1)
    root = tmp_path / "oi"
    dm = OpenImagesSegmentationDataModule(str(root), num_classes=9, generator=gen)
    dm.prepare_data()
    dm.setup()
    record = dm._datasets["val"].records[0]
    path = next(p for p in record["mask_paths"] if p is not None)
    path.write_bytes(b"not a png")
    with pytest.raises(Exception, match="not a readable mask PNG"):
        dm._datasets["val"][0]
    lenient = OpenImagesSegmentationDataModule(str(root), num_classes=9, skip_corrupt=True)
    lenient.setup()
    with pytest.warns(UserWarning, match="skipping image"):
        assert lenient._datasets["val"][0] is None
    assert lenient.skipped_samples == 1


def _challenge_folder(root, out):
    """The test split's files under the challenge's segmentation names (the CLI's --annotations)."""
    out.mkdir()
    for src, dst in [
        ("test-annotations-bbox.csv", "challenge-2019-validation-segmentation-bbox.csv"),
        ("test-annotations-human-imagelabels-boxable.csv", "challenge-2019-validation-segmentation-labels.csv"),
        ("test-annotations-object-segmentation.csv", "challenge-2019-validation-segmentation-masks.csv"),
        ("bbox_labels_600_hierarchy.json", "challenge-2019-label300-segmentable-hierarchy.json"),
        ("challenge-2019-classes-description-segmentable.csv", "challenge-2019-classes-description-segmentable.csv"),
    ]:
        shutil.copy(root / src, out / dst)
    shutil.copytree(root / "test-masks", out / "challenge-2019-validation-masks")
    return out


def test_experiment_trains_and_its_submission_rescores_to_the_logged_test_map(cfg_train, tmp_path):
    """Two epochs of the experiment config on a small generated set whose JPEGs (200 x 150) are larger
    than the network's input (160 x 120); the test split's Kaggle segmentation submission decodes to
    masks at the JPEGs' size and, scored by the CLI against the test files under the challenge's
    names, gives the logged test/map."""
    root = tmp_path / "oi"
    overrides = [
        "experiment=openimages_segmentation",
        "data.generator.num_train=24",
        "data.generator.num_val=6",
        "data.generator.num_test=6",
        "data.generator.image_size=[200,150]",
        "data.batch_size=6",
        "trainer.max_epochs=2",
        "logger=csv",
        f"data.root={root}",
    ]
    metrics = train(cfg_train(overrides, run_dir=tmp_path / "run"))
    assert "val/map" in metrics and torch.isfinite(torch.tensor(metrics["train/loss_mask"]))
    submission = next((tmp_path / "run").rglob("test_submission.csv"))
    lines = submission.read_text().splitlines()
    assert lines[0] == "ImageID,ImageWidth,ImageHeight,PredictionString" and len(lines) == 1 + 6
    decoded = []
    for line in lines[1:]:  # label conf mask groups, each mask at the image's own size
        _, width, height, groups = line.split(",")
        fields = groups.split()
        decoded += [decode_mask(text, int(height), int(width)) for text in fields[2::3]]
    assert decoded and all(m.shape == (150, 200) for m in decoded) and any(m.any() for m in decoded)
    scored = score_segmentation(submission, _challenge_folder(root, tmp_path / "annotations"))
    assert scored["mAP"] == pytest.approx(float(metrics["test/map"]), abs=1e-6)
    assert scored["mAP"] > 0  # two epochs already match some masks: not a comparison of two zeros
    assert scored["masks_without_box"] == 0
    pictures = list((tmp_path / "run").rglob("media/test/segmentations/*.png"))
    assert pictures
