"""Photobooth data: face-expression crops and clips with per-frame labels of moments worth capturing.

Face expressions (``PhotoboothFacesDataModule``), either layout under ``root``:

- CSV: ``<split>.csv`` with the header ``image,expression,eyes_closed,talking,attending``; ``image``
  is a path inside ``root``, ``expression`` one of :data:`EXPRESSIONS`, the others 0/1 (empty = not
  labelled, ignored by the loss).
- Class folders: ``<split>/<expression>/<image>.png|.jpg`` (the expression only).

Clips (``PhotoboothClipsDataModule``): ``<split>.json`` = ``{"clips": [clip, ...]}``, each clip
``{"video": "<split>/<name>.mp4" (inside root), "fps", "frames": [frame, ...], "moments": [...]}``,
one frame entry per video frame: ``{"faces": [{"box": [x0, y0, x1, y1] (pixels), "expression",
"eyes_closed", "talking", "attending", "intensity", "importance"}], "kiss": bool, "kiss_quality"}``;
``moments`` are the labelled moments worth capturing, ``{"start", "end" (inclusive frame indices),
"best" (the best frame), "kind"}``. Optional quality labels (what the shutter ranks frames by):
``intensity`` in [0, 1], how strongly a face shows its expression (default 1 for a key expression, 0
for neutral); ``importance`` > 0, how much a face counts for the frame (default its box area);
``kiss_quality`` in [0, 1], how good the kiss is (default 1 on a kiss frame, else 0).
Splits: train, val, test. datamodules/synthetic/photobooth.py writes both layouts."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, ensure_generated, line_of_key, read_json, require_file, resolve_inside
from core.images import IMAGE_SUFFIXES, decode_image

EXPRESSIONS = ("neutral", "smile", "tongue_out", "kissy", "puffy_cheeks", "surprise")
KEY_EXPRESSIONS = EXPRESSIONS[1:]
ATTRIBUTES = ("eyes_closed", "talking", "attending")
CSV_COLUMNS = ("image", "expression", *ATTRIBUTES)
SPLITS = ("train", "val", "test")
# Crops and frames are scaled to [-2, 2]: (x / 255 - 0.5) / 0.25.
MEAN, STD = 0.5, 0.25


def normalize(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W), scaled as every Photobooth model expects."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).sub_(MEAN).div_(STD)
    return t.movedim(-1, -3)


def crop_faces(frame: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Square crops (N, size, size, 3) uint8 of ``boxes`` (N, 4: x0 y0 x1 y1 pixels) from ``frame``
    (H, W, 3); the square is centred on the box with its longer side, padded with zeros at the edges."""
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        side = max(x1 - x0, y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # An affine map of the square onto the crop: bilinear, border zeros.
        scale = size / side
        m = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], np.float64)
        out[i] = cv2.warpAffine(
            frame,
            m,
            (size, size),
            flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )
    return out


def blur_score(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (Pech-Pacheco et al., ICPR 2000): sharp edges give
    a large second derivative, motion blur flattens it. ``image`` is uint8 (H, W, 3) or (H, W)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F, ksize=1).var())


