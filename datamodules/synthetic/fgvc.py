"""Small fine-grained data sets in each FGVC6 competition's published layout.

Every image shows one "specimen": a body with a head, a tail and markings. Classes differ only in
small parts (the number and kind of markings on the body, the head's shape, a forked or straight
tail, a fin), never in overall colour: body colour, background, position, size and mirroring are
drawn per image from the same distribution for every class. The class index is a mixed-radix
number over the parts, so neighbouring classes differ in one small part (species of one genus
differ only in their markings) and the taxonomy (genus, family, order) follows the parts.

Training splits are long-tailed (class c's count falls geometrically with its random rank, from
``max_per_class`` down to ``max_per_class / imbalance``); validation follows the training prior;
the test split's prior is shifted (``test_prior``: reversed tail, uniform, or as training).
Labeled test sets come with a ``solution.csv`` in the competition's submission layout, as Kaggle
publishes after a competition, so a submission can be scored."""

from __future__ import annotations

import colorsys
import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datamodules.iwildcam2019 import CLASS_NAMES as IWILDCAM_CLASS_NAMES

# The parts, fastest-varying first: class c has markings c % 4, head (c // 4) % 3, tail (c // 12) % 2,
# body (c // 24) % 2, fin (c // 48) % 2.
MARKINGS = ("one_spot", "two_spots", "three_spots", "bar")
HEADS = ("round", "square", "pointed")
TAILS = ("straight", "forked")
BODIES = ("oval", "long")
FINS = ("no_fin", "fin")
MAX_CLASSES = len(MARKINGS) * len(HEADS) * len(TAILS) * len(BODIES) * len(FINS)  # 96


