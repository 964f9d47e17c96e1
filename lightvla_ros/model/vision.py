"""Vision backbone: one timm ViT or the fused DINOv2 + SigLIP pair, several images per sample.

Faithful to Prismatic: features are the second-to-last block's patch tokens (prefix tokens
dropped), the fused backbone concatenates the two ViTs channel-wise (1024 + 1152 = 2176), and
every image (third-person, wrist, ...) goes through the same weights with its patches placed one
image after the other along the sequence. Beyond it: all images of all samples go through each
ViT in ONE batched pass (the reference runs a pass per image), and the blocks after the one we
read are not run (the reference runs them and drops their output); neither changes the features.
"""
from __future__ import annotations

import timm
import torch
from torch import nn


def create_featurizer(timm_model_id: str, image_size: int, overrides: dict | None = None,
                      act_layer: str | None = None) -> nn.Module:
    """A timm ViT without a classifier; no hub access (pretrained=False).

    `overrides` (e.g. embed_dim/depth/num_heads) shrink it for tiny checkpoints; they are
    recorded in config.json so the same geometry is rebuilt at load time.
    """
    kwargs = dict(overrides or {})
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    model = timm.create_model(timm_model_id, pretrained=False, num_classes=0, img_size=image_size, **kwargs)
    if len(model.blocks) < 2:
        raise ValueError(f"{timm_model_id}: need depth >= 2 to take second-to-last block features")
    return model


def image_norm_stats(featurizer: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the backbone was trained with (ImageNet for DINOv2, 0.5/0.5 for SigLIP)."""
    cfg = timm.data.resolve_model_data_config(featurizer)
    return tuple(cfg["mean"]), tuple(cfg["std"])


class VisionBackbone(nn.Module):
    """pixel_values (B, C_img * num_images, H, W) -> patch features (B, num_patches * num_images, vision_dim).

    C_img is 6 for the fused backbone (DINOv2-normalised RGB then SigLIP-normalised RGB), 3 otherwise.
    """

    def __init__(self, timm_model_ids: list[str], image_sizes: list[int],
                 timm_overrides: list[dict | None] | None = None,
                 act_layers: list[str | None] | None = None, num_images: int = 1):
        super().__init__()
        if len(timm_model_ids) not in (1, 2):
            raise ValueError(f"expected 1 or 2 timm model ids, got {timm_model_ids}")
        n = len(timm_model_ids)
        timm_overrides = list(timm_overrides or [None] * n)
        act_layers = list(act_layers or [None] * n)
        self.use_fused = n == 2
        self.featurizer = create_featurizer(timm_model_ids[0], image_sizes[0], timm_overrides[0], act_layers[0])
        if self.use_fused:
            self.fused_featurizer = create_featurizer(timm_model_ids[1], image_sizes[1], timm_overrides[1],
                                                      act_layers[1])
        self._featurizers = [self.featurizer] + ([self.fused_featurizer] if self.use_fused else [])
        self.num_patches = self.featurizer.patch_embed.num_patches  # 256 at 224 px / patch 14
        for f in self._featurizers:
            if f.patch_embed.num_patches != self.num_patches:
                raise ValueError("fused backbones must produce the same number of patches")
        self.embed_dim = sum(f.embed_dim for f in self._featurizers)  # 2176 for dinosiglip
        self.image_channels = 3 * n
        self.num_images = num_images

    @property
    def num_images(self) -> int:
        return self._num_images

    @num_images.setter
    def num_images(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"num_images must be a positive int, got {value!r}")
        self._num_images = value

    def norm_stats(self) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
        return [image_norm_stats(f) for f in self._featurizers]

    @staticmethod
    def _features(featurizer: nn.Module, images: torch.Tensor) -> torch.Tensor:
        # second-to-last block output, prefix (cls/register) tokens removed: (B, 256, D); the last
        # block does not change it, so it is not run (stop_early)
        (feats,) = featurizer.forward_intermediates(images, indices=[len(featurizer.blocks) - 2], stop_early=True,
                                                    output_fmt="NLC", intermediates_only=True)
        return feats

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        expected = self.image_channels * self.num_images
        if pixel_values.dim() != 4 or pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values must be (B, {expected}, H, W) for {self.num_images} image(s) x "
                f"{self.image_channels} channels, got {tuple(pixel_values.shape)}")
        bsz, _, height, width = pixel_values.shape
        # every camera of every sample in one batch, sample-major: row b * num_images + i is image i of sample b
        images = pixel_values.reshape(bsz * self.num_images, self.image_channels, height, width)
        parts = torch.split(images, 3, dim=1)  # one RGB view per featurizer, each normalised for it
        feats = torch.cat([self._features(f, x) for f, x in zip(self._featurizers, parts)], dim=2)  # (B*N, 256, D)
        return feats.reshape(bsz, self.num_images * self.num_patches, feats.shape[-1])  # (B, 256 * N, D), image-major