def face_blur_scores(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """:func:`blur_score` of each face box at the frame's own resolution (no resampling, which would
    itself blur small faces), inner 80% of the box so the background edge does not count."""
    h, w = frame.shape[:2]
    out = np.zeros(len(boxes))
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        a, b = int(max(0, x0 + mx)), int(min(w, x1 - mx))
        c, d = int(max(0, y0 + my)), int(min(h, y1 - my))
        out[i] = blur_score(frame[c:d, a:b]) if b - a >= 3 and d - c >= 3 else 0.0
    return out


# --- face expressions ---------------------------------------------------------------------------------


def _flag(value: str, path: Path, line: int, column: str) -> int:
    if value == "":
        return -1
    if value not in ("0", "1"):
        raise DataFormatError(path, f"column {column!r} must be 0, 1 or empty, got {value!r}", line)
    return int(value)


def read_expression_csv(path: str | Path, root: str | Path) -> list[tuple[Path, list[int]]]:
    """``(image path, [expression, eyes_closed, talking, attending])`` per row; -1 = not labelled."""
    path = require_file(path, "face-expression CSV")
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
            raise DataFormatError(path, f"header must be {','.join(CSV_COLUMNS)}, got {header}", 1)
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(CSV_COLUMNS):
                raise DataFormatError(path, f"expected {len(CSV_COLUMNS)} columns, got {len(row)}", line)
            image, expression, *flags = (v.strip() for v in row)
            if expression not in EXPRESSIONS:
                raise DataFormatError(
                    path, f"unknown expression {expression!r} (one of {', '.join(EXPRESSIONS)})", line
                )
            file = resolve_inside(root, image, path, line)
            labels = [EXPRESSIONS.index(expression)] + [_flag(v, path, line, c) for v, c in zip(flags, ATTRIBUTES)]
            rows.append((file, labels))
    return rows


def read_expression_folders(folder: str | Path) -> list[tuple[Path, list[int]]]:
    """``<folder>/<expression>/<image>`` -> the same rows as the CSV, attributes not labelled."""
    folder = Path(folder)
    rows = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in EXPRESSIONS:
            raise DataFormatError(sub, f"class folder {sub.name!r} is not an expression ({', '.join(EXPRESSIONS)})")
        for file in sorted(sub.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                rows.append((file, [EXPRESSIONS.index(sub.name), -1, -1, -1]))
    return rows


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); an unreadable file raises DataFormatError naming it."""
    return np.asarray(decode_image(path, "RGB", what="image"))


class FaceExpressionDataset(Dataset):
    """Face crops resized to ``image_size`` with labels (expression, eyes_closed, talking, attending)."""

    def __init__(self, rows: list[tuple[Path, list[int]]], image_size: int, train: bool) -> None:
        self.rows, self.image_size, self.train = rows, image_size, train

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        path, labels = self.rows[index]
        image = cv2.resize(read_image(path), (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        if self.train and torch.rand(()) < 0.5:
            image = image[:, ::-1]
        return normalize(image), torch.tensor(labels, dtype=torch.long)


class PhotoboothFacesDataModule(pl.LightningDataModule):
    """Face-expression crops (CSV or class folders, found by what ``root`` holds)."""

    def __init__(
        self,
        root: str,
        num_classes: int = len(EXPRESSIONS),
        image_size: int = 48,
        batch_size: int = 64,
        num_workers: int = 0,
        generator: Callable[[Path], Any] | None = None,
    ) -> None:
        super().__init__()
        self.root, self.image_size, self.batch_size, self.num_workers = Path(root), image_size, batch_size, num_workers
        self.generator = generator
        if num_classes != len(EXPRESSIONS):
            raise ValueError(f"num_classes must be {len(EXPRESSIONS)} ({', '.join(EXPRESSIONS)}), got {num_classes}")
        self.class_names = list(EXPRESSIONS)
        self.num_classes = len(EXPRESSIONS)
        self.datasets: dict[str, FaceExpressionDataset] = {}

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)

    def rows(self, split: str) -> list[tuple[Path, list[int]]]:
        if (self.root / f"{split}.csv").exists():
            return read_expression_csv(self.root / f"{split}.csv", self.root)
        if (self.root / split).is_dir():
            return read_expression_folders(self.root / split)
        raise FileNotFoundError(f"{self.root}: expected {split}.csv or a {split}/<expression>/ folder")

    def setup(self, stage: str | None = None) -> None:
        ensure_generated(self.root, self.generator)
        for split in SPLITS:
            if split not in self.datasets:
                self.datasets[split] = FaceExpressionDataset(self.rows(split), self.image_size, split == "train")

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=split == "train",
            num_workers=self.num_workers,
            drop_last=split == "train" and len(self.datasets[split]) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


# --- clips ------------------------------------------------------------------------------------------


def _bool(value: Any, path: Path, line: int | None, key: str) -> bool:
    if not isinstance(value, bool):
        raise DataFormatError(path, f"{key!r} must be true or false, got {value!r}", line)
    return value


def _fraction(value: Any, path: Path, line: int | None, key: str, upper: float | None = 1.0) -> float:
    """A number in [0, upper] (``upper=None``: any positive number)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (0.0 <= value <= upper if upper is not None else value > 0)
    if not ok:
        wanted = f"a number in [0, {upper:g}]" if upper is not None else "a positive number"
        raise DataFormatError(path, f"{key!r} must be {wanted}, got {value!r}", line)
    return float(value)


def read_clips(path: str | Path, root: str | Path) -> list[dict]:
    """Validate ``<split>.json``; each clip gets ``path`` (its video, inside ``root``), ``boxes``
    (per frame (N, 4) float32), ``face_labels`` (per frame (N, 4) int64), ``face_quality`` (per frame
    (N, 2) float32: intensity, importance), ``kiss`` (T,) bool and ``kiss_quality`` (T,) float32."""
    path = Path(path)
    data = read_json(path, "Photobooth clips JSON")
    if not isinstance(data, dict) or not isinstance(data.get("clips"), list):
        raise DataFormatError(path, 'expected {"clips": [...]} at the top level', 1)
    clips = []
    lines = _video_lines(path)
    for c, clip in enumerate(data["clips"]):
        name = clip.get("video") if isinstance(clip, dict) else None
        line = lines.get(name) if isinstance(name, str) else line_of_key(path, "video")
        if not isinstance(name, str):
            raise DataFormatError(path, f"clip {c}: missing 'video'", line)
        frames = clip.get("frames")
        if not isinstance(frames, list) or not frames:
            raise DataFormatError(path, f"clip {c} ({name}): 'frames' must be a non-empty list", line)
        boxes, labels, quality, kiss, kiss_quality = [], [], [], [], []
        for t, frame in enumerate(frames):
            faces = frame.get("faces", []) if isinstance(frame, dict) else None
            if not isinstance(faces, list):
                raise DataFormatError(path, f"clip {c} ({name}) frame {t}: 'faces' must be a list", line)
            b, lab, q = [], [], []
            for face in faces:
                box = face.get("box")
                if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                    raise DataFormatError(
                        path, f"clip {c} ({name}) frame {t}: box must be 4 numbers, got {box!r}", line
                    )
                if box[2] <= box[0] or box[3] <= box[1]:
                    raise DataFormatError(path, f"clip {c} ({name}) frame {t}: empty box {box}", line)
                expression = face.get("expression", "neutral")
                if expression not in EXPRESSIONS:
                    raise DataFormatError(path, f"clip {c} ({name}) frame {t}: unknown expression {expression!r}", line)
                b.append(box)
                lab.append(
                    [EXPRESSIONS.index(expression)]
                    + [int(_bool(face.get(a, False), path, line, a)) for a in ATTRIBUTES]
                )
                area = (box[2] - box[0]) * (box[3] - box[1])
                q.append(
                    [
                        _fraction(face.get("intensity", float(expression != "neutral")), path, line, "intensity"),
                        _fraction(face.get("importance", area), path, line, "importance", upper=None),
                    ]
                )
            boxes.append(np.asarray(b, np.float32).reshape(-1, 4))
            labels.append(np.asarray(lab, np.int64).reshape(-1, 4))
            quality.append(np.asarray(q, np.float32).reshape(-1, 2))
            kiss.append(_bool(frame.get("kiss", False), path, line, "kiss"))
            kiss_quality.append(_fraction(frame.get("kiss_quality", float(kiss[-1])), path, line, "kiss_quality"))
        moments = []
        for m in clip.get("moments", []):
            try:
                s, e, b = int(m["start"]), int(m["end"]), int(m["best"])
            except (KeyError, TypeError, ValueError):
                raise DataFormatError(
                    path, f"clip {c} ({name}): a moment needs integer start, end, best, got {m!r}", line
                ) from None
            if not 0 <= s <= b <= e < len(frames):
                raise DataFormatError(
                    path, f"clip {c} ({name}): moment {m} outside 0..{len(frames) - 1} or best not inside", line
                )
            moments.append((s, e, b))
        clips.append(
            {
                "path": resolve_inside(root, name, path, line),
                "fps": float(clip.get("fps", 10.0)),
                "boxes": boxes,
                "face_labels": labels,
                "face_quality": quality,
                "kiss": np.asarray(kiss, bool),
                "kiss_quality": np.asarray(kiss_quality, np.float32),
                "moments": moments,
            }
        )
    return clips


def _video_lines(path: Path) -> dict[str, int]:
    """The line of each ``"video": "<name>"`` in the file, to name it in an error."""
    import re

    found: dict[str, int] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for match in re.finditer(r'"video"\s*:\s*"([^"]*)"', text):
            found.setdefault(match.group(1), number)
    return found


def expression_target(labels: np.ndarray, quality: np.ndarray) -> float:
    """The frame's global expression quality: the importance-weighted mean over its faces of the
    expression intensity of each face that attends to the camera with a key expression (0 for the
    others). ``quality`` (N, 2) holds each face's intensity and importance (read_clips)."""
    if len(labels) == 0:
        return 0.0
    intensity, importance = quality[:, 0], quality[:, 1]
    hit = (labels[:, 0] > 0) & (labels[:, 3] == 1)
    return float((importance * hit * intensity).sum() / importance.sum())


def pad_faces(
    crops: np.ndarray, boxes: np.ndarray, labels: np.ndarray, max_faces: int, width: int, height: int, blur: np.ndarray
):
    """Faces padded to ``max_faces`` (the largest kept): crops (F, s, s, 3), boxes normalized to [0, 1]
    (F, 4), labels (F, 4) with -1 for padding, mask (F,) True for a real face, blur scores (F,)."""
    order = np.argsort(-((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])), kind="stable")[:max_faces]
    n, s = len(order), crops.shape[1] if crops.ndim == 4 else 1
    out_crops = np.zeros((max_faces, s, s, 3), np.uint8)
    out_boxes = np.zeros((max_faces, 4), np.float32)
    out_labels = np.full((max_faces, 4), -1, np.int64)
    mask = np.zeros(max_faces, bool)
    out_blur = np.zeros(max_faces, np.float64)
    if n:
        out_blur[:n] = blur[order]
        out_crops[:n] = crops[order]
        out_boxes[:n] = boxes[order] / np.array([width, height, width, height], np.float32)
        out_labels[:n] = labels[order]
        mask[:n] = True
    return out_crops, out_boxes, out_labels, mask, out_blur


