"""The face-mesh topologies: MediaPipe's canonical 468-vertex mesh (read from its published
face_mesh_connections.py), and the generator's N surface points on a (rows x cols) grid over the
face's (u, v) surface coordinates, its triangles, named contours and the six detector keypoints.

The mesh model regresses these N points; the generator renders faces whose vertices are exactly these
points, so the topology is the contract between the two. ``u`` runs across the face (-: the subject's
right, which is the image's left on a frontal face), ``v`` from the chin (-1) up to the forehead.
468 = 18 x 26 points is the default, the size of MediaPipe's face mesh; any N with a near-rectangular
factorization works (``face_topology(N)``)."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.data import DataFormatError, read_json

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
    """A mesh topology: triangles (T, 3), named contours, the two outer eye corners (inter-ocular
    distance), (u, v) surface coordinates per point where the generator can draw it, and for the grid its
    ``rows`` x ``cols`` layout. MediaPipe's canonical mesh (:func:`mediapipe_topology`) has no grid; its
    (u, v) come from :func:`mediapipe_uv`, else ``uv`` is None."""

    rows: int
    cols: int
    uv: np.ndarray | None = field(repr=False)
    triangles: np.ndarray = field(repr=False)
    contours: dict = field(repr=False)
    eye_corners: tuple[int, int] = (0, 0)
    kind: str = "grid"
    size: int = 0  # the number of points where there is no grid

    @property
    def num_points(self) -> int:
        return self.rows * self.cols if self.kind == "grid" else self.size

    @property
    def contour_indices(self) -> np.ndarray:
        """All contour vertices, in the order of ``contours`` (name order), without repeats."""
        seen: dict[int, None] = {}
        for idx in self.contours.values():
            for i in idx:
                seen.setdefault(int(i), None)
        return np.array(list(seen), dtype=np.int64)

    def as_json(self) -> dict:
        out = {
            "kind": self.kind,
            "num_points": self.num_points,
            "triangles": self.triangles.tolist(),
            "contours": {k: [int(i) for i in v] for k, v in self.contours.items()},
            "eye_corners": list(self.eye_corners),
            "keypoint_names": list(KEYPOINT_NAMES),
        }
        if self.kind == "grid":
            out.update(rows=self.rows, cols=self.cols)
        if self.uv is not None:
            out["uv"] = self.uv.round(6).tolist()
        return out

    @classmethod
    def from_json(cls, data: dict) -> FaceTopology:
        """The topology that :meth:`as_json` wrote (a checkpoint's ``topology`` hyper-parameter)."""
        if data.get("kind", "grid") == "grid":
            return face_topology(int(data["num_points"]))
        triangles = np.asarray(data["triangles"], dtype=np.int64).reshape(-1, 3)
        triangles.setflags(write=False)
        contours = {k: [int(i) for i in v] for k, v in data["contours"].items()}
        a, b = data["eye_corners"]
        uv = np.asarray(data["uv"], dtype=np.float64).reshape(-1, 2) if data.get("uv") is not None else None
        if uv is not None:
            uv.setflags(write=False)
        return cls(0, 0, uv, triangles, contours, (int(a), int(b)), data["kind"], int(data["num_points"]))

    def with_uv(self, uv: np.ndarray) -> FaceTopology:
        """This topology with (u, v) surface coordinates per point (the generator places points by them)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(self.num_points, 2)
        uv.setflags(write=False)
        return dataclasses.replace(self, uv=uv)


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


# MediaPipe's connection sets (mediapipe/python/solutions/face_mesh_connections.py) -> our contour names
# (the subject's sides, as MediaPipe names them). Its outer eye corners 33 and 263 give the inter-ocular
# distance and, with the bounding box of all points, the next frame's crop (face_landmark_landmarks_to_roi).
MEDIAPIPE_CONTOURS = {
    "face_oval": "FACEMESH_FACE_OVAL",
    "right_eye": "FACEMESH_RIGHT_EYE",
    "left_eye": "FACEMESH_LEFT_EYE",
    "right_brow": "FACEMESH_RIGHT_EYEBROW",
    "left_brow": "FACEMESH_LEFT_EYEBROW",
    "lips": "FACEMESH_LIPS",
    "nose": "FACEMESH_NOSE",
}
MEDIAPIPE_EYE_CORNERS = (33, 263)
MEDIAPIPE_NUM_POINTS = 468


def _edge_lists(source: str, path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """The ``NAME = frozenset([(a, b), ...])`` literals of a connections file, in their written order
    (parsed, never executed)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise DataFormatError(path, f"not Python source ({err.msg})", err.lineno) from None
    out = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        call = node.value
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "frozenset" and call.args):
            continue
        if not isinstance(call.args[0], ast.List):
            continue
        try:
            out[node.targets[0].id] = [tuple(int(v) for v in ast.literal_eval(e)) for e in call.args[0].elts]
        except (ValueError, TypeError):
            raise DataFormatError(path, f"{node.targets[0].id}: expected (int, int) pairs", node.lineno) from None
    return out


