"""Feature visualization of activation directions (Olah et al., 2017; Carter et al., 2019):
optimize images, parametrized in a decorrelated Fourier basis, so a layer's activation points
along a given (whitened) direction, under random padding, jitter, scale and rotation. Many icons
are optimized together, one direction per image of a batch, in several attempts of which each
icon keeps its best.

The atlas settings follow lucid's activation-atlas notebooks (``render_icons``): objective
``direction_neuron_cossim_S`` with the direction whitened (``vec @ S``), Adam at 0.05, the atlas
transform stack (``ATLAS_TRANSFORMS``), and per icon the attempt with the highest objective at the
last step."""

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

    def __init__(
        self,
        batch: int,
        size: int,
        decay_power: float = 1.0,
        sd: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.size = size
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freqs = torch.sqrt(fx**2 + fy**2)
        self.register_buffer("scale", 1.0 / freqs.clamp_min(1.0 / size) ** decay_power)
        spectrum = torch.randn(batch, 3, size, size // 2 + 1, 2, generator=generator) * sd
        self.spectrum = nn.Parameter(spectrum)

    def forward(self) -> torch.Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(coefficients, s=(self.size, self.size), norm="ortho") / 4.0
        rgb = torch.einsum("bchw,dc->bdhw", image, COLOR_MATRIX.to(image))
        return torch.sigmoid(rgb)


def robustness_transforms(
    images: torch.Tensor,
    generator: torch.Generator,
    pad: int = 12,
    jitter: int = 8,
    scales: Sequence[float] = tuple(1 + (i - 5) / 50 for i in range(11)),
    angles: Sequence[float] = tuple(range(-10, 11)),
    final_jitter: int = 4,
) -> torch.Tensor:
    """Lucid's ``standard_transforms``-like stack (the CPU preset): pad with grey, jitter, random
    scale and rotation per image, jitter again; the icon must keep its effect under all of them."""
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


# The atlas notebooks' transform stack ("activation-atlas-simple" / "class-activation-atlas",
# render_icons): pad 2 px with 1.0, jitter 4, 4, 8, 8, 8, a random scale, a random rotation in
# degrees (each value listed as often as the notebook lists it, so small angles and the 5 unrotated
# copies are drawn more often), jitter 2. One draw per step for the whole batch, as in TensorFlow.
ATLAS_PAD, ATLAS_PAD_VALUE = 2, 1.0
ATLAS_JITTERS = (4, 4, 8, 8, 8)
ATLAS_SCALES = tuple([0.995**n for n in range(-5, 80)] + [0.998**n for n in 2 * list(range(20, 40))])
ATLAS_ANGLES = tuple(list(range(-20, 20)) + list(range(-10, 10)) + list(range(-5, 5)) + 5 * [0])
ATLAS_FINAL_JITTER = 2


def atlas_transforms(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The atlas notebooks' stack. Scaling resizes the image (bilinear, ``resize_bilinear``);
    rotation is ``tf.contrib.image.rotate``: nearest pixel, zeros outside, and lucid's degrees to
    radians with 3.14 for pi."""
    x = F.pad(images, (ATLAS_PAD,) * 4, value=ATLAS_PAD_VALUE)
    for d in ATLAS_JITTERS:
        x = _jitter(x, d, generator)
    scale = ATLAS_SCALES[int(torch.randint(len(ATLAS_SCALES), (1,), generator=generator))]
    size = (max(1, int(scale * x.shape[2])), max(1, int(scale * x.shape[3])))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    angle = ATLAS_ANGLES[int(torch.randint(len(ATLAS_ANGLES), (1,), generator=generator))]
    if angle:
        theta = torch.tensor(3.14 * angle / 180.0)
        affine = torch.tensor([[torch.cos(theta), -torch.sin(theta), 0.0], [torch.sin(theta), torch.cos(theta), 0.0]])
        grid = F.affine_grid(affine.expand(x.shape[0], 2, 3).to(x), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return _jitter(x, ATLAS_FINAL_JITTER, generator)


TRANSFORMS = {"atlas": atlas_transforms, "standard": robustness_transforms, "none": None}


def _jitter(x: torch.Tensor, d: int, generator: torch.Generator) -> torch.Tensor:
    """A random crop that removes ``d`` pixels in each dimension (one offset for the batch)."""
    if d <= 0:
        return x
    dy, dx = torch.randint(d + 1, (2,), generator=generator).tolist()
    return x[:, :, dy : x.shape[2] - d + dy, dx : x.shape[3] - d + dx]


def direction_cossim(acts: torch.Tensor, directions: torch.Tensor, cossim_pow: float = 1.0) -> torch.Tensor:
    """Lucid's ``direction_neuron_cossim_S`` per image (``acts`` and ``directions`` (B, C); the
    direction already whitened):

        dot = reduce_mean(acts * vec); cossim = max(0.1, dot / (1e-4 + |acts|)); dot * cossim ** pow

    ``dot`` is a mean over channels and ``vec`` is not normalized, so "cossim" is the cosine only up
    to a constant factor; the floor 0.1 keeps the gradient of anti-aligned starts alive."""
    dot = (acts * directions).mean(1)
    cossim = (dot / (1e-4 + acts.norm(dim=1))).clamp_min(0.1)
    return dot * cossim**cossim_pow


@dataclass
class Icons:
    """Rendered icons (M, S, S, 3) uint8; the objective of each before optimization (untransformed
    image), at the last step of its best attempt (``objective_last_step``, what picks the attempt)
    and after optimization (untransformed), and which attempt won."""

    images: np.ndarray
    objective_start: np.ndarray
    objective_end: np.ndarray
    objective_last_step: np.ndarray
    attempt: np.ndarray


class FeatureVisualizer:
    """Renders one icon per direction: ``attempts`` runs of ``steps`` Adam steps at ``lr`` on a
    FourierImage of ``icon_size`` pixels under the ``transforms`` stack (``atlas``, ``standard`` or
    ``none``), ``batch_size`` icons at a time; each icon keeps the attempt with the highest
    objective at the last step. Deterministic given ``seed``."""

    def __init__(
        self,
        icon_size: int = 80,
        steps: int = 512,
        lr: float = 0.05,
        batch_size: int = 32,
        decay_power: float = 1.0,
        cossim_pow: float = 4.0,
        transforms: str = "atlas",
        attempts: int = 1,
        input_size: int | None = None,
        seed: int = 0,
    ) -> None:
        if transforms not in TRANSFORMS:
            raise ValueError(f"featurevis.transforms={transforms!r}: choose one of {sorted(TRANSFORMS)}")
        if attempts < 1:
            raise ValueError(f"featurevis.attempts={attempts} must be >= 1")
        shrink = 2 * ATLAS_PAD - sum(ATLAS_JITTERS) - ATLAS_FINAL_JITTER
        if transforms == "atlas" and icon_size + shrink < 8:
            raise ValueError(
                f"featurevis.icon_size={icon_size} is too small for the atlas transforms, which crop "
                f"{-shrink} px: use icon_size >= {8 - shrink} or transforms=standard"
            )
        self.icon_size = icon_size
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.decay_power = decay_power
        self.cossim_pow = cossim_pow
        self.transforms = transforms
        self.attempts = attempts
        self.input_size = input_size
        self.seed = seed

    def objective(
        self,
        classifier: Classifier,
        tap: LayerTap,
        images: torch.Tensor,
        directions: torch.Tensor,
        cossim_pow: float | None = None,
    ) -> torch.Tensor:
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
            raise ValueError(
                f"directions have {directions.shape[1]} channels but layer {tap.layer_name!r} has {centre.shape[1]}"
            )
        return direction_cossim(centre, directions, self.cossim_pow if cossim_pow is None else cossim_pow)

    def render(
        self,
        classifier: Classifier,
        layer: str,
        directions: np.ndarray | torch.Tensor,
        whitening: np.ndarray | None = None,
        cossim_pow: float | None = None,
        attempts: int | None = None,
    ) -> Icons:
        """Optimize one icon for each row of ``directions`` (M, C); with ``whitening`` S (C, C) the
        objective uses ``v @ S`` (the notebooks' ``tf.matmul(vec[None], S)``). ``cossim_pow`` and
        ``attempts`` override the visualizer's own (a class atlas uses its own)."""
        directions = torch.as_tensor(np.asarray(directions), dtype=torch.float32)
        if whitening is not None:
            directions = directions @ torch.as_tensor(np.asarray(whitening), dtype=torch.float32)
        attempts = attempts or self.attempts
        transform = TRANSFORMS[self.transforms]
        model = classifier.model.eval().requires_grad_(False)
        results: dict[str, list[torch.Tensor]] = {k: [] for k in ("images", "start", "end", "last", "attempt")}
        with LayerTap(model, layer) as tap:
            for first in range(0, len(directions), self.batch_size):
                batch = directions[first : first + self.batch_size]
                best: dict[str, torch.Tensor] = {}
                for attempt in range(attempts):
                    seed = (self.seed * 1_000_003 + first) * 7919 + attempt
                    generator = torch.Generator().manual_seed(seed)
                    image = FourierImage(len(batch), self.icon_size, self.decay_power, generator=generator)
                    optimizer = torch.optim.Adam(image.parameters(), lr=self.lr)
                    with torch.no_grad():
                        start = self.objective(classifier, tap, image(), batch, cossim_pow)
                    last = torch.full((len(batch),), -math.inf)
                    for _ in range(self.steps):
                        optimizer.zero_grad()
                        pixels = image()
                        if transform is not None:
                            pixels = transform(pixels, generator)
                        objective = self.objective(classifier, tap, pixels, batch, cossim_pow)
                        last = objective.detach()
                        (-objective.sum()).backward()
                        optimizer.step()
                    with torch.no_grad():
                        pixels = image()
                        end = self.objective(classifier, tap, pixels, batch, cossim_pow)
                    if not best:
                        best = {
                            "images": pixels,
                            "start": start,
                            "end": end,
                            "last": last,
                            "attempt": torch.zeros(len(batch), dtype=torch.long),
                        }
                        continue
                    better = last > best["last"]  # "this should be max, it is not a traditional loss"
                    for key, value in (("images", pixels), ("start", start), ("end", end), ("last", last)):
                        mask = better.view(-1, *([1] * (value.dim() - 1)))
                        best[key] = torch.where(mask, value, best[key])
                    best["attempt"] = torch.where(better, torch.full_like(best["attempt"], attempt), best["attempt"])
                for key in results:
                    results[key].append(best[key])
        if not results["images"]:
            empty = np.zeros(0)
            return Icons(
                np.zeros((0, self.icon_size, self.icon_size, 3), np.uint8), empty, empty, empty, np.zeros(0, np.int64)
            )
        images = (torch.cat(results["images"]).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        return Icons(
            images,
            torch.cat(results["start"]).numpy(),
            torch.cat(results["end"]).numpy(),
            torch.cat(results["last"]).numpy(),
            torch.cat(results["attempt"]).numpy(),
        )
