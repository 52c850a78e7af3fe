"""Feature visualization for the atlas icons: the objective, the image parametrization, and that
optimization raises the objective, deterministically, on a real (tiny, random) timm network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.atlas.featurevis import (
    FeatureVisualizer,
    FourierImage,
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
    acts = torch.tensor([[3.0, 4.0], [-1.0, 0.0], [0.0, 2.0]])
    directions = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    # dot with the unit direction: 3, -1, 2; cosine: 0.6, -1 (floored to 0.1), 1
    torch.testing.assert_close(direction_cossim(acts, directions, 1.0), torch.tensor([1.8, -0.1, 2.0]))
    torch.testing.assert_close(direction_cossim(acts, directions, 2.0), torch.tensor([1.08, -0.01, 2.0]))
    torch.testing.assert_close(direction_cossim(acts, directions, 0.0), torch.tensor([3.0, -1.0, 2.0]))


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
    visualizer = FeatureVisualizer(icon_size=24, steps=25, lr=0.05, batch_size=4, seed=0)
    icons = visualizer.render(classifier, "blocks.2", directions)
    assert icons.images.shape == (6, 24, 24, 3) and icons.images.dtype == np.uint8
    assert (icons.objective_end > icons.objective_start).all(), (icons.objective_start, icons.objective_end)
    assert icons.objective_end.mean() > icons.objective_start.mean() + 0.1


def test_feature_visualization_is_deterministic_with_a_seed(classifier):
    directions = torch.randn(3, spatial_view_channels(classifier))
    first = FeatureVisualizer(icon_size=16, steps=3, batch_size=2, seed=5).render(classifier, "blocks.2", directions)
    again = FeatureVisualizer(icon_size=16, steps=3, batch_size=2, seed=5).render(classifier, "blocks.2", directions)
    other = FeatureVisualizer(icon_size=16, steps=3, batch_size=2, seed=6).render(classifier, "blocks.2", directions)
    assert np.array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


def spatial_view_channels(classifier) -> int:
    with torch.no_grad(), LayerTap(classifier.model, "blocks.2") as tap:
        classifier.model(torch.zeros(1, 3, 16, 16))
        return spatial_view(tap.output).shape[1]
