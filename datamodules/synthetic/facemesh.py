"""Writes a small face-mesh data set: faces rendered from a parametric 3D face mesh over procedural
backgrounds, in the layout ``datamodules.facemesh`` reads (documented there and in docs/facemesh.md).

The parametric face: a head-shaped surface over the topology's (u, v) coordinates
(``datamodules.face_topology``) deformed by 8 shape coefficients (width, height, depth, jaw, nose,
cheeks, chin, forehead) and 4 expression coefficients (mouth open, smile, brow raise, pucker),
rotated by a pose (yaw, pitch, roll), lit by a directional + ambient light and textured in (u, v)
(skin tone, eyes with iris, brows, lips, nostrils, hairline, smooth skin variation). Faces are drawn
by a small z-ordered rasterizer with per-pixel (u, v) and normals, so every label is exact: the 3D
points are the rendered mesh vertices (x, y in pixels, z in pixels, smaller = nearer the camera,
relative to the head centre, as MediaPipe's face mesh reports them), the six keypoints are surface
points, the boxes bound the face region.

Two image styles: ``rendered`` (3D labels; plain skin) and ``annotated`` (a harder "photo" style:
skin texture, coloured light, blur and sensor noise; only 2D contour points are given, with 0.5 px
annotation noise), mirroring the paper's mix of synthetic 3D renders and 2D-annotated real images.
``unlabeled`` images use the photo style without labels (some hold no face), for bootstrapping.
``clips`` are short videos of one head: still (only sensor noise and light flicker change) and moving."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.io import atomic_write_json, atomic_write_text
from core.video import write_video
from datamodules.face_topology import FEATURES, KEYPOINT_UV, face_topology, grid_shape, read_topology_file

NUM_SHAPE = 8
NUM_EXPRESSION = 4


# --- the parametric surface ------------------------------------------------------------------------


def _bump(u, v, cu, cv, su, sv):
    return np.exp(-(((u - cu) / su) ** 2) - ((v - cv) / sv) ** 2)


def face_surface(uv: np.ndarray, shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """3D points (M, 3) of the face surface at ``uv`` (M, 2) in the head frame (x to the image right
    on a frontal face, y up, z towards the camera; unit: about half the face height)."""
    u, v = uv[:, 0], uv[:, 1]
    s, e = np.asarray(shape, dtype=np.float64), np.asarray(expression, dtype=np.float64)
    theta, phi = u * 1.6, v * 0.95
    width, height, depth = 0.78 * (1 + 0.12 * s[0]), 1.05 * (1 + 0.1 * s[1]), 0.8 * (1 + 0.12 * s[2])
    x = width * np.sin(theta) * np.cos(phi)
    y = height * np.sin(phi)
    z = depth * np.cos(theta) * np.cos(phi)
    below = np.clip(-v, 0, None)
    x = x * (1 - 0.22 * below**2 + 0.1 * s[3] * below)  # chin narrower than the cheeks; jaw width
    z = z + (0.24 + 0.06 * s[4]) * _bump(u, v, 0.0, -0.12, 0.075, 0.2)  # nose
    z = z - 0.05 * (_bump(u, v, -0.21, 0.17, 0.1, 0.06) + _bump(u, v, 0.21, 0.17, 0.1, 0.06))
    z = z + 0.04 * (_bump(u, v, -0.22, 0.33, 0.15, 0.05) + _bump(u, v, 0.22, 0.33, 0.15, 0.05))
    z = z + 0.05 * s[5] * (_bump(u, v, -0.36, -0.22, 0.12, 0.15) + _bump(u, v, 0.36, -0.22, 0.12, 0.15))
    y = y - 0.1 * s[6] * np.clip((-v - 0.6) / 0.4, 0, None)
    y = y + 0.08 * s[7] * np.clip((v - 0.4) / 0.5, 0, None)
    # Expressions: mouth open moves the jaw down, smile lifts the corners, brow raise, pucker.
    jaw = 1.0 / (1.0 + np.exp(-(-v - 0.52) / 0.02))
    y = y - 0.16 * e[0] * jaw * (1 - 0.3 * np.abs(u))
    corners = _bump(u, v, -0.16, -0.5, 0.07, 0.07) + _bump(u, v, 0.16, -0.5, 0.07, 0.07)
    y = y + 0.07 * e[1] * corners
    x = x + 0.04 * e[1] * corners * np.sign(u)
    brows = _bump(u, v, -0.22, 0.33, 0.2, 0.1) + _bump(u, v, 0.22, 0.33, 0.2, 0.1)
    y = y + 0.07 * e[2] * brows
    lips = _bump(u, v, 0.0, -0.5, 0.2, 0.09)
    x = x * (1 - 0.3 * e[3] * lips)
    z = z + 0.06 * e[3] * lips
    return np.stack([x, y, z], 1)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head rotation (degrees): yaw about y, pitch about x, roll about z, applied roll(pitch(yaw))."""
    a, b, c = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx @ ry


