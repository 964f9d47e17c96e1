"""Sim bridge: a LIBERO / robosuite env (lightvla_ros.sim) served over ROS 2.

Publishes (topics are parameters; defaults from docs/interfaces.md)
  /camera/<cam>/image_raw  sensor_msgs/Image rgb8, sensor-data QoS, stamp = observation time
  /joint_states            sensor_msgs/JointState (7 arm + 2 finger joints)
  /eef_pose                geometry_msgs/PoseStamped (robot base frame)
  /instruction             std_msgs/String, reliable + transient local
  /clock                   rosgraph_msgs/Clock (lock_step only: sim time)
  /sim/episode_result      lightvla_interfaces/EpisodeResult, transient local
  /sim/episode_stats       std_msgs/String (JSON: dropped/late/bad actions, per-step latency)
  /sim/privileged          std_msgs/String (JSON object poses; only with publish_privileged, for experts)
  /diagnostics             diagnostic_msgs/DiagnosticArray, 1 Hz
Subscribes
  /lightvla/action         ActionChunk (chunk_size 1), action_input = step
  /lightvla/action_chunk   ActionChunk, action_input = chunk (the bridge executes the chunk itself)
Service
  ~/run_episode            lightvla_interfaces/RunEpisode -> EpisodeResult

Modes. lock_step: for each control step the bridge publishes /clock = t and the observation
stamped t, then waits (bounded) for the action stamped t, applies it and advances; a slow CPU
policy keeps the protocol's step semantics. wall_clock: the sim steps at control_rate_hz on the
wall clock and applies the newest action that arrived during the period. A step with no action is
"dropped" (the arm holds still, gripper unchanged); an action for an older step is "late".
"""
from __future__ import annotations

import concurrent.futures
import json
import sys
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from lightvla_interfaces.msg import ActionChunk, EpisodeResult
from lightvla_interfaces.srv import RunEpisode
# numpy only. Never import the model (timm/torchvision) here: importing timm after MuJoCo made its
# EGL context segfaults the next render (measured), and the bridge has no use for it.
from lightvla_ros.policy.chunking import make_scheduler
from lightvla_ros.policy.clock import to_ns
from lightvla_ros.sim.base import privileged_state
from lightvla_ros.sim.episode import SimClock, run_episode
from lightvla_ros.ros.conversions import action_chunk_actions, ns_to_time, rgb_to_image, time_to_ns
from lightvla_ros.ros.qos import LATCHED, RELIABLE, SENSOR
from lightvla_ros.ros.spin import spin_node

ACTION_DIM = 7


def chunk_actions(msg: ActionChunk) -> np.ndarray:
    """ActionChunk -> (chunk_size, 7) float64, or ValueError saying what is wrong with it."""
    values = action_chunk_actions(msg).astype(np.float64)
    if values.shape[1] != ACTION_DIM:
        raise ValueError(f"action_dim is {values.shape[1]}, the sim takes {ACTION_DIM} "
                         "[dx dy dz droll dpitch dyaw gripper]")
    if not np.all(np.isfinite(values)):
        raise ValueError("actions contain NaN/Inf")
    return values


@dataclass
class EpisodeStats:
    """What happened in one episode, published as JSON on /sim/episode_stats."""

    episode_id: int = 0
    suite: str = ""
    task_name: str = ""
    task_index: int = -1
    init_state_index: int = 0
    instruction: str = ""
    max_steps: int = 0
    wait_steps: int = 0
    policy_steps: int = 0
    actions_applied: int = 0
    dropped_steps: int = 0            # steps with no action in time (held still)
    late_actions: int = 0             # actions for an older step, ignored
    bad_actions: int = 0              # NaN / wrong length, ignored
    observations_published: int = 0
    step_latency: list[float] = field(default_factory=list)  # s: observation out -> its action in
    applied_actions: list[list[float]] | None = None  # every policy step's applied action (record_actions)
    success: bool = False
    message: str = ""
    duration: float = 0.0

    def to_json(self) -> str:
        lat = np.array(self.step_latency) if self.step_latency else np.zeros(1)
        d = {k: v for k, v in self.__dict__.items() if k != "step_latency" and v is not None}
        d["step_latency_s"] = {"mean": float(lat.mean()), "p50": float(np.median(lat)),
                               "p95": float(np.percentile(lat, 95)), "max": float(lat.max()),
                               "count": len(self.step_latency)}
        d["step_latency_raw"] = [round(x, 5) for x in self.step_latency]
        return json.dumps(d)


