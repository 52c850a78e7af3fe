"""Open Images detection task: the label rules in the loss, prediction expansion, and the experiment
config through the real training path (fast_dev_run on a small generated copy)."""

from __future__ import annotations

import shutil

import pytest
import torch

from core.training import train
from tasks.openimages.evaluate import score_detection
from tasks.openimages.model import (
    challenge_detection_losses,
    expand_to_ancestors,
    faster_rcnn,
    group_of_background_weights,
)

SMALL = [
    "data.generator.num_train=8",
    "data.generator.num_val=4",
    "data.generator.num_test=4",
    "data.batch_size=4",
    "trainer=debug",
]


def _batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 160, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([0]),
         "group_of": torch.tensor([False]), "known": torch.tensor([0, 2])},
        {"boxes": torch.tensor([[50.0, 20.0, 150.0, 100.0]]), "labels": torch.tensor([1]),
         "group_of": torch.tensor([True]), "known": torch.tensor([1, 2])},
    ]  # fmt: skip
    return images, targets


def test_every_parameter_gets_a_gradient_and_unverified_classes_are_not_negatives():
    torch.manual_seed(0)
    model = faster_rcnn(num_classes=4)
    model.train()
    images, targets = _batch()
    losses = challenge_detection_losses(model, images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing
    # class 3 is neither annotated nor verified in either image: its logit is in no softmax, so its
    # classifier row gets no gradient; class 2 (verified in both) is a negative and gets one
    cls = model.roi_heads.box_predictor.cls_score
    assert cls.weight.grad[3 + 1].abs().sum() == 0 and cls.bias.grad[3 + 1] == 0
    assert cls.weight.grad[2 + 1].abs().sum() > 0


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_b0"])
def test_torchvision_and_timm_backbones_train_and_load_a_users_weights(backbone, tmp_path):
    """A torchvision ResNet and a timm model (features_only + FPN) both train with the challenge
    losses, and a user's weights file of the plain classifier lands in the detector's backbone body."""
    import timm
    import torchvision

    torch.manual_seed(0)
    classifier = torchvision.models.resnet18() if backbone == "resnet18" else timm.create_model(backbone)
    weights = tmp_path / "backbone.pth"
    torch.save(classifier.state_dict(), weights)
    model = faster_rcnn(3, backbone, pretrained_path=str(weights))
    body = model.backbone.body.state_dict()
    shared = [k for k in body if k in classifier.state_dict()]
    assert len(shared) > 10
    assert all(torch.equal(body[k], classifier.state_dict()[k]) for k in shared)
    losses = challenge_detection_losses(model, *_batch())
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_objectness"}
    sum(losses.values()).backward()
    assert model.backbone.fpn.inner_blocks[0][0].weight.grad.abs().sum() > 0


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="'no_such_net'"):
        faster_rcnn(3, "no_such_net")


def test_plain_softmax_would_push_unverified_classes_down():
    """The control of the test above: with every class known, class 3's row does get a gradient."""
    torch.manual_seed(0)
    model = faster_rcnn(num_classes=4)
    model.train()
    images, targets = _batch()
    for t in targets:
        t["known"] = torch.arange(4)
    sum(challenge_detection_losses(model, images, targets).values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad[3 + 1].abs().sum() > 0


def test_background_inside_a_group_of_box_is_ignored():
    proposals = torch.tensor([[0.0, 0, 10, 10], [8.0, 0, 18, 10], [12.0, 0, 22, 10], [0.0, 0, 10, 10]])
    labels = torch.tensor([0, 0, 0, 2])
    # group-of box x 0..15: IoA 1, 0.7 (7/10 inside), 0.3 -> ignored, ignored, kept; a positive stays
    weights = group_of_background_weights(proposals, labels, torch.tensor([[0.0, 0, 15, 10]]))
    assert weights.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert group_of_background_weights(proposals, labels, torch.zeros(0, 4)).tolist() == [1.0] * 4


def test_predictions_expand_to_every_ancestor():
    labels, scores, boxes = expand_to_ancestors(
        torch.tensor([0, 2]),
        torch.tensor([0.9, 0.4], dtype=torch.float64),
        torch.tensor([[0.0, 0, 1, 1], [1.0, 1, 2, 2]]),
        [[3, 4], [3], [], [], []],
    )
    assert labels.tolist() == [0, 2, 3, 4] and scores.tolist() == [0.9, 0.4, 0.9, 0.9]
    assert boxes[2:].tolist() == [[0, 0, 1, 1]] * 2


def test_experiment_fast_dev_run_writes_a_submission_the_cli_scores_alike(cfg_train, tmp_path):
    """fast_dev_run of the experiment config; its Kaggle test submission, scored by the CLI against the
    test annotations under the challenge's file names, gives the logged test/map."""
    root = tmp_path / "oi"
    cfg = cfg_train(["experiment=openimages_detection", *SMALL, f"data.root={root}"], run_dir=tmp_path / "run")
    metrics = train(cfg)
    assert "val/map" in metrics
    submission = next((tmp_path / "run").rglob("test_submission.csv"))
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    for src, dst in [
        ("test-annotations-bbox.csv", "challenge-2019-validation-detection-bbox.csv"),
        ("test-annotations-human-imagelabels-boxable.csv", "challenge-2019-validation-detection-human-imagelabels.csv"),
        ("bbox_labels_600_hierarchy.json", "challenge-2019-label500-hierarchy.json"),
        ("challenge-2019-classes-description-500.csv", "challenge-2019-classes-description-500.csv"),
    ]:
        shutil.copy(root / src, annotations / dst)
    scored = score_detection(submission, annotations)
    assert scored["mAP"] == pytest.approx(float(metrics["test/map"]), abs=1e-5)
