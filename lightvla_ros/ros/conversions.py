"""ROS messages <-> the core's plain types (numpy arrays, floats, PolicyOutput). No cv_bridge.

- image_to_rgb(Image) -> (H, W, 3) uint8 RGB; rgb8, bgr8, mono8, rgba8, bgra8; honours `step` padding.
- rgb_to_image(arr, encoding="rgb8", stamp=None, frame_id="") -> Image; arr in `encoding`'s layout.
- compressed_to_rgb(CompressedImage) -> (H, W, 3) uint8 RGB (jpeg / png, decoded with OpenCV).
- rgb_to_compressed(arr, fmt="jpeg" | "png") -> CompressedImage.
- time_to_ns(Time) -> int, ns_to_time(int) -> builtin_interfaces/Time: exact, the core's integer ns.
- quat_to_axis_angle(q) -> (3,): robosuite's quat2axisangle (xyzw), used for the OFT proprio.
- policy_output_to_action_chunk / action_chunk_to_policy_output, policy_output_to_pruning_stats,
  step_to_action (one control step as an ActionChunk of size 1), actions_to_joint_trajectory.
Bad input raises ValueError with what was wrong; nothing is silently reshaped.
"""
from __future__ import annotations

import array
from operator import index
from typing import Any

import numpy as np

from lightvla_ros.policy.observation_sync import quat_to_axis_angle as core_quat_to_axis_angle
from lightvla_ros.policy.clock import NS_PER_S
from lightvla_ros.policy.types import PolicyOutput

# encoding -> (channels, the OpenCV conversion to RGB; None: rgb8 is copied as it is). OpenCV takes
# ~0.02 ms for a 224 px image where numpy's channel indexing takes ~0.3 ms (node overhead, docs/benchmarks.md)
_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, "COLOR_BGR2RGB"),
    "rgba8": (4, "COLOR_RGBA2RGB"),
    "bgra8": (4, "COLOR_BGRA2RGB"),
    "mono8": (1, "COLOR_GRAY2RGB"),
}


# --------------------------------------------------------------------------------------------
# Time


def time_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or a header, or anything with sec, nanosec) -> integer nanoseconds, exact."""
    stamp = getattr(stamp, "stamp", stamp)
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_time(ns: int):
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time, exact (time_to_ns gives ns back)."""
    from builtin_interfaces.msg import Time

    ns = index(ns)
    if ns < 0 or ns // NS_PER_S > 2**31 - 1:
        raise ValueError(f"{ns} ns does not fit a ROS Time (int32 seconds >= 0)")
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


