"""A small Google-Landmarks-v2 set in the published layout (datamodules/gldv2.py reads it).

Each landmark is a distinct 3D-ish building: a box body (its own width/height/depth), an optional
roof (pyramid or flat), a colour per face and a facade pattern (window grid or stripes, its own
spacing). Every photo renders it with a perspective camera at a new yaw, pitch, distance (scale)
and position, under a new light direction and exposure, over a cluttered background of random
shapes, sometimes partly occluded by a foreground block. Non-landmark distractors (test queries
and index images) show a random building with no landmark's parameters. A subset of the train
images gets the landmark's box in the D2R box files.

Layout written under ``root``::

    train.csv                       id,url,landmark_id
    train_clean.csv                 landmark_id,images   (space-separated ids)
    index.csv  test.csv             id,url
    recognition_solution_v2.1.csv   id,landmarks,Usage   (empty landmarks: non-landmark query)
    retrieval_solution_v2.1.csv     id,images,Usage      (non-landmark queries: Ignored)
    boxes_split1.csv boxes_split2.csv   id,box  (box: "top left bottom right", relative to the size)
    train/a/b/c/abc....jpg  index/...  test/...          (the first three characters of the id)
"""

from __future__ import annotations

import colorsys
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Cube corners, then the roof apex: x right, y up, z toward the camera; faces list corners CCW
# seen from outside.
_CORNERS = np.array(
    [[-1, 0, -1], [1, 0, -1], [1, 1, -1], [-1, 1, -1], [-1, 0, 1], [1, 0, 1], [1, 1, 1], [-1, 1, 1]], dtype=float
)
_FACES = {"front": [4, 5, 6, 7], "back": [1, 0, 3, 2], "left": [0, 4, 7, 3], "right": [5, 1, 2, 6], "top": [7, 6, 2, 3]}


def _hex_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("0123456789abcdef"), 16))


