"""The vision backbone: every camera of every sample in one batched pass per ViT gives the features
the reference's one-pass-per-image loop gives (fp32, CPU)."""
import pytest
import torch

from lightvla_ros.model import load_vla, make_checkpoint

TOLERANCE = 1e-5  # a batch of B*N images vs B: the same per-image math, other GEMM blocking


def per_image_features(backbone, pixel_values):
    """The reference's loop: each image its own pass through each ViT (all blocks run, the
    second-to-last one read), patches concatenated image after image."""
    featurizers = [backbone.featurizer] + ([backbone.fused_featurizer] if backbone.use_fused else [])
    out = []
    for image in torch.split(pixel_values, backbone.image_channels, dim=1):  # (B, C_img, H, W)
        parts = torch.split(image, 3, dim=1)
        feats = [f.get_intermediate_layers(x, n=[len(f.blocks) - 2])[0] for f, x in zip(featurizers, parts)]
        out.append(torch.cat(feats, dim=2))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("batch", [1, 3])
def test_one_batched_pass_equals_one_pass_per_image(vla, batch):
    torch.manual_seed(batch)
    x = torch.randn(batch, 12, 224, 224)  # 2 cameras x (DINOv2 RGB + SigLIP RGB)
    calls = []
    for f in (vla.vision_backbone.featurizer, vla.vision_backbone.fused_featurizer):
        f.patch_embed.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        batched = vla.vision_backbone(x)
        assert calls == [2 * batch, 2 * batch]  # one pass per ViT, every image in it
        reference = per_image_features(vla.vision_backbone, x)
    assert batched.shape == reference.shape == (batch, 512, 80)
    torch.testing.assert_close(batched, reference, rtol=0, atol=TOLERANCE)


def test_single_backbone_three_cameras(tmp_path):
    vla = load_vla(make_checkpoint(tmp_path / "siglip", size="tiny", vision="siglip", num_images=3), device="cpu")
    x = torch.randn(2, 9, 224, 224)
    with torch.no_grad():
        batched = vla.vision_backbone(x)
        reference = per_image_features(vla.vision_backbone, x)
    assert batched.shape == (2, 768, 48)
    torch.testing.assert_close(batched, reference, rtol=0, atol=TOLERANCE)
