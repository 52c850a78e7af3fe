"""The activation atlas reads a packed data set (``data.format=shards``) as it reads the folder: the same
images, with the evaluation transform, picked one by one."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset

from tasks.atlas.builder import atlas_dataset
from tests.datamodules.test_shards import TRAIN, datamodule, shapes  # noqa: F401  (shapes: a fixture)


def test_atlas_reads_the_folder_samples_from_shards_with_the_evaluation_transform(shapes):  # noqa: F811
    config, out = shapes
    folder, packed = datamodule(config), datamodule(config, format="shards", shards=str(out))
    from_folder, from_shards = atlas_dataset(folder, "train"), atlas_dataset(packed, "train")
    assert len(from_folder) == len(from_shards) == TRAIN
    for k in (0, 57, TRAIN - 1):
        (image, target), (packed_image, packed_target) = from_folder[k], from_shards[k][:2]
        assert packed_target == target
        torch.testing.assert_close(packed_image, image, rtol=0, atol=0)  # the train split's random augmentation: never
    # in a loader process, in the atlas's random order (tasks/atlas/collect.py: a Subset in a DataLoader)
    picked = [93, 4, 57]
    loader = DataLoader(Subset(from_shards, picked), batch_size=3, num_workers=1)
    (images, targets, *_), *rest = list(loader)
    assert not rest and targets.tolist() == [from_folder[k][1] for k in picked]
    torch.testing.assert_close(images, torch.stack([from_folder[k][0] for k in picked]), rtol=0, atol=0)
    # the training loader's data set keeps its augmentation
    assert packed.datasets["train"].image_transform is not from_shards.image_transform
