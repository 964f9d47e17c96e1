"""The policy's configuration: one frozen dataclass whose field defaults ARE the defaults.

The policy node declares its ROS parameters from these fields (description, read-only unless
`runtime`), and the in-process sim loop, bag replay and the evaluation CLIs build a RunnerConfig
too; YAML and launch files only set what differs from these defaults. Times are seconds here
(what a user writes); the runner converts them to integer nanoseconds (`ns()`).

    cfg = RunnerConfig(execution_mode="async", action_max=(1.0,))
    cfg = cfg.replace(max_observation_age=0.3)     # validated: raises ValueError with the reason
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .chunking import SCHEDULERS, blend_weights
from .clock import to_ns
from .observation_sync import parse_proprio_sources

LIBERO_PROPRIO = ("eef_pos", "eef_axis_angle", "joint:gripper0_finger_joint1", "joint:gripper0_finger_joint2")
LIBERO_CAMERAS = ("agentview", "wrist")
# lightvla_ros.model.static.INFERENCE_PATHS, restated: this module imports no torch (tested equal)
INFERENCE_PATHS = ("dynamic", "static", "graphed")


def param(default: Any, help: str, runtime: bool = False, list_type: str | None = None):
    """A configuration field. runtime: may change while the node runs (validated, applied atomically);
    list_type: 'double' | 'string' for a list whose default is empty (ROS needs its type)."""
    return field(default=default, metadata={"help": help, "runtime": runtime, "list_type": list_type})


@dataclass(frozen=True)
class RunnerConfig:
    # --- the model (read at start-up) ---
    checkpoint: str = param("", "checkpoint directory (released LightVLA / OFT layout)")
    action_rows: str = param("auto", "hidden-state rows read by the action head: auto | oft | lightvla "
                                     "(docs/model.md)")
    device: str = param("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = param("auto", "auto | float32 | bfloat16 | float16")
    compile: bool = param(False, "torch.compile the model at start-up")
    inference_path: str = param("auto", "model inference path: auto (graphed on CUDA, dynamic on CPU; dynamic "
                                        "when compile is on) | dynamic (off: any pruned length, eager) | static "
                                        "(length padded to a multiple of 16) | graphed (static + CUDA graphs; "
                                        "static on a CPU) (docs/model.md)")
    inference_process: bool = param(True, "run the model in a child process (its own interpreter lock: the "
                                          "step timer never waits behind a forward pass); false: a thread")
    unnorm_key: str = param("", "dataset statistics key for unnormalising actions ('' = the checkpoint's "
                                "only/default key)")
    # --- inputs (read at start-up) ---
    camera_names: tuple = param(LIBERO_CAMERAS, "camera names, in the model's image order")
    camera_topics: tuple = param(("/camera/agentview/image_raw", "/camera/wrist/image_raw"),
                                 "one topic per camera name")
    image_transport: str = param("raw", "raw (Image) | compressed (CompressedImage on <topic>/compressed) | both")
    joint_states_topic: str = param("/joint_states", "sensor_msgs/JointState")
    eef_pose_topic: str = param("/eef_pose", "geometry_msgs/PoseStamped, end effector in the robot base frame")
    instruction_topic: str = param("/instruction", "std_msgs/String (latched or plain publishers)")
    instruction: str = param("", "task instruction; the topic and ~/set_instruction replace it", runtime=True)
    proprio_sources: tuple = param(LIBERO_PROPRIO, "proprio pieces in order: eef_pos (3), eef_axis_angle (3), "
                                                   "joint:<name> (1)")
    # --- execution (read at start-up unless runtime) ---
    control_rate_hz: float = param(20.0, "per-step action rate")
    execution_mode: str = param("open_loop", "open_loop | async | temporal_ensemble")
    open_loop_steps: int = param(0, "open_loop: steps executed per chunk (0 = the whole chunk); from the next "
                                    "chunk on", runtime=True)
    async_blend: str = param("linear", "async: overlap blend, linear | none (ignored when async_blend_weights "
                                       "is set)", runtime=True)
    async_blend_weights: tuple = param((), "async: weights of the NEW chunk per overlapping step, last repeats "
                                           "([] = use async_blend)", runtime=True, list_type="double")
    async_latency_margin_steps: int = param(1, "async: request this many steps earlier than the measured "
                                               "latency", runtime=True)
    async_delay_compensation: bool = param(True, "async: drop the chunk steps that passed since its observation",
                                           runtime=True)
    ensemble_m: float = param(0.01, "temporal_ensemble: w_i = exp(-m * i), i = 0 oldest chunk", runtime=True)
    ensemble_query_every: int = param(1, "temporal_ensemble: request a chunk every N executed steps", runtime=True)
    # --- safety (docs/safety.md) ---
    max_observation_age: float = param(0.5, "s; an input whose stamp or arrival is older is stale: no inference, "
                                            "no actions", runtime=True)
    future_stamp_tolerance: float = param(0.1, "s; an input stamped further ahead of the node's clock is "
                                               "rejected (future_stamp)", runtime=True)
    max_chunk_age: float = param(-1.0, "s; a chunk whose observation is older when it arrives is dropped "
                                       "(negative: max_observation_age)", runtime=True)
    pairing_tolerance: float = param(0.05, "s; max spread of the camera stamps in one observation", runtime=True)
    proprio_sync_tolerance: float = param(-1.0, "s; proprio may be at most this older than the images "
                                                "(negative: off; lock-step sim: 0.001, so the previous step's "
                                                "proprio is never used)", runtime=True)
    wait_for_new_observation: bool = param(True, "open_loop: infer only from an observation newer than the "
                                                 "last step", runtime=True)
    publish_on_arrival: bool = param(True, "a step found empty is served as soon as the chunk arrives "
                                           "(lock-step sim)", runtime=True)
    action_min: tuple = param((), "per-dimension lower limits (one value = all dims; [] = none)", runtime=True,
                              list_type="double")
    action_max: tuple = param((), "per-dimension upper limits (one value = all dims; [] = none)", runtime=True,
                              list_type="double")
    limit_mode: str = param("clip", "clip | reject: what to do with a chunk outside the limits", runtime=True)
    publish_hold_on_stale: bool = param(False, "publish one hold action when observations stop", runtime=True)
    hold_action: tuple = param((), "the hold action ([] = zeros, or the last action for joint_position)",
                               runtime=True, list_type="double")
    joint_names: tuple = param((), "JointTrajectory joint names, one per action dim (joint_position only)",
                               list_type="string")
    diagnostics_period: float = param(1.0, "s between /diagnostics messages")

    def __post_init__(self):
        for f in dataclasses.fields(self):  # lists from ROS / YAML / argparse become tuples (frozen, hashable)
            v = getattr(self, f.name)
            if isinstance(f.default, tuple) and not isinstance(v, tuple):
                object.__setattr__(self, f.name, tuple(v) if v is not None else ())
        self.validate()

    # --- checks that need no model (the runner adds those that need action_dim) ---
    def validate(self) -> None:
        def choice(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {' | '.join(allowed)}, got {getattr(self, name)!r}")

        def seconds(name, positive=True, allow_negative=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number of seconds, got {v!r}")
            if positive and v <= 0:
                raise ValueError(f"{name} must be > 0 s, got {v}")
            if not positive and not allow_negative and v < 0:
                raise ValueError(f"{name} must be >= 0 s, got {v}")

        choice("image_transport", ("raw", "compressed", "both"))
        choice("execution_mode", SCHEDULERS)
        choice("limit_mode", ("clip", "reject"))
        choice("async_blend", ("linear", "none"))
        choice("action_rows", ("auto", "oft", "lightvla"))
        choice("inference_path", ("auto", *INFERENCE_PATHS))
        seconds("max_observation_age")
        seconds("future_stamp_tolerance", positive=False)
        seconds("pairing_tolerance", positive=False)
        seconds("proprio_sync_tolerance", positive=False, allow_negative=True)
        seconds("max_chunk_age", positive=False, allow_negative=True)
        seconds("diagnostics_period")
        if self.max_chunk_age == 0:
            raise ValueError("max_chunk_age must be > 0 (negative: max_observation_age)")
        if not self.control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        if len(self.camera_names) != len(self.camera_topics):
            raise ValueError(f"camera_names has {len(self.camera_names)} entries but camera_topics "
                             f"{len(self.camera_topics)}: give one topic per camera")
        parse_proprio_sources(self.proprio_sources)
        if self.open_loop_steps < 0 or self.async_latency_margin_steps < 0 or self.ensemble_query_every < 1:
            raise ValueError("open_loop_steps and async_latency_margin_steps must be >= 0, ensemble_query_every >= 1")
        if not self.ensemble_m >= 0:
            raise ValueError(f"ensemble_m must be >= 0, got {self.ensemble_m}")
        if self.async_blend_weights:
            blend_weights(list(self.async_blend_weights), 1)
        for name in ("action_min", "action_max", "hold_action"):
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in getattr(self, name)):
                raise ValueError(f"{name} must be finite numbers, got {list(getattr(self, name))}")

    def replace(self, **changes) -> "RunnerConfig":
        """A copy with `changes`, validated as a whole (ValueError names the problem)."""
        unknown = sorted(set(changes) - FIELDS)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}")
        return dataclasses.replace(self, **changes)

    # --- derived values in the core's units ---
    @property
    def control_period_ns(self) -> int:
        return to_ns(1.0 / self.control_rate_hz)

    def ns(self, name: str) -> int:
        """A seconds parameter in integer nanoseconds."""
        return to_ns(getattr(self, name))

    @property
    def max_chunk_age_ns(self) -> int:
        return self.ns("max_observation_age") if self.max_chunk_age < 0 else self.ns("max_chunk_age")

    @property
    def proprio_sync_ns(self) -> int | None:
        return None if self.proprio_sync_tolerance < 0 else self.ns("proprio_sync_tolerance")

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}


FIELDS = frozenset(f.name for f in dataclasses.fields(RunnerConfig))
RUNTIME = frozenset(f.name for f in dataclasses.fields(RunnerConfig) if f.metadata["runtime"])
DEFAULTS = RunnerConfig()