class ClipData:
    """A clip's decoded frames and labels, prepared as the models take them."""

    def __init__(self, clip: dict, crop_size: int, frame_size: tuple[int, int], max_faces: int) -> None:
        from core.video import open_video, read_frames

        reader = open_video(clip["path"])
        if len(reader) != len(clip["boxes"]):
            raise DataFormatError(
                clip["path"], f"video has {len(reader)} frames but its labels list {len(clip['boxes'])}"
            )
        self.frames = read_frames(reader, range(len(reader)), clip["path"])
        self.clip, self.crop_size, self.frame_size, self.max_faces = clip, crop_size, frame_size, max_faces

    def item(self, t: int) -> dict[str, Any]:
        out = frame_inputs(
            self.frames[t],
            self.clip["boxes"][t],
            self.crop_size,
            self.frame_size,
            self.max_faces,
            self.clip["face_labels"][t],
        )
        # Quality, not presence: the frame to keep is where the expression (or kiss) is at its best.
        out["kiss"] = torch.tensor(float(self.clip["kiss_quality"][t]))
        out["expression_target"] = torch.tensor(
            expression_target(self.clip["face_labels"][t], self.clip["face_quality"][t])
        )
        return out


def frame_inputs(
    frame: np.ndarray,
    boxes: np.ndarray,
    crop_size: int,
    frame_size: tuple[int, int],
    max_faces: int,
    labels: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """What the Photobooth model takes for one RGB frame (H, W, 3) and its face boxes (N, 4 pixels):
    the resized frame, face crops padded to ``max_faces`` with their mask, normalized boxes, labels
    (-1 where unknown) and each face's blur score. Training, validation and the run command share it."""
    h, w = frame.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if labels is None:
        labels = np.full((len(boxes), 4), -1, np.int64)
    crops, nboxes, nlabels, mask, blur = pad_faces(
        crop_faces(frame, boxes, crop_size), boxes, labels, max_faces, w, h, face_blur_scores(frame, boxes)
    )
    small = cv2.resize(frame, (frame_size[1], frame_size[0]), interpolation=cv2.INTER_AREA)
    return {
        "frame": normalize(small),
        "crops": normalize(crops),
        "blur": torch.from_numpy(blur),
        "boxes": torch.from_numpy(nboxes),
        "face_labels": torch.from_numpy(nlabels),
        "mask": torch.from_numpy(mask),
    }


class ClipFramesDataset(Dataset):
    """Training: one item per (clip, frame); a worker decodes each clip once and keeps it."""

    def __init__(self, clips: list[dict], crop_size: int, frame_size: tuple[int, int], max_faces: int) -> None:
        self.clips, self.args = clips, (crop_size, frame_size, max_faces)
        self.index = [(c, t) for c, clip in enumerate(clips) for t in range(len(clip["boxes"]))]
        self._decoded: dict[int, ClipData] = {}

    def __len__(self) -> int:
        return len(self.index)

    def clip_data(self, c: int) -> ClipData:
        if c not in self._decoded:
            self._decoded[c] = ClipData(self.clips[c], *self.args)
        return self._decoded[c]

    def __getitem__(self, i: int) -> dict[str, Any]:
        c, t = self.index[i]
        return self.clip_data(c).item(t)


class WholeClipDataset(ClipFramesDataset):
    """Validation/test: one item per clip, every frame stacked, with its labelled moments."""

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, c: int) -> dict[str, Any]:
        data = self.clip_data(c)
        items = [data.item(t) for t in range(len(data.frames))]
        out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        out["clip_index"] = c
        out["moments"] = list(self.clips[c]["moments"])
        out["fps"] = self.clips[c]["fps"]
        self._decoded.pop(c, None)
        return out


