"""Pre- and post-processing around the network: images in, proprio in, actions out.

Images follow OFT's LIBERO path (REFERENCE.md "LIBERO images"): resize to 224, optionally a
center crop of 90% of the area resized back to 224, then each backbone's own normalisation;
the fused backbone stacks [DINOv2-normalised RGB, SigLIP-normalised RGB] as 6 channels.
Deviation: OFT round-trips the resize through TF JPEG + lanczos3; here PIL lanczos, no JPEG.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

CROP_AREA = 0.9  # OFT crop_scale: fraction of the image AREA kept by the center crop


def center_crop_resize(image: Image.Image, area: float = CROP_AREA) -> Image.Image:
    """Center crop keeping `area` of the pixels (side sqrt(area)), resized back (bilinear)."""
    w, h = image.size
    side = math.sqrt(area)
    cw, ch = side * w, side * h
    left, top = (w - cw) / 2, (h - ch) / 2
    return image.resize((w, h), Image.BILINEAR, box=(left, top, left + cw, top + ch))


def image_to_pixels(image: np.ndarray, size: int, norm_stats: list, center_crop: bool) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3 * len(norm_stats), size, size) float32."""
    pil = Image.fromarray(image)
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.LANCZOS)
    if center_crop:
        pil = center_crop_resize(pil)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
    parts = []
    for mean, std in norm_stats:
        mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
        parts.append((x - mean_t) / std_t)
    return torch.cat(parts, dim=0)


def images_to_pixel_values(images: list[np.ndarray], size: int, norm_stats: list,
                           center_crop: bool) -> torch.Tensor:
    """Per-camera images -> pixel_values (1, C_img * num_images, size, size)."""
    return torch.cat([image_to_pixels(im, size, norm_stats, center_crop) for im in images], dim=0)[None]


def norm_bounds(stats: dict, normalization: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, mask) of one statistics entry: q01/q99 for bounds_q99, else min/max."""
    low_key, high_key = ("q01", "q99") if normalization == "bounds_q99" else ("min", "max")
    low = np.asarray(stats[low_key], dtype=np.float64)
    high = np.asarray(stats[high_key], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
    return low, high, mask


def normalize_proprio(proprio: np.ndarray, stats: dict, normalization: str) -> np.ndarray:
    """Raw proprio -> [-1, 1]: scaled where mask, then everything clipped (OFT normalize_proprio)."""
    low, high, mask = norm_bounds(stats, normalization)
    x = np.asarray(proprio, dtype=np.float64)
    out = np.clip(np.where(mask, 2 * (x - low) / (high - low + 1e-8) - 1, x), -1, 1)
    return out.astype(np.float32)


def unnormalize_actions(actions: np.ndarray, stats: dict, normalization: str) -> np.ndarray:
    """Normalised (chunk, dim) -> raw units where mask; unmasked dims (gripper) pass through."""
    low, high, mask = norm_bounds(stats, normalization)
    a = np.asarray(actions, dtype=np.float64)
    out = np.where(mask, 0.5 * (a + 1) * (high - low + 1e-8) + low, a)
    return out.astype(np.float32)
