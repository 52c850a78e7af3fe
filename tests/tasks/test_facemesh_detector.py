"""BlazeFace: 896 anchors at 128 px, box/keypoint coding, weighted NMS on hand-made boxes, and the
letterbox mapping of ``detect_faces`` back to the caller's pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import nms

from tasks.facemesh.anchors import anchors_per_map, decode, encode, generate_anchors
from tasks.facemesh.detector import FaceDetector, detect_faces
from tasks.facemesh.model import BlazeBlock, BlazeFace, DoubleBlazeBlock, blazeface_front
from tasks.facemesh.postprocess import weighted_nms

pytestmark = pytest.mark.usefixtures("one_thread")


def test_896_anchors_at_128_px_on_two_maps():
    anchors = generate_anchors(128)
    assert anchors.shape == (896, 4)
    assert anchors_per_map(128) == [(16, 2), (8, 6)]
    # 16x16 map, first cell: centre (0.5 / 16), SSD scales 0.1484375 and sqrt(0.1484375 * s1),
    # s1 = 0.1484375 + (0.75 - 0.1484375) / 3.
    s1 = 0.1484375 + (0.75 - 0.1484375) / 3
    torch.testing.assert_close(anchors[0], torch.tensor([1 / 32, 1 / 32, 0.1484375, 0.1484375]))
    assert anchors[1, 2].item() == pytest.approx(math.sqrt(0.1484375 * s1), rel=1e-6)
    # last anchor of the 16x16 map, then the 8x8 map's first cell with its 6 sizes
    torch.testing.assert_close(anchors[511, :2], torch.tensor([31 / 32, 31 / 32]))
    torch.testing.assert_close(anchors[512, :2], torch.tensor([1 / 16, 1 / 16]))
    assert anchors[512:518, 2].tolist() == pytest.approx(
        [
            s1,
            math.sqrt(s1 * (s1 + 0.2005208333)),
            s1 + 0.2005208333,
            math.sqrt((s1 + 0.2005208333) * 0.75),
            0.75,
            math.sqrt(0.75),
        ],
        rel=1e-5,
    )


def test_blazeface_has_5_single_and_6_double_blocks_and_one_output_per_anchor():
    model = blazeface_front()
    kinds = [type(b) for b in model.blocks]
    assert kinds.count(BlazeBlock) == 5 and kinds.count(DoubleBlazeBlock) == 6
    logits, reg = model(torch.rand(2, 3, 128, 128))
    assert logits.shape == (2, 896) and reg.shape == (2, 896, 16)


def test_decode_by_hand_and_encode_inverts_it():
    anchor = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    reg = torch.zeros(1, 16)
    reg[0, :4] = torch.tensor([1.0, -2.0, math.log(2.0) / 0.2, 0.0])
    reg[0, 4:6] = torch.tensor([0.5, -0.5])
    boxes, kps = decode(reg, anchor)
    # cx = 0.5 + 1 * 0.1 * 0.2, cy = 0.5 - 2 * 0.1 * 0.2, w = 0.2 * 2, h = 0.2
    torch.testing.assert_close(boxes[0], torch.tensor([0.32, 0.36, 0.72, 0.56]))
    torch.testing.assert_close(kps[0, 0], torch.tensor([0.51, 0.49]))
    torch.testing.assert_close(kps[0, 1], torch.tensor([0.5, 0.5]))
    g = torch.Generator().manual_seed(0)
    anchors = generate_anchors(128)[torch.randint(0, 896, (20,), generator=g)]
    reg = torch.randn(20, 16, generator=g)
    boxes, kps = decode(reg, anchors)
    torch.testing.assert_close(encode(boxes, kps, anchors), reg, atol=1e-4, rtol=1e-4)


def test_weighted_nms_blends_overlapping_boxes_by_score():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [2, 30, 12, 40]])
    scores = torch.tensor([0.9, 0.6, 0.8, 0.7])
    kps = torch.stack([b.view(2, 2).repeat(3, 1) for b in boxes])  # (4, 6, 2)
    out_b, out_k, out_s = weighted_nms(boxes, kps, scores, iou_threshold=0.3)
    # boxes 0 and 1 overlap (IoU 81 / 119 = 0.68): (0.9 * b0 + 0.6 * b1) / 1.5; the rest stay.
    torch.testing.assert_close(out_b, torch.tensor([[0.4, 0.4, 10.4, 10.4], [50, 50, 60, 60], [2, 30, 12, 40]]))
    torch.testing.assert_close(out_s, torch.tensor([0.9, 0.8, 0.7]))
    torch.testing.assert_close(out_k[0, 0], torch.tensor([0.4, 0.4]))
    # plain NMS would have kept box 0 unchanged
    assert nms(boxes, scores, 0.3).tolist() == [0, 2, 3]
    # IoU 0.68 is not above 0.7: nothing blends
    assert len(weighted_nms(boxes, kps, scores, iou_threshold=0.7)[0]) == 4
    empty = weighted_nms(torch.zeros(0, 4), torch.zeros(0, 6, 2), torch.zeros(0))
    assert [t.shape[0] for t in empty] == [0, 0, 0]


def test_detect_faces_maps_letterboxed_detections_back_to_image_pixels():
    """Heads that answer 'every anchor is a face at the anchor' (zero weights): the output depends
    only on the anchors, so a 256 x 256 and a 256 x 128 image both give 2x the 128 px result."""
    model = BlazeFace(128)
    with torch.no_grad():
        for head in [*model.cls_heads, *model.reg_heads]:
            head.weight.zero_()
            head.bias.zero_()
    small = detect_faces(np.zeros((128, 128, 3), np.uint8), model, 0.4, 0.3)[0]
    square = detect_faces(np.zeros((256, 256, 3), np.uint8), model, 0.4, 0.3)[0]
    wide = FaceDetector(model, 0.4, 0.3).detect_faces(np.zeros((1, 128, 256, 3), np.uint8))[0]
    assert len(small[0]) > 0
    for got in (square, wide):
        torch.testing.assert_close(got[0], small[0] * 2)
        torch.testing.assert_close(got[1], small[1] * 2)
        torch.testing.assert_close(got[2], small[2])
