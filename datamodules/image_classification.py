"""What every image-classification DataModule shares: decoding with clear errors or counted skips,
timm transforms, and the loaders. A subclass only says where its splits are."""

from __future__ import annotations

import copy
import logging
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, ensure_generated
from core.images import decode_image, positive_size

log = logging.getLogger(__name__)


class SkipCounter:
    """Which samples failed to load, shared by the DataLoader worker processes: one flag per
    sample, so a bad file counts once however many epochs (and workers) meet it."""

    def __init__(self, size: int) -> None:
        self._flags = multiprocessing.RawArray("b", max(size, 1))

    def add(self, index: int) -> None:
        self._flags[index] = 1

    def __contains__(self, index: int) -> bool:
        return bool(self._flags[index])

    @property
    def value(self) -> int:
        return int(np.frombuffer(self._flags, dtype=np.int8).sum())


class ImageDataset(Dataset):
    """Images given as file paths (decoded with PIL) or as a uint8 array (N, H, W, 3), with labels.

    A file that does not decode (or is over PIL's decompression-bomb limit) raises a
    DataFormatError naming it; with ``skip_corrupt`` it is counted once in ``skipped`` and replaced
    by the next sample, so a long run goes on. ``description`` (e.g. "the train split of <root>")
    names the split in the error when every sample fails."""

    def __init__(
        self,
        images: Sequence[str | Path] | np.ndarray,
        labels: Sequence[int],
        transform: Callable | None = None,
        skip_corrupt: bool = False,
        description: str = "the data set",
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = [int(v) for v in labels]
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.description = description
        self.skipped = SkipCounter(len(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        item = self.images[index]
        if isinstance(item, np.ndarray):
            return Image.fromarray(item)
        return decode_image(item)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            if i in self.skipped:  # failed before: not decoded (nor counted) again
                continue
            try:
                image = self.load(i)
            except (DataFormatError, FileNotFoundError) as err:
                if not self.skip_corrupt:
                    raise
                self.skipped.add(i)
                log.warning("skipping corrupt sample: %s", err)
                continue
            return (self.transform(image) if self.transform else image), self.labels[i]
        raise RuntimeError(
            f"every sample of {self.description} failed to load ({len(self)} files, all skipped as "
            "corrupt; see the warnings above for each file's problem)"
        )


def _tf_posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """Posterize as the TPU AutoAugment does (``shift = 8 - bits``): keeping 0 bits gives a black
    image, where Pillow >= 10 refuses ``bits=0``."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    from PIL import ImageOps

    return ImageOps.posterize(img, bits_to_keep)


def _posterize_zero_bits_as_tf(transform: Callable) -> Callable:
    """Give every Posterize op the TPU semantics, where keeping 0 bits is a black image: timm's
    AutoAugment policy ``v0`` (the EfficientNet reference's) has ``('Posterize', 0.8, 2)``, which keeps
    0 bits, and RandAugment's ``PosterizeIncreasing`` keeps 0 bits at the top of its magnitude range
    (``rand-m9-mstd0.5``: about 1 image in 400), where Pillow >= 10 raises and stops the run."""
    for step in getattr(transform, "transforms", []):
        sub_policies = getattr(step, "policy", None) or [getattr(step, "ops", None) or []]
        for sub_policy in sub_policies:
            for op in sub_policy:
                if str(getattr(op, "name", "")).startswith("Posterize"):
                    op.aug_fn = _tf_posterize
    return transform


class ImageClassificationDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a subclass's splits, with timm's train and eval transforms.

    ``augment`` holds keyword arguments for ``timm.data.create_transform`` when training (e.g.
    ``hflip``, ``color_jitter``, ``auto_augment``, ``scale``, ``re_prob``)."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 2,
        augment: dict | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        crop_pct: float = 0.875,
        skip_corrupt: bool = False,
        generator: Callable[[Path], Any] | None = None,
        interpolation: str = "bilinear",
        format: str = "folder",
        shards: str | None = None,
    ) -> None:
        super().__init__()
        # "folder": the published files under root; "shards": LitData shards written by
        # `python -m datamodules.pack` (a folder or s3://... in ``shards``; root is not read).
        if format not in ("folder", "shards"):
            raise ValueError(f"data.format={format!r}: expected 'folder' or 'shards'")
        if format == "shards" and not shards:
            raise ValueError("data.format=shards needs data.shards=<folder or s3://... written by datamodules.pack>")
        self.format, self.shards = format, shards
        self.root = Path(root)
        self.num_classes = num_classes
        self.image_size = positive_size(image_size)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = dict(augment or {})
        self.mean, self.std, self.crop_pct = tuple(mean), tuple(std), crop_pct
        # Resizing filter of the train crop and the evaluation resize (EfficientNet's recipe: bicubic).
        self.interpolation = interpolation
        self.skip_corrupt = skip_corrupt
        self.generator = generator
        self.class_names: list[str] = []
        self.datasets: dict[str, ImageDataset] = {}

    # --- what a subclass provides -------------------------------------------------------------
    def read_split(self, split: str) -> tuple[Sequence[str | Path] | np.ndarray, Sequence[int]]:
        """Return (images, labels) of ``split`` in {"train", "val", "test"}."""
        raise NotImplementedError

    def read_class_names(self) -> list[str]:
        raise NotImplementedError

    def split_folder(self, split: str) -> Path:
        """The folder (or file) ``split`` is read from, for messages."""
        return self.root

    # --- Lightning hooks -----------------------------------------------------------------------
    # splits whose loader yields (image, target, index), for a subclass that puts predictions back in order
    indexed_splits: tuple[str, ...] = ()
    # plain-data attributes the readers set and tasks read, stored by datamodules.pack with the shards
    packed_attributes: tuple[str, ...] = ()

    def prepare_data(self) -> None:
        if self.format == "folder":
            ensure_generated(self.root, self.generator)

    def transform(self, training: bool):
        kwargs = self.augment if training else {}
        transform = create_transform(
            self.image_size,
            is_training=training,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            **{"interpolation": self.interpolation, **kwargs},
        )
        return _posterize_zero_bits_as_tf(transform)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.format == "shards":
            self.setup_shards()
            return
        ensure_generated(self.root, None)  # a clear error if the data set is missing
        self.class_names = self.read_class_names()
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.root}: the data set has {len(self.class_names)} classes but the config says "
                f"data.num_classes={self.num_classes}"
            )
        for split in ("train", "val", "test"):
            images, labels = self.read_split(split)
            self.datasets[split] = ImageDataset(
                images,
                labels,
                self.transform(split == "train"),
                self.skip_corrupt,
                description=f"the {split} split of {self.split_folder(split)}",
            )
        # what the files hold, for core.guards.DataContractCheck
        self.data_facts = {"num_classes": len(self.class_names), "source": f"classes of {self.root}"}

    def evaluation_dataset(self, split: str) -> Dataset:
        """``split`` (after ``setup``) with the evaluation transform, read sample by sample, in either
        format: what a tool that picks single samples reads (the activation atlas). A copy: the loaders'
        data sets keep their transforms."""
        if split not in self.datasets:
            raise KeyError(f"split {split!r} not in the data set; it has {sorted(self.datasets)}")
        dataset = copy.copy(self.datasets[split])
        # LitData's StreamingDataset owns the name ``transform`` (it applies it to the raw sample dict)
        setattr(dataset, "image_transform" if self.format == "shards" else "transform", self.transform(False))
        return dataset

    def setup_shards(self) -> None:
        """The splits from packed shards: class names, targets and ids from their meta.json, samples
        streamed by LitData (its own split over DDP ranks and workers, a new order each epoch from
        the run's seed). Training drops the few samples that do not divide over the ranks (LitData's
        ``drop_last`` under DDP, so ranks stay in step); evaluation reads every sample once."""
        from core.shards import SPLITS, ImageShards, global_seed, read_meta, split_location

        meta = read_meta(self.shards)
        self.class_names = list(meta["class_names"])
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.shards}: the packed data set has {len(self.class_names)} classes but the config says "
                f"data.num_classes={self.num_classes}"
            )
        for split in SPLITS:
            entry = meta["splits"][split]
            self.datasets[split] = ImageShards(
                split_location(self.shards, split),
                entry["targets"],
                self.transform(split == "train"),
                shuffle=split == "train",
                seed=global_seed(),
                with_index=split in self.indexed_splits,
                drop_last=None if split == "train" else False,
            )
            if entry.get("ids") is not None and isinstance(getattr(self, "ids", None), dict):
                self.ids[split] = entry["ids"]
        for name, value in meta.get("attributes", {}).items():
            if name in self.packed_attributes:
                setattr(self, name, value)
        self.data_facts = {"num_classes": len(self.class_names), "source": f"classes of {self.shards}"}

    # --- mid-epoch resume from shards ---------------------------------------------------------------
    # Lightning saves a DataModule's state_dict in every checkpoint and hands it back on resume before
    # training starts; the train loader's LitData state (epoch, samples yielded, order) travels there.
    # (Lightning's own save of stateful loaders is not enough: a scheduler sized from
    # trainer.estimated_stepping_batches makes the loader before the checkpoint is restored.)
    _train_loader = None
    _train_loader_state: dict | None = None

    def state_dict(self) -> dict[str, Any]:
        if self.format != "shards" or self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_loader")
        if state is None or self.format != "shards":
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._train_loader_state = state

    @property
    def skipped_samples(self) -> int:
        """Corrupt images skipped so far (core.data.CountsSkippedSamples); shards hold none (the
        pack leaves them out and says so)."""
        return sum(d.skipped.value for d in self.datasets.values() if isinstance(d, ImageDataset))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.format == "shards":
            from core.shards import shard_loader

            loader = shard_loader(self.datasets[split], self.batch_size, self.num_workers)
            if split == "train":
                self._train_loader = loader
                if self._train_loader_state is not None:  # restored before the loader was made
                    loader.load_state_dict(self._train_loader_state)
                    self._train_loader_state = None
            return loader
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
