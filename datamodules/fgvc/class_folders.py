"""Folder-per-class fine-grained sets (Herbarium 2019, iCassava 2019, any ImageFolder set):
``<train_dir>/<class>/<image>``, optionally ``<val_dir>/<class>/<image>``, and a test folder that is
either flat (``<test_dir>/<image>``, ids = file names) or itself in class folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.data import DataFormatError
from core.images import IMAGE_SUFFIXES
from datamodules.fgvc.base import FineGrainedDataModule


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ClassFolderDataModule(FineGrainedDataModule):
    """Class folders; class order follows ``sorted`` folder names (numerically when all are
    integers, e.g. Herbarium's category ids). ``val_dir=null`` holds out ``val_fraction`` of train.
    ``test_id``: ``stem`` or ``name`` of a test file is its submission id."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        train_dir: str = "train",
        val_dir: str | None = "val",
        test_dir: str | None = "test",
        test_flat: bool = True,
        test_id: str = "stem",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, num_classes, **kwargs)
        self.train_dir, self.val_dir, self.test_dir = train_dir, val_dir, test_dir
        self.test_flat, self.test_id = test_flat, test_id
        self._train_cache: tuple[list[Path], list[int]] | None = None

    def folder(self, name: str) -> Path:
        path = self.root / name
        if not path.is_dir():
            flat = name == self.test_dir and self.test_flat
            raise FileNotFoundError(f"{path}: expected a folder of {'test images' if flat else 'class sub-folders'}")
        return path

    def read_class_names(self) -> list[str]:
        names = [p.name for p in self.folder(self.train_dir).iterdir() if p.is_dir()]
        if not names:
            raise FileNotFoundError(f"{self.root / self.train_dir}: no class folders")
        numeric = all(n.isdigit() for n in names)
        names = sorted(names, key=(lambda n: int(n)) if numeric else None)
        self.label_ids = names
        return names

    def _class_folder_split(self, name: str) -> tuple[list[Path], list[int]]:
        index = {n: i for i, n in enumerate(self.label_ids)}
        folder = self.folder(name)
        paths, labels = [], []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if sub.name not in index:
                raise DataFormatError(
                    sub, f"class folder {sub.name!r} is not among the {len(index)} classes of {self.train_dir}/"
                )
            images = list_images(sub)
            paths += images
            labels += [index[sub.name]] * len(images)
        if not paths:
            raise FileNotFoundError(f"{folder}: no images with extensions {IMAGE_SUFFIXES}")
        return paths, labels

    def read_labeled(self, split: str):
        if self.val_dir is not None:
            paths, labels = self._class_folder_split(self.train_dir if split == "train" else self.val_dir)
        else:
            if self._train_cache is None:
                self._train_cache = self._class_folder_split(self.train_dir)
            all_paths, all_labels = self._train_cache
            train, val = self.holdout(all_paths)
            keep = train if split == "train" else val
            paths, labels = [all_paths[i] for i in keep], [all_labels[i] for i in keep]
        return paths, labels, [self._id(p) for p in paths]

    def _id(self, path: Path) -> str:
        return path.stem if self.test_id == "stem" else path.name

    def read_test(self):
        if self.test_dir is None or not (self.root / self.test_dir).exists():
            paths, _, ids = self.read_labeled("val")
            return paths, ids
        folder = self.folder(self.test_dir)
        paths = (
            list_images(folder)
            if self.test_flat
            else [p for sub in sorted(folder.iterdir()) if sub.is_dir() for p in list_images(sub)]
        )
        if not paths:
            raise FileNotFoundError(f"{folder}: no test images")
        return paths, [self._id(p) for p in paths]


class Herbarium2019DataModule(ClassFolderDataModule):
    """Herbarium 2019 (NYBG): ``train/<category id>/<image>``, ``validation/<category id>/<image>``,
    ``test/<image>``. Submission id: the whole file name, ``00123.jpg`` (herbarium_comp README_2019.md:
    "use the entire filename, e.g. 00123.jpg as the Id column")."""

    def __init__(self, root: str, num_classes: int, **kwargs: Any) -> None:
        kwargs.setdefault("val_dir", "validation")
        kwargs.setdefault("test_id", "name")
        super().__init__(root, num_classes, **kwargs)


class ICassava2019DataModule(ClassFolderDataModule):
    """iCassava 2019: ``train/<cbb|cbsd|cgm|cmd|healthy>/<image>``, ``test/0/<image>`` (all test images
    in one folder named 0; submission id: the file name), ``extraimages/`` (unlabeled, unused here).
    No validation split is published: ``val_fraction`` of train is held out."""

    def __init__(self, root: str, num_classes: int, **kwargs: Any) -> None:
        kwargs.setdefault("val_dir", None)
        kwargs.setdefault("test_flat", False)
        kwargs.setdefault("test_id", "name")
        super().__init__(root, num_classes, **kwargs)
