"""LightVLA policy node: cameras + proprio + instruction in, pruned VLA chunks and per-step actions out.

A thin adapter around VLAPolicy.infer(Observation) -> PolicyOutput (lightvla_ros.policy), the
ObservationAssembler (pairing, staleness) and a chunk scheduler (open_loop | async | temporal_ensemble).

Subscribes (topics are parameters; defaults in docs/interfaces.md)
  <camera_topics[i]>               sensor_msgs/Image rgb8|bgr8|mono8 (image_transport raw|both), sensor-data QoS
  <camera_topics[i]>/compressed    sensor_msgs/CompressedImage jpeg|png (image_transport compressed|both)
  /joint_states                    sensor_msgs/JointState, sensor-data QoS
  /eef_pose                        geometry_msgs/PoseStamped, sensor-data QoS
  /instruction                     std_msgs/String: latched (reliable + transient local) and plain publishers
Publishes
  /lightvla/action_chunk           ActionChunk, one per inference, stamp = observation stamp
  /lightvla/action                 ActionChunk with chunk_size 1, once per control step, stamp = step time
  /lightvla/joint_trajectory       JointTrajectory, one per inference (action_space joint_position only)
  /lightvla/pruning_stats          PruningStats, one per inference, stamp = observation stamp
  /diagnostics                     DiagnosticArray, every diagnostics_period s
Services
  ~/reset (std_srvs/Trigger), ~/set_instruction (lightvla_interfaces/SetInstruction)

Threads: every callback (sensors, the step timer, services, parameters) runs on one
SingleThreadedExecutor and is short (decode, store, decide); the model runs on its own worker
thread, so the step timer keeps its rate while the model computes. (A MultiThreadedExecutor
livelocks in rclpy 9.1: a callback queued behind busy pool threads is yielded and submitted again
on every wait, docs/safety.md.) One lock guards the assembler, the scheduler and the counters.
Both paths that publish a per-step action (the step timer, a chunk arriving for a step found empty)
go through one StepGate: each step at most once, stamps strictly increasing; refusals are counted.

Safety rules (docs/safety.md): an input is fresh only if its stamp and its arrival are both within
max_observation_age of now (stamps beyond future_stamp_tolerance ahead are rejected); no action
after max_observation_age + 2 periods once any input goes stale; a chunk whose observation is
older than max_chunk_age when it arrives is dropped; run-time parameter changes are validated and
applied atomically (queued actions included) or refused with a reason.
"""
from __future__ import annotations

import array
import os
import signal
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration, Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lightvla_interfaces.msg import ActionChunk, PruningStats
from lightvla_interfaces.srv import SetInstruction
from lightvla_ros.policy.chunking import SCHEDULERS, make_scheduler
from lightvla_ros.policy.observation_sync import ObservationAssembler, Rejection
from lightvla_ros.policy.step_gate import StepGate
from lightvla_ros.policy.types import Observation, PolicyOutput
from lightvla_ros.ros.conversions import compressed_to_rgb, image_to_rgb

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# matches any live publisher (reliable or best effort); LATCHED adds the last message of a latched one
LIVE = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# requests wait here until the executor takes them: a burst of 100 calls is answered, not dropped
SERVICE_QOS = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)
SHOWN_CHARS = 80  # logs and /diagnostics show at most this much of an instruction
EXPLODING = 1e4   # |action| at warm-up at or above this: the checkpoint is broken (no robot action is this large)