def project(points: np.ndarray, face: dict) -> np.ndarray:
    """Head-frame points -> image (x px, y px, z px; z smaller = nearer), scaled orthographic."""
    p = points @ rotation(*face["pose"]).T
    cx, cy = face["center"]
    s = face["scale"]
    return np.stack([cx + s * p[:, 0], cy - s * p[:, 1], -s * p[:, 2]], 1)


# --- texture, light, rasterizer --------------------------------------------------------------------


def _in_ellipse(u, v, name, grow=1.0):
    (cu, cv), (hu, hv) = FEATURES[name]
    return ((u - cu) / (hu * grow)) ** 2 + ((v - cv) / (hv * grow)) ** 2 <= 1.0


def albedo(uv: np.ndarray, face: dict) -> np.ndarray:
    """RGB albedo (M, 3) in [0, 1] at surface coordinates ``uv``."""
    u, v = uv[:, 0], uv[:, 1]
    t = face["texture"]
    col = np.tile(np.asarray(t["skin"], dtype=np.float64), (len(u), 1))
    wave = np.zeros_like(u)
    for fu, fv, ph, amp in t["waves"]:
        wave += amp * np.sin(fu * u + fv * v + ph)
    col *= (1.0 + wave)[:, None]
    cheeks = _bump(u, v, -0.36, -0.2, 0.12, 0.1) + _bump(u, v, 0.36, -0.2, 0.12, 0.1)
    col = col * (1 - 0.12 * cheeks[:, None]) + np.array([0.8, 0.3, 0.3]) * 0.12 * cheeks[:, None]
    hair = v > t["hairline"] + 0.04 * np.sin(9 * u)
    col[hair] = t["hair"]
    for side in ("right", "left"):
        brow = _in_ellipse(u, v, f"{side}_brow")
        col[brow] = np.asarray(t["hair"]) * 0.9
        eye = _in_ellipse(u, v, f"{side}_eye")
        col[eye] = (0.92, 0.9, 0.88)
        (cu, cv), _ = FEATURES[f"{side}_eye"]
        iris = eye & (((u - cu - t["gaze"][0]) / 0.032) ** 2 + ((v - cv - t["gaze"][1]) / 0.04) ** 2 <= 1)
        col[iris] = t["iris"]
        pupil = eye & (((u - cu - t["gaze"][0]) / 0.013) ** 2 + ((v - cv - t["gaze"][1]) / 0.016) ** 2 <= 1)
        col[pupil] = (0.03, 0.03, 0.03)
        lid = _in_ellipse(u, v, f"{side}_eye", 1.25) & ~eye
        col[lid] *= 0.55
    lips = _in_ellipse(u, v, "lips")
    col[lips] = t["lips"]
    gap = lips & (np.abs(v + 0.5) < 0.004 + 0.03 * face["expression"][0])
    col[gap] = (0.12, 0.03, 0.03)
    for su in (-0.045, 0.045):
        col[((u - su) / 0.022) ** 2 + ((v + 0.27) / 0.014) ** 2 <= 1] *= 0.35
    return np.clip(col, 0, 1)


def _vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    n = np.zeros_like(verts)
    fn = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    for k in range(3):
        np.add.at(n, tris[:, k], fn)
    return n / np.linalg.norm(n, axis=1, keepdims=True).clip(1e-9)


def rasterize(img_xy: np.ndarray, depth: np.ndarray, tris: np.ndarray, attrs: np.ndarray, size: tuple[int, int]):
    """Draw triangles (screen xy (V, 2), depth (V,) smaller = nearer) far to near, interpolating
    per-vertex ``attrs`` (V, A) barycentrically at pixel centres. Returns (coverage (H, W) bool,
    attrs (H, W, A)). Triangles facing away from the camera are culled."""
    h, w = size
    cover = np.zeros((h, w), dtype=bool)
    out = np.zeros((h, w, attrs.shape[1]), dtype=np.float64)
    p = img_xy[tris]  # (T, 3, 2)
    area = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1])
    order = np.argsort(-depth[tris].mean(1))  # far (large z) first
    for t in order:
        if area[t] >= -1e-9:  # back-facing or degenerate in image space (y down: front is negative)
            continue
        a, b, c = p[t]
        x0, x1 = max(int(np.floor(min(a[0], b[0], c[0]))), 0), min(int(np.ceil(max(a[0], b[0], c[0]))), w - 1)
        y0, y1 = max(int(np.floor(min(a[1], b[1], c[1]))), 0), min(int(np.ceil(max(a[1], b[1], c[1]))), h - 1)
        if x1 < x0 or y1 < y0:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        w0 = ((b[0] - xs) * (c[1] - ys) - (c[0] - xs) * (b[1] - ys)) / area[t]
        w1 = ((c[0] - xs) * (a[1] - ys) - (a[0] - xs) * (c[1] - ys)) / area[t]
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
        if not inside.any():
            continue
        vals = w0[..., None] * attrs[tris[t, 0]] + w1[..., None] * attrs[tris[t, 1]] + w2[..., None] * attrs[tris[t, 2]]
        yy, xx = np.nonzero(inside)
        out[yy + y0, xx + x0] = vals[inside]
        cover[yy + y0, xx + x0] = True
    return cover, out


