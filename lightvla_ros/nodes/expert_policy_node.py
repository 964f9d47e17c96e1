"""Scripted expert as a policy node: privileged sim state in, ActionChunk out, through the same topics.

Proves that the bridge, the action convention and chunk execution can succeed end to end: the
expert plans a chunk from the bridge's privileged state, and the same chunk scheduler as the VLA
policy node (lightvla_ros.policy.chunking) hands out one action per control step. Both live in
the core's ExpertAgent (lightvla_ros.sim.experts), which in-process episodes step too
(sim/episode.py: run_expert_policy_episode), so both paths apply the same actions.

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
import time

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from lightvla_interfaces.msg import ActionChunk
from lightvla_ros.policy.clock import to_ns, to_sec
from lightvla_ros.policy.types import PolicyOutput
from lightvla_ros.ros.conversions import policy_output_to_action_chunk
from lightvla_ros.ros.qos import RELIABLE
from lightvla_ros.ros.spin import spin_node
from lightvla_ros.sim.experts import ExpertAgent


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
        self.agent = ExpertAgent(self.chunk_size, self.execution_mode, to_ns(1.0 / self.control_rate_hz))
        self.action_pub = self.create_publisher(ActionChunk, self.action_topic, RELIABLE)
        self.chunk_pub = self.create_publisher(ActionChunk, chunk_topic, RELIABLE)
        group = MutuallyExclusiveCallbackGroup()  # one step at a time, in order
        self.create_subscription(String, privileged_topic, self._on_observation, RELIABLE, callback_group=group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)
        self.get_logger().info(f"expert ready: {self.execution_mode}, chunk {self.chunk_size}, "
                               f"{privileged_topic} -> {self.action_topic}")

    def _on_reset(self, req, res):
        self.agent.reset()
        res.success, res.message = True, "queued actions cleared"
        return res

    def _on_observation(self, msg: String) -> None:
        try:
            d = json.loads(msg.data)
            episode = self.agent.episode_id
            t0 = time.perf_counter()
            action, chunk = self.agent.step(d)
            if self.agent.episode_id != episode:
                self.get_logger().info(f"episode {d['episode_id']}: expert for {d['suite']}/{d['task_name']}")
            if chunk is not None:
                self._publish(self.chunk_pub, chunk, d["stamp_ns"], time.perf_counter() - t0)
            if action is None:
                self.get_logger().warning(f"no action for step {to_sec(int(d['stamp_ns'])):.3f}",
                                          throttle_duration_sec=2.0)
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
