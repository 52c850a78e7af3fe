"""Feature visualization for the atlas icons: the objective, the image parametrization, and that
optimization raises the objective, deterministically, on a real (tiny, random) timm network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.atlas.featurevis import (
    ATLAS_ANGLES,
    ATLAS_SCALES,
    FeatureVisualizer,
    FourierImage,
    atlas_transforms,
    direction_cossim,
    robustness_transforms,
)
from tasks.atlas.network import LayerTap, load_classifier, spatial_view

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return load_classifier(backbone="test_efficientnet", num_classes=10)


def test_direction_cossim_by_hand():
    # lucid's direction_neuron_cossim_S: dot = mean(acts * vec); cossim = max(0.1, dot / (1e-4 + |acts|))
    acts = torch.tensor([[3.0, 4.0], [-1.0, 0.0], [0.0, 2.0]])
    directions = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    dot = torch.tensor([3.0, -0.5, 5.0])  # (6 + 0) / 2, (-1 + 0) / 2, (0 + 10) / 2
    cossim = torch.tensor([3.0 / (5 + 1e-4), 0.1, 5.0 / (2 + 1e-4)])  # the middle one floored at 0.1
    torch.testing.assert_close(direction_cossim(acts, directions, 4.0), dot * cossim**4)
    torch.testing.assert_close(direction_cossim(acts, directions, 1.0), dot * cossim)
    torch.testing.assert_close(direction_cossim(acts, directions, 0.0), dot)


def test_atlas_transform_lists_are_the_notebooks():
    assert len(ATLAS_SCALES) == 85 + 40 and ATLAS_SCALES[0] == pytest.approx(0.995**-5)
    assert ATLAS_SCALES[85] == ATLAS_SCALES[105] == pytest.approx(0.998**20)  # the 0.998 list twice
    assert len(ATLAS_ANGLES) == 40 + 20 + 10 + 5 and ATLAS_ANGLES.count(0) == 3 + 5  # 5 unrotated copies
    assert min(ATLAS_ANGLES) == -20 and max(ATLAS_ANGLES) == 19


def test_atlas_transforms_crop_scale_and_rotate_the_batch_together():
    images = torch.rand(3, 3, 80, 80)
    sizes = set()
    for seed in range(20):
        out = atlas_transforms(images, torch.Generator().manual_seed(seed))
        assert out.shape[:2] == (3, 3) and out.shape[2] == out.shape[3]
        sizes.add(out.shape[2])
    # 80 + 4 pad - 32 jitter = 52, scaled by 0.995^79 .. 0.995^-5 (35 .. 53), then jitter 2
    assert min(sizes) >= int(0.995**79 * 52) - 2 and max(sizes) <= int(0.995**-5 * 52) - 2
    assert len(sizes) > 3
    with pytest.raises(ValueError, match="too small for the atlas transforms"):
        FeatureVisualizer(icon_size=32, transforms="atlas")


def test_fourier_image_is_seeded_rgb_in_unit_range():
    a = FourierImage(2, 16, generator=torch.Generator().manual_seed(3))()
    b = FourierImage(2, 16, generator=torch.Generator().manual_seed(3))()
    c = FourierImage(2, 16, generator=torch.Generator().manual_seed(4))()
    assert a.shape == (2, 3, 16, 16) and a.min() > 0 and a.max() < 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fourier_scale_favours_low_frequencies():
    image = FourierImage(1, 16, decay_power=1.0)
    assert image.scale[0, 0] == pytest.approx(16.0)  # DC clamped to frequency 1/size
    assert image.scale[0, 1] > image.scale[0, 4] > image.scale[8, 8]


def test_robustness_transforms_shape_and_variation():
    images = torch.rand(4, 3, 20, 20)
    g = torch.Generator().manual_seed(0)
    out = robustness_transforms(images, g)
    assert out.shape == (4, 3, 20 + 24 - 8 - 4, 20 + 24 - 8 - 4)  # pad 12, jitter 8, jitter 4
    assert not torch.equal(out, robustness_transforms(images, g))  # a new draw each step


def test_feature_visualization_raises_the_objective(classifier):
    torch.manual_seed(1)
    with torch.no_grad(), LayerTap(classifier.model, "blocks.2") as tap:
        classifier.model(torch.randn(6, 3, 32, 32))
        directions = spatial_view(tap.output)[:, :, 0]  # real activation vectors as directions
    visualizer = FeatureVisualizer(
        icon_size=24, steps=25, lr=0.05, batch_size=4, cossim_pow=1, transforms="standard", seed=0
    )
    icons = visualizer.render(classifier, "blocks.2", directions)
    assert icons.images.shape == (6, 24, 24, 3) and icons.images.dtype == np.uint8
    assert (icons.objective_end > icons.objective_start).all(), (icons.objective_start, icons.objective_end)
    assert icons.objective_end.mean() > 4 * np.abs(icons.objective_start).mean()  # measured: 7.7x


def test_several_attempts_keep_each_icons_best(classifier):
    directions = torch.randn(4, spatial_view_channels(classifier))
    settings = {"icon_size": 40, "steps": 4, "batch_size": 4, "transforms": "atlas", "seed": 3}
    one = FeatureVisualizer(attempts=1, **settings).render(classifier, "blocks.2", directions)
    three = FeatureVisualizer(attempts=3, **settings).render(classifier, "blocks.2", directions)
    assert (three.objective_last_step >= one.objective_last_step).all()
    first = three.attempt == 0  # where the first attempt won, its icon is the one-attempt icon
    assert np.array_equal(three.images[first], one.images[first])
    assert set(three.attempt.tolist()) - {0}, "with 3 attempts some icon should improve on the first"


def test_whitening_renders_for_v_times_s(classifier):
    channels = spatial_view_channels(classifier)
    directions = torch.randn(2, channels)
    s = torch.diag(torch.linspace(0.5, 2.0, channels))
    settings = {"icon_size": 16, "steps": 2, "batch_size": 2, "transforms": "standard", "seed": 1}
    whitened = FeatureVisualizer(**settings).render(classifier, "blocks.2", directions, whitening=s.numpy())
    direct = FeatureVisualizer(**settings).render(classifier, "blocks.2", directions @ s)
    assert np.array_equal(whitened.images, direct.images)


def test_feature_visualization_is_deterministic_with_a_seed(classifier):
    directions = torch.randn(3, spatial_view_channels(classifier))
    settings = {"icon_size": 16, "steps": 3, "batch_size": 2, "transforms": "standard"}
    first = FeatureVisualizer(seed=5, **settings).render(classifier, "blocks.2", directions)
    again = FeatureVisualizer(seed=5, **settings).render(classifier, "blocks.2", directions)
    other = FeatureVisualizer(seed=6, **settings).render(classifier, "blocks.2", directions)
    assert np.array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


def spatial_view_channels(classifier) -> int:
    with torch.no_grad(), LayerTap(classifier.model, "blocks.2") as tap:
        classifier.model(torch.zeros(1, 3, 16, 16))
        return spatial_view(tap.output).shape[1]
