"""Training-time image augmentation: OpenVLA-OFT's `image_aug` (on by default in the reference).

openvla-oft vla-scripts/finetune.py, `image_aug=True` -> the RLDS frame transform applies to every
camera image, in this order, on values in [0, 1], each result clipped to [0, 1]:

    random_resized_crop  scale [0.9, 0.9], ratio [1.0, 1.0]: a square of 90 % of the area at a
                         uniformly random position, bilinearly resized back to the input size
    random_brightness    + U(-0.2, 0.2)
    random_contrast      (x - mean) * U(0.8, 1.2) + mean   (mean per channel over the image)
    random_saturation    x U(0.8, 1.2)
    random_hue           + U(-0.05, 0.05) of the hue circle

At inference `predict_action` center-crops the same 90 % area (preprocess.center_crop_image), so
the crop the policy sees is the mean of the training crops. Saturation here blends with the
grey image (torchvision's adjust_saturation, written out) where TF scales S in HSV: the same direction and
range, not bit-identical; nothing downstream depends on the exact jitter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..model.preprocess import CROP_AREA, ImageTransform


GREY_WEIGHTS = torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601-2 luma, as torchvision


@dataclass(frozen=True)
class ImageAugment:
    crop_area: float = CROP_AREA
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, 3, S, S) float in [0, 1] -> the same shape, each image augmented independently."""
        n = images.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        side = float(np.sqrt(self.crop_area))
        x = self.crop(images, uniform(0.0, 1.0 - side), uniform(0.0, 1.0 - side))
        x = (x + uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)).clamp(0, 1)
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * uniform(*self.contrast).view(n, 1, 1, 1) + mean).clamp(0, 1)
        x = saturate(x, uniform(*self.saturation))
        return shift_hue(x, uniform(-self.hue, self.hue)).clamp(0, 1)

    def crop(self, images: torch.Tensor, lo_x: torch.Tensor, lo_y: torch.Tensor) -> torch.Tensor:
        """The crop box [lo, lo + sqrt(area)] (fractions of the side, per image) resized back to the
        input size, bilinear with corner-aligned sampling (tf.image.crop_and_resize)."""
        n, side = images.shape[0], float(np.sqrt(self.crop_area))
        theta = torch.zeros(n, 2, 3, dtype=images.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = side
        theta[:, 0, 2], theta[:, 1, 2] = side + 2 * lo_x - 1, side + 2 * lo_y - 1
        grid = F.affine_grid(theta, list(images.shape), align_corners=True)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True).clamp(0, 1)


def normalize_pixels(images: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1] -> (N, 3 * backbones, S, S): each backbone's (x - mean) / std, stacked
    on channels as image_to_pixels does."""
    parts = []
    for mean, std in transform.norm_stats:
        mean_t = torch.tensor(mean, dtype=images.dtype)[None, :, None, None]
        std_t = torch.tensor(std, dtype=images.dtype)[None, :, None, None]
        parts.append((images - mean_t) / std_t)
    return torch.cat(parts, dim=1)


def saturate(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1], per-image factors: blend with the grey image (torchvision's
    rgb_to_grayscale weights and adjust_saturation), clipped."""
    grey = (images * GREY_WEIGHTS.to(images.dtype)).sum(dim=1, keepdim=True)
    return (grey + (images - grey) * factor.view(-1, 1, 1, 1)).clamp(0, 1)


def shift_hue(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1], per-image hue shifts `delta` (fractions of the circle): RGB ->
    HSV, h + delta mod 1, -> RGB; torchvision's adjust_hue, batched over different shifts."""
    r, g, b = images.unbind(1)
    maxc, minc = images.amax(1), images.amin(1)
    chroma = maxc - minc
    sat = chroma / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(chroma > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    hue = (hue + delta.view(-1, 1, 1)) % 1.0
    # HSV -> RGB without sector tables: channel = v - v s clamp(min(k, 4 - k), 0, 1),
    # k = (m + 6 h) mod 6 with m = 5, 3, 1 for R, G, B
    m = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype).view(1, 3, 1, 1)
    k = (m + 6.0 * hue[:, None]) % 6.0
    weight = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return maxc[:, None] * (1.0 - sat[:, None] * weight)