# name: (default, description). Lists default to [] are declared with their type (see _declare).
PARAMETERS = {
    "checkpoint": ("", "checkpoint directory (released LightVLA / OFT layout)"),
    "action_rows": ("auto", "hidden-state rows read by the action head: auto | oft | lightvla (docs/model.md)"),
    "device": ("auto", "auto | cpu | cuda | cuda:N"),
    "dtype": ("auto", "auto | float32 | bfloat16 | float16"),
    "compile": (False, "torch.compile the model at start-up"),
    "unnorm_key": ("", "dataset statistics key for unnormalising actions ('' = the checkpoint's only/default key)"),
    "camera_names": (["agentview", "wrist"], "camera names, in the model's image order"),
    "camera_topics": (["/camera/agentview/image_raw", "/camera/wrist/image_raw"], "one topic per camera name"),
    "image_transport": ("raw", "raw (Image) | compressed (CompressedImage on <topic>/compressed) | both"),
    "joint_states_topic": ("/joint_states", "sensor_msgs/JointState"),
    "eef_pose_topic": ("/eef_pose", "geometry_msgs/PoseStamped, end effector in the robot base frame"),
    "instruction_topic": ("/instruction", "std_msgs/String, transient local"),
    "instruction": ("", "task instruction; the topic and ~/set_instruction replace it"),
    "proprio_sources": (["eef_pos", "eef_axis_angle", "joint:gripper0_finger_joint1", "joint:gripper0_finger_joint2"],
                        "proprio pieces in order: eef_pos (3), eef_axis_angle (3), joint:<name> (1)"),
    "control_rate_hz": (20.0, "per-step action rate"),
    "execution_mode": ("open_loop", "open_loop | async | temporal_ensemble"),
    "open_loop_steps": (0, "open_loop: steps executed per chunk (0 = the whole chunk)"),
    "async_blend": ("linear", "async: overlap blend, linear | none (ignored when async_blend_weights is set)"),
    "async_blend_weights": ([], "async: weights of the NEW chunk per overlapping step, last repeats ([] = use async_blend)"),
    "async_latency_margin_steps": (1, "async: request this many steps earlier than the measured latency"),
    "async_delay_compensation": (True, "async: drop the chunk steps that passed since its observation"),
    "ensemble_m": (0.01, "temporal_ensemble: w_i = exp(-m * i), i = 0 oldest chunk"),
    "ensemble_query_every": (1, "temporal_ensemble: request a chunk every N executed steps"),
    "max_observation_age": (0.5, "s; an input whose stamp or arrival is older is stale: no inference, no actions"),
    "future_stamp_tolerance": (0.1, "s; an input stamped further ahead of the node's clock is rejected (future_stamp)"),
    "max_chunk_age": (-1.0, "s; a chunk whose observation is older when it arrives is dropped (negative: "
                            "max_observation_age)"),
    "pairing_tolerance": (0.05, "s; max spread of the camera stamps in one observation"),
    "proprio_sync_tolerance": (-1.0, "s; proprio may be at most this older than the images (negative: off; "
                                     "lock-step sim: 0.001, so the previous step's proprio is never used)"),
    "wait_for_new_observation": (True, "open_loop: infer only from an observation newer than the last step"),
    "publish_on_arrival": (True, "a step found empty is served as soon as the chunk arrives (lock-step sim)"),
    "action_min": ([], "per-dimension lower limits (one value = all dims; [] = none)"),
    "action_max": ([], "per-dimension upper limits (one value = all dims; [] = none)"),
    "limit_mode": ("clip", "clip | reject: what to do with a chunk outside the limits"),
    "publish_hold_on_stale": (False, "publish one hold action when observations stop"),
    "hold_action": ([], "the hold action ([] = zeros, or the last action for joint_position)"),
    "joint_names": ([], "JointTrajectory joint names, one per action dim (joint_position only)"),
    "diagnostics_period": (1.0, "s between /diagnostics messages"),
}
# Only these may change while the node runs (validated and applied atomically, else refused);
# every other parameter is read-only after start-up.
RUNTIME = ("instruction", "max_observation_age", "future_stamp_tolerance", "max_chunk_age", "pairing_tolerance",
           "proprio_sync_tolerance", "wait_for_new_observation", "publish_on_arrival", "action_min", "action_max",
           "limit_mode", "publish_hold_on_stale", "hold_action")
EMPTY_LIST_DEFAULTS = {"async_blend_weights": Parameter.Type.DOUBLE_ARRAY, "action_min": Parameter.Type.DOUBLE_ARRAY,
                       "action_max": Parameter.Type.DOUBLE_ARRAY, "hold_action": Parameter.Type.DOUBLE_ARRAY,
                       "joint_names": Parameter.Type.STRING_ARRAY}


class StartupError(RuntimeError):
    """A configuration problem found at start-up: logged as one clear line, exit code 2."""


