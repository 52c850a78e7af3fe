"""Feature visualization of activation directions (Olah et al., 2017; Carter et al., 2019):
optimize images, parametrized in a decorrelated Fourier basis, so a layer's activation points
along a given direction, under random jitter, scale and rotation. Many icons are optimized
together, one direction per image of a batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.atlas.network import Classifier, LayerTap, spatial_view

# Square root (by SVD) of the colour correlation of ImageNet pixels, the constant Lucid uses to
# decorrelate colour; columns are scaled by their largest norm.
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MATRIX = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


class FourierImage(nn.Module):
    """A batch of RGB images in [0, 1] whose parameters are 2D Fourier coefficients scaled by
    1 / frequency^decay_power (so gradient steps favour low frequencies, as natural images do),
    in a decorrelated colour space mapped to RGB and squashed by a sigmoid."""

    def __init__(self, batch: int, size: int, decay_power: float = 1.0, sd: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.size = size
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freqs = torch.sqrt(fx ** 2 + fy ** 2)
        self.register_buffer("scale", 1.0 / freqs.clamp_min(1.0 / size) ** decay_power)
        spectrum = torch.randn(batch, 3, size, size // 2 + 1, 2, generator=generator) * sd
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(coefficients, s=(self.size, self.size), norm="ortho") / 4.0
        rgb = torch.einsum("bchw,dc->bdhw", image, COLOR_MATRIX.to(image))
        return torch.sigmoid(rgb)


def robustness_transforms(images: torch.Tensor, generator: torch.Generator, pad: int = 12,
                          jitter: int = 8, scales: Sequence[float] = tuple(1 + (i - 5) / 50 for i in range(11)),
                          angles: Sequence[float] = tuple(range(-10, 11)), final_jitter: int = 4) -> torch.Tensor:
    """Lucid's standard transformation robustness: pad with grey, jitter, random scale and
    rotation per image, jitter again; the icon must keep its effect under all of them."""
    b = images.shape[0]
    x = F.pad(images, (pad,) * 4, value=0.5)
    x = _jitter(x, jitter, generator)
    scale = torch.tensor(scales)[torch.randint(len(scales), (b,), generator=generator)]
    angle = torch.tensor(angles, dtype=torch.float32)[torch.randint(len(angles), (b,), generator=generator)]
    theta = angle * math.pi / 180
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    affine = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
    grid = F.affine_grid(affine.to(x), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _jitter(x, final_jitter, generator)


def _jitter(x: torch.Tensor, d: int, generator: torch.Generator) -> torch.Tensor:
    """A random crop that removes ``d`` pixels in each dimension."""
    if d <= 0:
        return x
    dy, dx = torch.randint(d + 1, (2,), generator=generator).tolist()
    return x[:, :, dy: x.shape[2] - d + dy, dx: x.shape[3] - d + dx]


def direction_cossim(acts: torch.Tensor, directions: torch.Tensor, cossim_pow: float = 1.0) -> torch.Tensor:
    """Lucid's direction objective with cosine weighting, per image: the activation's projection on
    its direction times (cosine similarity, floored at 0.1)^cossim_pow, which rewards pointing
    along the direction rather than only growing large. ``acts`` and ``directions`` are (B, C)."""
    unit = F.normalize(directions, dim=1)
    dot = (acts * unit).sum(1)
    cossim = (dot / acts.norm(dim=1).clamp_min(1e-6)).clamp_min(0.1)
    return dot * cossim ** cossim_pow


@dataclass
class Icons:
    """Rendered icons (M, S, S, 3) uint8 and the objective of each before and after optimization
    (measured on the untransformed image)."""

    images: np.ndarray
    objective_start: np.ndarray
    objective_end: np.ndarray


class FeatureVisualizer:
    """Renders one icon per direction: ``steps`` Adam steps at ``lr`` on a FourierImage of
    ``icon_size`` pixels, ``batch_size`` icons at a time, deterministic given ``seed``."""

    def __init__(self, icon_size: int = 64, steps: int = 128, lr: float = 0.05, batch_size: int = 32,
                 decay_power: float = 1.0, cossim_pow: float = 1.0, transforms: bool = True,
                 input_size: int | None = None, seed: int = 0) -> None:
        self.icon_size = icon_size
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.decay_power = decay_power
        self.cossim_pow = cossim_pow
        self.transforms = transforms
        self.input_size = input_size
        self.seed = seed

    def objective(self, classifier: Classifier, tap: LayerTap, images: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Per-image objective at the centre spatial position of the layer (the paper's "neuron")."""
        if self.input_size and images.shape[-1] != self.input_size:
            images = F.interpolate(images, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        mean = torch.tensor(classifier.mean).view(1, 3, 1, 1)
        std = torch.tensor(classifier.std).view(1, 3, 1, 1)
        classifier.model((images - mean) / std)
        output = tap.output
        if output.dim() == 4:  # (B, C, H, W): the centre pixel of the feature map
            centre = output[:, :, output.shape[2] // 2, output.shape[3] // 2]
        else:
            acts = spatial_view(output)
            centre = acts[:, :, acts.shape[2] // 2]
        if centre.shape[1] != directions.shape[1]:
            raise ValueError(f"directions have {directions.shape[1]} channels but layer {tap.layer_name!r} "
                             f"has {centre.shape[1]}")
        return direction_cossim(centre, directions, self.cossim_pow)

    def render(self, classifier: Classifier, layer: str, directions: np.ndarray | torch.Tensor) -> Icons:
        """Optimize one icon for each row of ``directions`` (M, C)."""
        directions = torch.as_tensor(np.asarray(directions), dtype=torch.float32)
        model = classifier.model.eval().requires_grad_(False)
        out_images, start, end = [], [], []
        with LayerTap(model, layer) as tap:
            for first in range(0, len(directions), self.batch_size):
                batch = directions[first: first + self.batch_size]
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + first)
                image = FourierImage(len(batch), self.icon_size, self.decay_power, generator=generator)
                optimizer = torch.optim.Adam(image.parameters(), lr=self.lr)
                with torch.no_grad():
                    start.append(self.objective(classifier, tap, image(), batch))
                for _ in range(self.steps):
                    optimizer.zero_grad()
                    pixels = image()
                    if self.transforms:
                        pixels = robustness_transforms(pixels, generator)
                    loss = -self.objective(classifier, tap, pixels, batch).sum()
                    loss.backward()
                    optimizer.step()
                with torch.no_grad():
                    pixels = image()
                    end.append(self.objective(classifier, tap, pixels, batch))
                out_images.append((pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
        if not out_images:
            return Icons(np.zeros((0, self.icon_size, self.icon_size, 3), np.uint8), np.zeros(0), np.zeros(0))
        return Icons(np.concatenate(out_images), torch.cat(start).numpy(), torch.cat(end).numpy())