def first_item(batch: list[dict]) -> dict:
    """Collate of whole clips: one clip per batch, kept as it is."""
    if len(batch) != 1:
        raise ValueError("whole-clip batches hold one clip (batch_size must be 1)")
    return batch[0]


class PhotoboothClipsDataModule(pl.LightningDataModule):
    """Clips with per-frame face boxes and labels; frames for training, whole clips for val/test."""

    def __init__(
        self,
        root: str,
        num_classes: int = len(EXPRESSIONS),
        crop_size: int = 48,
        frame_size: tuple[int, int] | list[int] = (96, 160),
        max_faces: int = 4,
        batch_size: int = 32,
        num_workers: int = 0,
        generator: Callable[[Path], Any] | None = None,
    ) -> None:
        super().__init__()
        self.root, self.crop_size, self.frame_size = Path(root), crop_size, tuple(frame_size)
        self.max_faces, self.batch_size, self.num_workers, self.generator = (
            max_faces,
            batch_size,
            num_workers,
            generator,
        )
        if num_classes != len(EXPRESSIONS):
            raise ValueError(f"num_classes must be {len(EXPRESSIONS)} ({', '.join(EXPRESSIONS)}), got {num_classes}")
        self.class_names = list(EXPRESSIONS)
        self.num_classes = len(EXPRESSIONS)
        self.clips: dict[str, list[dict]] = {}

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)

    def setup(self, stage: str | None = None) -> None:
        ensure_generated(self.root, self.generator)
        for split in SPLITS:
            if split not in self.clips:
                self.clips[split] = read_clips(self.root / f"{split}.json", self.root)

    def train_dataloader(self) -> DataLoader:
        dataset = ClipFramesDataset(self.clips["train"], self.crop_size, self.frame_size, self.max_faces)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=len(dataset) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def _clips(self, split: str) -> DataLoader:
        dataset = WholeClipDataset(self.clips[split], self.crop_size, self.frame_size, self.max_faces)
        return DataLoader(dataset, batch_size=1, num_workers=self.num_workers, collate_fn=first_item)

    def val_dataloader(self) -> DataLoader:
        return self._clips("val")

    def test_dataloader(self) -> DataLoader:
        return self._clips("test")
