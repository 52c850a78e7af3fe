"""Bad data files of the image readers (issue 14): a crafted CIFAR-100 pickle does not run, values
out of their format's range or type are errors, a decompression bomb is named and skipped once."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from core.data import DataFormatError, ensure_generated
from datamodules.cifar100 import FOLDER, read_cifar100_split
from datamodules.flowers102 import Flowers102DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.synthetic.cifar100 import write_cifar100
from datamodules.synthetic.flowers102 import write_flowers102
from datamodules.synthetic.image_folder import write_image_folder


class RunsShell:
    """What an attacker pickles: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_crafted_cifar_pickle_is_refused_without_running(tmp_path):
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    marker = tmp_path / "pwned"
    train_file = tmp_path / FOLDER / "train"
    with open(train_file, "wb") as f:
        pickle.dump({b"data": RunsShell(f"touch {marker}"), b"fine_labels": [0]}, f, protocol=2)
    with pytest.raises(DataFormatError) as err:
        read_cifar100_split(tmp_path, "train")
    assert str(err.value) == (
        f"{train_file}: refused to load posix.system: a CIFAR-100 file holds only dicts, lists, "
        "strings, bytes, numbers and numpy arrays"
    )
    assert not marker.exists()


def test_generated_cifar_still_loads(tmp_path):
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    images, labels = read_cifar100_split(tmp_path, "test")
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.uint8 and labels == list(range(100))


def _rewrite(path: Path, **changes) -> None:
    with open(path, "rb") as f:
        record = pickle.load(f, encoding="bytes")
    record.update({k.encode(): v for k, v in changes.items()})
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=2)


def test_cifar_float_pixels_and_fractional_labels_are_errors(tmp_path):
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    test_file = tmp_path / FOLDER / "test"
    with open(test_file, "rb") as f:
        good = pickle.load(f, encoding="bytes")
    _rewrite(test_file, data=good[b"data"].astype(np.float64) / 255.0)
    with pytest.raises(
        DataFormatError, match=r"'data' must hold uint8 pixels 0\.\.255, found float64 values 0\.0\.\.1\.0"
    ):
        read_cifar100_split(tmp_path, "test")
    _rewrite(test_file, data=good[b"data"], fine_labels=[0, 1.7, *range(2, 100)])
    with pytest.raises(DataFormatError, match=r"fine_labels\[1\] = 1\.7 is not an integer class index"):
        read_cifar100_split(tmp_path, "test")


def test_flowers_fractional_label_is_an_error(tmp_path):
    root = tmp_path / "flowers"
    write_flowers102(root, num_classes=3, image_size=16, train_per_class=1, val_per_class=1, test_per_class=1)
    labels = loadmat(str(root / "imagelabels.mat"))["labels"].astype(np.float64)
    labels[0, 4] = 1.7
    savemat(str(root / "imagelabels.mat"), {"labels": labels})
    dm = Flowers102DataModule(str(root), num_classes=3, image_size=16, num_workers=0)
    with pytest.raises(DataFormatError) as err:
        dm.setup("fit")
    assert str(err.value) == (
        f"{root / 'imagelabels.mat'}: variable 'labels' must hold whole numbers; labels[4] = 1.7 (1 such values)"
    )
    labels[0, 4] = 2.0  # MATLAB's doubles holding whole numbers are the official form
    savemat(str(root / "imagelabels.mat"), {"labels": labels})
    Flowers102DataModule(str(root), num_classes=3, image_size=16, num_workers=0).setup("fit")


def write_png_header_bomb(path: Path, width: int, height: int) -> None:
    """A real, tiny PNG that declares width x height 8-bit grey pixels (its pixels are a few
    compressed rows of zeros; PIL refuses it from the header alone)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (width + 1) * 4)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def small_folder(tmp_path) -> Path:
    root = tmp_path / "shapes"
    ensure_generated(
        root,
        partial(write_image_folder, num_classes=2, train_per_class=3, val_per_class=1, test_per_class=1, image_size=16),
    )
    return root


def _datamodule(root: Path, skip: bool) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(root), num_classes=2, image_size=16, batch_size=2, num_workers=0, skip_corrupt=skip)
    dm.setup("fit")
    return dm


def test_decompression_bomb_is_named_and_skipped_once(small_folder, caplog):
    bomb = small_folder / "train" / sorted(p.name for p in (small_folder / "train").iterdir())[0] / "bomb.png"
    write_png_header_bomb(bomb, 40000, 40000)  # 1.6e9 pixels, 121 bytes on disk
    assert bomb.stat().st_size < 1000

    with pytest.raises(DataFormatError) as err:
        list(_datamodule(small_folder, skip=False).train_dataloader())
    assert str(err.value).startswith(f"{bomb}: image is over PIL's decompression-bomb limit of 89478485 pixels")

    dm = _datamodule(small_folder, skip=True)
    seen = 0
    for _epoch in range(3):
        seen += sum(len(labels) for _, labels in dm.train_dataloader())
    assert seen == 3 * 7  # every visit still yields a sample (the next good one)
    assert dm.skipped_samples == 1  # one bad file, visited in 3 epochs: counted once
    assert any(str(bomb) in r.getMessage() for r in caplog.records)


def test_every_sample_failed_names_split_and_folder(small_folder):
    val = small_folder / "val"
    for image in val.rglob("*.JPEG"):
        image.write_bytes(b"not a JPEG")
    dm = _datamodule(small_folder, skip=True)
    with pytest.raises(RuntimeError) as err:
        list(dm.val_dataloader())
    assert str(err.value) == (
        f"every sample of the val split of {val} failed to load (2 files, all skipped as corrupt; "
        "see the warnings above for each file's problem)"
    )
    assert dm.skipped_samples == 2