def _ordered_vertices(edges: list[tuple[int, int]]) -> list[int]:
    seen: dict[int, None] = {}
    for a, b in edges:
        seen.setdefault(a, None)
        seen.setdefault(b, None)
    return list(seen)


def mediapipe_topology(source: str, path: str | Path = "face_mesh_connections.py") -> FaceTopology:
    """MediaPipe's canonical mesh from the text of its published ``face_mesh_connections.py``: the
    tessellation lists each triangle as its three edges (a, b), (b, c), (c, a) in a row."""
    lists = _edge_lists(source, path)
    missing = [name for name in ("FACEMESH_TESSELATION", *MEDIAPIPE_CONTOURS.values()) if name not in lists]
    if missing:
        raise DataFormatError(path, f"not MediaPipe's face_mesh_connections.py: no {', '.join(missing)}")
    edges = lists["FACEMESH_TESSELATION"]
    if len(edges) % 3:
        raise DataFormatError(path, f"FACEMESH_TESSELATION has {len(edges)} edges, not whole triangles")
    triangles = []
    for i in range(0, len(edges), 3):
        (a, b), (b2, c), (c2, a2) = edges[i : i + 3]
        if (b, c, a) != (b2, c2, a2):
            raise DataFormatError(path, f"FACEMESH_TESSELATION edges {i}-{i + 2} do not close a triangle")
        triangles.append((a, b, c))
    tris = np.array(triangles, dtype=np.int64)
    if tris.min() < 0 or tris.max() >= MEDIAPIPE_NUM_POINTS or len(np.unique(tris)) != MEDIAPIPE_NUM_POINTS:
        raise DataFormatError(path, f"FACEMESH_TESSELATION does not cover vertices 0-{MEDIAPIPE_NUM_POINTS - 1}")
    tris.setflags(write=False)
    contours = {ours: _ordered_vertices(lists[theirs]) for ours, theirs in MEDIAPIPE_CONTOURS.items()}
    return FaceTopology(0, 0, None, tris, contours, MEDIAPIPE_EYE_CORNERS, "mediapipe", MEDIAPIPE_NUM_POINTS)


def read_topology_file(path: str | Path, num_points: int) -> FaceTopology:
    """A topology JSON (``FaceTopology.as_json``) with ``num_points`` points, each with its (u, v) on the
    generator's face: MediaPipe's canonical mesh, the default topology, is the one `make mediapipe-models`
    writes to data/mediapipe/face_topology.json."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: no face-mesh topology file; MediaPipe's canonical mesh (the default topology of the face "
            "mesh's data and task) is written by `make mediapipe-models`"
        )
    data = read_json(path, "a face-mesh topology JSON (make mediapipe-models writes MediaPipe's)")
    try:
        topology = FaceTopology.from_json(data)
    except (KeyError, TypeError, ValueError) as err:
        raise DataFormatError(path, f"not a face-mesh topology ({type(err).__name__}: {err})") from None
    if topology.num_points != num_points:
        raise DataFormatError(path, f"has {topology.num_points} points but num_points={num_points} was configured")
    if topology.uv is None or len(topology.uv) != num_points:
        raise DataFormatError(path, "has no (u, v) per point, so the generator cannot place its points")
    return topology


def mediapipe_uv(points: np.ndarray, topology: FaceTopology) -> np.ndarray:
    """(u, v) of MediaPipe's vertices on the generator's parametric face, from one frontal face's points
    (N, 2+) in image pixels: the eye line levelled, then scaled so that the eye centres land on the
    generator's eyes (u = -+0.21, v = 0.17) and the lips' centre on its lips (v = -0.5)."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    right = xy[topology.contours["right_eye"]].mean(0)
    left = xy[topology.contours["left_eye"]].mean(0)
    angle = np.arctan2(left[1] - right[1], left[0] - right[0])
    c, s = np.cos(-angle), np.sin(-angle)
    level = (xy - (right + left) / 2) @ np.array([[c, s], [-s, c]])
    mouth = level[topology.contours["lips"]].mean(0)
    (eye_u, eye_v), (_, mouth_v) = FEATURES["left_eye"][0], FEATURES["lips"][0]
    half = np.linalg.norm(left - right) / 2
    u = level[:, 0] / half * eye_u
    v = eye_v - level[:, 1] / mouth[1] * (eye_v - mouth_v)
    return np.stack([u, v], 1)
