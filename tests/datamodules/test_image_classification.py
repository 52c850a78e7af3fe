"""The image DataModules read their published layouts and name the file when something is wrong."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.io import savemat

from core.data import DataFormatError, ensure_generated
from datamodules.cifar100 import Cifar100DataModule
from datamodules.flowers102 import Flowers102DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.synthetic.cifar100 import write_cifar100
from datamodules.synthetic.flowers102 import write_flowers102
from datamodules.synthetic.image_folder import write_image_folder

# The overrides of a small generated copy of each data set, for every test that trains on it
# (tests/conftest.py gathers them into SMALL_DATA and the small_data fixture).
SMALL_DATA: dict[str, list[str]] = {
    "shapes": [
        "data=shapes",
        "data.generator.train_per_class=12",
        "data.generator.val_per_class=4",
        "data.generator.test_per_class=4",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=16",
    ],
    "cifar100": [
        "data=cifar100",
        "data.num_workers=0",
        "data.generator.train_per_class=3",
        "data.generator.test_per_class=1",
        "data.batch_size=32",
    ],
    "flowers102": [
        "data=flowers102",
        "data.num_workers=0",
        "data.image_size=32",
        "data.generator.train_per_class=1",
        "data.generator.val_per_class=1",
        "data.generator.test_per_class=1",
        "data.batch_size=32",
    ],
}


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs") / "shapes"
    write_image_folder(root, num_classes=4, train_per_class=3, val_per_class=2, test_per_class=2, image_size=32)
    return root


def folder_dm(root, **kw):
    return ImageFolderDataModule(
        str(root), num_classes=kw.pop("num_classes", 4), image_size=32, batch_size=4, num_workers=0, crop_pct=1.0, **kw
    )


def test_image_folder_reads_splits_and_synset_names(folder_root):
    dm = folder_dm(folder_root)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [12, 8, 8]
    assert dm.class_names == ["circle_0", "square_0", "triangle_0", "cross_0"]
    image, label = dm.datasets["val"][0]
    assert image.shape == (3, 32, 32) and label == 0
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    root = tmp_path / "shapes"
    write_image_folder(root, num_classes=2, train_per_class=3, val_per_class=1, test_per_class=1, image_size=32)
    victim = sorted((root / "train").rglob("*.JPEG"))[1]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated JPEG
    strict = folder_dm(root, num_classes=2)
    strict.setup()
    with pytest.raises(DataFormatError, match=victim.name):
        [strict.datasets["train"][i] for i in range(len(strict.datasets["train"]))]
    lenient = folder_dm(root, num_classes=2, skip_corrupt=True)
    lenient.setup()
    loaded = [lenient.datasets["train"][i] for i in range(len(lenient.datasets["train"]))]
    assert len(loaded) == 6 and lenient.skipped_samples == 1


def test_missing_data_set_without_generator_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        folder_dm(tmp_path / "nothing_here").prepare_data()


def test_generation_is_atomic_and_happens_once(tmp_path):
    calls = []

    def generator(root):
        calls.append(root)
        (root / "marker").write_text("x")

    ensure_generated(tmp_path / "d", generator)
    ensure_generated(tmp_path / "d", generator)
    assert len(calls) == 1 and (tmp_path / "d" / "marker").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.")]  # no temp folder left


def test_cifar100_reads_official_pickles(tmp_path):
    write_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    dm = Cifar100DataModule(
        str(tmp_path), num_classes=100, image_size=32, num_workers=0, crop_pct=1.0, val_fraction=0.25
    )
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [150, 50, 100]
    assert dm.class_names[:2] == ["circle_0", "square_0"]
    # The pixel layout is the official one: 1024 red, then green, then blue values per row.
    with open(tmp_path / "cifar-100-python" / "test", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    image = dm.datasets["test"].images[0]
    assert np.array_equal(image[..., 0].reshape(-1), raw[b"data"][0][:1024])
    assert np.array_equal(image[..., 2].reshape(-1), raw[b"data"][0][2048:])


def test_cifar100_malformed_pickle_is_named(tmp_path):
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    with open(tmp_path / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"fine_labels": [0, 1, 2]}, f)
    with pytest.raises(DataFormatError, match=r"cifar-100-python/test: 'data' must be N x 3072"):
        Cifar100DataModule(str(tmp_path), num_classes=100, num_workers=0).setup()


def test_flowers102_reads_mat_files(tmp_path):
    write_flowers102(tmp_path, num_classes=3, train_per_class=2, val_per_class=1, test_per_class=1, image_size=32)
    dm = Flowers102DataModule(str(tmp_path), num_classes=3, image_size=32, num_workers=0)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    paths = dm.datasets["train"].images
    assert paths[0].name == "image_00001.jpg"


def test_flowers102_bad_setid_is_named(tmp_path):
    write_flowers102(tmp_path, num_classes=2, train_per_class=1, val_per_class=1, test_per_class=1, image_size=32)
    savemat(
        str(tmp_path / "setid.mat"), {"trnid": np.array([[1, 99]]), "valid": np.array([[2]]), "tstid": np.array([[3]])}
    )
    with pytest.raises(DataFormatError, match=r"setid.mat: trnid has ids outside 1..6: \[99\]"):
        Flowers102DataModule(str(tmp_path), num_classes=2, num_workers=0).setup()
