"""Keypoint-aligned crops: the transform, the warp and the point mapping agree, and a rolled face
comes out upright."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.face_alignment import (
    alignment_params,
    continuous_to_index,
    crop_matrix,
    invert_affine,
    transform_points,
    warp_crop_uint8,
    warp_crops,
)
from datamodules.face_topology import face_topology
from datamodules.synthetic.facemesh import render_face, sample_face


def test_warp_puts_a_pixel_where_transform_points_says():
    """Image 40 x 50 with one lit pixel (row 20, col 30: centre (30.5, 20.5)); a 20 px crop of side 20
    centred at (25, 20), rotated by 90 degrees: k R(-90) ((30.5, 20.5) - (25, 20)) + 10 = (10.5, 4.5)."""
    image = torch.zeros(1, 1, 40, 50)
    image[0, 0, 20, 30] = 1.0
    m = crop_matrix(torch.tensor([[25.0, 20.0]]), torch.tensor([20.0]), torch.tensor([math.pi / 2]), 20)
    torch.testing.assert_close(transform_points(torch.tensor([[[30.5, 20.5]]]), m), torch.tensor([[[10.5, 4.5]]]))
    crop = warp_crops(image, m, 20)
    assert (crop[0, 0] > 0.99).nonzero().tolist() == [[4, 10]]
    assert crop.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_inverse_and_z_scaling():
    m = crop_matrix(torch.tensor([12.0, -3.0]), torch.tensor(50.0), torch.tensor(0.7), 100)
    pts = torch.tensor([[1.0, 2.0, 3.0], [40.0, -7.0, -5.0]])
    back = transform_points(transform_points(pts, m), invert_affine(m))
    torch.testing.assert_close(back, pts, atol=1e-4, rtol=1e-5)
    assert transform_points(pts, m)[:, 2].tolist() == pytest.approx([6.0, -10.0], rel=1e-5)  # z * 100 / 50


@pytest.mark.parametrize("roll", [-35.0, 0.0, 28.0])
def test_rolled_face_comes_out_upright_and_centred(roll):
    topo = face_topology(468)
    rng = np.random.default_rng(3)
    face = sample_face(rng, 90, "rendered")
    face.update(pose=np.array([0.0, 0.0, roll]), center=np.array([100.0, 90.0]), expression=np.zeros(4))
    labels = render_face(np.zeros((192, 192, 3)), face, topo)
    centre, side, angle = alignment_params(torch.tensor(labels["box"]), torch.tensor(labels["keypoints"]), 1.5)
    # Roll turns the eye line by -roll in image coordinates (y down).
    assert math.degrees(angle.item()) == pytest.approx(-roll, abs=0.5)
    m = crop_matrix(centre, side, angle, 128)
    kp = transform_points(torch.tensor(labels["keypoints"], dtype=torch.float32), m)
    right_eye, left_eye, nose, mouth = kp[:4]
    assert right_eye[1].item() == pytest.approx(left_eye[1].item(), abs=1e-3)  # eyes level
    assert right_eye[0] < left_eye[0] and nose[1] > right_eye[1] and mouth[1] > nose[1]
    pts = transform_points(torch.tensor(labels["points3d"], dtype=torch.float32), m)
    assert pts[:, :2].min() > 0 and pts[:, :2].max() < 128  # the whole mesh inside the crop
    # upright whatever the roll: the mouth lies straight below the eye line, as far (in image pixels)
    # as on the frontal face. (The crop's side follows the axis-aligned box, so the scale varies.)
    drop = (mouth[1] - right_eye[1]).item() * side.item() / 128
    frontal = dict(face, pose=np.zeros(3))
    ref = render_face(np.zeros((192, 192, 3)), frontal, topo)
    c0, s0, a0 = alignment_params(torch.tensor(ref["box"]), torch.tensor(ref["keypoints"]), 1.5)
    kp0 = transform_points(torch.tensor(ref["keypoints"], dtype=torch.float32), crop_matrix(c0, s0, a0, 128))
    assert drop == pytest.approx((kp0[3, 1] - kp0[0, 1]).item() * s0.item() / 128, rel=0.01)
    assert (mouth[0] - (right_eye[0] + left_eye[0]) / 2).item() == pytest.approx(
        (kp0[3, 0] - (kp0[0, 0] + kp0[1, 0]) / 2).item() * s0.item() / side.item(), abs=0.05
    )


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_opencv_crop_of_the_8bit_image_equals_the_float_warp(padding):
    """The pipeline's crop of a uint8 frame (one OpenCV warp, as MediaPipe's CPU graph) is the training
    warp's crop of the same frame as floats, to OpenCV's 8-bit rounding and 1/32 px sampling grid."""
    yy, xx = np.mgrid[0:90, 0:120]
    image = np.stack([127 + 120 * np.sin(xx / 9.0), 127 + 120 * np.cos(yy / 7.0), (xx + yy) % 256], -1)
    image = image.round().astype(np.uint8)
    m = crop_matrix(torch.tensor([70.0, 40.0]), torch.tensor(80.0), torch.tensor(0.4), 32)  # reaches outside
    want = warp_crops(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, m[None], 32, padding)[0]
    got = warp_crop_uint8(image, continuous_to_index(m).double().numpy(), 32, padding)
    assert got.dtype == np.float32 and got.shape == (3, 32, 32)
    np.testing.assert_allclose(got, want.numpy(), atol=3 / 255)
    # the lit pixel of the first test lands on the same crop pixel
    lit = np.zeros((40, 50, 3), np.uint8)
    lit[20, 30] = 255
    m = crop_matrix(torch.tensor([25.0, 20.0]), torch.tensor(20.0), torch.tensor(math.pi / 2), 20)
    crop = warp_crop_uint8(lit, continuous_to_index(m).double().numpy(), 20, padding)
    assert np.argwhere(crop[0] > 0.99).tolist() == [[4, 10]]
