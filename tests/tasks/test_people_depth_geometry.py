"""Parallax depth (datamodules/mannequin_geometry.py): triangulation from exact flow and poses,
epipolar distance, the public loader's confidence and masking, real flow on rendered clips."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.mannequin_geometry import (
    ConfidenceParams,
    centred_log_depth,
    epipolar_distance,
    intrinsics_matrix,
    parallax_confidence,
    parallax_inputs,
    pixel_grid,
    project,
    relative_pose,
    triangulate_depth,
)


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    return np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])


def _scene(h=24, w=32):
    ys, xs = np.mgrid[:h, :w]
    depth = (3.0 + 1.5 * np.sin(xs / 5.0) + 0.05 * ys).astype(np.float64)
    K = intrinsics_matrix(np.array([0.9, 1.2, 0.5, 0.5]), w, h)
    pose_a = np.concatenate([_rotation(0.1, 0.05), [[0.2], [-0.1], [0.3]]], axis=1)
    pose_b = np.concatenate([_rotation(0.13, 0.04), [[0.05], [-0.12], [0.28]]], axis=1)
    return depth, K, pose_a, pose_b


def test_triangulation_recovers_depth_from_exact_flow_and_poses():
    depth, K, pose_a, pose_b = _scene()
    rotation, translation = relative_pose(pose_a, pose_b)
    h, w = depth.shape
    flow = project(depth, K, rotation, translation) - pixel_grid(h, w)[:2].T.reshape(h, w, 2)
    recovered = triangulate_depth(flow, K, rotation, translation)
    np.testing.assert_allclose(recovered, depth, rtol=1e-4)
    assert epipolar_distance(flow, K, rotation, translation).max() < 1e-6


def test_relative_pose_maps_world_points_between_cameras():
    _, _, pose_a, pose_b = _scene()
    point = np.array([0.4, -0.3, 5.0])
    in_a = pose_a[:, :3] @ point + pose_a[:, 3]
    in_b = pose_b[:, :3] @ point + pose_b[:, 3]
    rotation, translation = relative_pose(pose_a, pose_b)
    np.testing.assert_allclose(rotation @ in_a + translation, in_b, atol=1e-12)


def test_intrinsics_scale_normalized_values_by_image_size():
    K = intrinsics_matrix(np.array([0.5, 0.8, 0.5, 0.4]), 200, 100)
    np.testing.assert_allclose(K, [[100, 0, 100], [0, 80, 40], [0, 0, 1]])


def test_flow_off_the_epipolar_line_is_measured_and_lowers_confidence():
    depth, K, pose_a, pose_b = _scene()
    rotation, translation = relative_pose(pose_a, pose_b)
    h, w = depth.shape
    flow = project(depth, K, rotation, translation) - pixel_grid(h, w)[:2].T.reshape(h, w, 2)
    direction = np.stack([-flow[..., 1], flow[..., 0]], -1)  # roughly across the epipolar line
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    distance = epipolar_distance(flow + 1.0 * direction, K, rotation, translation)
    assert np.median(distance) > 0.5
    zeros = np.zeros_like(distance)
    wide = np.full_like(distance, 5.0)
    good, _ = parallax_confidence(zeros, zeros, wide)
    bad, _ = parallax_confidence(zeros, distance, wide)
    np.testing.assert_allclose(good, 1.0)
    np.testing.assert_allclose(bad, np.maximum(0.0, 1.0 - distance**2 / 4.0), rtol=1e-6)


@pytest.mark.parametrize(
    "lr, epipolar, angle, confidence, valid",
    [
        # C = max(0, 1 - lr^2) * max(0, 1 - (gamma / 2)^2) * (1 - (min(alpha, 1) - 1)^2), worked by hand.
        (0.0, 0.0, 2.0, 1.0, True),
        (0.5, 0.0, 2.0, 0.75, True),
        (0.0, 1.0, 2.0, 0.75, True),
        (0.0, 3.0, 2.0, 0.0, True),  # far off the epipolar line: confidence 0, depth still kept
        (0.0, 0.0, 0.5, 0.75, True),  # 1 - 0.25
        (0.0, 0.0, 0.1, 0.19, False),  # 1 - 0.81 = 0.19 <= 0.25: parallax too small, dropped
        (1.0, 0.0, 2.0, 0.0, False),  # left-right error 1 px: inconsistent flow, dropped
        (0.5, 1.0, 0.5, 0.421875, True),  # 0.75^3
    ],
)
def test_public_loader_confidence_terms(lr, epipolar, angle, confidence, valid):
    c, v = parallax_confidence(np.array([lr]), np.array([epipolar]), np.array([angle]), ConfidenceParams())
    assert c[0] == pytest.approx(confidence, abs=1e-6) and bool(v[0]) == valid


def test_input_log_depth_is_centred_on_a_percentile_of_valid_values():
    depth = np.array([[1.0, np.e, np.e**2, 0.0], [np.e**3, np.e**4, 0.0, 0.0]], dtype=np.float32)
    centred = centred_log_depth(depth)  # median of log = [0, 1, 2, 3, 4] is 2
    np.testing.assert_allclose(centred, [[-2, -1, 0, 0], [1, 2, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(centred_log_depth(depth * 5.0), centred, atol=1e-5)  # scale-free
    np.testing.assert_allclose(centred_log_depth(depth, 25.0), [[-1, 0, 1, 0], [2, 3, 0, 0]], atol=1e-6)
    assert (centred_log_depth(np.zeros((2, 2), np.float32)) == 0).all()


@pytest.mark.filterwarnings("ignore:.*skipped 1 frames")
def test_parallax_depth_from_real_flow_on_a_rendered_clip(tmp_path):
    """DIS flow between two rendered frames + the clip's poses give the environment's depth."""
    from datamodules.mannequin_challenge import MannequinChallengeClips
    from datamodules.synthetic.mannequin_challenge import write_clip

    write_clip(
        tmp_path / "train", "0123456789abcdef", np.random.default_rng(3), moving=False, frames=3, width=128, height=96
    )
    data = MannequinChallengeClips(tmp_path / "train", image_size=(96, 128), reference_offset=2)
    traj = data.trajectories[0]
    image, depth, mask = data.load_frame(0, 0)
    reference, _, _ = data.load_frame(0, 2)
    K = intrinsics_matrix(traj.intrinsics[0], 128, 96)
    out = parallax_inputs(image, reference, K, traj.poses[0], traj.poses[2], human_mask=mask)
    env = (mask == 0) & (out.confidence > 0.5)
    assert (out.depth[out.confidence > 0] > 0).all()  # confidence only where the depth is kept
    assert env.mean() > 0.5
    relative = np.abs(out.depth[env] - depth[env]) / depth[env]
    assert np.median(relative) < 0.07  # DIS flow at 128x96: ~3-6 %
    assert (mask > 0).any() and out.depth[mask > 0].max() == 0 and out.confidence[mask > 0].max() == 0
