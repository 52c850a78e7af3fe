"""Activation collection for the atlas: one random position per image into memory-mapped files,
attribution by activation x gradient, resuming after an interruption, and layer lookup."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from tasks.atlas.collect import ActivationStore, collect_activations, notebook_positions
from tasks.atlas.network import LayerTap, find_layer, load_classifier, spatial_view

pytestmark = pytest.mark.usefixtures("one_thread")


class NoiseImages(Dataset):
    """Seeded random images with labels; ``fail_from`` makes every later item raise (a crash)."""

    def __init__(self, n: int = 22, size: int = 32, fail_from: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.fail_from = fail_from

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if self.fail_from is not None and i >= self.fail_from:
            raise RuntimeError("simulated crash")
        return self.images[i], i % 3


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return load_classifier(backbone="test_efficientnet", num_classes=3)


def test_rows_are_the_layer_output_at_the_stored_position(classifier, tmp_path):
    data = NoiseImages()
    store = collect_activations(
        classifier, "blocks.2", data, tmp_path, num_samples=10, batch_size=4, attribution_classes=0, seed=1
    )
    assert store.activations.shape[0] == 10 and isinstance(store.activations, np.memmap)
    assert len(set(store.indices.tolist())) == 10 and store.meta["complete"]
    with torch.no_grad(), LayerTap(classifier.model, "blocks.2") as tap:
        classifier.model(data.images[np.array(store.indices)])
        full = spatial_view(tap.output)  # (10, C, P)
    assert store.meta["spatial_positions"] == full.shape[2] > 1
    expected = full[torch.arange(10), :, torch.from_numpy(np.asarray(store.positions))]
    np.testing.assert_allclose(store.activations, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert store.labels.tolist() == [int(i) % 3 for i in store.indices]
    assert len(set(store.positions.tolist())) > 1  # positions are drawn, not fixed
    width = tap.output.shape[3]
    assert all(p // width >= 1 and p % width >= 1 for p in store.positions.tolist())  # never row or column 0


def test_positions_are_drawn_as_the_notebook_draws_them():
    # randint(1, H), randint(1, W): rows 1..H-1 and columns 1..W-1, each equally likely
    uniform = np.random.default_rng(0).random((4000, 2))
    pos = notebook_positions(uniform, 4, 5)
    rows, cols = pos // 5, pos % 5
    assert set(rows.tolist()) == {1, 2, 3} and set(cols.tolist()) == {1, 2, 3, 4}
    assert np.bincount(rows)[1:].min() > 1200 and np.bincount(cols)[1:].min() > 900
    assert notebook_positions(np.array([[0.0, 0.0], [0.999, 0.999]]), 4, 5).tolist() == [6, 19]
    assert notebook_positions(np.array([[0.5, 0.5]]), 1, 1).tolist() == [0]  # a vector has one position


def test_attribution_to_every_logit_is_activation_times_logit_gradient(classifier, tmp_path):
    # at the pooled features, logit_c = W_c . a + b_c, so the attribution to c is a . W_c exactly
    store = collect_activations(
        classifier, "global_pool", NoiseImages(8), tmp_path, batch_size=3, attribution_classes=None, seed=0
    )
    weight = classifier.model.get_classifier().weight.detach().numpy()
    acts = np.asarray(store.activations)
    assert store.attributions.shape == (8, 3)
    np.testing.assert_allclose(store.attributions, acts @ weight.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(store.class_attribution(1), acts @ weight[1], rtol=1e-4, atol=1e-6)


def test_attribution_is_the_logits_change_along_the_one_position_and_top_k_keeps_its_columns(classifier, tmp_path):
    data = NoiseImages(6)
    full = collect_activations(
        classifier, "blocks.2", data, tmp_path / "all", batch_size=3, attribution_classes=None, seed=2
    )
    top2 = collect_activations(
        classifier, "blocks.2", data, tmp_path / "top2", batch_size=3, attribution_classes=2, seed=2
    )
    # finite difference: add eps x (the activation at the stored position only) to the layer output
    eps, images = 1e-3, data.images[np.asarray(full.indices)]
    with torch.no_grad(), LayerTap(classifier.model, "blocks.2") as tap:
        base = classifier.model(images)
        output = tap.output
    tangent = torch.zeros_like(output)
    rows, pos = torch.arange(6), torch.from_numpy(np.asarray(full.positions))
    spatial_view(tangent)[rows, :, pos] = spatial_view(output)[rows, :, pos]
    handle = find_layer(classifier.model, "blocks.2").register_forward_hook(lambda m, i, o: o + eps * tangent)
    with torch.no_grad():
        moved = classifier.model(images)
    handle.remove()
    np.testing.assert_allclose(full.attributions, ((moved - base) / eps).numpy(), rtol=2e-2, atol=2e-4)
    for row in range(6):
        top = np.argsort(-base[row].numpy())[:2]
        np.testing.assert_allclose(top2.attributions[row, top], full.attributions[row, top], rtol=1e-4, atol=1e-7)
        others = np.setdiff1d(np.arange(3), top)
        assert (top2.attributions[row, others] == 0).all()


def test_resume_after_a_crash_gives_the_uninterrupted_result(classifier, tmp_path):
    settings = {"num_samples": None, "batch_size": 4, "attribution_classes": None, "seed": 3, "flush_every": 1}
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect_activations(classifier, "blocks.3", NoiseImages(fail_from=5), tmp_path / "run", **settings)
    marker = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert not marker["complete"] and 0 < marker["done"] < 22 and marker["done"] % 4 == 0
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore.open(tmp_path / "run")
    resumed = collect_activations(classifier, "blocks.3", NoiseImages(), tmp_path / "run", **settings)
    fresh = collect_activations(classifier, "blocks.3", NoiseImages(), tmp_path / "fresh", **settings)
    for name in ("activations", "labels", "indices", "positions", "attributions"):
        np.testing.assert_allclose(getattr(resumed, name), getattr(fresh, name), rtol=1e-5, atol=1e-6, err_msg=name)


def test_other_settings_in_the_same_folder_are_refused(classifier, tmp_path):
    collect_activations(classifier, "blocks.3", NoiseImages(6), tmp_path, batch_size=6, attribution_classes=0)
    with pytest.raises(ValueError, match="layer"):
        collect_activations(classifier, "blocks.2", NoiseImages(6), tmp_path, batch_size=6, attribution_classes=0)


def test_wrong_layer_name_lists_near_names(classifier):
    with pytest.raises(KeyError, match=r"'blocks\.9' not found.*blocks\.\d"):
        find_layer(classifier.model, "blocks.9")
    assert find_layer(classifier.model, "blocks.1") is dict(classifier.model.named_modules())["blocks.1"]


def test_classifier_needs_a_source(tmp_path):
    with pytest.raises(ValueError, match="ckpt_path"):
        load_classifier()
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_classifier(ckpt_path=str(tmp_path / "missing.ckpt"))