def stamp_sec(t: TimeMsg) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def time_msg(seconds: float) -> TimeMsg:
    ns = int(round(seconds * 1e9))
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """An instruction for logs and diagnostics: at most `limit` characters, with its full length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def pctl(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


class PolicyNode(Node):
    def __init__(self, policy=None, **node_kwargs):
        super().__init__("lightvla_policy", **node_kwargs)  # node_kwargs: context, parameter_overrides (tests)
        self._declare()
        p = self._p
        if p("image_transport") not in ("raw", "compressed", "both"):
            raise StartupError(f"image_transport must be raw, compressed or both, got {p('image_transport')!r}")
        if p("execution_mode") not in SCHEDULERS:
            raise StartupError(f"execution_mode must be one of {', '.join(SCHEDULERS)}, got {p('execution_mode')!r}")
        if not p("control_rate_hz") > 0:
            raise StartupError(f"control_rate_hz must be > 0, got {p('control_rate_hz')}")
        self.camera_names = list(p("camera_names"))
        self.camera_topics = list(p("camera_topics"))
        if len(self.camera_names) != len(self.camera_topics):
            raise StartupError(f"camera_names has {len(self.camera_names)} entries but camera_topics "
                               f"{len(self.camera_topics)}: give one topic per camera")
        self.control_period = 1.0 / float(p("control_rate_hz"))

        # --- the model, loaded once ---
        self.policy = policy if policy is not None else self._load_policy()
        if self.policy.num_images != len(self.camera_names):
            raise StartupError(f"the checkpoint expects {self.policy.num_images} camera image(s) but "
                               f"{len(self.camera_names)} camera(s) are configured ({self.camera_names})")
        self.chunk_size, self.action_dim = int(self.policy.chunk_size), int(self.policy.action_dim)
        self.action_space = str(self.policy.action_space)
        try:
            self.assembler = ObservationAssembler(
                self.camera_names, proprio_sources=p("proprio_sources"), instruction=p("instruction"))
            weights = list(p("async_blend_weights"))
            self.scheduler = make_scheduler(
                p("execution_mode"), self.chunk_size, self.action_dim, self.control_period,
                open_loop_steps=p("open_loop_steps") or None, blend=weights or p("async_blend"),
                latency_margin_steps=p("async_latency_margin_steps"),
                delay_compensation=p("async_delay_compensation"), ensemble_m=p("ensemble_m"),
                query_every=p("ensemble_query_every"))
            self._apply(self._runtime_config({n: p(n) for n in RUNTIME}))
        except ValueError as e:
            raise StartupError(str(e)) from None
        want_proprio = int(getattr(self.policy, "proprio_dim", 0) or 0)
        if want_proprio and self.assembler.proprio_dim != want_proprio:
            raise StartupError(f"proprio_sources {p('proprio_sources')} give {self.assembler.proprio_dim} values "
                               f"but the checkpoint expects proprio_dim {want_proprio}")
        problem = self._instruction_problem(self.assembler.instruction) if self.assembler.instruction else None
        if problem:
            raise StartupError(f"parameter 'instruction': {problem}")
        self.joint_names = list(p("joint_names")) or [f"joint_{i}" for i in range(self.action_dim)]
        if self.action_space == "joint_position" and len(self.joint_names) != self.action_dim:
            raise StartupError(f"joint_names has {len(self.joint_names)} names but the action has {self.action_dim} dims")

        # --- state (guarded by _lock) ---
        self._lock = threading.Lock()
        self._epoch = 0                      # bumped by reset / stall: in-flight results are dropped
        self._last_good_obs: float | None = None   # fresh_since of the newest observation that assembled
        self._fresh = False                  # the watchdog's state: logs each fresh <-> stale transition
        self._obs_after = -1.0               # an inference needs an observation newer than this
        self._steps = StepGate(on_refused=self._step_refused)  # which step may still get an action
        self._publishing = False
        self._last_action: np.ndarray | None = None
        self._stamps: OrderedDict[float, TimeMsg] = OrderedDict()  # float stamp -> exact header stamp
        self.rejected: Counter = Counter()   # observation rejections by reason
        self.bad_input: Counter = Counter()  # malformed messages by kind
        self.safety: Counter = Counter()     # nan_action, clipped_chunks, rejected_chunks, stalls, old_chunks, ...
        self._logged: set[str] = set()
        self._tick_times: deque[float] = deque(maxlen=200)
        self._action_times: deque[float] = deque(maxlen=200)
        self._model_latency: deque[float] = deque(maxlen=200)
        self._node_latency: deque[float] = deque(maxlen=200)   # request -> chunk published, minus model time
        self._chunk_age: deque[float] = deque(maxlen=200)      # observation age when its chunk arrived
        self.inferences = 0
        self.actions_published = 0

        # --- worker ---
        self._job: tuple[Observation, int, float, float] | None = None  # obs, epoch, t_request, fresh_since
        self._job_cv = threading.Condition(self._lock)
        self._running = True
        self._worker = threading.Thread(target=self._work, name="lightvla_inference", daemon=True)

        # --- ROS interfaces (one SingleThreadedExecutor runs every callback: see the module doc) ---
        transport = p("image_transport")
        self._subs = []
        for name, topic in zip(self.camera_names, self.camera_topics):
            if transport in ("raw", "both"):
                self._subs.append(self.create_subscription(
                    Image, topic, lambda m, n=name: self._on_image(n, m, False), qos_profile_sensor_data))
            if transport in ("compressed", "both"):
                self._subs.append(self.create_subscription(
                    CompressedImage, topic.rstrip("/") + "/compressed", lambda m, n=name: self._on_image(n, m, True),
                    qos_profile_sensor_data))
        if self.assembler.joint_names:
            self._subs.append(self.create_subscription(JointState, p("joint_states_topic"), self._on_joint_state,
                                                       qos_profile_sensor_data))
        if self.assembler.needs_eef:
            self._subs.append(self.create_subscription(PoseStamped, p("eef_pose_topic"), self._on_eef_pose,
                                                       qos_profile_sensor_data))
        for qos in (LATCHED, LIVE):  # a latched publisher's last message, and any plain publisher
            self._subs.append(self.create_subscription(String, p("instruction_topic"), self._on_instruction, qos))
        self.pub_chunk = self.create_publisher(ActionChunk, "/lightvla/action_chunk", RELIABLE)
        self.pub_action = self.create_publisher(ActionChunk, "/lightvla/action", RELIABLE)
        self.pub_stats = self.create_publisher(PruningStats, "/lightvla/pruning_stats", RELIABLE)
        self.pub_traj = (self.create_publisher(JointTrajectory, "/lightvla/joint_trajectory", RELIABLE)
                         if self.action_space == "joint_position" else None)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self.create_service(Trigger, "~/reset", self._on_reset, qos_profile=SERVICE_QOS)
        self.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction, qos_profile=SERVICE_QOS)
        self.add_on_set_parameters_callback(self._on_params)
        self._step_timer = self.create_timer(self.control_period, self._on_step)
        self._diag_timer = self.create_timer(float(p("diagnostics_period")), self._publish_diagnostics)

    # ------------------------------------------------------------------ set-up
    def _declare(self) -> None:
        for name, (default, desc) in PARAMETERS.items():
            d = ParameterDescriptor(description=desc, read_only=name not in RUNTIME)
            try:
                if name in EMPTY_LIST_DEFAULTS:  # declared with a type, no value: [] unless set
                    self.declare_parameter(name, EMPTY_LIST_DEFAULTS[name], d)
                else:
                    self.declare_parameter(name, default, d)
            except (InvalidParameterTypeException, InvalidParameterValueException) as e:
                raise StartupError(f"parameter {name!r}: {e} (expected like {default!r})") from None

    def _p(self, name: str):
        param = self.get_parameter_or(name, None)
        if param is None or param.type_ == Parameter.Type.NOT_SET:  # a typed list never set: []
            return []
        return param.value

    def _runtime_config(self, values: dict) -> dict:
        """Validate the run-time parameters (all of them, as they would be after a change) and derive
        what the node uses; raises ValueError saying what is wrong. Nothing is applied here."""
        def limits(name):
            vals = [float(v) for v in (values[name] if values[name] is not None else [])]
            if not vals:
                return None
            if len(vals) == 1:
                vals = vals * self.action_dim
            if len(vals) != self.action_dim:
                raise ValueError(f"{name} has {len(vals)} values; give 1 or action_dim = {self.action_dim}")
            if not all(np.isfinite(vals)):
                raise ValueError(f"{name} must be finite numbers, got {vals}")
            return np.asarray(vals, dtype=np.float32)

        def seconds(name, positive=True):
            v = float(values[name])
            if not np.isfinite(v) or (positive and v <= 0):
                raise ValueError(f"{name} must be a {'positive' if positive else 'finite'} number of seconds, got {v}")
            return v

        if values["limit_mode"] not in ("clip", "reject"):
            raise ValueError(f"limit_mode must be clip or reject, got {values['limit_mode']!r}")
        cfg = {"action_min": limits("action_min"), "action_max": limits("action_max"),
               "hold_action": limits("hold_action"), "limit_mode": values["limit_mode"],
               "max_observation_age": seconds("max_observation_age"),
               "future_stamp_tolerance": seconds("future_stamp_tolerance", positive=False),
               "pairing_tolerance": seconds("pairing_tolerance", positive=False),
               "proprio_sync_tolerance": seconds("proprio_sync_tolerance", positive=False)}
        if cfg["action_min"] is not None and cfg["action_max"] is not None and \
                np.any(cfg["action_min"] > cfg["action_max"]):
            raise ValueError(f"action_min {cfg['action_min'].tolist()} exceeds action_max {cfg['action_max'].tolist()}")
        if cfg["future_stamp_tolerance"] < 0 or cfg["pairing_tolerance"] < 0:
            raise ValueError("future_stamp_tolerance and pairing_tolerance must be >= 0")
        age = seconds("max_chunk_age", positive=False)
        cfg["max_chunk_age"] = cfg["max_observation_age"] if age < 0 else age
        if cfg["max_chunk_age"] == 0:
            raise ValueError("max_chunk_age must be > 0 (negative: max_observation_age)")
        return cfg

    def _apply(self, cfg: dict) -> None:
        """Make a validated run-time configuration current (lock held once the node runs)."""
        self.action_min, self.action_max = cfg["action_min"], cfg["action_max"]
        self.hold_action, self.limit_mode = cfg["hold_action"], cfg["limit_mode"]
        self.max_chunk_age = cfg["max_chunk_age"]
        a = self.assembler
        a.max_observation_age, a.pairing_tolerance = cfg["max_observation_age"], cfg["pairing_tolerance"]
        a.future_tolerance = cfg["future_stamp_tolerance"]
        a.proprio_sync_tolerance = None if cfg["proprio_sync_tolerance"] < 0 else cfg["proprio_sync_tolerance"]

    def _instruction_problem(self, text: str) -> str | None:
        """Why the model cannot take this instruction (too long for its positions), or None."""
        check = getattr(self.policy, "instruction_problem", None)
        return check(text) if check is not None else None

    def _load_policy(self):
        ckpt = str(self._p("checkpoint"))
        if not ckpt:
            raise StartupError("no checkpoint: set the 'checkpoint' parameter to a LightVLA checkpoint directory")
        if not Path(ckpt).is_dir():
            raise StartupError(f"checkpoint directory {ckpt!r} does not exist (parameter 'checkpoint')")
        from lightvla_ros.policy.vla_policy import VLAPolicy

        kwargs = dict(device=self._p("device"), dtype=self._p("dtype"), compile=bool(self._p("compile")))
        if self._p("action_rows") != "auto":
            kwargs["action_rows"] = self._p("action_rows")
        if self._p("unnorm_key"):
            kwargs["unnorm_key"] = self._p("unnorm_key")
        t0 = time.monotonic()
        try:
            policy = VLAPolicy(ckpt, **kwargs)
        except Exception as e:  # CheckpointError, OSError, ...: one clear line, not a traceback
            raise StartupError(f"could not load checkpoint {ckpt!r}: {type(e).__name__}: {e}") from None
        self.get_logger().info(f"loaded {ckpt} in {time.monotonic() - t0:.1f} s: chunk {policy.chunk_size} x "
                               f"{policy.action_dim} ({policy.action_space}), {policy.num_images} image(s), "
                               f"proprio {policy.proprio_dim}, action rows {getattr(policy, 'action_rows', 'n/a')}")
        return policy

    def start(self) -> None:
        """Warm the model up, then start the worker; logs 'policy ready'. A model that fails or
        gives non-finite / exploding actions at warm-up is a StartupError (one line, exit 2)."""
        t0 = time.monotonic()
        ckpt = self._p("checkpoint") or "the given policy"
        try:
            out = self.policy.warmup()
        except Exception as e:
            raise StartupError(f"checkpoint {ckpt!r} failed its warm-up inference: {type(e).__name__}: "
                               f"{str(e)[:200]}") from None
        actions = getattr(out, "actions", None)
        if actions is not None and not np.all(np.abs(np.asarray(actions, dtype=np.float64)) < EXPLODING):
            raise StartupError(f"checkpoint {ckpt!r} gives actions of magnitude >= {EXPLODING:g} (or NaN) at "
                               "warm-up: the weights or the dataset statistics are broken")
        self._worker.start()
        self.get_logger().info(
            f"policy ready (warm-up {time.monotonic() - t0:.2f} s; mode {self._p('execution_mode')}, "
            f"{1.0 / self.control_period:g} Hz, cameras {dict(zip(self.camera_names, self.camera_topics))})")

    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker: an inference in flight is discarded (nothing is published after this)."""
        with self._lock:
            self._running = False
            self._job = None
            self._job_cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=timeout)  # a long forward pass finishes on its own and is dropped

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _report(self, counter: Counter, kind: str, message: str) -> None:
        """Count a problem; log it once per kind (the counts go to /diagnostics)."""
        counter[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            self.get_logger().warning(f"{kind}: {message} (logged once; counted in /diagnostics)")

    def _remember_stamp(self, header_stamp: TimeMsg) -> float:
        t = stamp_sec(header_stamp)
        self._stamps[t] = header_stamp
        self._stamps.move_to_end(t)
        while len(self._stamps) > 512:
            self._stamps.popitem(last=False)
        return t

    def _stamp_of(self, t: float) -> TimeMsg:
        return self._stamps.get(t) or time_msg(t)

    # ------------------------------------------------------------------ inputs
    def _on_image(self, camera: str, msg, compressed: bool) -> None:
        try:
            rgb = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
        except ValueError as e:
            text = str(e)
            if compressed:
                kind = "empty_image" if "no data" in text else "bad_compressed"
            elif "encoding" in text:
                kind = "bad_encoding"
            elif "no data" in text:
                kind = "empty_image"
            else:
                kind = "bad_size"
            with self._lock:
                self._report(self.bad_input, kind, f"camera {camera!r}: {text}")
            return
        with self._lock:
            t = self._remember_stamp(msg.header.stamp)
            now = self._now()
            self.assembler.add_image(camera, rgb, t, received=now)
            self._maybe_request(now, count_rejection=False)

    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            now = self._now()
            try:  # a malformed message is rejected whole: the joints it would refresh go stale
                self.assembler.add_joint_state(list(msg.name), list(msg.position), stamp_sec(msg.header.stamp),
                                               received=now)
            except ValueError as e:
                self._report(self.bad_input, "bad_joint_state", f"{self._p('joint_states_topic')}: {e}")
                return
            self._maybe_request(now, count_rejection=False)  # the last piece may complete it

    def _on_eef_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        with self._lock:
            now = self._now()
            self.assembler.add_eef_pose([p.x, p.y, p.z], [q.x, q.y, q.z, q.w], stamp_sec(msg.header.stamp),
                                        received=now)
            self._maybe_request(now, count_rejection=False)

    def _on_instruction(self, msg: String) -> None:
        self._set_instruction(msg.data, "topic")

    def _set_instruction(self, text: str, source: str) -> tuple[bool, str]:
        if not text or not text.strip():
            with self._lock:
                self._report(self.bad_input, "empty_instruction", f"empty instruction from the {source} ignored")
            return False, "empty instruction ignored; the previous one stays"
        if text == self.assembler.instruction:  # both instruction subscriptions deliver it: checked once
            return True, f"instruction set: '{shorten(text)}'"
        problem = self._instruction_problem(text)
        if problem:
            with self._lock:
                self._report(self.bad_input, "instruction_too_long", f"instruction from the {source} "
                                                                     f"'{shorten(text)}' refused: {problem}")
            return False, f"instruction refused: {problem}; the previous one stays"
        with self._lock:
            changed = text != self.assembler.instruction
            self.assembler.set_instruction(text)
            if changed:
                self._clear_queue(self._now())
        if changed:
            self.get_logger().info(f"instruction ({source}): '{shorten(text)}'")
        return True, f"instruction set: '{shorten(text)}'"

    def _on_params(self, params) -> SetParametersResult:
        """Run-time parameters: validated together, then applied atomically under the lock (queued
        actions meet new limits at the step), or refused with the reason. Never accepted and ignored."""
        new = {prm.name: prm.value for prm in params}
        for name in new:
            if name not in RUNTIME and name in PARAMETERS:  # read-only descriptors refuse these first
                return SetParametersResult(successful=False, reason=f"{name} is read at start-up only")
        if "instruction" in new and new["instruction"]:
            problem = self._instruction_problem(new["instruction"])
            if problem:
                return SetParametersResult(successful=False, reason=f"instruction refused: {problem}")
        values = {n: new.get(n, self._p(n)) for n in RUNTIME}
        try:
            cfg = self._runtime_config(values)
        except (ValueError, TypeError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        with self._lock:
            self._apply(cfg)
        if "instruction" in new and new["instruction"]:
            self._set_instruction(new["instruction"], "parameter")
        changed = sorted(n for n in new if n != "instruction")
        if changed:
            self.get_logger().info(f"parameters applied: {', '.join(f'{n}={new[n]!r}' for n in changed)}")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ services
    def _clear_queue(self, now: float) -> None:
        """Drop queued actions and in-flight results; need a fresh observation (lock held)."""
        self.scheduler.reset()
        self._epoch += 1
        self._steps.drop_pending()
        self._job = None
        self._obs_after = now - 1e-6  # taken before now; one taken at now is new (lock-step: the sim's next state)

    def _on_reset(self, request, response):
        with self._lock:
            now = self._now()
            self._clear_queue(now)
            self._steps.rebase(now)  # a sim restarted at an earlier time starts its steps over
            self.assembler.clear()  # a new episode: forget buffered frames and proprio too
            self._last_good_obs = None
        self.policy.reset()
        response.success, response.message = True, "action queue and buffered observations cleared; waiting for new observations"
        return response

    def _on_set_instruction(self, request, response):
        response.success, response.message = self._set_instruction(request.instruction, "service")
        return response

    # ------------------------------------------------------------------ the control step
    def _on_step(self) -> None:
        with self._lock:
            now = self._now()  # read under the lock: step decisions see the clock in order
            self._tick_times.append(time.monotonic())
            obs = self.assembler.assemble(now)
            if isinstance(obs, Observation):
                self._mark_good()
            if not self._publishing_allowed(now):
                hold = None
                if self._fresh:  # the watchdog: fresh -> stale, logged once per transition
                    self._fresh = False
                    self.safety["stalls"] += 1
                    age = "never" if self._last_good_obs is None else f"{now - self._last_good_obs:.2f} s ago"
                    which = "; ".join(self.assembler.stale_inputs(now)) or \
                        (obs.message if isinstance(obs, Rejection) else "no usable observation")
                    self.get_logger().warning(f"observations stopped: {which} (last usable observation {age}); "
                                              "no actions until every input is fresh")
                if self._publishing:
                    self._publishing = False
                    self._clear_queue(now)
                    if self._p("publish_hold_on_stale"):
                        hold = self._hold_vector()
                if isinstance(obs, Rejection):
                    self._report(self.rejected, obs.reason, obs.message)
                # no hold: the step waits (lock-step: the first step is due before any observation)
                if self._steps.serve(now, lambda: hold) is not None:
                    self._publish_hold(hold, now)
                return
            self._maybe_request(now, count_rejection=True, obs=obs)
            action = self._steps.serve(now, lambda: self.scheduler.next_action(now))
            if action is not None:
                self._publish_step(action, now)

    def _step_refused(self, kind: str, step_time: float, newest: float) -> None:
        """StepGate refused a step (lock held): counted as safety_duplicate_steps / safety_old_steps."""
        why = ("the step timer fired twice at this time" if kind == "duplicate_step"
               else "the clock went backwards (a restarted sim: call ~/reset)")
        self._report(self.safety, kind + "s", f"no action for the step at t={step_time:.3f}: the step at "
                                              f"t={newest:.3f} was already begun ({why})")

    def _mark_good(self) -> float | None:
        """An observation assembled (lock held): it stays usable until its oldest input (stamp or
        arrival, cameras and proprio alike) is max_observation_age old. Returns that oldest time."""
        since = self.assembler.fresh_since()
        if since is not None:
            self._last_good_obs = max(since, self._last_good_obs if self._last_good_obs is not None else since)
        if not self._fresh:
            self._fresh = True
            if self.safety["stalls"]:
                self.get_logger().info("observations resumed")
        return since

    def _maybe_request(self, now: float, count_rejection: bool, obs=None) -> None:
        """Hand an observation to the worker if the scheduler wants a chunk (lock held)."""
        if self._job is not None or not self.scheduler.wants_inference(now):
            return
        if obs is None:
            obs = self.assembler.assemble(now)
        if isinstance(obs, Rejection):
            if count_rejection:
                self._report(self.rejected, obs.reason, obs.message)
            return
        since = self._mark_good()
        if obs.stamp <= self._obs_after:  # from before the last step / reset: wait for a newer one
            return
        self.scheduler.inference_started(now)
        self._job = (obs, self._epoch, time.monotonic(), obs.stamp if since is None else since)
        self._job_cv.notify()

    def _publish_step(self, action: np.ndarray, step_time: float) -> None:
        """Publish one control step's action (lock held); a last safety check against the limits in
        force now (a limit changed at run time applies to actions queued before the change)."""
        if not np.all(np.isfinite(action)):
            self._report(self.safety, "nan_action", "a step action had NaN/Inf values: not published")
            return
        lo = self.action_min if self.action_min is not None else -np.inf
        hi = self.action_max if self.action_max is not None else np.inf
        if np.any(action < lo) or np.any(action > hi):
            if self.limit_mode == "reject":
                self._report(self.safety, "out_of_limits_step", f"step action {action.tolist()} outside "
                                                                "[action_min, action_max]: not published")
                return
            action = np.clip(action, lo, hi).astype(np.float32)
            self.safety["clipped_steps"] += 1
        msg = ActionChunk()
        msg.header.stamp = time_msg(step_time)
        msg.chunk_size, msg.action_dim = 1, self.action_dim
        msg.actions = array.array("f", action.astype(np.float32).tobytes())
        msg.action_space = self.action_space
        self.pub_action.publish(msg)
        self._publishing = True
        self._last_action = action
        self.actions_published += 1
        self._action_times.append(time.monotonic())
        if self._p("execution_mode") == "open_loop" and self._p("wait_for_new_observation"):
            self._obs_after = max(self._obs_after, step_time)

    def _hold_vector(self) -> np.ndarray:
        if self.hold_action is not None:
            return self.hold_action
        if self.action_space == "joint_position" and self._last_action is not None:
            return self._last_action
        return np.zeros(self.action_dim, dtype=np.float32)

    def _publish_hold(self, hold: np.ndarray, now: float) -> None:
        msg = ActionChunk()
        msg.header.stamp = time_msg(now)
        msg.chunk_size, msg.action_dim = 1, self.action_dim
        msg.actions = array.array("f", np.asarray(hold, dtype=np.float32).tobytes())
        msg.action_space = self.action_space
        self.pub_action.publish(msg)
        self.safety["holds"] += 1

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while self._running and self._job is None:
                    self._job_cv.wait(timeout=0.2)
                if not self._running:
                    return
                obs, epoch, t_request, since = self._job
            try:
                out = self.policy.infer(obs)
            except Exception as e:  # a model error must not take the node down
                with self._lock:
                    if not self._running:
                        return
                    self._report(self.safety, "inference_error", f"inference failed: {type(e).__name__}: "
                                                                 f"{str(e)[:200]}")
                    if self._job is not None and self._job[1] == epoch:
                        self._job = None
                        self.scheduler.inference_failed(self._now())
                continue
            self._on_result(out, obs, epoch, t_request, since)

    def _on_result(self, out: PolicyOutput, obs: Observation, epoch: int, t_request: float, since: float) -> None:
        """A chunk is back from the model: check it, publish it, queue it, serve a step waiting for it."""
        with self._lock:
            if not self._running:   # shutting down: the context may be gone, publish nothing
                return
            if self._job is None or self._job[1] != epoch:   # reset / stall while inferring
                self.safety["dropped_chunks"] += 1
                return
            self._job = None
            self.inferences += 1
            now = self._now()
            age = now - since
            self._chunk_age.append(age)
            if age > self.max_chunk_age:  # executing it would act on what the robot saw long ago
                self._report(self.safety, "old_chunks", f"a chunk arrived {age:.3f} s after its observation "
                                                        f"(max_chunk_age {self.max_chunk_age:.3f} s): dropped; the "
                                                        "model cannot keep up (model latency in /diagnostics)")
                self.scheduler.inference_failed(now)
                return
            actions = self._check_chunk(out.actions)
            if actions is None:
                self.scheduler.inference_failed(self._now())
                return
            out.actions = actions
            self._publish_chunk(out, t_request)
            now = self._now()
            self.scheduler.add_chunk(actions, obs.stamp, now)
            # a step found empty less than a period ago (lock-step: time stands still) is served now,
            # unless a newer step began meanwhile (StepGate: never a step twice or out of order)
            if self._p("publish_on_arrival") and self._publishing_allowed(now):
                got = self._steps.serve_pending(now, self.control_period, lambda: self.scheduler.next_action(now))
                if got is not None:
                    self._publish_step(got[1], got[0])

    def _publishing_allowed(self, now: float) -> bool:
        """The watchdog: some observation assembled whose every input is still within max_observation_age."""
        return self._last_good_obs is not None and now - self._last_good_obs <= self.assembler.max_observation_age

    def _check_chunk(self, actions: np.ndarray) -> np.ndarray | None:
        """NaN/Inf -> reject; outside limits -> clip or reject per limit_mode (lock held)."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != self.action_dim:
            self._report(self.safety, "bad_chunk_shape", f"chunk of shape {actions.shape}: not used")
            return None
        if not np.all(np.isfinite(actions)):
            self._report(self.safety, "nan_action", "the model returned NaN/Inf actions: chunk not used")
            return None
        lo = self.action_min if self.action_min is not None else -np.inf
        hi = self.action_max if self.action_max is not None else np.inf
        outside = (actions < lo) | (actions > hi)
        if outside.any():
            if self.limit_mode == "reject":
                self._report(self.safety, "rejected_chunks", f"{int(outside.sum())} action values outside "
                                                             "[action_min, action_max]: chunk rejected")
                return None
            self._report(self.safety, "clipped_chunks", f"{int(outside.sum())} action values clipped to "
                                                        "[action_min, action_max]")
            self.safety["clipped_values"] += int(outside.sum())
            actions = np.clip(actions, lo, hi).astype(np.float32)
        return actions

    def _publish_chunk(self, out: PolicyOutput, t_request: float) -> None:
        stamp = self._stamp_of(out.stamp)
        model_time = float(out.timings.get("total", 0.0))
        msg = ActionChunk()
        msg.header.stamp = stamp
        msg.chunk_size, msg.action_dim = int(out.actions.shape[0]), int(out.actions.shape[1])
        msg.actions = array.array("f", np.ascontiguousarray(out.actions, dtype=np.float32).tobytes())
        msg.action_space = out.action_space
        msg.inference_latency = model_time
        msg.visual_tokens_kept, msg.visual_tokens_total = out.kept_total, out.total_tokens
        self.pub_chunk.publish(msg)
        stats = PruningStats()
        stats.header.stamp = stamp
        stats.kept_per_image = [int(k) for k in out.kept_per_image]
        stats.total_per_image = [int(t) for t in out.total_per_image]
        stats.kept_total, stats.total = out.kept_total, out.total_tokens
        stats.pruner_time = float(out.timings.get("pruner", 0.0))
        stats.model_time = model_time
        self.pub_stats.publish(stats)
        if self.pub_traj is not None:
            self.pub_traj.publish(joint_trajectory(out.actions, stamp, self.joint_names, self.control_period))
        self._model_latency.append(model_time)
        self._node_latency.append(max(0.0, time.monotonic() - t_request - model_time))

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_values(self) -> dict[str, str]:
        with self._lock:
            def rate(times):
                recent = [t for t in times if t > time.monotonic() - 2.0]
                return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
            s = self.scheduler.stats
            v = {
                "execution_mode": self._p("execution_mode"),
                "state": "publishing" if self._publishing else "waiting for observations",
                "step_rate_hz": f"{rate(self._tick_times):.2f}",
                "step_gap_max_s": f"{max(np.diff(list(self._tick_times)[-40:]), default=0.0):.4f}",
                "action_rate_hz": f"{rate(self._action_times):.2f}",
                "actions_published": str(self.actions_published),
                "inferences": str(self.inferences),
                "model_latency_median_s": f"{pctl(self._model_latency, 50):.4f}",
                "model_latency_p99_s": f"{pctl(self._model_latency, 99):.4f}",
                "node_overhead_median_s": f"{pctl(self._node_latency, 50):.4f}",
                "missed_steps": str(s.missed_steps),
                "pauses": str(s.pauses),
                "dropped_chunk_steps": str(s.dropped_steps),
                "instruction": shorten(self.assembler.instruction),
                "chunk_age_median_s": f"{pctl(self._chunk_age, 50):.4f}",
                "max_chunk_age_s": f"{self.max_chunk_age:.4f}",
                "keeping_up": "no" if self.safety["old_chunks"] and self._chunk_age and
                              self._chunk_age[-1] > self.max_chunk_age else "yes",
            }
            for c, prefix in ((self.rejected, "rejected_"), (self.bad_input, "bad_input_"), (self.safety, "safety_")):
                for k, n in sorted(c.items()):
                    v[prefix + k] = str(n)
            return v

    def _publish_diagnostics(self) -> None:
        v = self.diagnostics_values()
        st = DiagnosticStatus(name=f"lightvla_ros: {self.get_name()}", hardware_id=self._p("device"))
        problems = any(k.startswith(("bad_input_", "safety_nan", "safety_inference")) for k in v)
        st.level = DiagnosticStatus.WARN if (problems or v["state"] != "publishing") else DiagnosticStatus.OK
        st.message = v["state"]
        st.values = [KeyValue(key=k, value=val) for k, val in v.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self.pub_diag.publish(arr)


def joint_trajectory(actions: np.ndarray, stamp: TimeMsg, joint_names: list[str], period: float) -> JointTrajectory:
    """(T, D) joint targets -> JointTrajectory; point i is reached at (i + 1) * period after the stamp."""
    traj = JointTrajectory()
    traj.header.stamp = stamp
    traj.joint_names = list(joint_names)
    for i, row in enumerate(np.asarray(actions, dtype=np.float64)):
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in row]
        ns = int(round((i + 1) * period * 1e9))
        pt.time_from_start = Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        traj.points.append(pt)
    return traj


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the node the way Ctrl-C does


def main(args=None) -> int:
    """Spin the node on one thread. Signals are ours, not rclpy's: rclpy's handler would shut the
    context down while an inference is in flight; here Ctrl-C / SIGTERM first stop the worker
    (its result is discarded), then the node is destroyed and rclpy shut down."""
    log = get_logger("lightvla_policy")
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as e:  # e.g. a malformed -p override: rcl cannot parse the arguments
        log.error(f"could not start: {type(e).__name__}: {e} (check the --ros-args)")
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    node = None
    code = 0
    try:
        node = PolicyNode()
        node.start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok():  # bounded waits: a signal is handled even when no timer fires (paused sim clock)
            executor.spin_once(timeout_sec=0.1)
    except StartupError as e:
        log.error(str(e))
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        log.info("shutting down")
    finally:
        try:
            if node is not None:
                node.close(timeout=0.5)
                node.destroy_node()
        except KeyboardInterrupt:  # a second Ctrl-C while stopping: still no traceback
            pass
        rclpy.try_shutdown()
        if code == 0:
            log.info("stopped")
    if args is None:  # the process entry point: skip the interpreter's ~2 s teardown of torch & co.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