def landmark_style(rng: np.random.Generator) -> dict:
    """The parameters that make one landmark: shape, roof, face colours, facade pattern."""
    hue = rng.random()
    colours = []
    for k in range(3):
        h = (hue + 0.33 * k + rng.normal(0, 0.04)) % 1.0
        colours.append(tuple(int(255 * v) for v in colorsys.hsv_to_rgb(h, 0.45 + 0.5 * rng.random(), 0.75)))
    return {
        "size": (0.5 + 0.7 * rng.random(), 0.7 + 1.3 * rng.random(), 0.4 + 0.6 * rng.random()),
        "roof": ["pyramid", "flat", "spire"][rng.integers(3)],
        "roof_height": 0.3 + 0.8 * rng.random(),
        "colours": colours,
        "pattern": ["windows", "stripes", "columns"][rng.integers(3)],
        "spacing": int(rng.integers(2, 6)),
        "pattern_colour": tuple(int(v) for v in rng.integers(0, 256, 3)),
    }


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    top, bottom = rng.integers(60, 230, 3), rng.integers(30, 200, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) * np.ones((1, size, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):  # clutter
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(size // 20, size // 6))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r, x + r, y + r], fill=fill)
    return image


def render_building(style: dict, rng: np.random.Generator, size: int, image: Image.Image) -> tuple[float, ...]:
    """Draw ``style`` seen from a random viewpoint into ``image``; return its box (x1, y1, x2, y2)
    in pixels."""
    w, h, d = style["size"]
    points = _CORNERS * np.array([w, h, d])
    apex = np.array([[0.0, h + style["roof_height"] * (2.0 if style["roof"] == "spire" else 1.0), 0.0]])
    points = np.concatenate([points, apex])
    yaw, pitch = np.deg2rad(rng.uniform(-55, 55)), np.deg2rad(rng.uniform(-5, 20))
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    cam = points @ (rx @ ry).T
    distance = rng.uniform(4.5, 9.0)  # scale
    focal = size * 1.6
    z = distance - cam[:, 2]
    centre = np.array([size * rng.uniform(0.35, 0.65), size * rng.uniform(0.55, 0.8)])
    xy = np.stack([cam[:, 0] * focal / z, -(cam[:, 1] - h / 2) * focal / z], 1) + centre
    light = rng.normal(size=3)
    light[2] = abs(light[2]) + 0.5
    light /= np.linalg.norm(light)
    exposure = rng.uniform(0.6, 1.25)
    draw = ImageDraw.Draw(image)
    faces = []
    for name, idx in _FACES.items():
        p = cam[idx]
        normal = np.cross(p[1] - p[0], p[3] - p[0])
        normal /= np.linalg.norm(normal) + 1e-9
        view = np.array([0, 0, distance]) - p.mean(0)
        if normal @ view <= 0:  # back face
            continue
        faces.append((p[:, 2].mean(), name, idx, normal))
    for _, name, idx, normal in sorted(faces, key=lambda f: f[0]):
        shade = exposure * (0.45 + 0.55 * max(0.0, float(normal @ light)))
        base = style["colours"][0 if name in ("front", "back") else 1 if name != "top" else 2]
        fill = tuple(int(np.clip(c * shade, 0, 255)) for c in base)
        quad = [tuple(xy[i]) for i in idx]
        draw.polygon(quad, fill=fill)
        if name == "top":
            continue
        # Facade pattern, drawn in face coordinates so it follows the perspective.
        a, b, c, dd = (xy[i] for i in idx)
        pat = tuple(int(np.clip(v * shade, 0, 255)) for v in style["pattern_colour"])
        n = style["spacing"] + 1
        if style["pattern"] == "stripes":
            for t in np.linspace(0, 1, n + 1)[1:-1]:
                draw.line([tuple(a + t * (dd - a)), tuple(b + t * (c - b))], fill=pat, width=max(1, size // 64))
        else:
            rows = n if style["pattern"] == "windows" else 1
            for i in range(n - 1):
                for j in range(rows):
                    u0, u1 = (i + 0.7) / n, (i + 1.3) / n
                    v0, v1 = (j + 0.3) / rows, (j + 0.7) / rows if rows > 1 else 0.9
                    corners = [a + u * (b - a) + v * (dd - a) for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))]
                    draw.polygon([tuple(q) for q in corners], fill=pat)
    if style["roof"] != "flat":
        top = [6, 2, 3, 7]
        for i in range(4):
            tri = [tuple(xy[top[i]]), tuple(xy[top[(i + 1) % 4]]), tuple(xy[8])]
            shade = exposure * (0.5 + 0.5 * (i % 2))
            draw.polygon(tri, fill=tuple(int(np.clip(v * shade, 0, 255)) for v in style["colours"][2]))
    used = xy if style["roof"] != "flat" else xy[:8]
    x1, y1 = np.clip(used.min(0), 0, size - 1)
    x2, y2 = np.clip(used.max(0), 0, size - 1)
    return float(x1), float(y1), float(x2), float(y2)


def render_photo(style: dict, rng: np.random.Generator, size: int, occlusion: float) -> tuple[Image.Image, tuple]:
    """One photo of a building: clutter background, the building, maybe an occluder, light blur."""
    image = _background(rng, size)
    box = render_building(style, rng, size, image)
    if rng.random() < occlusion:
        x1, y1, x2, y2 = box
        ow, oh = (x2 - x1) * rng.uniform(0.2, 0.45), (y2 - y1) * rng.uniform(0.2, 0.5)
        ox, oy = rng.uniform(x1, max(x1 + 1, x2 - ow)), rng.uniform(y1, max(y1 + 1, y2 - oh))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        ImageDraw.Draw(image).rectangle([ox, oy, ox + ow, oy + oh], fill=fill)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return image, box


def image_path(root: Path, split: str, image_id: str) -> Path:
    """``<root>/<split>/a/b/c/<id>.jpg``: the published folder of an image id."""
    return root / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _write_csv(path: Path, rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def write_gldv2(
    root: str | Path,
    num_landmarks: int = 24,
    train_per_landmark: int = 16,
    index_per_landmark: int = 5,
    test_per_landmark: int = 2,
    index_distractors: int = 40,
    test_distractors: int = 16,
    box_fraction: float = 0.5,
    occlusion: float = 0.3,
    image_size: int = 128,
    public_fraction: float = 0.3,
    seed: int = 0,
) -> Path:
    """Write the set (see the module docstring); landmark ids are sparse integers as on GLDv2."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    landmark_ids = sorted(int(v) for v in rng.choice(200000, num_landmarks, replace=False))
    styles = {lm: landmark_style(rng) for lm in landmark_ids}
    used: set[str] = set()

    def new_id() -> str:
        while (i := _hex_id(rng)) in used:
            pass
        used.add(i)
        return i

    def save(split: str, style: dict) -> tuple[str, tuple]:
        image_id = new_id()
        image, box = render_photo(style, rng, image_size, occlusion)
        path = image_path(root, split, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=92)
        return image_id, box

    def url(image_id: str) -> str:
        return f"https://synthetic.invalid/{image_id}.jpg"

    train_rows, boxes = [], []
    clean: dict[int, list[str]] = {lm: [] for lm in landmark_ids}
    for lm in landmark_ids:
        for _ in range(train_per_landmark):
            image_id, (x1, y1, x2, y2) = save("train", styles[lm])
            train_rows.append([image_id, url(image_id), lm])
            clean[lm].append(image_id)
            if rng.random() < box_fraction:
                s = float(image_size)
                boxes.append([image_id, f"{y1 / s:.4f} {x1 / s:.4f} {y2 / s:.4f} {x2 / s:.4f}"])
    _write_csv(root / "train.csv", [["id", "url", "landmark_id"], *train_rows])
    _write_csv(root / "train_clean.csv", [["landmark_id", "images"], *([lm, " ".join(v)] for lm, v in clean.items())])
    half = len(boxes) * 2 // 3  # D2R: split1 trains the detector, split2 validates it
    _write_csv(root / "boxes_split1.csv", [["id", "box"], *boxes[:half]])
    _write_csv(root / "boxes_split2.csv", [["id", "box"], *boxes[half:]])

    index_rows, index_of = [], {lm: [] for lm in landmark_ids}
    for lm in landmark_ids:
        for _ in range(index_per_landmark):
            image_id, _ = save("index", styles[lm])
            index_rows.append([image_id, url(image_id)])
            index_of[lm].append(image_id)
    for _ in range(index_distractors):
        image_id, _ = save("index", landmark_style(rng))
        index_rows.append([image_id, url(image_id)])
    order = rng.permutation(len(index_rows))
    _write_csv(root / "index.csv", [["id", "url"], *(index_rows[i] for i in order)])

    queries: list[tuple[str, int | None]] = []
    for lm in landmark_ids:
        for _ in range(test_per_landmark):
            queries.append((save("test", styles[lm])[0], lm))
    for _ in range(test_distractors):
        queries.append((save("test", landmark_style(rng))[0], None))
    order = rng.permutation(len(queries))
    queries = [queries[i] for i in order]
    _write_csv(root / "test.csv", [["id", "url"], *([q, url(q)] for q, _ in queries)])
    recognition, retrieval = [["id", "landmarks", "Usage"]], [["id", "images", "Usage"]]
    for k, (query, lm) in enumerate(queries):
        usage = "Public" if rng.random() < public_fraction else "Private"
        if k == 0:
            usage = "Ignored"  # as in v2.1, a few queries are left out of scoring
        recognition.append([query, "" if lm is None else str(lm), usage])
        retrieval.append([query, "" if lm is None else " ".join(index_of[lm]), "Ignored" if lm is None else usage])
    _write_csv(root / "recognition_solution_v2.1.csv", recognition)
    _write_csv(root / "retrieval_solution_v2.1.csv", retrieval)
    return root