class SimBridgeNode(Node):
    """One simulated robot; episodes run on the service's own thread, bounded in steps and time."""

    def __init__(self):
        super().__init__("sim_bridge")
        p = self.declare_parameter
        self.suite = p("suite", "libero_object").value
        self.task = str(p("task", "0").value)
        self.init_state_index = int(p("init_state_index", 0).value)
        self.camera_names = list(p("camera_names", ["agentview", "wrist"]).value)
        self.camera_topics = list(p("camera_topics", ["/camera/agentview/image_raw", "/camera/wrist/image_raw"]).value)
        self.camera_frame_ids = list(p("camera_frame_ids", ["agentview_camera", "wrist_camera"]).value)
        self.camera_size = int(p("camera_size", 256).value)
        self.render_quality = p("render_quality", "fast").value
        self.image_convention = p("image_convention", "openvla").value
        self.publish_cameras = bool(p("publish_cameras", True).value)
        self.control_rate_hz = float(p("control_rate_hz", 20.0).value)
        self.mode = p("mode", "lock_step").value                    # lock_step | wall_clock
        self.action_input = p("action_input", "step").value         # step | chunk
        self.chunk_execution = p("chunk_execution", "open_loop").value
        self.gripper_postprocess = p("gripper_postprocess", "none").value  # none | libero
        self.publish_privileged = bool(p("publish_privileged", False).value)
        self.action_timeout = float(p("action_timeout", 60.0).value)      # s of wall time per lock-step
        self.episode_timeout = float(p("episode_timeout", 3600.0).value)  # s of wall time per episode
        self.wait_for_policy = float(p("wait_for_policy", 30.0).value)    # s for an action publisher
        self.seed = int(p("seed", 0).value)
        self.world_frame = p("world_frame", "world").value  # the frame /eef_pose values are in
        self.autostart = bool(p("autostart", False).value)
        self.max_steps_param = int(p("max_steps", 0).value)
        self.record_actions = bool(p("record_actions", False).value)  # applied actions in /sim/episode_stats
        action_topic = p("action_topic", "/lightvla/action").value
        chunk_topic = p("chunk_topic", "/lightvla/action_chunk").value
        self._check_params()

        self.control_period_ns = int(round(1e9 / self.control_rate_hz))
        self._sim_clock = SimClock(self.control_period_ns)  # lock-step sim time, monotonic across episodes
        self._stopping = False  # set at shutdown: an episode in progress ends at its next step
        self._env = None
        self._env_key = None
        # One thread owns the simulator: MuJoCo's offscreen GL (EGL) context is current only in the
        # thread that created it. Episodes used to run on whichever executor thread took the service
        # call, so an episode on another thread than the first one rendered black frames.
        self._sim_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim")
        self._episode_lock = threading.Lock()
        self._running = False
        self._stats = EpisodeStats()
        self._episode_count = 0
        self._goal_state = None
        self._actions: queue.Queue = queue.Queue()  # (stamp_ns, (7,) action) or (stamp_ns, (N, 7) chunk)
        self.counters = {"bad_actions": 0, "actions_without_episode": 0, "rejected_episodes": 0,
                         "episodes": 0, "dropped_steps": 0, "late_actions": 0}

        self.image_pubs = [self.create_publisher(Image, t, SENSOR) for t in self.camera_topics]
        self.joint_pub = self.create_publisher(JointState, "/joint_states", SENSOR)
        self.eef_pub = self.create_publisher(PoseStamped, "/eef_pose", SENSOR)
        self.instruction_pub = self.create_publisher(String, "/instruction", LATCHED)
        self.clock_pub = self.create_publisher(Clock, "/clock", RELIABLE)
        self.result_pub = self.create_publisher(EpisodeResult, "/sim/episode_result", LATCHED)
        self.stats_pub = self.create_publisher(String, "/sim/episode_stats", LATCHED)
        self.privileged_pub = (self.create_publisher(String, "/sim/privileged", RELIABLE)
                               if self.publish_privileged else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)

        io_group = ReentrantCallbackGroup()
        self.action_topic = action_topic if self.action_input == "step" else chunk_topic
        self.action_sub = self.create_subscription(ActionChunk, self.action_topic, self._on_action, RELIABLE,
                                                   callback_group=io_group)
        self.create_service(RunEpisode, "~/run_episode", self._on_run_episode, callback_group=io_group)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        if self.autostart:
            self._autostart_timer = self.create_timer(0.5, self._autostart,
                                                      callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"sim bridge ready: {self.mode}, {self.control_rate_hz:g} Hz, action_input={self.action_input} "
            f"({self.action_topic}), cameras {self.camera_names} {self.camera_size}px {self.render_quality}, "
            f"gripper_postprocess={self.gripper_postprocess}")

    def _check_params(self) -> None:
        problems = []
        if self.mode not in ("lock_step", "wall_clock"):
            problems.append(f"mode must be lock_step or wall_clock, got {self.mode!r}")
        if self.action_input not in ("step", "chunk"):
            problems.append(f"action_input must be step or chunk, got {self.action_input!r}")
        if self.gripper_postprocess not in ("none", "libero"):
            problems.append(f"gripper_postprocess must be none or libero, got {self.gripper_postprocess!r}")
        if not (len(self.camera_names) == len(self.camera_topics) == len(self.camera_frame_ids)):
            problems.append("camera_names, camera_topics and camera_frame_ids must have the same length")
        if not self.control_rate_hz > 0:
            problems.append(f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        if problems:
            raise ValueError("sim bridge parameters: " + "; ".join(problems))

    # ---- incoming actions (any thread) --------------------------------------------------------
    def _on_action(self, msg: ActionChunk) -> None:
        try:
            actions = chunk_actions(msg)
        except ValueError as e:
            self.counters["bad_actions"] += 1
            if self._running:
                self._stats.bad_actions += 1
            self.get_logger().error(f"bad action on {self.action_topic} ignored: {e}")
            return
        if not self._running:
            self.counters["actions_without_episode"] += 1
            self.get_logger().warning(
                f"action on {self.action_topic} ignored: no episode is running (call ~/run_episode first)",
                throttle_duration_sec=2.0)
            return
        self._actions.put((time_to_ns(msg.header), actions))

    # ---- episode control ----------------------------------------------------------------------
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        req = RunEpisode.Request(suite=self.suite, task=self.task, init_state_index=self.init_state_index,
                                 max_steps=self.max_steps_param)
        self._on_run_episode(req, RunEpisode.Response())

    def _on_run_episode(self, req: RunEpisode.Request, res: RunEpisode.Response) -> RunEpisode.Response:
        """The service: the episode runs on the simulator's own thread; this callback waits for it."""
        if self._episode_lock.locked():
            return self._reject(res, "an episode is already running; wait for its EpisodeResult")
        return self._sim_thread.submit(self._episode, req, res).result()

    def _episode(self, req: RunEpisode.Request, res: RunEpisode.Response) -> RunEpisode.Response:
        if not self._episode_lock.acquire(blocking=False):
            return self._reject(res, "an episode is already running; wait for its EpisodeResult")
        try:
            suite = req.suite or self.suite
            task = req.task if req.task != "" else self.task
            try:
                env = self._get_env(suite, task)
                first = env.reset(int(req.init_state_index))
            except Exception as e:  # unknown task, missing assets, bad init state: the bridge lives on
                return self._reject(res, f"cannot start {suite}/{task} init state {req.init_state_index}: "
                                         f"{type(e).__name__}: {e}")
            if self.mode == "lock_step" and not self._wait_for_publisher():
                return self._reject(res, f"no publisher on {self.action_topic} after {self.wait_for_policy:g} s: "
                                         "start the policy node first")
            max_steps = int(req.max_steps) or int(env.max_steps)
            res.accepted = True
            res.result = self._run(env, first, suite, int(req.init_state_index), max_steps)
            res.message = res.result.message
            return res
        finally:
            self._running = False
            self._episode_lock.release()

    def _reject(self, res: RunEpisode.Response, message: str) -> RunEpisode.Response:
        self.counters["rejected_episodes"] += 1
        self.get_logger().error(f"run_episode rejected: {message}")
        res.accepted = False
        res.message = message
        return res

    def _get_env(self, suite: str, task: str):
        from lightvla_ros.sim import SimConfig, make_env

        task_key: int | str = int(task) if task.strip().isdigit() else task
        key = (suite, task_key)
        if self._env is not None and self._env_key == key:
            return self._env
        if self._env is not None:
            self._env.close()
            self._env, self._env_key = None, None
        cfg = SimConfig(suite=suite, task=task_key, camera_size=self.camera_size,
                        render_quality=self.render_quality, image_convention=self.image_convention,
                        use_cameras=self.publish_cameras, seed=self.seed,
                        control_freq=int(round(self.control_rate_hz)))
        t0 = time.monotonic()
        env = make_env(cfg)
        self.get_logger().info(f"built {suite} task {env.task_name!r} in {time.monotonic() - t0:.1f} s")
        missing = [c for c in self.camera_names if self.publish_cameras and c not in env.camera_names]
        if missing:
            env.close()
            raise ValueError(f"cameras {missing} not in the env's {env.camera_names}")
        self._env, self._env_key = env, key
        return env

    def _wait_for_publisher(self) -> bool:
        """A policy's action publisher matched by our subscription (not only seen in the graph: lock-step
        publishes each step once, and an action sent before the match is lost)."""
        deadline = time.monotonic() + self.wait_for_policy
        while time.monotonic() < deadline:
            if self.action_sub.get_publisher_count() > 0:  # matched implies seen in the graph
                return True
            time.sleep(0.05)
        return False

    def _run(self, env, obs, suite: str, init_state_index: int, max_steps: int) -> EpisodeResult:
        """One episode: protocol wait steps, then up to max_steps policy steps."""
        self._episode_count += 1
        s = self._stats = EpisodeStats(
            episode_id=self._episode_count, suite=suite, task_name=env.task_name,
            task_index=getattr(env, "task_index", -1), init_state_index=init_state_index,
            instruction=env.instruction, max_steps=max_steps)
        t_start = time.monotonic()
        self._goal_state = getattr(env, "goal_state", None) if self.publish_privileged else None  # LIBERO BDDL goal
        self._drain_actions()
        self.instruction_pub.publish(String(data=env.instruction))
        self.get_logger().info(f"episode {s.episode_id}: {suite} {env.task_name!r} init {init_state_index}, "
                               f"max {max_steps} steps: {env.instruction!r}")
        self._running = True
        self._sched = None  # action_input = chunk: the scheduler, made when the first chunk comes
        next_tick = time.monotonic()

        def act(obs, t_ns: int):
            """One policy step over ROS: publish the observation (and /clock), wait for its action."""
            nonlocal next_tick
            if self.mode == "lock_step":
                self._publish_observation(env, obs, t_ns)
                self.clock_pub.publish(Clock(clock=ns_to_time(t_ns)))
                action = self._wait_action_lock_step(t_ns)
            else:
                self._publish_observation(env, obs, self.get_clock().now().nanoseconds)
                # a sim slower than real time does not pile up debt: the policy gets at least half a period
                next_tick = max(next_tick + 1.0 / self.control_rate_hz, time.monotonic() + 0.5 / self.control_rate_hz)
                action = self._wait_action_wall_clock(next_tick)
            if action is None:
                self.counters["dropped_steps"] += 1
            return action

        # the protocol (wait steps, max steps, gripper post-processing, hold, success) is the core's
        out = run_episode(env, act, init_state_index, max_steps, self.gripper_postprocess, clock=self._sim_clock,
                          obs=obs, timeout=self.episode_timeout, stop=lambda: self._stopping,
                          record_actions=self.record_actions)
        s.wait_steps, s.policy_steps, s.dropped_steps = out.wait_steps, out.policy_steps, out.dropped_steps
        if self.record_actions:
            s.applied_actions = out.actions
        s.actions_applied = out.policy_steps - out.dropped_steps
        success, message = out.success, out.message
        self._running = False
        s.success, s.message, s.duration = bool(success), message, time.monotonic() - t_start
        result = EpisodeResult(suite=suite, task_name=env.task_name, init_state_index=init_state_index,
                               success=bool(success), steps=s.wait_steps + s.policy_steps,
                               duration=float(s.duration),
                               message=f"{message} (dropped {s.dropped_steps}, late {s.late_actions}, "
                                       f"bad {s.bad_actions})")
        result.header.stamp = self.get_clock().now().to_msg()
        self.counters["episodes"] += 1
        self.result_pub.publish(result)
        self.stats_pub.publish(String(data=s.to_json()))
        self.get_logger().info(f"episode {s.episode_id} done: {result.message}, {result.steps} steps, "
                               f"{s.duration:.1f} s")
        return result

    # ---- waiting for the action of a step ------------------------------------------------------
    def _drain_actions(self) -> None:
        while not self._actions.empty():
            try:
                self._actions.get_nowait()
            except queue.Empty:
                break

    def _wait_action_lock_step(self, t_ns: int) -> np.ndarray | None:
        """The action meant for step t: stamp == t (step input), or the next one of a chunk stamped t."""
        s = self._stats
        if self.action_input == "chunk" and self._sched is not None:
            a = self._sched.next_action(t_ns)
            if a is not None:  # the current chunk still covers this step
                s.step_latency.append(0.0)
                return a
        t0 = time.monotonic()
        deadline = t0 + self.action_timeout
        while rclpy.ok() and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                self.get_logger().warning(f"no action for step t={t_ns / 1e9:.3f} within {self.action_timeout:g} s: "
                                          "dropped (arm held still)")
                return None
            try:
                stamp, actions = self._actions.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if abs(stamp - t_ns) * 4 < self.control_period_ns:  # same step (float round trips on the way)
                stamp = t_ns
            if stamp < t_ns:
                s.late_actions += 1
                self.counters["late_actions"] += 1
                self.get_logger().warning(f"late action stamped {stamp / 1e9:.3f} for a past step "
                                          f"(now {t_ns / 1e9:.3f}) ignored", throttle_duration_sec=2.0)
                continue
            if stamp > t_ns:  # meant for a step we have not reached: a clock mix-up on the policy side
                s.late_actions += 1
                self.counters["late_actions"] += 1
                self.get_logger().warning(f"action stamped {stamp / 1e9:.3f} for a future step "
                                          f"(now {t_ns / 1e9:.3f}) ignored", throttle_duration_sec=2.0)
                continue
            s.step_latency.append(time.monotonic() - t0)
            if self.action_input == "chunk":
                self._add_chunk(actions, t_ns, t_ns)
                return self._sched.next_action(t_ns)
            return actions[0]
        return None

    def _wait_action_wall_clock(self, next_tick: float) -> np.ndarray | None:
        """The newest action that arrived before the next tick (step input), or the chunk's next step."""
        s = self._stats
        t0 = time.monotonic()
        newest = None
        while True:
            left = next_tick - time.monotonic()
            try:
                stamp, actions = self._actions.get(timeout=max(left, 0.0)) if left > 0 else self._actions.get_nowait()
            except queue.Empty:
                break
            if self.action_input == "chunk":
                self._add_chunk(actions, stamp, self.get_clock().now().nanoseconds)
            else:
                newest = actions[0]
                s.step_latency.append(time.monotonic() - t0)
        if self.action_input == "chunk" and self._sched is not None:
            return self._sched.next_action(self.get_clock().now().nanoseconds)
        return newest

    def _add_chunk(self, actions: np.ndarray, obs_stamp: int, now: int) -> None:
        """Executes chunks with the policy node's own scheduler (lightvla_ros.policy.chunking)."""
        if self._sched is None or self._sched.chunk_size != len(actions):
            self._sched = make_scheduler(self.chunk_execution, len(actions), ACTION_DIM,
                                         to_ns(1.0 / self.control_rate_hz))
        self._sched.add_chunk(actions, obs_stamp, now)

    # ---- outgoing observation ----------------------------------------------------------------
    def _publish_observation(self, env, obs, t_ns: int) -> None:
        stamp = ns_to_time(t_ns)
        if self.publish_cameras:
            for pub, cam, frame in zip(self.image_pubs, self.camera_names, self.camera_frame_ids):
                pub.publish(rgb_to_image(obs.images[cam], stamp=t_ns, frame_id=frame))
        js = JointState()
        js.header.stamp = stamp
        js.name = list(obs.joint_names)
        js.position = [float(x) for x in obs.joint_positions]
        self.joint_pub.publish(js)
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = self.world_frame  # the simulator's world frame, as the proprio was trained
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(x) for x in obs.eef_pos)
        q = obs.eef_quat  # xyzw
        pose.pose.orientation.x, pose.pose.orientation.y = float(q[0]), float(q[1])
        pose.pose.orientation.z, pose.pose.orientation.w = float(q[2]), float(q[3])
        self.eef_pub.publish(pose)
        if self.privileged_pub is not None:   # the expert's input (sim/base.py: privileged_state)
            s = self._stats
            episode = {"episode_id": s.episode_id, "suite": s.suite, "task_name": s.task_name,
                       "task_index": s.task_index, "init_state_index": s.init_state_index,
                       "goal_state": self._goal_state}
            self.privileged_pub.publish(String(data=json.dumps(privileged_state(obs, t_ns, episode))))
        self._stats.observations_published += 1

    def _publish_diagnostics(self) -> None:
        s = self._stats
        status = DiagnosticStatus(name="lightvla_ros: sim_bridge", hardware_id="sim")
        busy = bool(s.dropped_steps or s.bad_actions)
        status.level = DiagnosticStatus.WARN if busy else DiagnosticStatus.OK
        status.message = ("running" if self._running else "idle") + (
            f" (dropped {s.dropped_steps}, bad {s.bad_actions})" if busy else "")
        values = {"mode": self.mode, "running": self._running, "episode_id": s.episode_id, "suite": s.suite,
                  "task": s.task_name, "policy_steps": s.policy_steps, "sim_time": self._sim_clock.now / 1e9}
        values.update(self.counters)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def close(self) -> None:
        """Ctrl-C: an episode in progress ends at its next step (the action wait polls this too)."""
        self._stopping = True

    def destroy_node(self):
        self._stopping = True  # an episode in progress ends at its next step

        def close():
            if self._env is not None:
                self._env.close()
                self._env = None
        sim = getattr(self, "_sim_thread", None)  # None: the constructor failed before making it
        if sim is not None:
            try:
                sim.submit(close).result(timeout=10.0)
            except Exception:  # noqa: BLE001  (shutting down: the sim thread may still be mid-episode)
                pass
            sim.shutdown(wait=False, cancel_futures=True)
        super().destroy_node()


def main(args=None) -> int:
    return spin_node(SimBridgeNode, num_threads=4, args=args, name="sim_bridge")


if __name__ == "__main__":
    sys.exit(main())