def render_face(image: np.ndarray, face: dict, topology, upsample: int = 1) -> dict:
    """Draw ``face`` onto ``image`` (H, W, 3 float in [0, 1], modified in place) and return its exact
    labels: points3d (N, 3), keypoints (6, 2), box (4,) as x0, y0, x1, y1 in pixels."""
    verts_h = face_surface(topology.uv, face["shape"], face["expression"])
    verts = project(verts_h, face)
    # Rasterize a finer copy of the mesh (each grid cell split in upsample^2) for smooth features; a
    # topology without a grid (MediaPipe's) is drawn over the grid of the default 468 points.
    rows, cols = (topology.rows, topology.cols) if topology.kind == "grid" else grid_shape(468)
    fu = np.linspace(topology.uv[:, 0].min(), topology.uv[:, 0].max(), (cols - 1) * upsample + 1)
    fv = np.linspace(topology.uv[:, 1].max(), topology.uv[:, 1].min(), (rows - 1) * upsample + 1)
    uu, vv = np.meshgrid(fu, fv)
    fine_uv = np.stack([uu.ravel(), vv.ravel()], 1)
    fine_h = face_surface(fine_uv, face["shape"], face["expression"])
    fine = project(fine_h, face)
    r2, c2 = len(fv), len(fu)
    tris = []
    for i in range(r2 - 1):
        for j in range(c2 - 1):
            a, b, c, d = i * c2 + j, i * c2 + j + 1, (i + 1) * c2 + j, (i + 1) * c2 + j + 1
            tris += [(a, c, b), (b, c, d)]
    tris = np.array(tris)
    fine_n = _vertex_normals(fine_h, tris) @ rotation(*face["pose"]).T
    h, w = image.shape[:2]
    cover, attrs = rasterize(fine[:, :2], fine[:, 2], tris, np.concatenate([fine_uv, fine_n], 1), (h, w))
    if cover.any():
        uvp = attrs[cover][:, :2]
        n = attrs[cover][:, 2:]
        n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-9)
        light = face["light"]
        lam = np.clip(n @ np.asarray(light["direction"]), 0, None)
        shade = light["ambient"] + light["diffuse"] * lam
        color = albedo(uvp, face) * shade[:, None] * np.asarray(light["color"])
        layer = np.zeros_like(image)
        layer[cover] = color
        alpha = cv2.GaussianBlur(cover.astype(np.float32), (3, 3), 0.6)[..., None]
        image[:] = image * (1 - alpha) + layer * alpha
    kp = project(face_surface(KEYPOINT_UV, face["shape"], face["expression"]), face)[:, :2]
    region = (np.abs(topology.uv[:, 0]) <= 0.6) & (topology.uv[:, 1] <= 0.6)
    xy = verts[region, :2]
    box = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
    return {"points3d": verts, "keypoints": kp, "box": box}


# --- random faces, backgrounds, images --------------------------------------------------------------


SKIN = np.array([[0.96, 0.8, 0.69], [0.87, 0.67, 0.52], [0.72, 0.52, 0.38], [0.5, 0.34, 0.24], [0.35, 0.23, 0.16]])


