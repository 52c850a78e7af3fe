"""The face-mesh topology: N surface points on a (rows x cols) grid over the face's (u, v) surface
coordinates, its triangles, named contours and the six detector keypoints.

The mesh model regresses these N points; the generator renders faces whose vertices are exactly these
points, so the topology is the contract between the two. ``u`` runs across the face (-: the subject's
right, which is the image's left on a frontal face), ``v`` from the chin (-1) up to the forehead.
468 = 18 x 26 points is the default, the size of MediaPipe's face mesh; any N with a near-rectangular
factorization works (``face_topology(N)``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# u, v extent of the meshed surface: +-72 % of the head's half-turn across, chin to upper forehead.
U_RANGE = (-0.72, 0.72)
V_RANGE = (-1.0, 0.9)

# BlazeFace's six keypoints, in its order (Bazarevsky et al. 2019, Sec. 4): eyes, nose tip, mouth
# centre, ear tragions. Their (u, v) on the parametric surface; the ears lie outside the meshed part.
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
KEYPOINT_UV = np.array(
    [[-0.21, 0.17], [0.21, 0.17], [0.0, -0.2], [0.0, -0.5], [-0.94, 0.05], [0.94, 0.05]],
    dtype=np.float64,
)

# Facial features painted by the generator's texture, as ellipses in (u, v): centre and half-axes.
FEATURES = {
    "right_eye": ((-0.21, 0.17), (0.085, 0.045)),
    "left_eye": ((0.21, 0.17), (0.085, 0.045)),
    "right_brow": ((-0.22, 0.33), (0.12, 0.022)),
    "left_brow": ((0.22, 0.33), (0.12, 0.022)),
    "lips": ((0.0, -0.5), (0.16, 0.055)),
}


@dataclass(frozen=True)
class FaceTopology:
    """Grid topology of ``rows * cols`` points: uv (N, 2), triangles (T, 3), named contours."""

    rows: int
    cols: int
    uv: np.ndarray = field(repr=False)
    triangles: np.ndarray = field(repr=False)
    contours: dict = field(repr=False)
    eye_corners: tuple[int, int] = (0, 0)

    @property
    def num_points(self) -> int:
        return self.rows * self.cols

    @property
    def contour_indices(self) -> np.ndarray:
        """All contour vertices, in the order of ``contours`` (name order), without repeats."""
        seen: dict[int, None] = {}
        for idx in self.contours.values():
            for i in idx:
                seen.setdefault(int(i), None)
        return np.array(list(seen), dtype=np.int64)

    def as_json(self) -> dict:
        return {
            "num_points": self.num_points,
            "rows": self.rows,
            "cols": self.cols,
            "uv": self.uv.round(6).tolist(),
            "triangles": self.triangles.tolist(),
            "contours": {k: [int(i) for i in v] for k, v in self.contours.items()},
            "eye_corners": list(self.eye_corners),
            "keypoint_names": list(KEYPOINT_NAMES),
        }


def grid_shape(num_points: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols = num_points and rows / cols nearest 18 / 26 (a face's aspect)."""
    best = None
    for rows in range(6, int(num_points**0.5) + 2):
        if num_points % rows:
            continue
        cols = num_points // rows
        score = abs(np.log((rows / cols) / (18 / 26)))
        if best is None or score < best[0]:
            best = (score, rows, cols)
    if best is None or best[0] > np.log(2.0):
        raise ValueError(
            f"num_points={num_points} has no rows x cols grid with rows >= 6 and an aspect within 2x "
            "of 18 x 26; pick e.g. 468 (18 x 26), 240 (12 x 20) or 120 (10 x 12)"
        )
    return best[1], best[2]


def _row_segment(v_row: np.ndarray, u_col: np.ndarray, cols: int, v: float, u_lo: float, u_hi: float):
    row = int(np.argmin(np.abs(v_row - v)))
    cols_in = [j for j in range(cols) if u_lo <= u_col[j] <= u_hi]
    if not cols_in:  # a coarse grid: the nearest column
        cols_in = [int(np.argmin(np.abs(u_col - 0.5 * (u_lo + u_hi))))]
    return [row * cols + j for j in cols_in]


@lru_cache(maxsize=8)
def face_topology(num_points: int = 468) -> FaceTopology:
    """The grid topology for ``num_points`` surface points (cached; arrays are read-only)."""
    rows, cols = grid_shape(num_points)
    u_col = np.linspace(*U_RANGE, cols)
    v_row = np.linspace(V_RANGE[1], V_RANGE[0], rows)  # row 0 at the forehead
    uu, vv = np.meshgrid(u_col, v_row)
    uv = np.stack([uu.ravel(), vv.ravel()], 1)
    tris = []
    for i in range(rows - 1):
        for j in range(cols - 1):
            a, b, c, d = i * cols + j, i * cols + j + 1, (i + 1) * cols + j, (i + 1) * cols + j + 1
            tris += [(a, c, b), (b, c, d)]
    ring = (
        [j for j in range(cols)]
        + [i * cols + cols - 1 for i in range(1, rows)]
        + [(rows - 1) * cols + j for j in range(cols - 2, -1, -1)]
        + [i * cols for i in range(rows - 2, 0, -1)]
    )
    contours = {"face_oval": ring}
    for name, ((cu, cv), (hu, _)) in FEATURES.items():
        contours[name] = _row_segment(v_row, u_col, cols, cv, cu - hu * 1.15, cu + hu * 1.15)
    centre = int(np.argmin(np.abs(u_col)))
    nose_rows = [i for i in range(rows) if -0.25 <= v_row[i] <= 0.2]
    contours["nose_bridge"] = [i * cols + centre for i in nose_rows]
    right_outer = min(contours["right_eye"], key=lambda k: uv[k, 0])
    left_outer = max(contours["left_eye"], key=lambda k: uv[k, 0])
    uv.setflags(write=False)
    triangles = np.array(tris, dtype=np.int64)
    triangles.setflags(write=False)
    return FaceTopology(rows, cols, uv, triangles, contours, (int(right_outer), int(left_outer)))
