"""How far our image resize is from OpenVLA-OFT's TensorFlow one, on real sim frames (optional).

    python benchmarks/image_pipeline_vs_tf.py --tf-python /tmp/tfenv/bin/python [--frames F.npy] [--json out.json]
    /tmp/tfenv/bin/python benchmarks/image_pipeline_vs_tf.py --golden test/model/data/tf_image_ops.npz

TensorFlow is not a dependency of the package: give a Python that has it (a scratch venv:
`python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu numpy pillow`); without
one the script says so and exits 0. Frames: LIBERO-Object task 0 rendered at 256 px in the
OpenVLA convention (MUJOCO_GL=egl), agentview and wrist, unless --frames gives an (N, H, W, 3)
uint8 .npy (--render-quality: fast, the sim configs' setting, or full). The reference is
openvla-oft experiments/robot/openvla_utils.py
`resize_image_for_policy` (tf.image.encode_jpeg at its default quality, decode, resize lanczos3
with antialias, round, clip) and `center_crop_image` (crop_and_resize, 90% area). Compared:
"before" = PIL lanczos without JPEG and a PIL bilinear crop (this package until the action-rows
change), "after" = lightvla_ros.model.preprocess (resize_for_policy with model/jpeg.py,
center_crop_image); then the crop alone, applied to TF's resized images.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224


# ---- TensorFlow side (runs in the interpreter that has tensorflow; numpy + tf only) -------------
def tf_reference(frames_path: str, out_path: str) -> None:
    import tensorflow as tf

    frames = np.load(frames_path)
    resized, cropped = [], []
    for f in frames:
        img = tf.io.decode_image(tf.image.encode_jpeg(f), expand_animations=False, dtype=tf.uint8)
        img = tf.image.resize(img, (SIZE, SIZE), method="lanczos3", antialias=True)
        img = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
        resized.append(img.numpy())
        cropped.append(_tf_center_crop(tf, img))
    np.savez(out_path, resized=np.stack(resized), cropped=np.stack(cropped), tf_version=np.array(tf.__version__))


def _tf_center_crop(tf, image) -> np.ndarray:
    """openvla_utils.center_crop_image: crop_and_resize of 90% of the area back to the same size."""
    h, w = int(image.shape[0]), int(image.shape[1])
    x = tf.image.convert_image_dtype(tf.convert_to_tensor(image), tf.float32)[None]
    side = tf.reshape(tf.clip_by_value(tf.sqrt(0.9), 0, 1), shape=(1,))
    off = (1 - side) / 2
    boxes = tf.stack([off, off, off + side, off + side], axis=1)
    x = tf.image.crop_and_resize(x, boxes, tf.range(1), (h, w))[0]
    return tf.image.convert_image_dtype(tf.clip_by_value(x, 0, 1), tf.uint8, saturate=True).numpy()


def tf_golden(out_path: str) -> None:
    """The small JPEG, lanczos3 and center-crop fixture of test/model/test_preprocess.py."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    image[10:30, 12:36] = 255  # sharp edges: ringing that clipping has to handle
    out = {"image": image, "tf_version": np.array(tf.__version__)}
    for name, (h, w) in {"down": (28, 28), "up": (56, 60), "mixed": (33, 40)}.items():
        r = tf.image.resize(image, (h, w), method="lanczos3", antialias=True)
        out[name] = tf.cast(tf.clip_by_value(tf.round(r), 0, 255), tf.uint8).numpy()
    out["crop"] = _tf_center_crop(tf, image)
    for name, (h, w), quality in (("jpeg", (40, 48), 95), ("jpeg_odd", (37, 45), 95), ("jpeg_odd_q50", (37, 45), 50),
                                  ("jpeg_tiny", (2, 3), 95)):
        encoded = tf.image.encode_jpeg(image[:h, :w], quality=quality)
        out[name] = tf.io.decode_image(encoded, expand_animations=False, dtype=tf.uint8).numpy()
    decoded = tf.io.decode_image(tf.image.encode_jpeg(image), expand_animations=False, dtype=tf.uint8)
    resized = tf.image.resize(decoded, (28, 28), method="lanczos3", antialias=True)
    out["resize_for_policy"] = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
    np.savez_compressed(out_path, **out)


