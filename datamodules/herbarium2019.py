"""Herbarium 2019 (FGVC6): class folders ``train/``, ``validation/``, flat ``test/``."""

from pathlib import Path

from datamodules.fgvc.class_folders import Herbarium2019DataModule

__all__ = ["Herbarium2019DataModule", "download_inventory"]

# Published in visipedia/herbarium_comp 2019/README_2019.md: images per folder (the small resized
# copy has the same split and ids) and the md5 sum of each archive.
PUBLISHED_IMAGES = {"train": 34225, "validation": 2679, "test": 9565}
PUBLISHED_MD5 = {
    "train.tar.gz": "53c6b9ee2f831f5101dbe00958091dc8",
    "validation.tar.gz": "2f854d580949e54f114993a74adc3d4b",
    "test.tar.gz": "297648fb76eed1b1c6f0ca1fd8188de0",
    "small-train.tar.gz": "8bf1985008dea8f79da1d9668b065543",
    "small-validation.tar.gz": "d7e8670238a54f13b8b729823a988004",
    "small-test.tar.gz": "6da0ca3d5cb3c137cf7eebe93412c86f",
}


def download_inventory(datamodule: Herbarium2019DataModule):
    """For ``python -m datamodules.check``: the published md5 sum of every archive kept in the data
    folder or beside it, and the published image counts; every image is loaded by the generic check."""
    from datamodules.check import DownloadInventory, ReferencedFile

    root = Path(datamodule.root)
    archives = [
        ReferencedFile(folder / name, "visipedia/herbarium_comp README_2019.md", md5)
        for name, md5 in PUBLISHED_MD5.items()
        for folder in (root, root.parent)
        if (folder / name).exists()
    ]
    pattern = {"train": "*/*.jpg", "validation": "*/*.jpg", "test": "*.jpg"}
    counts = {
        f"{split} images": (len(list((root / split).glob(pattern[split]))), published)
        for split, published in PUBLISHED_IMAGES.items()
    }
    return DownloadInventory(files=None, counts=counts, checksums=archives)
