"""Rendered faces for the Photobooth system, in the two layouts datamodules/photobooth.py reads.

A face is an ellipse with eyes, brows and a mouth drawn from its controls: ``expression`` (one of
:data:`EXPRESSIONS`) at an ``intensity`` in [0, 1], ``eyes_closed``, ``talking`` (mouth half open),
``yaw`` (features shifted sideways, face narrowed: attending to the camera when |yaw| < 0.35) and
blur (a horizontal motion blur). Each expression changes the mouth/cheeks/brows in its own way,
so the controls are learnable from the pixels.

- :func:`write_face_expressions`: face crops with ``<split>.csv`` (image, expression, eyes_closed,
  talking, attending), or class folders ``<split>/<expression>/*.png``.
- :func:`write_photobooth_clips`: mp4 clips of several faces with per-frame labels and the
  labelled best moments (``<split>.json``), including kisses (two faces in profile touching); each
  face's expression ``intensity`` and ``importance`` (:func:`face_importance`: size, position, gaze,
  expression) and each frame's ``kiss_quality`` are written too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datamodules.photobooth import EXPRESSIONS  # one list of names for the reader and the writer

ATTENDING_YAW = 0.35
SPLITS = ("train", "val", "test")


@dataclass
class FaceControls:
    """What a rendered face shows; ``yaw`` in [-1, 1] (0 = looking at the camera)."""

    expression: str = "neutral"
    intensity: float = 1.0
    eyes_closed: bool = False
    talking: bool = False
    mouth_open: bool = True  # a talking mouth alternates open/closed from frame to frame
    yaw: float = 0.0

    @property
    def attending(self) -> bool:
        return abs(self.yaw) < ATTENDING_YAW


def draw_face(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, face: FaceControls, skin) -> None:
    """Draw one face of radius ``r`` centred at (cx, cy)."""
    k = float(np.clip(face.intensity, 0.0, 1.0)) if face.expression != "neutral" else 0.0
    shift = face.yaw * r * 0.45
    rx = r * (1.0 - 0.3 * abs(face.yaw))
    draw.ellipse((cx - rx, cy - r, cx + rx, cy + r), fill=skin)
    if abs(face.yaw) >= ATTENDING_YAW:  # an ear on the side turned towards the camera
        ex = cx - np.sign(face.yaw) * rx * 0.95
        draw.ellipse((ex - r * 0.12, cy - r * 0.2, ex + r * 0.12, cy + r * 0.2), fill=skin, outline=(90, 60, 40))
    fx = cx + shift
    eye_y, eye_dx, eye_r = cy - 0.25 * r, 0.35 * rx, 0.13 * r * (1 + 0.4 * k * (face.expression == "surprise"))
    brow_lift = 0.2 * r * k if face.expression == "surprise" else 0.0
    dark = (30, 20, 20)
    for side in (-1, 1):
        ex = fx + side * eye_dx
        if face.eyes_closed:
            draw.line((ex - eye_r, eye_y, ex + eye_r, eye_y), fill=dark, width=max(1, int(r * 0.06)))
        else:
            draw.ellipse((ex - eye_r, eye_y - eye_r, ex + eye_r, eye_y + eye_r), fill=(250, 250, 250))
            pr = eye_r * 0.5
            draw.ellipse((ex - pr + shift * 0.2, eye_y - pr, ex + pr + shift * 0.2, eye_y + pr), fill=dark)
        by = eye_y - 0.25 * r - brow_lift
        draw.line((ex - eye_r * 1.2, by, ex + eye_r * 1.2, by), fill=dark, width=max(1, int(r * 0.05)))
    my, mw = cy + 0.45 * r, 0.32 * rx
    lips, mouth_dark = (170, 30, 40), (60, 10, 15)
    e = face.expression if k > 0 else "neutral"
    if e == "smile":
        h = 0.35 * r * k
        draw.chord((fx - mw * (1 + 0.3 * k), my - h, fx + mw * (1 + 0.3 * k), my + h), 0, 180, fill=mouth_dark)
        draw.rectangle((fx - mw * 0.8, my, fx + mw * 0.8, my + h * 0.3), fill=(240, 240, 240))
    elif e == "tongue_out":
        draw.ellipse((fx - mw * 0.7, my - 0.08 * r, fx + mw * 0.7, my + 0.12 * r), fill=mouth_dark)
        draw.ellipse((fx - mw * 0.45, my, fx + mw * 0.45, my + 0.45 * r * k), fill=(235, 90, 120))
    elif e == "kissy":
        lr = 0.1 * r + 0.08 * r * k
        draw.ellipse((fx + shift * 0.3 - lr, my - lr, fx + shift * 0.3 + lr, my + lr), fill=(220, 20, 60))
        draw.ellipse(
            (fx + shift * 0.3 - lr * 0.35, my - lr * 0.35, fx + shift * 0.3 + lr * 0.35, my + lr * 0.35),
            fill=mouth_dark,
        )
    elif e == "puffy_cheeks":
        cr = 0.3 * r * k
        for side in (-1, 1):
            ccx = fx + side * 0.55 * rx
            draw.ellipse((ccx - cr, my - 0.15 * r - cr, ccx + cr, my - 0.15 * r + cr), fill=(235, 120, 110))
        draw.line((fx - mw * 0.4, my, fx + mw * 0.4, my), fill=lips, width=max(1, int(r * 0.07)))
    elif e == "surprise":
        h = 0.3 * r * k
        draw.ellipse((fx - mw * 0.5, my - h * 0.6, fx + mw * 0.5, my + h), fill=mouth_dark)
    elif face.talking and face.mouth_open:
        draw.ellipse((fx - mw * 0.6, my - 0.06 * r, fx + mw * 0.6, my + 0.1 * r), fill=mouth_dark)
    else:
        draw.line((fx - mw, my, fx + mw, my), fill=lips, width=max(1, int(r * 0.06)))


def motion_blur(image: Image.Image, length: int) -> Image.Image:
    """Camera shake: a diagonal line kernel of ``length`` pixels, applied to the whole image."""
    if length <= 1:
        return image
    import cv2

    kernel = np.eye(length, dtype=np.float32) / length
    return Image.fromarray(cv2.filter2D(np.asarray(image), -1, kernel, borderType=cv2.BORDER_REPLICATE))


def _skin(rng: np.random.Generator) -> tuple[int, int, int]:
    base = rng.uniform(0.45, 1.0)
    return int(230 * base + 20), int(180 * base + 20), int(140 * base + 20)


def random_face(rng: np.random.Generator) -> FaceControls:
    """Controls drawn so each label is balanced enough to learn."""
    expression = EXPRESSIONS[rng.integers(len(EXPRESSIONS))]
    return FaceControls(
        expression=expression,
        intensity=float(rng.uniform(0.6, 1.0)),
        eyes_closed=bool(rng.random() < 0.25),
        talking=bool(expression == "neutral" and rng.random() < 0.4),
        mouth_open=True,
        yaw=float(rng.choice([rng.uniform(-0.25, 0.25), rng.uniform(0.5, 0.9) * rng.choice([-1, 1])], p=[0.75, 0.25])),
    )


def render_face_crop(face: FaceControls, size: int, rng: np.random.Generator, blur: int = 0) -> Image.Image:
    """One face filling a ``size`` x ``size`` crop, on a random background."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(20, 120, 3)))
    r = size * rng.uniform(0.4, 0.47)
    c = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
    draw_face(ImageDraw.Draw(image), c[0], c[1], r, face, _skin(rng))
    return motion_blur(image, blur)


