"""Synthetic episode bags (written with rosbags) and bag fingerprints for the bag tests."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lightvla_ros.eval.bag_io import METADATA_TOPIC, BagWriter
from lightvla_ros.policy.types import Observation

PROPRIO_SOURCES = ["eef_pos", "eef_axis_angle", "joint:finger_l", "joint:finger_r"]
JOINTS = [f"arm_{i}" for i in range(7)] + ["finger_l", "finger_r"]
CAMS = ["/camera/agentview/image_raw", "/camera/wrist/image_raw"]
T0 = 1_700_000_000 * 10**9      # epoch-sized stamps: float seconds cannot hold them to the ns
STEP = 100_000_000              # 10 Hz


def step_data(k: int, size: int = 32):
    """Deterministic images / joints / eef pose of step k."""
    rng = np.random.default_rng(k)
    imgs = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in CAMS]
    joints = np.concatenate([rng.uniform(-1, 1, 7), [0.02 + 0.001 * k, -0.02 - 0.001 * k]])
    pos = rng.uniform(-0.3, 0.3, 3)
    quat = rng.normal(size=4)
    quat /= np.linalg.norm(quat)
    return imgs, joints, pos, quat


def observation_of(k: int, instruction: str) -> Observation:
    """What the ObservationAssembler builds from step k (same rules, computed independently)."""
    from lightvla_ros.policy.observation_sync import quat_to_axis_angle
    imgs, joints, pos, quat = step_data(k)
    proprio = np.concatenate([pos.astype(np.float32), quat_to_axis_angle(quat),
                              np.array(joints[7:], dtype=np.float32)]).astype(np.float32)
    return Observation(images=imgs, instruction=instruction, proprio=proprio, stamp=(T0 + k * STEP) * 1e-9)


def write_episode(path: Path, storage: str = "mcap", steps: int = 3, policy=None, cams=CAMS,
                  with_chunks: bool = True, flush_each_step: bool = False, instruction: str = "pick up the bowl",
                  metadata: dict | None = None, metadata_topic: bool = True) -> Path:
    """A recorded episode: instruction, per step both cameras + joints + eef, then the chunk for it.

    Chunks come from `policy.infer` on the same observation (so a replay must reproduce them
    exactly), or are a fixed ramp when policy is None. metadata_topic=False: the metadata is only in
    metadata.yaml, not on /lightvla/episode_metadata."""
    with BagWriter(path, storage) as w:
        ts = w.typestore
        T = ts.types
        hdr = lambda ns, frame="": T["std_msgs/msg/Header"](  # noqa: E731
            T["builtin_interfaces/msg/Time"](ns // 10**9, ns % 10**9), frame)
        meta = {"task": "synthetic", "instruction": instruction, "success": True,
                "proprio_sources": PROPRIO_SOURCES, **(metadata or {})}
        w.set_metadata(meta)                                       # metadata.yaml custom_data (at close)
        if metadata_topic:                                         # survives a crash
            w.write_msg(METADATA_TOPIC, T0 - 2 * STEP, T["std_msgs/msg/String"](json.dumps(meta)))
        w.write_msg("/instruction", T0 - STEP, T["std_msgs/msg/String"](instruction))
        for k in range(steps):
            stamp = T0 + k * STEP
            imgs, joints, pos, quat = step_data(k)
            for cam, img in zip(cams, imgs):
                h, wd, _ = img.shape
                w.write_msg(cam, stamp + 1_000_000, T["sensor_msgs/msg/Image"](
                    hdr(stamp, cam), h, wd, "rgb8", 0, wd * 3, img.reshape(-1)))
            w.write_msg("/joint_states", stamp + 2_000_000, T["sensor_msgs/msg/JointState"](
                hdr(stamp), JOINTS, joints.astype(np.float64), np.zeros(0), np.zeros(0)))
            Pose, P, Q = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"]
            w.write_msg("/eef_pose", stamp + 2_000_000, T["geometry_msgs/msg/PoseStamped"](
                hdr(stamp, "base"), Pose(P(*pos), Q(*quat))))
            if with_chunks:
                if policy is not None:
                    out = policy.infer(observation_of(k, instruction))
                    actions, lat = out.actions, out.timings.get("total", 0.0)
                    kept, total = out.kept_total, out.total_tokens
                else:
                    actions, lat, kept, total = np.full((8, 7), 0.1 * k, np.float32), 0.01, 10, 20
                w.write_msg("/lightvla/action_chunk", stamp + 50_000_000, T["lightvla_interfaces/msg/ActionChunk"](
                    hdr(stamp), actions.shape[0], actions.shape[1], actions.astype(np.float32).reshape(-1),
                    "eef_delta_pose_gripper", float(lat), int(kept), int(total)))
            if flush_each_step:
                w.flush()
    return path


def tree_fingerprint(path: Path) -> dict:
    """sha256 + mtime_ns of every file under a bag: proves nothing was written into it."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files} | \
        {"__listing__": sorted(str(p) for p in (path.rglob("*") if path.is_dir() else [path]))}
