"""Assemble one policy Observation from the newest camera frames, proprio and instruction. No ROS.

Transport-free and clock-agnostic: the caller feeds decoded data with its stamps (seconds) and
passes `now` to `assemble`, so the policy node (node clock / sim time) and bag replay (bag time)
share it. Rules:
- the newest frame per camera is kept; all cameras must be within `pairing_tolerance` of each other;
- the observation stamp is the oldest camera stamp; older than `max_observation_age` -> stale;
- proprio follows `proprio_sources`, in order: `eef_pos` (3), `eef_axis_angle` (3), `joint:<name>` (1);
- anything missing or bad -> a Rejection with a reason code (REASONS) and a readable message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lightvla_ros.policy.types import Observation

# Reason codes for a rejected observation (stable: they name diagnostics counters).
STALE = "stale"
UNPAIRED = "unpaired"
MISSING_CAMERA = "missing_camera"
MISSING_PROPRIO = "missing_proprio"
UNKNOWN_JOINT = "unknown_joint"
NAN_PROPRIO = "nan_proprio"
MISSING_INSTRUCTION = "missing_instruction"
PROPRIO_BEHIND = "proprio_behind"
REASONS = (STALE, UNPAIRED, MISSING_CAMERA, MISSING_PROPRIO, UNKNOWN_JOINT, NAN_PROPRIO, MISSING_INSTRUCTION,
           PROPRIO_BEHIND)

PROPRIO_SIZES = {"eef_pos": 3, "eef_axis_angle": 3}


@dataclass(frozen=True)
class Rejection:
    reason: str       # one of REASONS
    message: str      # for the log: what is wrong and what to check


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) -> axis * angle (3,), exactly robosuite's quat2axisangle (what OFT
    was trained on: no sign flip, angle = 2 acos(w)); normalised first. Zero/NaN -> NaN (rejected)."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-8:
        return np.full(3, np.nan, dtype=np.float32)  # caught as nan_proprio
    q = q / n
    w = min(max(q[3], -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3, dtype=np.float32)
    return (q[:3] * 2.0 * math.acos(w) / den).astype(np.float32)


def parse_proprio_sources(sources: Sequence[str]) -> list[tuple[str, str | None]]:
    """['eef_pos', 'joint:finger_l'] -> [('eef_pos', None), ('joint', 'finger_l')]; bad names raise."""
    parsed = []
    for s in sources:
        s = str(s).strip()
        if s in PROPRIO_SIZES:
            parsed.append((s, None))
        elif s.startswith("joint:") and len(s) > len("joint:"):
            parsed.append(("joint", s[len("joint:"):]))
        else:
            raise ValueError(f"unknown proprio source {s!r}: use 'eef_pos', 'eef_axis_angle' or 'joint:<name>'")
    return parsed


def proprio_dim(sources: Sequence[str]) -> int:
    return sum(PROPRIO_SIZES.get(kind, 1) for kind, _ in parse_proprio_sources(sources))


class ObservationAssembler:
    """Newest message per camera + proprio + instruction -> Observation, or a Rejection."""

    def __init__(self, camera_names: Sequence[str], pairing_tolerance: float = 0.05,
                 max_observation_age: float = 0.5, proprio_sources: Sequence[str] = (),
                 instruction: str = "", proprio_max_age: float | None = None,
                 proprio_sync_tolerance: float | None = None):
        if not camera_names:
            raise ValueError("at least one camera is needed")
        if len(set(camera_names)) != len(camera_names):
            raise ValueError(f"camera names must be unique, got {list(camera_names)}")
        self.camera_names = list(camera_names)
        self.pairing_tolerance = float(pairing_tolerance)
        self.max_observation_age = float(max_observation_age)
        self.proprio_sources = list(proprio_sources)
        self._sources = parse_proprio_sources(self.proprio_sources)
        self.proprio_max_age = self.max_observation_age if proprio_max_age is None else float(proprio_max_age)
        # None: any fresh proprio goes; else it must not be older than the images by more than this
        # (a lock-step sim stamps images and proprio alike: the previous step's proprio is refused)
        self.proprio_sync_tolerance = None if proprio_sync_tolerance is None else float(proprio_sync_tolerance)
        self.instruction = instruction
        self.clear()

    def clear(self) -> None:
        """Forget every frame and proprio value (the instruction stays)."""
        self._frames: dict[str, tuple[np.ndarray, float]] = {}     # camera -> ((H, W, 3) uint8, stamp)
        self._joints: dict[str, tuple[float, float]] = {}          # joint name -> (position, stamp)
        self._joint_msgs = 0
        self._eef: tuple[np.ndarray, np.ndarray, float] | None = None  # pos (3,), axis-angle (3,), stamp

    @property
    def proprio_dim(self) -> int:
        return sum(PROPRIO_SIZES.get(kind, 1) for kind, _ in self._sources)

    @property
    def needs_eef(self) -> bool:
        return any(kind in PROPRIO_SIZES for kind, _ in self._sources)

    @property
    def joint_names(self) -> list[str]:
        return [name for kind, name in self._sources if kind == "joint"]

    # --- inputs ---
    def set_instruction(self, text: str) -> None:
        self.instruction = text

    def add_image(self, camera: str, image: np.ndarray, stamp: float) -> None:
        """image: (H, W, 3) uint8 RGB, already decoded and checked by the transport."""
        if camera not in self.camera_names:
            raise KeyError(f"unknown camera {camera!r}; configured: {self.camera_names}")
        self._frames[camera] = (image, float(stamp))

    def add_joint_state(self, names: Sequence[str], positions: Sequence[float], stamp: float) -> None:
        """Merge by name (robots may publish arm and fingers separately). Length mismatch raises."""
        if len(names) != len(positions):
            raise ValueError(f"joint state has {len(names)} names but {len(positions)} positions")
        self._joint_msgs += 1
        for n, p in zip(names, positions):
            self._joints[str(n)] = (float(p), float(stamp))

    def add_eef_pose(self, position: Sequence[float], quat_xyzw: Sequence[float], stamp: float) -> None:
        pos = np.asarray(position, dtype=np.float32).reshape(3)
        self._eef = (pos, quat_to_axis_angle(np.asarray(quat_xyzw).reshape(4)), float(stamp))

    # --- output ---
    def newest_stamp(self) -> float | None:
        """Stamp of the newest camera frame, if any."""
        return max((s for _, s in self._frames.values()), default=None)

    def assemble(self, now: float) -> Observation | Rejection:
        missing = [c for c in self.camera_names if c not in self._frames]
        if missing:
            return Rejection(MISSING_CAMERA, f"no image yet from camera(s) {missing}")
        stamps = [self._frames[c][1] for c in self.camera_names]
        stamp = min(stamps)
        age = now - stamp
        if age > self.max_observation_age:
            return Rejection(STALE, f"observation is {age:.3f} s old (max_observation_age "
                                    f"{self.max_observation_age:.3f} s); check camera rates and stamps")
        spread = max(stamps) - stamp
        if spread > self.pairing_tolerance:
            return Rejection(UNPAIRED, f"camera stamps {dict(zip(self.camera_names, stamps))} are "
                                       f"{spread:.3f} s apart (pairing_tolerance {self.pairing_tolerance:.3f} s)")
        proprio = self._proprio(now, stamp)
        if isinstance(proprio, Rejection):
            return proprio
        if not self.instruction or not self.instruction.strip():
            return Rejection(MISSING_INSTRUCTION, "no instruction: set the 'instruction' parameter, publish "
                                                  "on the instruction topic or call ~/set_instruction")
        images = [self._frames[c][0] for c in self.camera_names]
        return Observation(images=images, instruction=self.instruction, proprio=proprio, stamp=stamp)

    def _proprio(self, now: float, image_stamp: float) -> np.ndarray | None | Rejection:
        if not self._sources:
            return None
        oldest_ok = -math.inf if self.proprio_sync_tolerance is None else image_stamp - self.proprio_sync_tolerance
        parts: list[np.ndarray] = []
        for kind, name in self._sources:
            if kind in PROPRIO_SIZES:
                if self._eef is None:
                    return Rejection(MISSING_PROPRIO, f"proprio source {kind!r} needs an end-effector pose; none received")
                pos, aa, st = self._eef
                if now - st > self.proprio_max_age:
                    return Rejection(STALE, f"end-effector pose is {now - st:.3f} s old")
                if st < oldest_ok:
                    return Rejection(PROPRIO_BEHIND, f"end-effector pose (t={st:.3f}) is older than the images "
                                                     f"(t={image_stamp:.3f}); waiting for a newer one")
                parts.append(pos if kind == "eef_pos" else aa)
            else:
                if name not in self._joints:
                    if self._joint_msgs == 0:
                        return Rejection(MISSING_PROPRIO, f"proprio source 'joint:{name}' needs joint states; none received")
                    return Rejection(UNKNOWN_JOINT, f"joint {name!r} is not in the joint states received "
                                                    f"(names seen: {sorted(self._joints)[:12]})")
                val, st = self._joints[name]
                if now - st > self.proprio_max_age:
                    return Rejection(STALE, f"joint state {name!r} is {now - st:.3f} s old")
                if st < oldest_ok:
                    return Rejection(PROPRIO_BEHIND, f"joint state {name!r} (t={st:.3f}) is older than the images "
                                                     f"(t={image_stamp:.3f}); waiting for a newer one")
                parts.append(np.array([val], dtype=np.float32))
        proprio = np.concatenate(parts).astype(np.float32)  # (proprio_dim,)
        if not np.all(np.isfinite(proprio)):
            return Rejection(NAN_PROPRIO, f"proprio has NaN/Inf values: {proprio.tolist()} (sources {self.proprio_sources})")
        return proprio
