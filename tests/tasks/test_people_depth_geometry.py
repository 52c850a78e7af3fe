"""Parallax depth: triangulation from exact flow and poses, epipolar distance, real flow on real clips."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.people_depth.geometry import (
    epipolar_distance, intrinsics_matrix, pixel_grid, project, relative_pose, triangulate_depth,
)
from tasks.people_depth.parallax import parallax_confidence, parallax_inputs


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
    distance = epipolar_distance(flow + 3.0 * direction, K, rotation, translation)
    assert np.median(distance) > 1.0
    zeros = np.zeros_like(distance)
    good = parallax_confidence(zeros, zeros, np.full_like(distance, 5.0))
    bad = parallax_confidence(zeros, distance, np.full_like(distance, 5.0))
    np.testing.assert_allclose(good, 1.0)
    assert bad.mean() < 0.6 * good.mean()
    assert parallax_confidence(np.full_like(distance, 2.0), zeros, np.full_like(distance, 5.0)).max() == 0.0
    assert parallax_confidence(zeros, zeros, np.full_like(distance, 0.0)).max() == 0.0


@pytest.mark.filterwarnings("ignore:.*skipped 1 frames")
def test_parallax_depth_from_real_flow_on_a_rendered_clip(tmp_path):
    """DIS flow between two rendered frames + the clip's poses give the environment's depth."""
    from datamodules.mannequin_challenge import MannequinChallengeClips
    from datamodules.synthetic.mannequin_challenge import write_clip

    write_clip(tmp_path / "train", "0123456789abcdef", np.random.default_rng(3), moving=False, frames=3,
               width=128, height=96)
    data = MannequinChallengeClips(tmp_path / "train", image_size=(96, 128), reference_offset=2)
    traj = data.trajectories[0]
    image, depth, mask = data.load_frame(0, 0)
    reference, _, _ = data.load_frame(0, 2)
    K = intrinsics_matrix(traj.intrinsics[0], 128, 96)
    out = parallax_inputs(image, reference, K, traj.poses[0], traj.poses[2], human_mask=mask)
    env = (mask == 0) & (out.confidence > 0.5)
    assert env.mean() > 0.5
    relative = np.abs(out.depth[env] - depth[env]) / depth[env]
    assert np.median(relative) < 0.07  # DIS flow at 128x96: ~3-6 %
    assert (mask > 0).any() and out.depth[mask > 0].max() == 0 and out.confidence[mask > 0].max() == 0