def class_parts(c: int) -> dict[str, str]:
    if not 0 <= c < MAX_CLASSES:
        raise ValueError(f"class {c}: the fine-grained generator draws at most {MAX_CLASSES} classes")
    return {
        "markings": MARKINGS[c % 4],
        "head": HEADS[(c // 4) % 3],
        "tail": TAILS[(c // 12) % 2],
        "body": BODIES[(c // 24) % 2],
        "fin": FINS[(c // 48) % 2],
    }


def taxonomy(c: int) -> dict[str, str]:
    """iNaturalist-style taxonomy of class c: species of a genus share all parts but the markings."""
    return {
        "kingdom": "Animalia",
        "phylum": "Chordata",
        "class": f"Class{c // 48:02d}",
        "order": f"Order{c // 24:02d}",
        "family": f"Family{c // 12:02d}",
        "genus": f"Genus{c // 4:02d}",
    }


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95))
    return int(r * 255), int(g * 255), int(b * 255)


def render_specimen(
    parts: dict[str, str] | dict[str, bool],
    size: int,
    rng: np.random.Generator,
    domain: int = 0,
    background: tuple[int, int, int] | None = None,
) -> Image.Image:
    """One RGB image of a specimen with the given parts. ``parts`` is a class's parts (see
    :func:`class_parts`) or, for multi-label sets, flags {"spot", "bar", "fin", "forked", ...}.
    ``domain`` 1 draws on a plain light "herbarium sheet" instead of a textured field."""
    if background is None:
        background = tuple(int(v) for v in (rng.integers(200, 245, 3) if domain else rng.integers(10, 110, 3)))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    if domain == 0:  # a textured field: a few random blobs
        for _ in range(3):
            x, y = rng.uniform(0, size, 2)
            r = size * rng.uniform(0.05, 0.15)
            shade = tuple(int(np.clip(v + rng.integers(-40, 40), 0, 255)) for v in background)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=shade)
    body_colour = _random_colour(rng)
    mark_colour = tuple(255 - v for v in body_colour)
    # the whole specimen (tail tip to head, about 0.9 s) stays inside the image: parts are never cut off
    s = size * rng.uniform(0.75, 0.9)
    cx = size / 2 + rng.uniform(-0.05, 0.05) * size
    cy = size / 2 + rng.uniform(-0.05, 0.05) * size
    flip = -1 if rng.random() < 0.5 else 1
    long_body = parts.get("body") == "long" or parts.get("long") is True
    half_w = s * (0.30 if long_body else 0.24)
    half_h = s * (0.11 if long_body else 0.16)
    draw.ellipse((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=body_colour)
    # head on the +x side (mirrored by flip)
    hx, hr = cx + flip * (half_w + s * 0.06), s * 0.08
    head = parts.get("head", "round")
    if head == "square" or parts.get("square_head") is True:
        draw.rectangle((hx - hr, cy - hr, hx + hr, cy + hr), fill=body_colour)
    elif head == "pointed" or parts.get("pointed_head") is True:
        draw.polygon(
            [(hx - flip * hr, cy - hr), (hx - flip * hr, cy + hr), (hx + flip * hr * 1.6, cy)], fill=body_colour
        )
    else:
        draw.ellipse((hx - hr, cy - hr, hx + hr, cy + hr), fill=body_colour)
    # tail on the -x side
    tx = cx - flip * half_w
    w = max(1, int(s * 0.035))
    if parts.get("tail") == "forked" or parts.get("forked") is True:
        draw.line([(tx, cy), (tx - flip * s * 0.14, cy - s * 0.09)], fill=body_colour, width=w)
        draw.line([(tx, cy), (tx - flip * s * 0.14, cy + s * 0.09)], fill=body_colour, width=w)
    else:
        draw.line([(tx, cy), (tx - flip * s * 0.16, cy)], fill=body_colour, width=w)
    if parts.get("fin") == "fin" or parts.get("fin") is True:
        draw.polygon(
            [(cx - s * 0.06, cy - half_h + 1), (cx + s * 0.06, cy - half_h + 1), (cx, cy - half_h - s * 0.1)],
            fill=body_colour,
        )
    # markings: small parts on the body, in the body's complementary colour
    spot = s * 0.045
    markings = parts.get("markings")
    count = {"one_spot": 1, "two_spots": 2, "three_spots": 3}.get(markings or "", 0)
    if parts.get("spot") is True:
        count = max(count, 1)
    for k in range(count):
        x = cx + (k - (count - 1) / 2) * spot * 2.6
        draw.ellipse((x - spot, cy - spot, x + spot, cy + spot), fill=mark_colour)
    if markings == "bar" or parts.get("bar") is True:
        draw.rectangle((cx - spot * 0.6, cy - half_h, cx + spot * 0.6, cy + half_h), fill=mark_colour)
    if parts.get("eye") is True:
        draw.ellipse((hx - spot * 0.7, cy - spot * 0.7, hx + spot * 0.7, cy + spot * 0.7), fill=mark_colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 0.4)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


# --- class priors and splits -------------------------------------------------------------------------


def long_tail_counts(num_classes: int, max_per_class: int, imbalance: float, rng: np.random.Generator) -> np.ndarray:
    """Per-class counts falling geometrically from ``max_per_class`` to ``max_per_class / imbalance``
    over a random ranking of the classes (so the head is not the low class indices)."""
    rank = rng.permutation(num_classes)
    exponent = rank / max(1, num_classes - 1)
    return np.maximum(1, np.round(max_per_class * imbalance ** (-exponent))).astype(int)


def test_counts(train: np.ndarray, total: int, prior: str) -> np.ndarray:
    """Test counts summing to about ``total`` under a prior shifted from the training counts."""
    if prior == "train":
        weights = train.astype(float)
    elif prior == "uniform":
        weights = np.ones(len(train))
    elif prior == "reversed":  # the head becomes the tail: class of rank r takes rank C-1-r's share
        order = np.argsort(-train, kind="stable")
        weights = np.empty(len(train))
        weights[order] = np.sort(train)
    else:
        raise ValueError(f"test_prior={prior!r}: choose train, uniform or reversed")
    return np.maximum(1, np.round(total * weights / weights.sum())).astype(int)


def fine_grained_splits(
    num_classes: int,
    max_per_class: int,
    imbalance: float,
    val_fraction: float,
    test_total: int,
    test_prior: str,
    seed: int,
) -> dict[str, list[int]]:
    """Class index of every image of train, val (training prior) and test (shifted prior), shuffled."""
    rng = np.random.default_rng(seed)
    train = long_tail_counts(num_classes, max_per_class, imbalance, rng)
    val = np.maximum(1, np.round(train * val_fraction)).astype(int)
    test = test_counts(train, test_total, test_prior)
    out = {}
    for split, counts in (("train", train), ("val", val), ("test", test)):
        labels = np.repeat(np.arange(num_classes), counts)
        out[split] = rng.permutation(labels).tolist()
    return out


MIXED_DOMAINS = -1  # domain of class c: (c // 12) % 2, i.e. alternate families on field / sheet


def _images(
    labels: list[int], size: int, seed: int, domain: int = 0, first_class: int = 0, class_step: int = 1
) -> Iterator[tuple[int, int, Image.Image]]:
    """Render every label's specimen; class c draws the parts of generator class
    ``first_class + c * class_step`` (a disjoint set of species for a transfer target; every other
    species for an easier set)."""
    rng = np.random.default_rng(seed)
    for i, c in enumerate(labels):
        parts_of = first_class + c * class_step
        drawn_domain = (parts_of // 12) % 2 if domain == MIXED_DOMAINS else domain
        yield i, c, render_specimen(class_parts(parts_of), size, rng, drawn_domain)


def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _split_args(num_classes, max_per_class, imbalance, val_fraction, test_total, test_prior, seed):
    return fine_grained_splits(num_classes, max_per_class, imbalance, val_fraction, test_total, test_prior, seed)


# --- the layouts ---------------------------------------------------------------------------------------


def write_inaturalist2019(
    root: str | Path,
    num_classes: int = 24,
    max_per_class: int = 60,
    imbalance: float = 10.0,
    val_fraction: float = 0.25,
    test_total: int = 300,
    test_prior: str = "reversed",
    image_size: int = 64,
    seed: int = 0,
    domain: int = 0,
    class_step: int = 1,
) -> Path:
    """iNaturalist 2019: ``train2019.json`` / ``val2019.json`` / ``test2019.json`` (COCO style:
    ``images`` {id, file_name, width, height}, ``annotations`` {id, image_id, category_id},
    ``categories`` {id, name, kingdom .. genus}), images under
    ``train_val2019/<super>/<category id>/<hash>.jpg`` and ``test2019/<hash>.jpg``.
    ``domain=MIXED_DOMAINS`` draws alternate families on a field and on a sheet; ``class_step`` 2 draws
    every other species (1 or 3 spots, no 2 spots or bar: an easier set)."""
    root = Path(root)
    splits = _split_args(num_classes, max_per_class, imbalance, val_fraction, test_total, test_prior, seed)
    root.mkdir(parents=True, exist_ok=True)
    categories = [{"id": c, "name": f"Genus{c // 4:02d} species{c % 4}", **taxonomy(c)} for c in range(num_classes)]
    image_id = 0
    solution = []
    for offset, split in enumerate(("train", "val", "test")):
        images, annotations = [], []
        for _, c, image in _images(splits[split], image_size, seed + 101 * (offset + 1), domain, 0, class_step):
            name = f"{image_id:08x}{c:03d}.jpg"
            rel = f"test2019/{name}" if split == "test" else f"train_val2019/Animalia/{c}/{name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / rel, quality=92)
            images.append(
                {
                    "id": image_id,
                    "file_name": rel,
                    "width": image_size,
                    "height": image_size,
                    "license": 0,
                    "rights_holder": "synthetic",
                }
            )
            if split == "test":
                solution.append((image_id, c))
            else:
                annotations.append({"id": image_id, "image_id": image_id, "category_id": c})
            image_id += 1
        record = {"info": {"year": 2019, "version": "synthetic"}, "images": images, "licenses": []}
        if split != "test":
            record.update(annotations=annotations, categories=categories)
        (root / f"{split}2019.json").write_text(json.dumps(record))
    _write_csv(root / "solution.csv", ["id", "predicted"], solution)
    return root


def write_class_folders(
    root: Path,
    splits: dict[str, list[int]],
    names: list[str],
    image_size: int,
    seed: int,
    folders: dict[str, str],
    test_folder: str,
    test_name: str,
    domain: int = 0,
    first_class: int = 0,
    class_step: int = 1,
) -> list[tuple[str, int]]:
    """Class-folder splits and a flat test folder; returns (test file name, class) pairs."""
    solution = []
    for offset, (split, folder) in enumerate(folders.items()):
        for i, c, image in _images(
            splits[split], image_size, seed + 101 * (offset + 1), domain, first_class, class_step
        ):
            path = root / folder / names[c] / f"{split}_{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=92)
    for i, c, image in _images(splits["test"], image_size, seed + 999, domain, first_class, class_step):
        path = root / test_folder / test_name.format(i=i)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=92)
        solution.append((path.name, c))
    return solution


def write_herbarium2019(
    root: str | Path,
    num_classes: int = 24,
    max_per_class: int = 60,
    imbalance: float = 10.0,
    val_fraction: float = 0.25,
    test_total: int = 300,
    test_prior: str = "reversed",
    image_size: int = 64,
    seed: int = 0,
    domain: int = 1,
    first_class: int = 0,
    class_step: int = 1,
) -> Path:
    """Herbarium 2019: ``train/<category id>/<id>.jpg``, ``validation/<category id>/<id>.jpg``,
    ``test/<id>.jpg`` (herbarium sheets: the light-background domain). ``first_class`` shifts the
    species drawn (class c looks like generator class first_class + c * class_step)."""
    root = Path(root)
    splits = _split_args(num_classes, max_per_class, imbalance, val_fraction, test_total, test_prior, seed)
    names = [str(c) for c in range(num_classes)]
    solution = write_class_folders(
        root,
        splits,
        names,
        image_size,
        seed,
        {"train": "train", "val": "validation"},
        "test",
        "{i:06d}.jpg",
        domain,
        first_class,
        class_step,
    )
    _write_csv(root / "solution.csv", ["Id", "Category"], solution)
    return root


CASSAVA_CLASSES = ("cbb", "cbsd", "cgm", "cmd", "healthy")


def write_icassava2019(
    root: str | Path,
    num_classes: int = 5,
    max_per_class: int = 80,
    imbalance: float = 8.0,
    val_fraction: float = 0.0,
    test_total: int = 150,
    test_prior: str = "reversed",
    image_size: int = 64,
    seed: int = 0,
    domain: int = 0,
) -> Path:
    """iCassava 2019: ``train/<cbb|cbsd|cgm|cmd|healthy>/train-<class>-<n>.jpg``, ``test/0/test-img-<n>.jpg``
    and ``extraimages/`` (unlabeled); no validation split (the DataModule holds out part of train)."""
    if num_classes != len(CASSAVA_CLASSES):
        raise ValueError(f"iCassava 2019 has {len(CASSAVA_CLASSES)} classes, not {num_classes}")
    root = Path(root)
    splits = _split_args(num_classes, max_per_class, imbalance, 0.0, test_total, test_prior, seed)
    rng = np.random.default_rng(seed + 5)
    for i, c in enumerate(splits["train"]):
        path = root / "train" / CASSAVA_CLASSES[c] / f"train-{CASSAVA_CLASSES[c]}-{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        render_specimen(class_parts(c), image_size, rng, domain).save(path, quality=92)
    solution = []
    for i, c in enumerate(splits["test"]):
        path = root / "test" / "0" / f"test-img-{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        render_specimen(class_parts(c), image_size, rng, domain).save(path, quality=92)
        solution.append((path.name, CASSAVA_CLASSES[c]))
    (root / "extraimages").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        render_specimen(class_parts(i % num_classes), image_size, rng, domain).save(
            root / "extraimages" / f"extra-image-{i}.jpg"
        )
    _write_csv(root / "solution.csv", ["Id", "Category"], solution)
    return root


def write_ifood2019(
    root: str | Path,
    num_classes: int = 24,
    max_per_class: int = 60,
    imbalance: float = 10.0,
    val_fraction: float = 0.25,
    test_total: int = 300,
    test_prior: str = "reversed",
    image_size: int = 64,
    seed: int = 0,
    domain: int = 0,
) -> Path:
    """iFood 2019: ``train_info.csv`` / ``val_info.csv`` (``image_name,label`` rows, no header),
    ``test_info.csv`` (image names), ``class_list.txt`` (``<label> <name>``), images in
    ``train_set/``, ``val_set/``, ``test_set/``."""
    root = Path(root)
    splits = _split_args(num_classes, max_per_class, imbalance, val_fraction, test_total, test_prior, seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "class_list.txt").write_text("".join(f"{c} dish_{c:03d}\n" for c in range(num_classes)))
    solution = []
    for offset, split in enumerate(("train", "val", "test")):
        rows = []
        for i, c, image in _images(splits[split], image_size, seed + 101 * (offset + 1), domain):
            name = f"{split}_{i:06d}.jpg"
            (root / f"{split}_set").mkdir(parents=True, exist_ok=True)
            image.save(root / f"{split}_set" / name, quality=92)
            rows.append((name, c) if split != "test" else (name,))
            if split == "test":
                solution.append((name, c))
        with open(root / f"{split}_info.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
    _write_csv(root / "solution.csv", ["img_name", "label"], solution)
    return root


def write_imaterialist_product2019(
    root: str | Path,
    num_classes: int = 24,
    max_per_class: int = 60,
    imbalance: float = 10.0,
    val_fraction: float = 0.25,
    test_total: int = 300,
    test_prior: str = "reversed",
    image_size: int = 64,
    seed: int = 0,
    domain: int = 0,
) -> Path:
    """iMaterialist Product 2019: ``train.json`` / ``val.json`` (``{"images": [{"id", "url",
    "class"}]}``), ``test.json`` (no ``class``), images ``<split>/<id>.jpg``."""
    root = Path(root)
    splits = _split_args(num_classes, max_per_class, imbalance, val_fraction, test_total, test_prior, seed)
    root.mkdir(parents=True, exist_ok=True)
    solution = []
    for offset, split in enumerate(("train", "val", "test")):
        entries = []
        for i, c, image in _images(splits[split], image_size, seed + 101 * (offset + 1), domain):
            image_id = f"{split}_{i}"
            (root / split).mkdir(parents=True, exist_ok=True)
            image.save(root / split / f"{image_id}.jpg", quality=92)
            entry = {"id": image_id, "url": f"https://example.invalid/{image_id}.jpg"}
            if split == "test":
                solution.append((image_id, c))
            else:
                entry["class"] = c
            entries.append(entry)
        (root / f"{split}.json").write_text(json.dumps({"images": entries}))
    _write_csv(root / "solution.csv", ["id", "predicted"], solution)
    return root


# --- iMet: multi-label --------------------------------------------------------------------------------

IMET_CULTURES = ("oval_culture", "long_culture")
IMET_TAGS = ("spot", "bar", "fin", "forked", "square_head", "pointed_head", "eye")


def write_imet2019(
    root: str | Path,
    train_total: int = 400,
    test_total: int = 150,
    image_size: int = 64,
    seed: int = 0,
    shift: bool = True,
    domain: int = 0,
) -> Path:
    """iMet Collection 2019: ``labels.csv`` (``attribute_id,attribute_name``; ``culture::`` and
    ``tag::`` names), ``train.csv`` (``id,attribute_ids``, ids space-separated), ``train/<id>.png``,
    ``test/<id>.png``, ``sample_submission.csv``. Each image has one culture (its body) and each tag
    drawn with its own long-tailed probability (shifted on test when ``shift``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = [f"culture::{c}" for c in IMET_CULTURES] + [f"tag::{t}" for t in IMET_TAGS]
    _write_csv(root / "labels.csv", ["attribute_id", "attribute_name"], list(enumerate(labels)))
    train_p = 0.6 * 0.55 ** np.arange(len(IMET_TAGS))  # 0.6 down to ~0.02
    test_p = train_p[::-1].copy() if shift else train_p
    solution = []
    for split, total, probs in (("train", train_total, train_p), ("test", test_total, test_p)):
        rows = []
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(total):
            culture = int(rng.integers(0, len(IMET_CULTURES)))
            flags = {t: bool(rng.random() < p) for t, p in zip(IMET_TAGS, probs)}
            if flags["square_head"] and flags["pointed_head"]:
                flags["pointed_head"] = False
            parts = {"body": "long" if culture else "oval", **flags}
            ids = [culture] + [len(IMET_CULTURES) + k for k, t in enumerate(IMET_TAGS) if flags[t]]
            image_id = f"{i:04x}{split[:2]}{seed:02d}{rng.integers(1 << 16):04x}"
            render_specimen(parts, image_size, rng, domain).save(root / split / f"{image_id}.png")
            attribute_ids = " ".join(str(v) for v in ids)
            if split == "train":
                rows.append((image_id, attribute_ids))
            else:
                rows.append((image_id, str(culture)))
                solution.append((image_id, attribute_ids))
        if split == "train":
            _write_csv(root / "train.csv", ["id", "attribute_ids"], rows)
        else:
            _write_csv(root / "sample_submission.csv", ["id", "attribute_ids"], rows)
    _write_csv(root / "solution.csv", ["id", "attribute_ids"], solution)
    return root


# --- iWildCam: camera-trap sequences ------------------------------------------------------------------

IWILDCAM_CLASSES = IWILDCAM_CLASS_NAMES  # the published label names, read by the DataModule

IWILDCAM_COLUMNS = [
    "category_id",
    "date_captured",
    "file_name",
    "frame_num",
    "id",
    "location",
    "rights_holder",
    "seq_id",
    "seq_num_frames",
    "width",
    "height",
]


def write_iwildcam2019(
    root: str | Path,
    num_classes: int = 23,
    present_classes: int = 12,
    train_sequences: int = 90,
    test_sequences: int = 40,
    locations: int = 10,
    max_frames: int = 3,
    image_size: int = 64,
    seed: int = 0,
    test_prior: str = "reversed",
) -> Path:
    """iWildCam 2019: ``train.csv`` / ``test.csv`` with the columns of ``IWILDCAM_COLUMNS`` (test
    without ``category_id``), images ``train_images/<id>.jpg``, ``test_images/<id>.jpg``. Label 0 is
    empty (background only); animals are the fine-grained specimens. A sequence is 1-``max_frames``
    frames of one animal at one location (its background); test locations are unseen."""
    if num_classes != len(IWILDCAM_CLASSES):
        raise ValueError(f"iWildCam 2019 has {len(IWILDCAM_CLASSES)} label ids, not {num_classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    present = np.arange(present_classes)  # label ids 0 .. present_classes-1 occur
    train_w = long_tail_counts(present_classes, 100, 10.0, rng).astype(float)
    test_w = test_counts(train_w.astype(int), 1000, test_prior).astype(float)
    solution = []
    for split, n_seq, weights, loc_offset in (
        ("train", train_sequences, train_w, 0),
        ("test", test_sequences, test_w, 100),
    ):
        rows = []
        (root / f"{split}_images").mkdir(parents=True, exist_ok=True)
        for s in range(n_seq):
            label = int(rng.choice(present, p=weights / weights.sum()))
            location = loc_offset + int(rng.integers(0, locations))
            loc_rng = np.random.default_rng(location)
            background = tuple(int(v) for v in loc_rng.integers(10, 140, 3))
            frames = int(rng.integers(1, max_frames + 1))
            seq_id = f"{rng.integers(1 << 32):08x}-{s:04d}-{split[:2]}"
            for f in range(frames):
                image_id = f"{seq_id}-f{f}"
                if label == 0:
                    image = Image.new("RGB", (image_size, image_size), background)
                    noisy = np.asarray(image, np.float32) + rng.normal(0, 6, (image_size, image_size, 3))
                    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
                else:
                    image = render_specimen(class_parts(label - 1), image_size, rng, 0, background)
                image.save(root / f"{split}_images" / f"{image_id}.jpg", quality=92)
                date = f"2012-03-{1 + s % 28:02d} 0{f}:00:00"
                row = [
                    label,
                    date,
                    f"{image_id}.jpg",
                    f + 1,
                    image_id,
                    location,
                    "synthetic",
                    seq_id,
                    frames,
                    image_size,
                    image_size,
                ]
                rows.append(row if split == "train" else row[1:])
                if split == "test":
                    solution.append((image_id, label))
        header = IWILDCAM_COLUMNS if split == "train" else IWILDCAM_COLUMNS[1:]
        _write_csv(root / f"{split}.csv", header, rows)
    _write_csv(root / "solution.csv", ["Id", "Category"], solution)
    return root
