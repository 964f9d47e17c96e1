"""Assemble one policy Observation from the newest camera frames, proprio and instruction. No ROS.

Transport-free and clock-agnostic: the caller feeds decoded data with its stamps and passes `now`
to `assemble`, so the policy node (node clock / sim time), bag replay (bag time) and the in-process
sim loop (sim time) share it. Every time and tolerance is integer nanoseconds (policy/clock.py).
Rules:
- the newest frame per camera is kept; all cameras must be within `pairing_tolerance` of each other;
- the observation stamp is the oldest camera stamp;
- one staleness rule for every input (each camera, each proprio joint, the eef pose): it is fresh
  only if both its header stamp and its receive time are within `max_observation_age` of `now`;
  a stamp more than `future_tolerance` after `now` is rejected (`future_stamp`), so a clock
  running ahead cannot keep an observation fresh forever. An arrival counts as no earlier than
  stamp - future_tolerance (under sim time an observation may arrive just before the /clock
  message of its step, while the node's clock still shows the previous step or zero);
- proprio follows `proprio_sources`, in order: `eef_pos` (3), `eef_axis_angle` (3), `joint:<name>` (1);
- anything missing or bad -> a Rejection with a reason code (REASONS) and a readable message.
"""
from __future__ import annotations

import math
from operator import index as ns
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lightvla_ros.policy.clock import to_sec
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
FUTURE_STAMP = "future_stamp"
REASONS = (STALE, UNPAIRED, MISSING_CAMERA, MISSING_PROPRIO, UNKNOWN_JOINT, NAN_PROPRIO, MISSING_INSTRUCTION,
           PROPRIO_BEHIND, FUTURE_STAMP)

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


