"""Pre- and post-processing around the network: images in, proprio in, actions out.

Images follow OFT's LIBERO eval path (docs/model.md "Images"; moojink/openvla-oft
experiments/robot/openvla_utils.py `prepare_images_for_vla`): an image not already at the model's
size goes through a JPEG encode/decode round trip at TF's default quality (95; model/jpeg.py, as
TF's libjpeg-turbo decodes it) and a lanczos3 resize with antialiasing (TF's kernel, in float),
then optionally the 90%-area center crop (TF's crop_and_resize); then each backbone's
normalisation, from the checkpoint's preprocessor_config.json when it has one. All in numpy, no
TensorFlow; equal to TF's pixels up to float rounding (docs/model.md "Images"). The fused backbone
stacks [DINOv2-normalised RGB, SigLIP-normalised RGB] as 6 channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from . import jpeg

CROP_AREA = 0.9  # OFT crop_scale: fraction of the image AREA kept by the center crop
JPEG_QUALITY = 95  # tf.image.encode_jpeg's default, used by OFT's resize_image_for_policy
LANCZOS_RADIUS = 3.0
RESIZE_STRATEGIES = ("resize-naive", "letterbox", "resize-crop")  # Prismatic's image_resize_strategy


@dataclass(frozen=True)
class ImageTransform:
    """How a camera image becomes pixel values for one checkpoint.

    From the checkpoint's preprocessor_config.json when present (checkpoint.load_image_transform),
    else from the timm backbones' data config.
    """

    size: int = 224  # square input side of the backbones
    norm_stats: tuple = (((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),)  # per backbone: (mean, std)
    resize_strategy: str = "resize-naive"  # how a non-square image becomes square (RESIZE_STRATEGIES)
    letterbox_fill: tuple = (127, 127, 127)  # RGB padding for "letterbox"
    source: str = "timm"  # where norm_stats / resize_strategy came from

    def __post_init__(self):
        if self.resize_strategy not in RESIZE_STRATEGIES:
            raise ValueError(f"unknown resize strategy {self.resize_strategy!r}; known: {list(RESIZE_STRATEGIES)}")
        object.__setattr__(self, "norm_stats", tuple((tuple(map(float, m)), tuple(map(float, s)))
                                                     for m, s in self.norm_stats))


@lru_cache(maxsize=16)
def _lanczos3_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (n_out, taps) of tf.image.resize(method="lanczos3", antialias=True).

    TF's scale_and_translate: pixel centres at +0.5, kernel widened by the downscale factor, taps
    clamped to the image, weights normalised per output pixel.
    """
    inv_scale = n_in / n_out
    kernel_scale = max(inv_scale, 1.0)
    sample = (np.arange(n_out) + 0.5) * inv_scale  # (n_out,) source coordinate of each output centre
    start = np.clip(np.ceil(sample - LANCZOS_RADIUS * kernel_scale - 0.5), 0, n_in - 1).astype(np.int64)
    end = np.clip(np.floor(sample + LANCZOS_RADIUS * kernel_scale - 0.5), 0, n_in - 1).astype(np.int64) + 1
    taps = int((end - start).max())
    src = np.minimum(start[:, None] + np.arange(taps)[None], n_in - 1)  # (n_out, taps)
    x = np.abs((src + 0.5 - sample[:, None]) / kernel_scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = LANCZOS_RADIUS * np.sin(np.pi * x) * np.sin(np.pi * x / LANCZOS_RADIUS) / (np.pi ** 2 * x ** 2)
    k = np.where(x <= 1e-3, 1.0, np.where(x > LANCZOS_RADIUS, 0.0, k))
    k = k * (start[:, None] + np.arange(taps)[None] < end[:, None])  # only the span's own taps
    return src, k / k.sum(axis=1, keepdims=True)


def lanczos3_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8; lanczos3 with antialiasing, rounded and clipped."""
    rows, wy = _lanczos3_taps(image.shape[0], height)
    cols, wx = _lanczos3_taps(image.shape[1], width)
    x = image.astype(np.float64)
    x = np.einsum("otwc,ot->owc", x[rows], wy)  # (height, W, 3): a few taps per output, not a dense matrix
    x = np.einsum("hotc,ot->hoc", x[:, cols], wx)  # (height, width, 3)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_square(image: np.ndarray, strategy: str, fill=(127, 127, 127)) -> np.ndarray:
    """Prismatic's resize strategies, geometry only: naive keeps the image (the resize stretches it),
    letterbox pads it symmetrically with `fill`, resize-crop keeps the central square."""
    h, w = image.shape[:2]
    if strategy == "resize-naive" or h == w:
        return image
    if strategy == "letterbox":
        side = max(h, w)
        top, left = int((side - h) / 2), int((side - w) / 2)  # as Prismatic's letterbox_pad_transform
        out = np.empty((h + 2 * top, w + 2 * left, 3), dtype=np.uint8)
        out[...] = np.asarray(fill, dtype=np.uint8)
        out[top:top + h, left:left + w] = image
        return out
    if strategy == "resize-crop":
        side = min(h, w)
        top, left = int(round((h - side) / 2)), int(round((w - side) / 2))
        return image[top:top + side, left:left + side]
    raise ValueError(f"unknown resize strategy {strategy!r}; known: {list(RESIZE_STRATEGIES)}")


def resize_for_policy(image: np.ndarray, transform: ImageTransform) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8. An image already at the size passes unchanged (OFT)."""
    size = transform.size
    if image.shape[:2] == (size, size):
        return image
    image = make_square(image, transform.resize_strategy, transform.letterbox_fill)
    return lanczos3_resize(jpeg.round_trip(image, JPEG_QUALITY), size, size)


def center_crop_image(image: np.ndarray, area: float = CROP_AREA) -> np.ndarray:
    """Center crop keeping `area` of the pixels (side sqrt(area)), resized back to the same size.

    OFT's center_crop_image in numpy: tf.image.crop_and_resize (bilinear, corner-aligned sampling,
    float32) on values in [0, 1], then back to uint8 as convert_image_dtype(saturate=True) does.
    """
    h, w = image.shape[:2]
    f32 = np.float32
    side = np.sqrt(f32(area)).astype(f32)
    lo = ((f32(1) - side) / f32(2)).astype(f32)  # box [lo, lo, lo + side, lo + side], normalised
    hi = f32(lo + side)
    x = image.astype(f32) * f32(1 / 255.0)

    def taps(n: int):  # source position of output i: lo (n - 1) + i (hi - lo) (n_in - 1) / (n_out - 1)
        scale = f32((hi - lo) * f32(n - 1) / f32(n - 1))  # n_in = n_out = n
        pos = (lo * f32(n - 1) + np.arange(n, dtype=f32) * scale).astype(f32)
        first = np.floor(pos).astype(np.int64)
        return first, np.ceil(pos).astype(np.int64), (pos - first.astype(f32)).astype(f32)

    top, bottom, y_lerp = taps(h)
    left, right, x_lerp = taps(w)
    x_lerp, y_lerp = x_lerp[None, :, None], y_lerp[:, None, None]
    upper = x[top][:, left] + (x[top][:, right] - x[top][:, left]) * x_lerp
    lower = x[bottom][:, left] + (x[bottom][:, right] - x[bottom][:, left]) * x_lerp
    out = upper + (lower - upper) * y_lerp
    return (np.clip(out, 0, 1) * f32(255.5)).astype(np.uint8)


def image_to_pixels(image: np.ndarray, transform: ImageTransform, center_crop: bool) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3 * len(transform.norm_stats), size, size) float32."""
    image = resize_for_policy(np.ascontiguousarray(image), transform)
    if center_crop:
        image = center_crop_image(image)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0)  # (3, S, S)
    parts = []
    for mean, std in transform.norm_stats:
        mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
        parts.append((x - mean_t) / std_t)
    return torch.cat(parts, dim=0)


def images_to_pixel_values(images: list[np.ndarray], transform: ImageTransform, center_crop: bool) -> torch.Tensor:
    """Per-camera images -> pixel_values (1, C_img * num_images, size, size)."""
    return torch.cat([image_to_pixels(im, transform, center_crop) for im in images], dim=0)[None]


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
