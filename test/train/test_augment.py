"""Training-time image augmentation (OFT's image_aug): the crop box, the jitter ranges, the batch layout."""
import numpy as np
import torch

from lightvla_ros.model.preprocess import CROP_AREA, ImageTransform, center_crop_image, image_to_pixels
from lightvla_ros.train.augment import ImageAugment, normalize_pixels, saturate, shift_hue
from lightvla_ros.train.finetune import collate, resized_frames
from lightvla_ros.train.dataset import Sample


def _image(seed=0, size=84):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 6, size // 6, 3), dtype=np.uint8)
    return np.kron(base, np.ones((6, 6, 1), dtype=np.uint8))  # blocky: bilinear sampling is well defined


def _tensor(image):
    return torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255)[None]


def test_crop_at_the_center_is_predict_actions_center_crop():
    """Train-time crops are the eval crop (OFT center_crop_image) at a random position: at the
    center box they give the same pixels, up to the uint8 rounding of the eval path."""
    image = _image()
    side = np.sqrt(CROP_AREA)
    lo = torch.tensor([(1 - side) / 2])
    ours = ImageAugment().crop(_tensor(image), lo, lo)[0].numpy().transpose(1, 2, 0)
    theirs = center_crop_image(image).astype(np.float32) / 255
    assert np.abs(ours - theirs).max() <= 1.01 / 255


def test_crops_move_with_the_box_and_a_full_box_is_the_identity():
    image = _tensor(_image(1))
    whole = ImageAugment(crop_area=1.0).crop(image, torch.zeros(1), torch.zeros(1))
    torch.testing.assert_close(whole, image, atol=1e-5, rtol=0)  # float grid arithmetic
    aug = ImageAugment()
    left = aug.crop(image, torch.zeros(1), torch.zeros(1))
    right = aug.crop(image, torch.tensor([1 - np.sqrt(CROP_AREA)]), torch.zeros(1))
    assert (left - right).abs().max() > 0.1
    # the left box starts at the image's top-left pixel, the right one ends at its right edge
    torch.testing.assert_close(left[..., 0, 0], image[..., 0, 0])
    torch.testing.assert_close(right[..., 0, -1], image[..., 0, -1])


def test_batched_hue_and_saturation_are_torchvisions_per_image():
    from torchvision.transforms.v2 import functional as TF

    images = torch.cat([_tensor(_image(s)) for s in range(3)] + [torch.full((1, 3, 84, 84), 0.5)])
    delta = torch.tensor([0.05, -0.05, 0.3, 0.02])
    expected = torch.stack([TF.adjust_hue(im, float(d)) for im, d in zip(images, delta)])
    torch.testing.assert_close(shift_hue(images, delta), expected, atol=1e-5, rtol=0)
    factor = torch.tensor([0.8, 1.2, 1.0, 0.9])
    expected = torch.stack([TF.adjust_saturation(im, float(f)) for im, f in zip(images, factor)])
    torch.testing.assert_close(saturate(images, factor), expected, atol=1e-5, rtol=0)


def test_augment_is_seeded_per_image_and_stays_in_range():
    images = torch.cat([_tensor(_image(s)) for s in range(4)])
    aug = ImageAugment()
    a = aug(images, torch.Generator().manual_seed(0))
    b = aug(images, torch.Generator().manual_seed(0))
    c = aug(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 0.05
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    # jitter within the reference's ranges: the mean moves by at most brightness + contrast/saturation effects
    assert (a.mean(dim=(1, 2, 3)) - images.mean(dim=(1, 2, 3))).abs().max() < 0.35


def test_collate_with_augmentation_has_the_eval_layout():
    """Cameras stacked on channels as image_to_pixels does, each backbone's normalisation: with no
    jitter and the center box, the training pixels equal predict_action's (to uint8 rounding)."""
    transform = ImageTransform(size=84, norm_stats=(((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), ((0.5,) * 3, (0.5,) * 3)))
    images = [_image(2, 128), _image(3, 128)]
    raw = resized_frames(images, transform)
    assert raw.shape == (2, 3, 84, 84)
    side = np.sqrt(CROP_AREA)
    lo = torch.full((2,), (1 - side) / 2)
    ours = normalize_pixels(ImageAugment().crop(raw, lo, lo), transform).reshape(1, -1, 84, 84)
    theirs = torch.cat([image_to_pixels(im, transform, center_crop=True) for im in images])[None]
    assert ours.shape == theirs.shape == (1, 12, 84, 84)
    assert (ours - theirs).abs().max() <= 1.01 / 255 / 0.2

    class _Model(torch.nn.Module):  # what collate reads from a LightVLA
        image_transform = transform
        proprio_projector = None

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def prompt_batch(self, texts):
            return torch.ones(len(texts), 3, dtype=torch.long), torch.ones(len(texts), 3, dtype=torch.long)

    sample = Sample(images=images, proprio=np.zeros(8, np.float32), actions=np.zeros((8, 7), np.float32),
                    instruction="lift")
    pixels, *_ = collate(_Model(), [sample, sample], augment=ImageAugment(),
                         generator=torch.Generator().manual_seed(0))
    assert pixels.shape == (2, 12, 84, 84)
    assert (pixels[0] - pixels[1]).abs().max() > 0  # each sample, each camera its own draw
