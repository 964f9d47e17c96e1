"""The image pipeline (OFT's resize_image_for_policy and center crop without TensorFlow) and
preprocessor_config.json. Golden data: written by TensorFlow 2.21 with
`benchmarks/image_pipeline_vs_tf.py --golden` (a 40 x 48 random image with a white square)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lightvla_ros.model import CheckpointError, load_vla, save_checkpoint
from lightvla_ros.model import jpeg
from lightvla_ros.model.preprocess import (ImageTransform, center_crop_image, lanczos3_resize, make_square,
                                           resize_for_policy)

DATA = Path(__file__).parent / "data"
# preprocessor_config.json of the released dinosiglip checkpoints: the processor applies
# tvf_normalize_params, whose DINOv2 statistics are bf16-rounded ImageNet values
RELEASED_NORMALIZE = [
    {"inplace": False, "mean": [0.484375, 0.455078125, 0.40625], "std": [0.228515625, 0.2236328125, 0.224609375]},
    {"inplace": False, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
]


@pytest.mark.parametrize("name", ["down", "up", "mixed"])
def test_lanczos3_matches_tensorflow(name):
    """tf.image.resize(method="lanczos3", antialias=True), rounded and clipped."""
    ref = np.load(DATA / "tf_image_ops.npz")
    out = lanczos3_resize(ref["image"], *ref[name].shape[:2])
    diff = np.abs(out.astype(int) - ref[name].astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01  # float rounding at .5 only


@pytest.mark.parametrize("name,size,quality", [("jpeg", (40, 48), 95), ("jpeg_odd", (37, 45), 95),
                                               ("jpeg_odd_q50", (37, 45), 50), ("jpeg_tiny", (2, 3), 95)])
def test_jpeg_round_trip_matches_tensorflow(name, size, quality):
    """tf.io.decode_image(tf.image.encode_jpeg(x, quality)): the fast-DCT decode, bit for bit
    (odd sizes: edge padding before and after chroma downsampling; 2 columns: no fancy upsampling)."""
    ref = np.load(DATA / "tf_image_ops.npz")
    image = ref["image"][:size[0], :size[1]]
    np.testing.assert_array_equal(jpeg.round_trip(image, quality), ref[name])


def test_center_crop_matches_tensorflow():
    """OFT's center_crop_image: tf.image.crop_and_resize of 90% of the area, back to uint8."""
    ref = np.load(DATA / "tf_image_ops.npz")
    np.testing.assert_array_equal(center_crop_image(ref["image"]), ref["crop"])


def test_resize_for_policy_matches_tensorflow_and_skips_images_at_size():
    """OFT's resize_image_for_policy (JPEG at TF's default quality, lanczos3) for an image not at
    the size; an image already at the size is not touched."""
    ref = np.load(DATA / "tf_image_ops.npz")
    out = resize_for_policy(ref["image"], ImageTransform(size=28))
    diff = np.abs(out.astype(int) - ref["resize_for_policy"].astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01
    at_size = ref["image"][:28, :28]
    assert resize_for_policy(at_size, ImageTransform(size=28)) is at_size


def test_resize_strategies_make_square_images():
    image = np.zeros((4, 8, 3), np.uint8)
    image[:] = 200
    boxed = make_square(image, "letterbox", (10, 20, 30))
    assert boxed.shape == (8, 8, 3)
    assert (boxed[:2] == [10, 20, 30]).all() and (boxed[-2:] == [10, 20, 30]).all() and (boxed[2:6] == 200).all()
    ramp = np.arange(8, dtype=np.uint8)[None, :, None].repeat(4, 0).repeat(3, 2)
    cropped = make_square(ramp, "resize-crop")
    assert cropped.shape == (4, 4, 3) and cropped[0, :, 0].tolist() == [2, 3, 4, 5]
    assert make_square(ramp, "resize-naive") is ramp
    with pytest.raises(ValueError, match="resize strategy"):
        ImageTransform(resize_strategy="stretch")


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path):
    return shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")


