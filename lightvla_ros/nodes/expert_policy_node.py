"""Scripted expert as a policy node: privileged sim state in, ActionChunk out, through the same topics.

Proves that the bridge, the action convention and chunk execution can succeed end to end: the
expert (lightvla_ros.sim.experts) plans a chunk from the bridge's privileged state, and the same
chunk scheduler as the VLA policy node (lightvla_ros.policy.chunking) hands out one action per
control step.

Subscribes
  /sim/privileged          std_msgs/String JSON (the bridge publishes it only with publish_privileged)
Publishes
  /lightvla/action_chunk   ActionChunk, one per plan (stamp = observation stamp)
  /lightvla/action         ActionChunk with chunk_size 1, stamp = the step it is meant for
Service
  ~/reset                  std_srvs/Trigger: forget the queued actions

Event driven: each privileged observation is one control step (its stamp is the step time), so the
node works in lock-step and wall-clock modes alike. The expert needs the task's structure (which
object goes where): the bridge sends the suite, task name and LIBERO's BDDL goal with the state.
"""
from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from lightvla_interfaces.msg import ActionChunk
from lightvla_ros.policy.chunking import make_scheduler
from lightvla_ros.policy.clock import to_ns, to_sec
from lightvla_ros.policy.types import PolicyOutput
from lightvla_ros.ros.conversions import policy_output_to_action_chunk
from lightvla_ros.ros.qos import RELIABLE
from lightvla_ros.ros.spin import spin_node



def sim_observation(d: dict):
    """The bridge's privileged JSON -> SimObservation (no images: the expert does not look)."""
    from lightvla_ros.sim import SimObservation

    return SimObservation(
        images={}, proprio=np.asarray(d["proprio"], dtype=np.float32),
        eef_pos=np.asarray(d["eef_pos"], dtype=np.float64), eef_quat=np.asarray(d["eef_quat"], dtype=np.float64),
        joint_names=list(d["joint_names"]), joint_positions=np.asarray(d["joint_positions"], dtype=np.float64),
        privileged={k: np.asarray(v, dtype=np.float64) for k, v in d["privileged"].items()},
        sim_time=float(d.get("sim_time", 0.0)))


class TaskView:
    """What make_expert reads of an env (suite, task, BDDL goal, first observation), from the bridge."""

    def __init__(self, d: dict, obs):
        self.suite, self.task_name = d["suite"], d["task_name"]
        self.goal_state = d.get("goal_state")
        self._obs = obs

    def observe(self):
        return self._obs


class ExpertPolicyNode(Node):
    def __init__(self):
        super().__init__("lightvla_expert")
        p = self.declare_parameter
        self.chunk_size = int(p("chunk_size", 8).value)
        self.execution_mode = p("execution_mode", "open_loop").value
        self.control_rate_hz = float(p("control_rate_hz", 20.0).value)
        privileged_topic = p("privileged_topic", "/sim/privileged").value
        self.action_topic = p("action_topic", "/lightvla/action").value
        chunk_topic = p("chunk_topic", "/lightvla/action_chunk").value
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        self.sched = make_scheduler(self.execution_mode, self.chunk_size, 7, to_ns(1.0 / self.control_rate_hz))
        self._lock = threading.Lock()
        self._expert = None
        self._episode_id = None
        self.action_pub = self.create_publisher(ActionChunk, self.action_topic, RELIABLE)
        self.chunk_pub = self.create_publisher(ActionChunk, chunk_topic, RELIABLE)
        group = MutuallyExclusiveCallbackGroup()  # one step at a time, in order
        self.create_subscription(String, privileged_topic, self._on_observation, RELIABLE, callback_group=group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)
        self.get_logger().info(f"expert ready: {self.execution_mode}, chunk {self.chunk_size}, "
                               f"{privileged_topic} -> {self.action_topic}")

    def _on_reset(self, req, res):
        self.sched.reset()
        self._episode_id = None
        res.success, res.message = True, "queued actions cleared"
        return res

    def _expert_for(self, d: dict, obs):
        """The expert for this episode's task, built from what the bridge tells about the task."""
        from lightvla_ros.sim.experts import make_expert

        return make_expert(TaskView(d, obs))

    def _on_observation(self, msg: String) -> None:
        try:
            d = json.loads(msg.data)
            now = int(d["stamp_ns"])
            obs = sim_observation(d)
            if d["episode_id"] != self._episode_id:  # a new episode: a fresh plan
                self._expert = self._expert_for(d, obs)
                self.sched.reset()
                self._episode_id = d["episode_id"]
                self.get_logger().info(f"episode {d['episode_id']}: expert for {d['suite']}/{d['task_name']}")
            if self.sched.wants_inference(now):
                self.sched.inference_started(now)
                t0 = time.perf_counter()
                actions = np.asarray(self._expert.act_chunk(obs, self.chunk_size), dtype=np.float32)  # (T, 7)
                self.sched.add_chunk(actions, now, now)
                self._publish(self.chunk_pub, actions, d["stamp_ns"], time.perf_counter() - t0)
            action = self.sched.next_action(now)
            if action is None:
                self.get_logger().warning(f"no action for step {to_sec(now):.3f}", throttle_duration_sec=2.0)
                return
            self._publish(self.action_pub, action[None], d["stamp_ns"], 0.0)
        except Exception as e:  # noqa: BLE001  (one bad message must not stop the expert)
            self.get_logger().error(f"expert step failed: {type(e).__name__}: {e}")

    def _publish(self, pub, actions: np.ndarray, stamp_ns: int, latency: float) -> None:
        out = PolicyOutput(np.asarray(actions, dtype=np.float32), int(stamp_ns), timings={"total": float(latency)})
        pub.publish(policy_output_to_action_chunk(out))


def main(args=None) -> int:
    return spin_node(ExpertPolicyNode, num_threads=2, args=args, name="lightvla_expert")


if __name__ == "__main__":
    sys.exit(main())