# --------------------------------------------------------------------------------------------
# Images


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (a copy; alpha dropped, grey repeated)."""
    encoding = msg.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; expected one of {sorted(_ENCODINGS)}")
    channels, conversion = _ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image: {w}x{h}")
    if step < w * channels:
        raise ValueError(f"step {step} is smaller than width {w} x {channels} bytes per pixel")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"image {w}x{h} {encoding} has no data")
    if data.size != h * step:
        raise ValueError(f"image data is {data.size} bytes, expected height {h} x step {step} = {h * step}")
    pixels = data.reshape(h, step)[:, : w * channels].reshape(h, w, channels)  # drops row padding
    if conversion is None:
        return pixels.copy()
    import cv2

    return cv2.cvtColor(pixels, getattr(cv2, conversion)).reshape(h, w, 3)


def rgb_to_image(arr: np.ndarray, encoding: str = "rgb8", stamp: int | None = None, frame_id: str = ""):
    """(H, W, C) uint8 in `encoding`'s channel layout ((H, W) for mono8) -> sensor_msgs/Image."""
    from sensor_msgs.msg import Image

    encoding = encoding.lower()
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; expected one of {sorted(_ENCODINGS)}")
    channels, _ = _ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}")
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    want = 2 if channels == 1 else 3
    if arr.ndim != want or (channels > 1 and arr.shape[2] != channels):
        shape = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"{encoding} needs shape {shape}, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image: shape {arr.shape}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = arr.tobytes()  # bytes: 0.05 ms at 224x224x3; assigning the array itself costs 20 ms
    return msg


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> (H, W, 3) uint8 RGB."""
    import cv2

    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"compressed image ({msg.format!r}) has no data")
    fmt = msg.format.lower()
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ValueError(f"unsupported compressed format {msg.format!r}; expected jpeg or png")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"could not decode the compressed image ({msg.format!r}, {data.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(arr: np.ndarray, fmt: str = "jpeg", stamp: int | None = None,
                      frame_id: str = "", quality: int = 95):
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage in jpeg or png."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    fmt = fmt.lower()
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"unsupported compressed format {fmt!r}; expected jpeg or png")
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise ValueError(f"need a non-empty (H, W, 3) uint8 RGB image, got {arr.shape} {arr.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(arr[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} image as {fmt}")
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = frame_id
    msg.format = fmt
    msg.data = buf.tobytes()
    return msg


# --------------------------------------------------------------------------------------------
# Rotations


def quat_to_axis_angle(quat: Any) -> np.ndarray:
    """Quaternion (x, y, z, w) -> (3,) float32 axis * angle, robosuite's quat2axisangle convention.

    Accepts a sequence of 4 or a geometry_msgs/Quaternion. The quaternion is normalised first
    (ROS poses are often slightly off unit); q and -q give different vectors as in robosuite
    (angle = 2 acos(w) in [0, 2 pi])."""
    if all(hasattr(quat, k) for k in ("x", "y", "z", "w")):
        quat = (quat.x, quat.y, quat.z, quat.w)
    q = np.asarray(quat, dtype=np.float64).reshape(-1)
    if q.shape != (4,):
        raise ValueError(f"a quaternion has 4 values (x, y, z, w), got shape {np.shape(quat)}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"quaternion has non-finite values: {q}")
    if float(np.linalg.norm(q)) < 1e-8:
        raise ValueError("zero quaternion has no rotation")
    return core_quat_to_axis_angle(q)  # the one implementation, shared with the observation assembler


# --------------------------------------------------------------------------------------------
# Policy output <-> lightvla_interfaces messages


def policy_output_to_action_chunk(out: PolicyOutput, frame_id: str = ""):
    """PolicyOutput -> lightvla_interfaces/ActionChunk (header.stamp = the observation stamp)."""
    from lightvla_interfaces.msg import ActionChunk

    actions = np.asarray(out.actions)
    if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] == 0:
        raise ValueError(f"actions must be (chunk_size, action_dim) and non-empty, got {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions contain NaN or inf")
    msg = ActionChunk()
    msg.header.stamp = ns_to_time(out.stamp)
    msg.header.frame_id = frame_id
    msg.chunk_size, msg.action_dim = int(actions.shape[0]), int(actions.shape[1])
    msg.actions = array.array("f", np.ascontiguousarray(actions, dtype=np.float32).tobytes())
    msg.action_space = out.action_space
    msg.inference_latency = float(out.timings.get("total", 0.0))
    msg.visual_tokens_kept = out.kept_total
    msg.visual_tokens_total = out.total_tokens
    return msg


def action_chunk_to_policy_output(msg) -> PolicyOutput:
    """lightvla_interfaces/ActionChunk -> PolicyOutput (token counts come back as one overall entry)."""
    return PolicyOutput(
        actions=action_chunk_actions(msg),
        stamp=time_to_ns(msg.header.stamp),
        timings={"total": float(msg.inference_latency)},
        kept_per_image=[int(msg.visual_tokens_kept)] if msg.visual_tokens_total else [],
        total_per_image=[int(msg.visual_tokens_total)] if msg.visual_tokens_total else [],
        action_space=msg.action_space,
    )


def policy_output_to_pruning_stats(out: PolicyOutput, frame_id: str = ""):
    """PolicyOutput -> lightvla_interfaces/PruningStats (pruner / model time from out.timings)."""
    from lightvla_interfaces.msg import PruningStats

    if len(out.kept_per_image) != len(out.total_per_image):
        raise ValueError(f"kept_per_image has {len(out.kept_per_image)} entries, "
                         f"total_per_image {len(out.total_per_image)}")
    msg = PruningStats()
    msg.header.stamp = ns_to_time(out.stamp)
    msg.header.frame_id = frame_id
    msg.kept_per_image = [int(k) for k in out.kept_per_image]
    msg.total_per_image = [int(t) for t in out.total_per_image]
    msg.kept_total, msg.total = out.kept_total, out.total_tokens
    msg.pruner_time = float(out.timings.get("pruner", 0.0))
    msg.model_time = float(out.timings.get("total", 0.0))
    return msg


def step_to_action(stamp_ns: int, action: np.ndarray, action_space: str, frame_id: str = ""):
    """One control step's action -> ActionChunk with chunk_size 1, stamped with the step time."""
    a = np.asarray(action, dtype=np.float32).reshape(-1)
    return policy_output_to_action_chunk(PolicyOutput(a[None, :], stamp_ns, action_space=action_space), frame_id)


def action_chunk_actions(msg) -> np.ndarray:
    """An ActionChunk's actions as (chunk_size, action_dim) float32; a size mismatch raises ValueError."""
    n, d = int(msg.chunk_size), int(msg.action_dim)
    values = np.asarray(msg.actions, dtype=np.float32)
    if n == 0 or d == 0:
        raise ValueError(f"empty action chunk: chunk_size {n}, action_dim {d}")
    if values.size != n * d:
        raise ValueError(f"ActionChunk has {values.size} values, expected chunk_size {n} x action_dim {d}")
    return values.reshape(n, d).copy()


def actions_to_joint_trajectory(actions: np.ndarray, stamp_ns: int, joint_names, period_ns: int):
    """(T, D) joint targets -> trajectory_msgs/JointTrajectory; point i is reached (i + 1) periods after the stamp."""
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    traj = JointTrajectory()
    traj.header.stamp = ns_to_time(stamp_ns)
    traj.joint_names = list(joint_names)
    for i, row in enumerate(np.asarray(actions, dtype=np.float64)):
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in row]
        t = ns_to_time((i + 1) * period_ns)
        pt.time_from_start = Duration(sec=t.sec, nanosec=t.nanosec)
        traj.points.append(pt)
    return traj