class ObservationAssembler:
    """Newest message per camera + proprio + instruction -> Observation, or a Rejection."""

    def __init__(self, camera_names: Sequence[str], pairing_tolerance: int = 50_000_000,
                 max_observation_age: int = 500_000_000, proprio_sources: Sequence[str] = (),
                 instruction: str = "", proprio_sync_tolerance: int | None = None,
                 future_tolerance: int = 100_000_000):
        """Times and tolerances are integer nanoseconds (a float raises TypeError: convert with
        clock.to_ns); the defaults are RunnerConfig's (policy/config.py)."""
        if not camera_names:
            raise ValueError("at least one camera is needed")
        if len(set(camera_names)) != len(camera_names):
            raise ValueError(f"camera names must be unique, got {list(camera_names)}")
        self.camera_names = list(camera_names)
        self.pairing_tolerance = ns(pairing_tolerance)
        self.max_observation_age = ns(max_observation_age)
        self.proprio_sources = list(proprio_sources)
        self._sources = parse_proprio_sources(self.proprio_sources)
        self.future_tolerance = ns(future_tolerance)  # a stamp may lead `now` by this (clock skew, lock-step)
        # None: any fresh proprio goes; else it must not be older than the images by more than this
        # (a lock-step sim stamps images and proprio alike: the previous step's proprio is refused)
        self.proprio_sync_tolerance = None if proprio_sync_tolerance is None else ns(proprio_sync_tolerance)
        self.instruction = instruction
        self.clear()

    def clear(self) -> None:
        """Forget every frame and proprio value (the instruction stays)."""
        self._frames: dict[str, tuple[np.ndarray, int, int]] = {}  # camera -> ((H, W, 3) uint8, stamp, received)
        self._joints: dict[str, tuple[float, int, int]] = {}       # joint name -> (position, stamp, received)
        self._joint_msgs = 0
        self._eef: tuple[np.ndarray, np.ndarray, int, int] | None = None  # pos, axis-angle, stamp, received

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

    def add_image(self, camera: str, image: np.ndarray, stamp: int, received: int | None = None) -> None:
        """image: (H, W, 3) uint8 RGB, already decoded and checked by the transport.
        received: when it arrived on the caller's clock (default: the stamp, e.g. bag replay)."""
        if camera not in self.camera_names:
            raise KeyError(f"unknown camera {camera!r}; configured: {self.camera_names}")
        self._frames[camera] = (image, ns(stamp), ns(stamp if received is None else received))

    def add_joint_state(self, names: Sequence[str], positions: Sequence[float], stamp: int,
                        received: int | None = None) -> None:
        """Merge by name (robots may publish arm and fingers separately). A malformed message
        (length mismatch, one name with two different values) raises and changes nothing."""
        if len(names) != len(positions):
            raise ValueError(f"joint state has {len(names)} names but {len(positions)} positions")
        values: dict[str, float] = {}
        for n, p in zip(names, positions):
            n, p = str(n), float(p)
            if n in values and not (values[n] == p or (math.isnan(p) and math.isnan(values[n]))):
                raise ValueError(f"joint state names {n!r} twice with different positions ({values[n]} and {p})")
            values[n] = p
        self._joint_msgs += 1
        received = ns(stamp if received is None else received)
        for n, p in values.items():
            self._joints[n] = (p, ns(stamp), received)

    def add_eef_pose(self, position: Sequence[float], quat_xyzw: Sequence[float], stamp: int,
                     received: int | None = None) -> None:
        pos = np.asarray(position, dtype=np.float32).reshape(3)
        self._eef = (pos, quat_to_axis_angle(np.asarray(quat_xyzw).reshape(4)), ns(stamp),
                     ns(stamp if received is None else received))

    def _since(self, stamp: int, received: int) -> int:
        """The time an input's age counts from: the older of its stamp and its arrival (an arrival
        counts as no earlier than stamp - future_tolerance: see the module doc)."""
        return min(stamp, max(received, stamp - self.future_tolerance))

    def _timed_inputs(self) -> list[tuple[str, int, int] | tuple[str, None, None]]:
        """(input name, stamp, received) for every input the observation needs; None when missing."""
        out: list = [(f"camera {c!r}", *self._frames[c][1:]) if c in self._frames else (f"camera {c!r}", None, None)
                     for c in self.camera_names]
        if self.needs_eef:
            out.append(("eef pose", *self._eef[2:]) if self._eef is not None else ("eef pose", None, None))
        for name in self.joint_names:
            out.append((f"joint {name!r}", *self._joints[name][1:]) if name in self._joints
                       else (f"joint {name!r}", None, None))
        return out

    def freshness(self, now: int) -> Rejection | None:
        """The staleness rule over every input: None if all are fresh at `now`, else why not."""
        for name, stamp, received in self._timed_inputs():
            if stamp is None:
                continue  # missing: assemble() says which and why
            if stamp - now > self.future_tolerance:
                return Rejection(FUTURE_STAMP, f"{name} is stamped {to_sec(stamp - now):.3f} s in the future "
                                               f"(tolerance {to_sec(self.future_tolerance):.3f} s); check the "
                                               "sender's clock")
            age = now - self._since(stamp, received)
            if age > self.max_observation_age:
                by = "stamp" if stamp <= received else "arrival"
                return Rejection(STALE, f"{name} is {to_sec(age):.3f} s old by its {by} (max_observation_age "
                                        f"{to_sec(self.max_observation_age):.3f} s); check rates and stamps")
        return None

    def fresh_since(self) -> int | None:
        """The oldest of all inputs' stamps and receive times (None if one is missing): the
        observation is fresh until this plus max_observation_age."""
        times = [self._since(s, r) for _, s, r in self._timed_inputs() if s is not None]
        return min(times) if len(times) == len(self._timed_inputs()) else None

    def stale_inputs(self, now: int) -> list[str]:
        """Names of the inputs that are missing, in the future or too old at `now` (for the log)."""
        out = []
        for name, stamp, received in self._timed_inputs():
            if stamp is None:
                out.append(f"{name} (never received)")
            elif stamp - now > self.future_tolerance:
                out.append(f"{name} (stamped {to_sec(stamp - now):.3f} s ahead)")
            elif now - self._since(stamp, received) > self.max_observation_age:
                out.append(f"{name} ({to_sec(now - self._since(stamp, received)):.3f} s old)")
        return out

    # --- output ---
    def assemble(self, now: int) -> Observation | Rejection:
        missing = [c for c in self.camera_names if c not in self._frames]
        if missing:
            return Rejection(MISSING_CAMERA, f"no image yet from camera(s) {missing}")
        stamps = [self._frames[c][1] for c in self.camera_names]
        stamp = min(stamps)
        stale = self.freshness(now)
        if stale is not None:
            return stale
        spread = max(stamps) - stamp
        if spread > self.pairing_tolerance:
            shown = {c: f"{to_sec(t):.3f}" for c, t in zip(self.camera_names, stamps)}
            return Rejection(UNPAIRED, f"camera stamps {shown} are {to_sec(spread):.3f} s apart "
                                       f"(pairing_tolerance {to_sec(self.pairing_tolerance):.3f} s)")
        proprio = self._proprio(now, stamp)
        if isinstance(proprio, Rejection):
            return proprio
        if not self.instruction or not self.instruction.strip():
            return Rejection(MISSING_INSTRUCTION, "no instruction: set the 'instruction' parameter, publish "
                                                  "on the instruction topic or call ~/set_instruction")
        images = [self._frames[c][0] for c in self.camera_names]
        return Observation(images=images, instruction=self.instruction, proprio=proprio, stamp=stamp,
                           inputs=self._input_stamps())

    def _input_stamps(self) -> dict[str, int]:
        stamps = {f"camera:{c}": self._frames[c][1] for c in self.camera_names}
        if self.needs_eef and self._eef is not None:
            stamps["eef"] = self._eef[2]
        for name in self.joint_names:
            stamps[f"joint:{name}"] = self._joints[name][1]
        return stamps

    def _proprio(self, now: int, image_stamp: int) -> np.ndarray | None | Rejection:
        if not self._sources:
            return None
        oldest_ok = None if self.proprio_sync_tolerance is None else image_stamp - self.proprio_sync_tolerance
        parts: list[np.ndarray] = []
        for kind, name in self._sources:
            if kind in PROPRIO_SIZES:
                if self._eef is None:
                    return Rejection(MISSING_PROPRIO,
                                     f"proprio source {kind!r} needs an end-effector pose; none received")
                pos, aa, st, _ = self._eef
                if oldest_ok is not None and st < oldest_ok:
                    return Rejection(PROPRIO_BEHIND, f"end-effector pose (t={to_sec(st):.3f}) is older than the "
                                                     f"images (t={to_sec(image_stamp):.3f}); waiting for a newer one")
                parts.append(pos if kind == "eef_pos" else aa)
            else:
                if name not in self._joints:
                    if self._joint_msgs == 0:
                        return Rejection(MISSING_PROPRIO,
                                         f"proprio source 'joint:{name}' needs joint states; none received")
                    return Rejection(UNKNOWN_JOINT, f"joint {name!r} is not in the joint states received "
                                                    f"(names seen: {sorted(self._joints)[:12]})")
                val, st, _ = self._joints[name]
                if oldest_ok is not None and st < oldest_ok:
                    return Rejection(PROPRIO_BEHIND, f"joint state {name!r} (t={to_sec(st):.3f}) is older than the "
                                                     f"images (t={to_sec(image_stamp):.3f}); waiting for a newer one")
                parts.append(np.array([val], dtype=np.float32))
        proprio = np.concatenate(parts).astype(np.float32)  # (proprio_dim,)
        if not np.all(np.isfinite(proprio)):
            return Rejection(NAN_PROPRIO,
                             f"proprio has NaN/Inf values: {proprio.tolist()} (sources {self.proprio_sources})")
        return proprio