# ---- package side --------------------------------------------------------------------------------
def render_frames(path: Path, quality: str) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.path.insert(0, str(ROOT))
    from lightvla_ros.sim import NOOP_ACTION, SimConfig, make_env

    env = make_env(SimConfig(suite="libero_object", task=0, camera_size=256, render_quality=quality))
    rng = np.random.default_rng(0)
    frames = []
    for init in range(3):
        env.reset(init_state_index=init)
        for t in range(16):
            a = NOOP_ACTION if t < 4 else np.concatenate([rng.uniform(-0.5, 0.5, 6), [-1.0]]).astype(np.float32)
            obs, _ = env.step(a)
            if t % 4 == 3:
                frames += [obs.images["agentview"], obs.images["wrist"]]
    env.close()
    np.save(path, np.stack(frames))


def compare(frames: np.ndarray, ref: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from lightvla_ros.model.preprocess import ImageTransform, center_crop_image, resize_for_policy

    transform = ImageTransform(size=SIZE)
    before = np.stack([np.asarray(Image.fromarray(f).resize((SIZE, SIZE), Image.LANCZOS)) for f in frames])
    after = np.stack([resize_for_policy(f, transform) for f in frames])

    def crop_before(images):  # the previous crop: PIL bilinear over a box of sqrt(0.9) of each side
        side = np.sqrt(0.9) * SIZE
        box = ((SIZE - side) / 2, (SIZE - side) / 2, (SIZE + side) / 2, (SIZE + side) / 2)
        return np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.BILINEAR, box=box))
                         for im in images])

    def crop_after(images):
        return np.stack([center_crop_image(im) for im in images])

    def diff(a, b):
        d = np.abs(a.astype(np.int16) - b.astype(np.int16))
        return {"mean": round(float(d.mean()), 5), "max": int(d.max()),
                "frac_differing": round(float((d > 0).mean()), 5)}

    return {"frames": int(len(frames)), "frame_shape": list(frames.shape[1:]), "tf_version": str(ref["tf_version"]),
            "resize_before": diff(before, ref["resized"]), "resize_after": diff(after, ref["resized"]),
            "with_crop_before": diff(crop_before(before), ref["cropped"]),
            "with_crop_after": diff(crop_after(after), ref["cropped"]),
            "crop_alone_after": diff(crop_after(ref["resized"]), ref["cropped"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tf-python", default=sys.executable, help="a Python with tensorflow installed")
    ap.add_argument("--frames", type=Path, help="(N, H, W, 3) uint8 .npy; default: render LIBERO-Object frames")
    ap.add_argument("--render-quality", default="fast", choices=["fast", "full"],
                    help="when rendering: fast (the sim configs' setting, no MSAA) or full")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--golden", help="(in the TF Python) write the lanczos3 test fixture to this path and exit")
    ap.add_argument("--tf-reference", nargs=2, metavar=("FRAMES", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--render", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.render:
        render_frames(Path(args.render), args.render_quality)
        return 0
    if args.tf_reference:
        tf_reference(*args.tf_reference)
        return 0
    if args.golden:
        tf_golden(args.golden)
        return 0
    probe = subprocess.run([args.tf_python, "-c", "import tensorflow"], capture_output=True)
    if probe.returncode != 0:
        print(f"skipped: {args.tf_python} cannot import tensorflow (pass --tf-python)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        frames_path = args.frames or Path(tmp) / "frames.npy"
        if args.frames is None:  # its own process: MuJoCo's EGL context and torch/timm do not share one well
            subprocess.run([sys.executable, __file__, "--render", str(frames_path),
                            "--render-quality", args.render_quality], check=True)
        ref_path = Path(tmp) / "tf.npz"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([args.tf_python, __file__, "--tf-reference", str(frames_path), str(ref_path)],
                       check=True, env=env)
        frames = np.load(frames_path)
        result = compare(frames, dict(np.load(ref_path)))
        result["frames_from"] = str(args.frames) if args.frames else f"libero_object task 0, {args.render_quality}"
    print(f"{result['frames']} frames {result['frame_shape']} vs TensorFlow {result['tf_version']} "
          "(uint8 levels: mean / max abs difference, fraction of values differing)")
    for key in ("resize_before", "resize_after", "with_crop_before", "with_crop_after", "crop_alone_after"):
        r = result[key]
        print(f"  {key:18s} mean {r['mean']:.5f}  max {r['max']:3d}  differing {r['frac_differing']:.5f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
