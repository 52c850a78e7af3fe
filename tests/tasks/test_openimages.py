"""Open Images detection task: the label rules in the loss, prediction expansion, and the experiment
config through the real training path (fast_dev_run on a small generated copy)."""

from __future__ import annotations

import math
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
    model = faster_rcnn(3, backbone=backbone, pretrained_path=str(weights))
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
        faster_rcnn(3, backbone="no_such_net")


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


# --- the sigmoid classifier (issue 30: parent classes are learned, whatever expand_predictions says) ---


def test_sigmoid_loss_by_hand_parents_positive_unknown_classes_silent():
    """Three classes, class 2 the parent of class 0. One image, one box of class 0, nothing verified.
    Proposal 0 is matched to the box (label 1, 1-based), proposal 1 is background. Known classes: 0
    and its ancestor 2, so each proposal has weight 1 on two classes: with zero logits every term is
    ln 2 and the loss is 4 ln 2 / 2 proposals. The box's proposal is a positive for the parent (the
    gradient -0.5/2 pushes "Animal" up on a dog box), class 1 gets no gradient at all."""
    from tasks.openimages.model import sigmoid_classification_loss

    logits = torch.zeros(2, 4, requires_grad=True)
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0]),
              "group_of": torch.tensor([False]), "known": torch.tensor([], dtype=torch.long)}  # fmt: skip
    proposals = [torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60]])]
    loss = sigmoid_classification_loss(logits, [torch.tensor([1, 0])], proposals, [target], [torch.ones(4)],
                                       [[2], [], []])  # fmt: skip
    assert loss.item() == pytest.approx(2 * math.log(2))
    loss.backward()
    assert logits.grad[0, 1 + 2].item() == pytest.approx(-0.25) and logits.grad[0, 1 + 0].item() == pytest.approx(-0.25)
    assert logits.grad[1, 1 + 2].item() == pytest.approx(0.25)  # background: a negative for the known parent
    assert logits.grad[:, 1 + 1].abs().sum() == 0 and logits.grad[:, 0].abs().sum() == 0


def test_sigmoid_loss_ignores_background_inside_a_group_of_box_for_its_classes():
    """A group-of box of class 0 (parent 2) and a verified class 1: the background proposal inside the
    group box is no negative for 0 and 2, still one for class 1; the one outside is a negative for all."""
    from tasks.openimages.model import sigmoid_classification_loss

    logits = torch.zeros(2, 4, requires_grad=True)
    target = {"boxes": torch.tensor([[0.0, 0, 20, 20]]), "labels": torch.tensor([0]),
              "group_of": torch.tensor([True]), "known": torch.tensor([1])}  # fmt: skip
    proposals = [torch.tensor([[2.0, 2, 12, 12], [50.0, 50, 60, 60]])]
    sigmoid_classification_loss(logits, [torch.tensor([0, 0])], proposals, [target], [torch.ones(4)],
                                [[2], [], []]).backward()  # fmt: skip
    assert logits.grad[0, 1:].tolist() == [0.0, 0.25, 0.0]
    assert logits.grad[1, 1:].tolist() == [0.25, 0.25, 0.25]


def test_sigmoid_heads_score_each_class_alone_and_expansion_copies_merge():
    from tasks.openimages.model import merge_copies, use_sigmoid_scores

    heads = use_sigmoid_scores(faster_rcnn(num_classes=3)).roi_heads
    logits = torch.tensor([[-10.0, 3.0, 3.0, -10.0]])  # background logit unused; two classes on one box
    boxes, scores, labels = heads.postprocess_detections(
        logits, torch.zeros(1, 16), [torch.tensor([[10.0, 10, 50, 50]])], [(120, 160)]
    )
    assert sorted(labels[0].tolist()) == [1, 2]
    assert scores[0].tolist() == pytest.approx([torch.sigmoid(torch.tensor(3.0)).item()] * 2)
    # a dog (0.9) and a cat (0.6) box on one object both expand to Animal (2): one Animal at 0.9 remains
    labels, scores, boxes = expand_to_ancestors(
        torch.tensor([0, 1]),
        torch.tensor([0.9, 0.6]),
        torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 11]]),
        [[2], [2], []],
    )
    labels, scores, _ = merge_copies(labels, scores, boxes, 0.5)
    assert sorted(zip(labels.tolist(), scores.tolist())) == [(0, pytest.approx(0.9)), (1, pytest.approx(0.6)),
                                                             (2, pytest.approx(0.9))]  # fmt: skip


def test_sigmoid_training_gives_every_parameter_a_gradient_and_needs_the_label_rules():
    from tasks.openimages.detection.module import OpenImagesDetectionTask

    torch.manual_seed(0)
    model = faster_rcnn(num_classes=4)
    model.train()
    images, targets = _batch()
    losses = challenge_detection_losses(model, images, targets, "sigmoid", [[3], [3], [], []])
    sum(losses.values()).backward()
    missing = [
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing
    with pytest.raises(ValueError, match="classifier=sigmoid is trained with the label rules"):
        OpenImagesDetectionTask(4, classifier="sigmoid", label_rules=False)


def test_the_detector_config_is_one_nested_dict_every_track_builds_from(cfg_train, tmp_path):
    """``task.detector`` (region_cnn's arguments) reaches the network of each track, is saved complete
    as plain hyper-parameters (predict.py reads the input size from it), a checkpoint loads with
    ``load_from_checkpoint`` alone, and a misspelt key is refused by name."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from core.checkpoint import load_task
    from core.guards import StampTaskClass
    from tasks.openimages.segmentation.module import OpenImagesSegmentationTask

    tasks = {}
    for track in ("detection", "segmentation", "relationship"):
        cfg = cfg_train([f"experiment=openimages_{track}", "task.detector.min_size=96", "task.detector.max_size=128"])
        tasks[track] = task = instantiate(cfg.task, _convert_="all")
        detector = task.model.detector if track == "relationship" else task.model
        assert (detector.transform.min_size, detector.transform.max_size) == ((96,), 128)
        assert task.hparams.detector == {
            "backbone": "tiny_convnet", "min_size": 96, "max_size": 128, "anchor_sizes": [16, 32, 64],
            "pretrained_path": None, "pretrained": False,
        }  # fmt: skip
    path = tmp_path / "segmentation.ckpt"
    trainer = pl.Trainer(logger=False, callbacks=[StampTaskClass()], enable_progress_bar=False)
    trainer.strategy.connect(tasks["segmentation"])
    trainer.save_checkpoint(path)
    loaded = load_task(path, OpenImagesSegmentationTask)
    assert loaded.hparams.detector["min_size"] == 96 and loaded.model.transform.max_size == 128
    assert torch.equal(loaded.model.roi_heads.mask_predictor.mask_fcn_logits.weight,
                       tasks["segmentation"].model.roi_heads.mask_predictor.mask_fcn_logits.weight)  # fmt: skip
    with pytest.raises(ValueError, match=r"task.detector: unknown key\(s\) \['min_sise'\]"):
        OpenImagesSegmentationTask(4, detector={"min_sise": 96})
