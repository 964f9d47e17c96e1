"""LightVLA policy node: cameras + proprio + instruction in, pruned VLA chunks and per-step actions out.

A thin ROS adapter: the decisions (assembly, staleness, chunk scheduling, step gate, limits, hold)
are the transport-free ChunkedPolicyRunner's (lightvla_ros.policy.runner, docs/architecture.md);
this node decodes messages into it, publishes what it returns and runs the model on a worker
thread. Parameters are RunnerConfig's fields (policy/config.py: defaults and descriptions).

Subscribes (topics are parameters; docs/interfaces.md)
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
  /lightvla/observation_inputs     String (JSON), one per inference: the stamp of every input it used
  /lightvla/episode_metadata       String (JSON, latched): the settings a bag replay needs
  /diagnostics                     DiagnosticArray, every diagnostics_period s
Services
  ~/reset (std_srvs/Trigger), ~/set_instruction (lightvla_interfaces/SetInstruction)

Threads: every callback runs on one SingleThreadedExecutor and is short (decode, hand to the
runner, publish); the model runs on the InferenceWorker thread. (A MultiThreadedExecutor livelocks
in rclpy 9.1: docs/safety.md.) Safety rules: docs/safety.md.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lightvla_interfaces.msg import ActionChunk, PruningStats
from lightvla_interfaces.srv import SetInstruction
from lightvla_ros.eval.bag_io import INPUTS_TOPIC, METADATA_TOPIC
from lightvla_ros.paths import CheckpointNotFound, resolve_checkpoint
from lightvla_ros.policy.config import FIELDS, RUNTIME, RunnerConfig
from lightvla_ros.policy.process_policy import keep_buffers_mapped
from lightvla_ros.policy.runner import ChunkedPolicyRunner, InferenceWorker, Result, Step
from lightvla_ros.ros.conversions import (actions_to_joint_trajectory, compressed_to_rgb, image_to_rgb,
                                          policy_output_to_action_chunk, policy_output_to_pruning_stats,
                                          step_to_action, time_to_ns)
from lightvla_ros.ros.qos import LATCHED, LIVE, RELIABLE, SENSOR, SERVICE
from lightvla_ros.ros.spin import StartupError, spin_node

# what a recorded bag keeps of the node's configuration (/lightvla/episode_metadata, docs/bags.md)
RECORDED = ("camera_names", "camera_topics", "proprio_sources", "control_rate_hz", "execution_mode", "open_loop_steps",
            "max_observation_age", "future_stamp_tolerance", "pairing_tolerance", "proprio_sync_tolerance",
            "action_min", "action_max", "limit_mode")
EXPLODING = 1e4   # |action| at warm-up at or above this: the checkpoint is broken (no robot action is this large)
LIST_TYPES = {"double": Parameter.Type.DOUBLE_ARRAY, "string": Parameter.Type.STRING_ARRAY}


class PolicyNode(Node):
    def __init__(self, policy=None, **node_kwargs):
        super().__init__("lightvla_policy", **node_kwargs)  # node_kwargs: context, parameter_overrides (tests)
        cfg = self._declare()
        self.policy = policy if policy is not None else self._load_policy(cfg)
        if self.policy.num_images != len(cfg.camera_names):
            raise StartupError(f"the checkpoint expects {self.policy.num_images} camera image(s) but "
                               f"{len(cfg.camera_names)} camera(s) are configured ({list(cfg.camera_names)})")
        try:
            self.runner = ChunkedPolicyRunner(
                cfg, self.policy.chunk_size, self.policy.action_dim, str(self.policy.action_space),
                log=self._log, instruction_problem=getattr(self.policy, "instruction_problem", None))
        except ValueError as e:
            raise StartupError(str(e)) from None
        want_proprio = int(getattr(self.policy, "proprio_dim", 0) or 0)
        if want_proprio and self.runner.assembler.proprio_dim != want_proprio:
            raise StartupError(f"proprio_sources {list(cfg.proprio_sources)} give {self.runner.assembler.proprio_dim} "
                               f"values but the checkpoint expects proprio_dim {want_proprio}")
        self.action_space, action_dim = str(self.policy.action_space), int(self.policy.action_dim)
        self.joint_names = list(cfg.joint_names) or [f"joint_{i}" for i in range(action_dim)]
        if self.action_space == "joint_position" and len(self.joint_names) != action_dim:
            raise StartupError(f"joint_names has {len(self.joint_names)} names but the action has {action_dim} dims")
        self.worker = InferenceWorker(self.runner, self.policy, self._now, self._publish_result)

        for name, topic in zip(cfg.camera_names, cfg.camera_topics):
            if cfg.image_transport in ("raw", "both"):
                self.create_subscription(Image, topic, lambda m, n=name: self._on_image(n, m, image_to_rgb), SENSOR)
            if cfg.image_transport in ("compressed", "both"):
                self.create_subscription(CompressedImage, topic.rstrip("/") + "/compressed",
                                         lambda m, n=name: self._on_image(n, m, compressed_to_rgb), SENSOR)
        if self.runner.assembler.joint_names:
            self.create_subscription(JointState, cfg.joint_states_topic, self._on_joint_state, SENSOR)
        if self.runner.assembler.needs_eef:
            self.create_subscription(PoseStamped, cfg.eef_pose_topic, self._on_eef_pose, SENSOR)
        for qos in (LATCHED, LIVE):  # a latched publisher's last message, and any plain publisher
            self.create_subscription(String, cfg.instruction_topic,
                                     lambda m: self.runner.set_instruction(m.data, "topic", self._now()), qos)
        self.pub_chunk = self.create_publisher(ActionChunk, "/lightvla/action_chunk", RELIABLE)
        self.pub_action = self.create_publisher(ActionChunk, "/lightvla/action", RELIABLE)
        self.pub_stats = self.create_publisher(PruningStats, "/lightvla/pruning_stats", RELIABLE)
        self.pub_traj = (self.create_publisher(JointTrajectory, "/lightvla/joint_trajectory", RELIABLE)
                         if self.action_space == "joint_position" else None)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self.pub_config = self.create_publisher(String, METADATA_TOPIC, LATCHED)  # recorders store it in the bag
        self.pub_inputs = self.create_publisher(String, INPUTS_TOPIC, RELIABLE)   # what each chunk was computed from
        self.create_service(Trigger, "~/reset", self._on_reset, qos_profile=SERVICE)
        self.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction, qos_profile=SERVICE)
        self.add_on_set_parameters_callback(self._on_params)
        self.create_timer(1.0 / cfg.control_rate_hz, lambda: self._publish_step(self.runner.step(self._now())))
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics)

    # ------------------------------------------------------------------ set-up
    def _declare(self) -> RunnerConfig:
        """Declare every RunnerConfig field as a parameter (read-only unless run-time) and read them back."""
        values = {}
        for f in dataclasses.fields(RunnerConfig):
            d = ParameterDescriptor(description=f.metadata["help"], read_only=f.name not in RUNTIME)
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            try:
                if default == [] and f.metadata["list_type"]:  # declared with a type, no value: [] unless set
                    p = self.declare_parameter(f.name, LIST_TYPES[f.metadata["list_type"]], d)
                else:
                    p = self.declare_parameter(f.name, default, d)
            except (InvalidParameterTypeException, InvalidParameterValueException) as e:
                raise StartupError(f"parameter {f.name!r}: {e} (expected like {default!r})") from None
            values[f.name] = [] if p.type_ == Parameter.Type.NOT_SET else p.value
        try:
            return RunnerConfig(**values)
        except (ValueError, TypeError) as e:
            raise StartupError(f"parameters: {e}") from None

    def _load_policy(self, cfg: RunnerConfig):
        if not cfg.checkpoint:
            raise StartupError("no checkpoint: set the 'checkpoint' parameter to a LightVLA checkpoint directory "
                               "or a name such as lightvla-lift")
        try:  # a path, or a name looked up in the user's and the package's checkpoint directories
            path = resolve_checkpoint(cfg.checkpoint)
        except CheckpointNotFound as e:
            raise StartupError(f"checkpoint {cfg.checkpoint!r} does not exist (parameter 'checkpoint'): {e}") from None
        kwargs = dict(device=cfg.device, dtype=cfg.dtype, compile=cfg.compile, inference_path=cfg.inference_path)
        if cfg.action_rows != "auto":
            kwargs["action_rows"] = cfg.action_rows
        if cfg.unnorm_key:
            kwargs["unnorm_key"] = cfg.unnorm_key
        t0 = time.monotonic()
        try:
            if cfg.inference_process:   # the model on its own interpreter (docs/architecture.md)
                from lightvla_ros.policy.process_policy import ProcessPolicy
                policy = ProcessPolicy(path, **kwargs)
            else:
                from lightvla_ros.policy.vla_policy import VLAPolicy
                policy = VLAPolicy(path, **kwargs)
        except Exception as e:  # CheckpointError, OSError, ...: one clear line, not a traceback
            why = str(e) if type(e).__name__ == "ModelProcessError" else f"{type(e).__name__}: {e}"
            raise StartupError(f"could not load checkpoint {cfg.checkpoint!r}: {why}") from None
        # a ProcessPolicy resolves "auto" in its child, where torch and the device are
        path_used = getattr(policy, "inference_path", None) or f"{cfg.inference_path} (resolved in the model process)"
        self.get_logger().info(f"loaded {path} in {time.monotonic() - t0:.1f} s: chunk {policy.chunk_size} "
                               f"x {policy.action_dim} ({policy.action_space}), {policy.num_images} image(s), "
                               f"proprio {policy.proprio_dim}, action rows {getattr(policy, 'action_rows', 'n/a')}, "
                               f"inference path {path_used}{', in a child process' if cfg.inference_process else ''}")
        return policy

    def start(self) -> None:
        """Warm the model up, then start the worker; logs 'policy ready'. A model that fails or gives
        non-finite / exploding actions at warm-up is a StartupError (one line, exit 2)."""
        t0, cfg = time.monotonic(), self.runner.config
        ckpt = cfg.checkpoint or "the given policy"
        try:
            out = self.policy.warmup()
        except Exception as e:
            raise StartupError(f"checkpoint {ckpt!r} failed its warm-up inference: {type(e).__name__}: "
                               f"{str(e)[:200]}") from None
        actions = getattr(out, "actions", None)
        if actions is not None and not np.all(np.abs(np.asarray(actions, dtype=np.float64)) < EXPLODING):
            raise StartupError(f"checkpoint {ckpt!r} gives actions of magnitude >= {EXPLODING:g} (or NaN) at "
                               "warm-up: the weights or the dataset statistics are broken")
        self.worker.start()
        self._publish_config()
        report = getattr(self.policy, "warmup_report", None) or {}   # the graphed path's captures (in a thread)
        graphs = ""
        if report.get("failure"):
            graphs = f"; CUDA graphs off ({report['failure']}), static path eager"
        elif report.get("graphs"):
            graphs = f"; {report['graphs']} CUDA graphs, {report['memory_bytes'] / 2**20:.0f} MiB"
        self.get_logger().info(
            f"policy ready (warm-up {time.monotonic() - t0:.2f} s; mode {cfg.execution_mode}, "
            f"{cfg.control_rate_hz:g} Hz, cameras {dict(zip(cfg.camera_names, cfg.camera_topics))}{graphs})")

    def close(self, timeout: float = 0.5) -> None:
        """Stop the worker (an inference in flight is discarded: nothing is published after this),
        then the model process if there is one."""
        self.worker.stop(timeout)
        if hasattr(self.policy, "close"):
            self.policy.close(timeout)

    # ------------------------------------------------------------------ callbacks
    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _log(self, level: str, message: str) -> None:
        log = self.get_logger()  # one call site per severity: rclpy refuses two severities from one line
        if level == "warning":
            log.warning(message)
        elif level == "error":
            log.error(message)
        else:
            log.info(message)

    def _on_image(self, camera: str, msg, decode) -> None:
        try:
            rgb = decode(msg)
        except ValueError as e:
            text = str(e)
            kind = ("empty_image" if "no data" in text else "bad_compressed" if decode is compressed_to_rgb
                    else "bad_encoding" if "encoding" in text else "bad_size")
            self.runner.report_bad_input(kind, f"camera {camera!r}: {text}")
            return
        self.runner.add_image(camera, rgb, time_to_ns(msg.header), self._now())

    def _on_joint_state(self, msg: JointState) -> None:
        self.runner.add_joint_state(msg.name, msg.position, time_to_ns(msg.header), self._now())

    def _on_eef_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        self.runner.add_eef_pose([p.x, p.y, p.z], [q.x, q.y, q.z, q.w], time_to_ns(msg.header), self._now())

    def _on_params(self, params) -> SetParametersResult:
        """Run-time parameters: validated together and applied at once by the runner, or refused with
        the reason. Never accepted and ignored."""
        new = {p.name: (list(p.value) if isinstance(p.value, (list, tuple, np.ndarray)) else p.value) for p in params}
        new = {k: v for k, v in new.items() if k in FIELDS}  # not ours: e.g. use_sim_time
        if not new:
            return SetParametersResult(successful=True)
        try:
            self.runner.configure(**new)
        except (ValueError, TypeError) as e:
            return SetParametersResult(successful=False, reason=str(e))
        self._publish_config()
        changed = sorted(n for n in new if n != "instruction")
        if changed:
            self.get_logger().info(f"parameters applied: {', '.join(f'{n}={new[n]!r}' for n in changed)}")
        return SetParametersResult(successful=True)

    def _on_reset(self, request, response):
        self.runner.reset(self._now())
        self.policy.reset()
        response.success = True
        response.message = "action queue and buffered observations cleared; waiting for new observations"
        return response

    def _on_set_instruction(self, request, response):
        response.success, response.message = self.runner.set_instruction(request.instruction, "service", self._now())
        return response

    # ------------------------------------------------------------------ publishing
    def _publish_step(self, step: Step | None) -> None:
        if step is not None:
            self.pub_action.publish(step_to_action(step.stamp_ns, step.action, self.action_space))

    def _publish_result(self, result: Result) -> None:
        """A chunk the runner kept (worker thread): the chunk, its pruning stats, then a waiting step."""
        out = result.chunk
        self.pub_chunk.publish(policy_output_to_action_chunk(out))
        self.pub_stats.publish(policy_output_to_pruning_stats(out))
        if result.obs is not None:
            self.pub_inputs.publish(String(data=json.dumps({"stamp_ns": out.stamp, "inputs": result.obs.inputs})))
        if self.pub_traj is not None:
            self.pub_traj.publish(actions_to_joint_trajectory(out.actions, out.stamp, self.joint_names,
                                                              self.runner.period_ns))
        self._publish_step(result.step)

    def _publish_config(self) -> None:
        """The settings a bag replay needs to decide as this node did (latched; a recorder merges it
        into the episode metadata, bag replay reads it back)."""
        cfg = self.runner.config.to_dict()
        self.pub_config.publish(String(data=json.dumps({k: cfg[k] for k in RECORDED})))

    def diagnostics_values(self) -> dict[str, str]:
        return self.runner.diagnostics()

    def _publish_diagnostics(self) -> None:
        v = self.runner.diagnostics()
        st = DiagnosticStatus(name=f"lightvla_ros: {self.get_name()}", hardware_id=self.runner.config.device)
        problems = any(k.startswith(("bad_input_", "safety_nan", "safety_inference")) for k in v)
        st.level = DiagnosticStatus.WARN if (problems or v["state"] != "publishing") else DiagnosticStatus.OK
        st.message = v["state"]
        st.values = [KeyValue(key=k, value=val) for k, val in v.items()]
        self.pub_diag.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[st]))


def main(args=None) -> int:
    keep_buffers_mapped()   # each observation's image buffers (and, model in a thread, its tensors) reuse the heap
    return spin_node(PolicyNode, num_threads=1, args=args, name="lightvla_policy")


if __name__ == "__main__":
    sys.exit(main())
