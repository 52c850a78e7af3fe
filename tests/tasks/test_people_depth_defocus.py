"""Synthetic defocus: in-focus pixels keep their values, far ones blur, the video is written."""

from __future__ import annotations

import numpy as np

from core.video import open_video
from tasks.people_depth.defocus import blur_radius, defocus, write_effect_video


def _checkerboard(h=40, w=60):
    ys, xs = np.mgrid[:h, :w]
    board = (((ys // 2) + (xs // 2)) % 2 * 255).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def test_in_focus_pixels_are_unchanged_and_others_blur():
    image = _checkerboard()
    depth = np.full(image.shape[:2], 8.0, dtype=np.float32)
    depth[10:30, 20:40] = 2.0  # a person in focus in front of a far wall
    out = defocus(image, depth, focus_depth=2.0, aperture=6.0, max_radius=6.0)
    np.testing.assert_array_equal(out[10:30, 20:40], image[10:30, 20:40])
    far = out[:, :8].astype(float)
    assert far.std() < 0.3 * image[:, :8].astype(float).std()  # the checkerboard is washed out


def test_blur_radius_follows_the_thin_lens_and_is_clipped():
    depth = np.array([[2.0, 4.0, 1.0, 0.0, 1000.0]])
    r = blur_radius(depth, focus_depth=2.0, aperture=4.0, max_radius=3.5)
    np.testing.assert_allclose(r, [[0.0, 2.0, 3.5, 0.0, 3.5]])


def test_effect_video_is_side_by_side_and_decodable(tmp_path):
    images = [_checkerboard() for _ in range(3)]
    depths = [np.full((40, 60), 3.0 + i, dtype=np.float32) for i in range(3)]
    masks = [np.zeros((40, 60), np.float32) for _ in range(3)]
    path = write_effect_video(tmp_path / "fx.mp4", images, depths, masks, focus_depth=3.0)
    reader = open_video(path)
    assert len(reader) == 3
    assert reader[0].shape == (40, 180, 3)