def sample_face(rng: np.random.Generator, size: int, style: str, max_angle: float = 1.0) -> dict:
    """Random shape, expression, pose, light and texture for a face about ``size`` pixels tall."""
    k = rng.uniform(0, len(SKIN) - 1)
    skin = SKIN[int(k)] * (1 - k % 1) + SKIN[min(int(k) + 1, len(SKIN) - 1)] * (k % 1)
    photo = style != "rendered"
    waves = [
        (
            rng.uniform(2, 30 if photo else 8),
            rng.uniform(2, 30 if photo else 8),
            rng.uniform(0, 6.3),
            rng.uniform(0, 0.06 if photo else 0.03),
        )
        for _ in range(4)
    ]
    d = rng.normal(size=3) * [0.6, 0.5, 0.0]
    d[2] = 1.0
    return {
        "shape": rng.normal(size=NUM_SHAPE).clip(-2, 2),
        "expression": np.concatenate(
            [rng.uniform(0, 1, 1) ** 2, rng.uniform(-0.5, 1, 1), rng.uniform(-0.5, 1, 1), rng.uniform(0, 1, 1) ** 2]
        ),
        "pose": np.array([rng.uniform(-35, 35), rng.uniform(-20, 20), rng.uniform(-30, 30)]) * max_angle,
        "scale": size / 2.1,
        "center": np.zeros(2),
        "light": {
            "direction": d / np.linalg.norm(d),
            "ambient": rng.uniform(0.35, 0.6),
            "diffuse": rng.uniform(0.4, 0.7),
            "color": (1 + rng.uniform(-0.15, 0.15, 3)) if photo else np.ones(3),
        },
        "texture": {
            "skin": skin,
            "hair": rng.uniform(0.02, 0.45) * np.array([1.0, 0.8, 0.6]),
            "iris": rng.uniform(0.05, 0.5, 3),
            "lips": skin * np.array([0.85, 0.55, 0.55]),
            "hairline": rng.uniform(0.62, 0.8),
            "gaze": rng.uniform(-0.02, 0.02, 2),
            "waves": waves,
        },
    }


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A procedural background: a colour gradient, random shapes and smooth noise, (H, W, 3) in [0, 1]."""
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    ramp = np.linspace(0, 1, width)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, height)[:, None, None]
    img = (a * (1 - ramp) + b * ramp) * np.ones((height, width, 3))
    img = np.ascontiguousarray(img.astype(np.float32))
    for _ in range(rng.integers(3, 9)):
        color = tuple(float(c) for c in rng.uniform(0, 1, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(4, max(width, height) // 3))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, color, -1)
        else:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(4, height // 2))), color, -1)
    noise = cv2.resize(rng.normal(0, 0.06, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32), (width, height))
    return np.clip(cv2.GaussianBlur(img, (5, 5), 1.5) + noise, 0, 1).astype(np.float64)


def finish(image: np.ndarray, rng: np.random.Generator, style: str) -> np.ndarray:
    """Camera effects of the style; uint8 RGB."""
    if style != "rendered":
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
        image = image * rng.uniform(0.8, 1.15) + rng.normal(0, 0.02, image.shape)
    else:
        image = image + rng.normal(0, 0.008, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def compose_image(
    rng: np.random.Generator, size: int, topology, style: str, num_faces: int
) -> tuple[np.ndarray, list[dict]]:
    """An image with ``num_faces`` non-overlapping faces over a background; their labels."""
    image = background(rng, size, size)
    placed: list[np.ndarray] = []
    labels = []
    for _ in range(num_faces):
        for _attempt in range(20):
            face_px = rng.uniform(0.3, 0.6) * size if num_faces == 1 else rng.uniform(0.25, 0.4) * size
            face = sample_face(rng, face_px, style)
            face["center"] = rng.uniform(0.3 * face_px + 4, size - 0.3 * face_px - 4, 2)
            c, half = face["center"], 0.55 * face_px
            box = np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])
            if all(min(box[2], o[2]) < max(box[0], o[0]) or min(box[3], o[3]) < max(box[1], o[1]) for o in placed):
                placed.append(box)
                labels.append((face, None))
                break
    labels.sort(key=lambda fl: fl[0]["scale"])  # small (far) faces first
    out = []
    for face, _ in labels:
        out.append(render_face(image, face, topology))
    return finish(image, rng, style), out


def _face_record(lab: dict, topology, style: str, rng, index: int | None) -> dict:
    rec = {
        "box": [round(float(x), 3) for x in lab["box"]],
        "keypoints": [[round(float(x), 3), round(float(y), 3)] for x, y in lab["keypoints"]],
    }
    if style == "rendered":
        rec["points3d"] = index
    else:
        pts = lab["points3d"][:, :2]
        rec["contours"] = {
            name: [
                [round(float(x), 2), round(float(y), 2)]
                for x, y in pts[np.asarray(idx)] + rng.normal(0, 0.5, (len(idx), 2))
            ]
            for name, idx in topology.contours.items()
        }
    return rec


def write_split(folder: Path, rng: np.random.Generator, count: int, size: int, topology, style: str) -> None:
    """``count`` images of one split: images/<n>.png + annotations.json (+ points3d.npy if rendered)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, points = [], []
    for n in range(count):
        r = rng.random()
        num_faces = 0 if r < 0.08 else (2 if r > 0.85 else 1)
        img, labels = compose_image(rng, size, topology, style, num_faces)
        name = f"images/{n:06d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        faces = []
        for lab in labels:
            faces.append(_face_record(lab, topology, style, rng, len(points)))
            if style == "rendered":
                points.append(lab["points3d"].astype(np.float32))
        images.append({"file": name, "width": size, "height": size, "faces": faces})
    atomic_write_json(folder / "annotations.json", {"style": style, "images": images}, indent=None)
    if style == "rendered":
        np.save(
            folder / "points3d.npy", np.stack(points) if points else np.zeros((0, topology.num_points, 3), np.float32)
        )


