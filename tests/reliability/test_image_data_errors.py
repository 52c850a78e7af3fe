"""Clear errors instead of traces for image data (issue 28): an iNaturalist COCO JSON with values of
the wrong type, ``data.image_size=-5`` (which failed inside PIL), and a PNG header claiming
20000 x 20000 pixels in the Open Images DataModule, which with ``skip_corrupt=true`` is skipped,
counted and named like any undecodable image (core.images.decode_image, the one decoder of the image
DataModules)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from core.data import DataFormatError
from core.training import train
from datamodules.inaturalist2019 import INaturalist2019DataModule
from datamodules.openimages import OpenImagesDetectionDataModule, OpenImagesSegmentationDataModule
from datamodules.synthetic import fgvc as gen
from datamodules.synthetic.openimages import generate_openimages
from tests.reliability.test_data_values import write_png_header_bomb

BOMB = "image is over PIL's decompression-bomb limit of 89478485 pixels"


@pytest.fixture(scope="module")
def inat(tmp_path_factory) -> Path:
    return gen.write_inaturalist2019(
        tmp_path_factory.mktemp("inat") / "inat", num_classes=8, max_per_class=6, imbalance=3.0, test_total=8,
        image_size=16,
    )  # fmt: skip


def edit(record: dict, where: str, value) -> None:
    """Set ``record`` at ``where`` ("images.1.id", "annotations") to ``value``."""
    *keys, last = where.split(".")
    for key in keys:
        record = record[int(key) if key.isdigit() else key]
    record[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(
    "where, value, problem",
    [
        ("categories.0.id", "abc", "categories[0].id must be an integer, found 'abc' (string)"),
        ("categories.2.genus", ["Genus00"], "categories[2].genus must be a non-empty string, found ['Genus00'] (list)"),
        ("images.1.id", "abc", "images[1].id must be an integer, found 'abc' (string)"),
        ("images.1.file_name", 5, "images[1].file_name must be a non-empty string, found 5 (integer)"),
        ("annotations", None, "'annotations' must be a list, found null"),
        ("annotations.4", 17, "annotations[4] must be an object, found 17 (integer)"),
    ],
)
def test_inaturalist_json_of_wrong_types_is_named(inat, tmp_path, where, value, problem):
    root = tmp_path / "inat"
    shutil.copytree(inat, root)
    path = root / "train2019.json"
    record = json.loads(path.read_text())
    edit(record, where, value)
    path.write_text(json.dumps(record))
    with pytest.raises(DataFormatError) as err:
        INaturalist2019DataModule(str(root), 8, image_size=16, num_workers=0).setup("fit")
    assert str(err.value) == f"{path}: {problem}"


def test_negative_image_size_is_named_at_instantiation(cfg_train):
    with pytest.raises(InstantiationException) as err:
        train(cfg_train(["data=shapes", "data.image_size=-5"]))
    assert "ValueError('data.image_size=-5: expected a positive whole number of pixels')" in str(err.value)
    with pytest.raises(ValueError, match=r"^data.image_size=\[160, -120\]: expected 2 positive whole numbers"):
        OpenImagesDetectionDataModule("unused", num_classes=9, image_size=[160, -120])


@pytest.fixture
def openimages_with_bomb(tmp_path) -> tuple[Path, Path]:
    root = generate_openimages(tmp_path / "oi", num_train=2, num_val=3, num_test=1)
    bomb = sorted((root / "validation").glob("*.jpg"))[1]
    write_png_header_bomb(bomb, 20000, 20000)  # a PNG under the JPEG's name: PIL reads the header
    return root, bomb


def val_batches(datamodule_class, root: Path, skip_corrupt: bool) -> tuple:
    """(DataModule, the validation batches) of a generated Open Images copy, batches of 3 images."""
    dm = datamodule_class(str(root), num_classes=9, batch_size=3, skip_corrupt=skip_corrupt)
    dm.setup()
    return dm, list(dm.val_dataloader())


def test_openimages_decompression_bomb_is_named_or_skipped_and_counted(openimages_with_bomb, caplog):
    root, bomb = openimages_with_bomb
    with pytest.raises(DataFormatError) as err:
        val_batches(OpenImagesDetectionDataModule, root, skip_corrupt=False)
    assert str(err.value).startswith(f"{bomb}: {BOMB} (Image size (400000000 pixels) exceeds limit")
    with caplog.at_level(logging.WARNING):
        dm, (batch,) = val_batches(OpenImagesDetectionDataModule, root, skip_corrupt=True)
    kept = [p.stem for p in sorted((root / "validation").glob("*.jpg")) if p != bomb]
    assert [item["image_name"] for item in batch] == kept and dm.skipped_samples == 1
    assert any(f"skipping corrupt sample: {bomb}: {BOMB}" in r.getMessage() for r in caplog.records)


def test_openimages_mask_png_bomb_is_named_or_skipped(tmp_path):
    root = generate_openimages(tmp_path / "oi", num_train=2, num_val=3, num_test=1)
    mask = sorted((root / "validation-masks").glob("*.png"))[0]
    write_png_header_bomb(mask, 20000, 20000)
    with pytest.raises(DataFormatError) as err:
        val_batches(OpenImagesSegmentationDataModule, root, skip_corrupt=False)
    assert str(err.value).startswith(f"{mask}: not a readable mask PNG: {BOMB}")
    with pytest.warns(UserWarning, match="not a readable mask PNG"):
        dm, (batch,) = val_batches(OpenImagesSegmentationDataModule, root, skip_corrupt=True)
    assert len(batch) == 2 and dm.skipped_samples == 1