def _edit_preprocessor(ckpt, **changes):
    path = ckpt / "preprocessor_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_generated_checkpoint_ships_a_preprocessor_config(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "PrismaticImageProcessor"
    assert config["image_resize_strategy"] == "resize-naive" and config["input_sizes"] == [[3, 224, 224]] * 2
    vla = load_vla(tiny_checkpoint, device="cpu")
    assert vla.image_transform.source == "preprocessor_config.json"
    assert vla.image_transform.norm_stats == tuple(vla.vision_backbone.norm_stats())  # generated from timm's


def test_preprocessor_config_normalisation_is_honoured(ckpt, images):
    _edit_preprocessor(ckpt, tvf_normalize_params=RELEASED_NORMALIZE)
    vla = load_vla(ckpt, device="cpu")
    assert vla.image_transform.norm_stats[0] == ((0.484375, 0.455078125, 0.40625),
                                                 (0.228515625, 0.2236328125, 0.224609375))
    pixel_values, _, _ = vla.build_inputs(images, "open the drawer")
    # undo the released DINOv2 normalisation by hand: the same RGB as the SigLIP half (mean = std = 0.5)
    mean, std = (torch.tensor(RELEASED_NORMALIZE[0][k])[:, None, None] for k in ("mean", "std"))
    torch.testing.assert_close(pixel_values[0, :3] * std + mean, pixel_values[0, 3:6] * 0.5 + 0.5,
                               atol=1e-6, rtol=0)
    (ckpt / "preprocessor_config.json").unlink()
    timm_vla = load_vla(ckpt, device="cpu")  # no file: timm's ImageNet statistics
    assert timm_vla.image_transform.source == "timm"
    assert timm_vla.image_transform.norm_stats[0][0] == pytest.approx((0.485, 0.456, 0.406))
    assert not torch.allclose(timm_vla.build_inputs(images, "open the drawer")[0], pixel_values)


def test_preprocessor_config_resize_strategy_is_honoured(ckpt):
    _edit_preprocessor(ckpt, image_resize_strategy="letterbox", tvf_letterbox_fill=[0, 255, 0])
    vla = load_vla(ckpt, device="cpu")
    assert vla.image_transform.resize_strategy == "letterbox"
    wide = np.full((120, 240, 3), 255, np.uint8)  # white, twice as wide as high
    pixel_values, _, _ = vla.build_inputs([wide, wide], "open the drawer", center_crop=False)
    rgb = pixel_values[0, 3:6] * 0.5 + 0.5  # SigLIP half back to [0, 1]
    assert rgb[:, 224 // 2, 224 // 2].tolist() == pytest.approx([1, 1, 1], abs=0.02)  # the picture
    assert rgb[:, 5, 112].tolist() == pytest.approx([0, 1, 0], abs=0.02)  # the green bars


def test_preprocessor_config_survives_save(ckpt, tmp_path):
    _edit_preprocessor(ckpt, tvf_normalize_params=RELEASED_NORMALIZE)
    save_checkpoint(load_vla(ckpt, device="cpu"), tmp_path / "saved")
    again = load_vla(tmp_path / "saved", device="cpu")
    assert again.image_transform.norm_stats[0][0] == (0.484375, 0.455078125, 0.40625)


@pytest.mark.parametrize("changes,key", [
    ({"tvf_normalize_params": RELEASED_NORMALIZE[:1]}, "tvf_normalize_params"),
    ({"tvf_normalize_params": [{"mean": [0.5] * 3, "std": [0.0] * 3}] * 2}, "tvf_normalize_params"),
    ({"image_resize_strategy": "stretch"}, "image_resize_strategy"),
    ({"input_sizes": [[3, 448, 448]] * 2}, "input_sizes"),
])
def test_bad_preprocessor_config(ckpt, changes, key):
    _edit_preprocessor(ckpt, **changes)
    with pytest.raises(CheckpointError, match=key):
        load_vla(ckpt, device="cpu")