def write_clip(
    folder: Path, name: str, rng: np.random.Generator, frames: int, size: int, fps: float, topology, motion: bool
) -> None:
    """A clip of one head: still (sensor noise and light flicker only) or moving (translation + yaw)."""
    face = sample_face(rng, 0.45 * size, "annotated", max_angle=0.4)
    face["expression"] = np.array([0.1, 0.2, 0.0, 0.0])
    bg = background(rng, size, size)
    base_center, base_pose = np.array([size / 2, size / 2]), face["pose"].copy()
    video, pts, boxes, kps = [], [], [], []
    for t in range(frames):
        f = dict(face, light=dict(face["light"]))
        if motion:
            phase = 2 * np.pi * t / frames
            f["center"] = base_center + np.array([0.22 * size * np.sin(phase), 0.06 * size * np.sin(2 * phase)])
            f["pose"] = base_pose + np.array([25 * np.sin(phase), 0, 8 * np.sin(phase)])
        else:
            f["center"] = base_center
            f["light"]["ambient"] = face["light"]["ambient"] * (1 + rng.uniform(-0.03, 0.03))
        img = bg.copy()
        lab = render_face(img, f, topology)
        video.append(finish(img, rng, "annotated"))
        pts.append(lab["points3d"])
        boxes.append(lab["box"])
        kps.append(lab["keypoints"])
    write_video(folder / f"{name}.mp4", video, fps=fps)
    with open(folder / f"{name}.npz", "wb") as fh:
        np.savez(
            fh,
            points3d=np.array(pts, np.float32),
            boxes=np.array(boxes, np.float32),
            keypoints=np.array(kps, np.float32),
            fps=np.float32(fps),
            moving=np.bool_(motion),
        )


def write_facemesh(
    root: str | Path,
    num_points: int = 468,
    image_size: int = 192,
    rendered: tuple[int, int, int] = (200, 40, 40),
    annotated: tuple[int, int, int] = (100, 30, 30),
    unlabeled: int = 100,
    clip_frames: int = 40,
    clip_size: int = 192,
    clip_fps: float = 30.0,
    seed: int = 0,
    topology: str | None = None,
) -> Path:
    """Write the whole data set into ``root``: topology.json, rendered/ and annotated/ train, val and
    test splits (image counts per split), unlabeled/, clips/ (one still and one moving clip).

    ``topology``: None for the grid of ``num_points`` points, or a topology JSON with (u, v) per point,
    e.g. MediaPipe's canonical mesh that `make mediapipe-models` writes to data/mediapipe/face_topology.json."""
    root = Path(root)
    topology = face_topology(num_points) if topology is None else read_topology_file(topology, num_points)
    rng = np.random.default_rng(seed)
    atomic_write_json(root / "topology.json", topology.as_json(), indent=None)
    for style, counts in (("rendered", rendered), ("annotated", annotated)):
        for split, count in zip(("train", "val", "test"), counts):
            write_split(root / style / split, rng, int(count), image_size, topology, style)
    (root / "unlabeled" / "images").mkdir(parents=True, exist_ok=True)
    for n in range(int(unlabeled)):
        img, _ = compose_image(rng, image_size, topology, "annotated", 0 if rng.random() < 0.1 else 1)
        cv2.imwrite(str(root / "unlabeled" / "images" / f"{n:06d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if clip_frames > 0:
        (root / "clips").mkdir(parents=True, exist_ok=True)
        write_clip(root / "clips", "still", rng, clip_frames, clip_size, clip_fps, topology, motion=False)
        write_clip(root / "clips", "moving", rng, clip_frames, clip_size, clip_fps, topology, motion=True)
    atomic_write_text(
        root / "README.txt",
        "Face-mesh data set written by datamodules/synthetic/facemesh.py; layout: docs/facemesh.md\n",
    )
    return root