def write_face_expressions(
    root: str | Path,
    train_per_class: int = 60,
    val_per_class: int = 15,
    test_per_class: int = 15,
    image_size: int = 48,
    layout: str = "csv",
    seed: int = 0,
) -> Path:
    """Face crops per expression class. ``layout="csv"``: ``images/<split>/<n>.png`` and
    ``<split>.csv`` with columns image, expression, eyes_closed, talking, attending; ``"folders"``:
    ``<split>/<expression>/<n>.png`` (expression only)."""
    if layout not in ("csv", "folders"):
        raise ValueError(f"layout must be 'csv' or 'folders', got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, per_class in zip(SPLITS, (train_per_class, val_per_class, test_per_class)):
        rows = []
        for ci, expression in enumerate(EXPRESSIONS):
            for n in range(per_class):
                face = random_face(rng)
                face.expression = expression
                face.talking = bool(expression == "neutral" and rng.random() < 0.4)
                blur = int(rng.choice([0, 0, 0, 5]))
                image = render_face_crop(face, image_size, rng, blur)
                if layout == "csv":
                    name = f"images/{split}/{ci}_{n:05d}.png"
                    rows.append([name, expression, int(face.eyes_closed), int(face.talking), int(face.attending)])
                else:
                    name = f"{split}/{expression}/{n:05d}.png"
                path = root / name
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
        if layout == "csv":
            with open(root / f"{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["image", "expression", "eyes_closed", "talking", "attending"])
                writer.writerows(rows)
    return root


# --- clips --------------------------------------------------------------------------------------------


def _clip_plan(rng: np.random.Generator, num_frames: int, num_faces: int, width: int, height: int, kiss: bool):
    """Face placements and per-frame controls of one clip: neutral/talking/looking-away stretches,
    blinks, shake (blur), and one or two expression moments with a rising-falling intensity; in a kiss
    clip the two faces turn to each other and touch."""
    # Face 0 is the large foreground face; the others are smaller, behind.
    radii = [height * rng.uniform(0.24, 0.3)] + [height * rng.uniform(0.1, 0.14) for _ in range(num_faces - 1)]
    xs = np.linspace(0.2, 0.8, num_faces) * width if num_faces > 1 else np.array([width * rng.uniform(0.35, 0.65)])
    order = rng.permutation(num_faces)
    centres = [
        (float(xs[order[i]]), float(height * (0.55 if i == 0 else rng.uniform(0.25, 0.4)))) for i in range(num_faces)
    ]
    if kiss:
        radii = [height * 0.26, height * 0.26]
        centres = [(width * 0.3, height * 0.55), (width * 0.7, height * 0.55)]
    faces = [[FaceControls(expression="neutral", intensity=0.0) for _ in range(num_frames)] for _ in range(num_faces)]
    intensity = np.zeros(num_frames)
    kiss_frames = np.zeros(num_frames, bool)
    blur = np.zeros(num_frames, int)
    # Looking away at the start, talking stretches, blinks.
    away = int(rng.integers(0, 5))
    for i in range(num_faces):
        yaw_away = float(rng.uniform(0.5, 0.9) * rng.choice([-1, 1]))
        for t in range(away):
            faces[i][t].yaw = yaw_away
    talk_start = int(rng.integers(away, max(away + 1, num_frames // 3)))
    for t in range(talk_start, min(num_frames, talk_start + int(rng.integers(3, 7)))):
        for i in range(num_faces):
            faces[i][t].talking, faces[i][t].mouth_open = True, bool(t % 2 == 0)
    # Moments: expression (or kiss) rising then falling; the peak frame is the best one.
    n_moments = 1 if num_frames < 40 else 2
    span = num_frames // n_moments
    moments = []
    for m in range(n_moments):
        length = int(rng.integers(7, 11))
        start = m * span + int(rng.integers(max(1, span // 3), max(2, span - length)))
        start = min(start, num_frames - length)
        peak = start + length // 2
        ramp = np.clip(1.0 - np.abs(np.arange(length) - length // 2) / (length / 2 + 0.5), 0.0, 1.0)
        intensity[start : start + length] = np.maximum(intensity[start : start + length], ramp)
        expression = EXPRESSIONS[1 + int(rng.integers(len(EXPRESSIONS) - 1))]
        # The foreground face always joins in; a background face half the time (the moment is still
        # worth capturing: the foreground counts most).
        joins = [i == 0 or kiss or bool(rng.random() < 0.5) for i in range(num_faces)]
        for t in range(start, start + length):
            for i in range(num_faces):
                if joins[i]:
                    faces[i][t] = FaceControls(expression=expression, intensity=float(intensity[t]))
                if kiss:
                    faces[i][t].expression = "kissy"
                    faces[i][t].yaw = 0.8 if i == 0 else -0.8
            if kiss and intensity[t] >= 0.5:
                kiss_frames[t] = True
        # A blink or a shake near the peak sometimes moves the best frame.
        if rng.random() < 0.5:
            t = peak + int(rng.choice([-1, 1]))
            if rng.random() < 0.5:
                blur[t] = 7
            else:
                for i in range(num_faces):
                    faces[i][t].eyes_closed = True
        moments.append((start, start + length - 1, expression))
    # A distractor: a small background face alone makes an expression (not a moment).
    if num_faces > 1 and not kiss:
        free = [t for t in range(away, num_frames) if intensity[t] == 0 and not faces[0][t].talking]
        if free:
            t0 = free[int(rng.integers(len(free)))]
            for t in range(t0, min(num_frames, t0 + 3)):
                if intensity[t] == 0:
                    faces[num_faces - 1][t] = FaceControls(expression="smile", intensity=1.0)
    for t in rng.choice(num_frames, size=max(1, num_frames // 15), replace=False):  # stray blinks
        if intensity[t] == 0:
            faces[int(rng.integers(num_faces))][t].eyes_closed = True
    return radii, centres, faces, kiss_frames, blur, moments


def _kiss_offset(t_kiss: bool, width: int) -> float:
    return 0.17 * width if t_kiss else 0.0


def render_clip_frame(
    width: int, height: int, radii, centres, faces_t: list[FaceControls], kiss: bool, blur: int, background, skins
) -> tuple[Image.Image, list[list[float]]]:
    """One frame and its face boxes (x0, y0, x1, y1 pixels)."""
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    boxes = []
    for i, (r, (cx, cy), face) in enumerate(zip(radii, centres, faces_t)):
        if kiss:  # the two faces move together and touch
            cx = cx + (1 if i == 0 else -1) * _kiss_offset(True, width)
        draw_face(draw, cx, cy, r, face, skins[i])
        boxes.append([round(cx - r, 1), round(cy - r, 1), round(cx + r, 1), round(cy + r, 1)])
    if blur:
        image = motion_blur(image, blur)
    return image, boxes


def face_importance(box, face: FaceControls, width: int, height: int) -> float:
    """How much a face counts for its frame (the attention label): its area, times a centre weight
    (a Gaussian of the box centre's distance from the frame centre, sd 0.35 of the frame), times its
    gaze (a face looking away counts 0.3) and its expression (1 + intensity for a key expression).
    Size alone does not give it: a large face at the edge looking away counts less than a centred one."""
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    dx, dy = ((x0 + x1) / 2 / width - 0.5), ((y0 + y1) / 2 / height - 0.5)
    centre = float(np.exp(-(dx * dx + dy * dy) / (2 * 0.35**2)))
    gaze = 1.0 if face.attending else 0.3
    shown = face.intensity if face.expression != "neutral" and face.intensity >= 0.5 else 0.0
    return float(area * centre * gaze * (1.0 + shown))


def write_photobooth_clips(
    root: str | Path,
    train_clips: int = 24,
    val_clips: int = 6,
    test_clips: int = 6,
    frames_per_clip: int = 48,
    width: int = 160,
    height: int = 96,
    max_faces: int = 4,
    kiss_fraction: float = 0.25,
    fps: float = 10.0,
    seed: int = 0,
) -> Path:
    """Clips ``<split>/<clip>.mp4`` and ``<split>.json`` (datamodules/photobooth.py describes the keys)."""
    from core.video import write_video

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in zip(SPLITS, (train_clips, val_clips, test_clips)):
        (root / split).mkdir(parents=True, exist_ok=True)
        clips = []
        for c in range(count):
            kiss = bool(rng.random() < kiss_fraction)
            num_faces = 2 if kiss else int(rng.integers(1, max_faces + 1))
            radii, centres, faces, kiss_frames, blur, moments = _clip_plan(
                rng, frames_per_clip, num_faces, width, height, kiss
            )
            background = tuple(int(v) for v in rng.integers(20, 120, 3))
            skins = [_skin(rng) for _ in range(num_faces)]
            frames, labels = [], []
            for t in range(frames_per_clip):
                faces_t = [faces[i][t] for i in range(num_faces)]
                image, boxes = render_clip_frame(
                    width, height, radii, centres, faces_t, bool(kiss_frames[t]), int(blur[t]), background, skins
                )
                frames.append(np.asarray(image))
                labels.append(
                    {
                        "faces": [
                            {
                                "box": box,
                                "expression": f.expression if f.intensity >= 0.5 else "neutral",
                                "eyes_closed": bool(f.eyes_closed),
                                "talking": bool(f.talking),
                                "attending": bool(f.attending),
                                "intensity": round(float(f.intensity), 4) if f.intensity >= 0.5 else 0.0,
                                "importance": round(face_importance(box, f, width, height), 3),
                            }
                            for box, f in zip(boxes, faces_t)
                        ],
                        "kiss": bool(kiss_frames[t]),
                        # how good the kiss is: the moment's intensity, highest on its best frame
                        "kiss_quality": round(float(faces[0][t].intensity), 4) if kiss_frames[t] else 0.0,
                        "blurred": bool(blur[t] > 0),
                    }
                )
            best_moments = []
            for start, end, expression in moments:
                ok = [
                    t
                    for t in range(start, end + 1)
                    if not blur[t] and not any(faces[i][t].eyes_closed for i in range(num_faces))
                ]
                peak_value = max(faces[0][t].intensity for t in ok) if ok else 0.0
                best = [t for t in ok if faces[0][t].intensity >= peak_value - 1e-6]
                good = [t for t in ok if faces[0][t].intensity >= 0.5]
                if good:
                    best_moments.append(
                        {
                            "start": min(good),
                            "end": max(good),
                            "best": int(best[0]),
                            "kind": "kiss" if kiss else expression,
                        }
                    )
            name = f"{split}/{c:04d}.mp4"
            write_video(root / name, frames, fps=fps)
            clips.append(
                {"video": name, "fps": fps, "width": width, "height": height, "frames": labels, "moments": best_moments}
            )
        (root / f"{split}.json").write_text(json.dumps({"clips": clips}, indent=1))
    return root
