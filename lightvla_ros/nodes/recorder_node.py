"""Record a running LightVLA system to a rosbag2 bag (mcap default, sqlite3 option).

    lightvla-record -o run1 --task libero_object/0 --checkpoint /ckpt     # Ctrl-C to stop
    lightvla-record -o run1 --compression zstd --max-bag-duration 60     # zstd, a new file per minute
    ros2 run lightvla_ros recorder_node --ros-args -p output:=run1 -p storage:=sqlite3

Subscriptions are raw (CDR bytes straight into the bag, no decode). Episode metadata (task,
instruction, checkpoint, success, ...) goes into the bag twice: as JSON on
/lightvla/episode_metadata (std_msgs/String, rewritten on every change) and as metadata.yaml
custom_data at close. The bag is flushed every `flush_period` s, so a kill -9 loses at most that;
Ctrl-C / SIGTERM close it cleanly. `BagRecorder` (eval/bag_record.py) is the same writer without ROS.

~/status (std_srvs/Trigger) answers JSON: {"messages": written per topic, "matched": publishers
matched per subscribed topic}. lightvla-sim-eval --record waits on it instead of fixed delays: for
the episode to start until every publisher it sees on a recorded topic is matched here, and to stop
the recorder until the episode's chunks and actions are written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rclpy.utilities import remove_ros_args
from std_srvs.srv import Trigger

from lightvla_ros.eval.bag_io import METADATA_TOPIC, normalise_type
from lightvla_ros.eval.bag_record import (DEFAULT_TOPICS, LATCHED, SENSOR, BagRecorder, default_output, msg_class,
                                          parse_topic)
from lightvla_ros.ros.spin import spin_node


class RecorderNode(Node):
    """Subscribes (raw) to the configured topics and writes every message to a BagRecorder."""

    def __init__(self, **kwargs):
        super().__init__("lightvla_recorder", **kwargs)
        self.declare_parameter("output", "")             # bag directory; "" -> lightvla_<time>
        self.declare_parameter("storage", "mcap")        # mcap | sqlite3
        self.declare_parameter("compression", "none")    # none | zstd (mcap chunks / sqlite3 messages)
        self.declare_parameter("max_bagfile_size", 0)    # bytes per file, 0 = no split (--max-bag-size)
        self.declare_parameter("max_bagfile_duration", 0.0)  # s per file, 0 = no split (--max-bag-duration)
        self.declare_parameter("topics", list(DEFAULT_TOPICS))   # entries: topic or topic:type
        self.declare_parameter("task", "")
        self.declare_parameter("instruction", "")
        self.declare_parameter("checkpoint", "")
        self.declare_parameter("metadata_json", "{}")    # any extra episode metadata
        self.declare_parameter("flush_period", 1.0)      # s; a kill -9 loses at most this
        self.declare_parameter("max_duration", 0.0)      # s; 0 = until Ctrl-C
        self.declare_parameter("stop_on_episode_result", False)
        # false: subscribe volatile, so a latched topic's history (the previous episode's
        # /instruction and /sim/episode_result) is not recorded; lightvla-sim-eval sets it
        self.declare_parameter("latched_history", True)

        p = lambda name: self.get_parameter(name).value  # noqa: E731
        output = p("output") or default_output()
        meta = json.loads(p("metadata_json") or "{}")
        meta.update({k: p(k) for k in ("task", "instruction", "checkpoint") if p(k)})
        meta.setdefault("recorded_by", "lightvla_recorder")
        self.recorder = BagRecorder(output, p("storage"), metadata=meta, flush_period=p("flush_period"),
                                    clock=self._now_ns, compression=p("compression"),
                                    max_bagfile_size=int(p("max_bagfile_size")),
                                    max_bagfile_duration=float(p("max_bagfile_duration")))
        self.pending = dict(parse_topic(t) for t in p("topics"))   # topic -> type (None: discover)
        self.subs: dict[str, Any] = {}
        self.types: dict[str, str] = {}                  # subscribed topic -> type
        self.done = False
        self.max_duration = float(p("max_duration"))
        self.stop_on_result = bool(p("stop_on_episode_result"))
        self.latched_history = bool(p("latched_history"))
        self.started = time.monotonic()
        self._subscribe_known()
        self.create_timer(0.5, self._tick)
        self.create_service(Trigger, "~/status", self._on_status)
        self.get_logger().info(f"recording {sorted(self.subs)} to {self.recorder.path} "
                               f"({p('storage')}); waiting for {sorted(self.pending) or 'nothing'}")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_status(self, request, response):
        """Messages written per topic, and publishers matched per subscription (a publisher the DDS
        discovery has matched: its participant knows this one, so it sends us its messages)."""
        matched = {topic: sub.get_publisher_count() for topic, sub in self.subs.items()}
        response.success = True
        response.message = json.dumps({"messages": self.recorder.counts, "matched": matched})
        return response

    def _qos(self, topic: str) -> QoSProfile:
        """Match the publishers (as rosbag2 does); fall back to the contract's QoS per topic."""
        infos = self.get_publishers_info_by_topic(topic)
        if infos:
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        else:
            reliable, latched = topic not in SENSOR, topic in LATCHED
        if not reliable:
            return qos_profile_sensor_data
        return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _subscribe(self, topic: str, msgtype: str) -> None:
        try:
            cls = msg_class(msgtype)
        except (ImportError, AttributeError) as err:
            self.get_logger().error(f"topic {topic}: cannot import type {msgtype} ({err}); not recorded")
            self.pending.pop(topic, None)
            return
        qos = self._qos(topic)
        self.recorder.add_topic(topic, msgtype, reliable=qos.reliability == ReliabilityPolicy.RELIABLE,
                                transient_local=qos.durability == DurabilityPolicy.TRANSIENT_LOCAL)
        if not self.latched_history and qos.durability == DurabilityPolicy.TRANSIENT_LOCAL:
            qos = QoSProfile(depth=qos.depth, reliability=qos.reliability, durability=DurabilityPolicy.VOLATILE)
        self.subs[topic] = self.create_subscription(
            cls, topic, lambda data, t=topic: self._on_raw(t, data), qos, raw=True)
        self.types[topic] = normalise_type(msgtype)
        self.pending.pop(topic, None)

    def _subscribe_known(self) -> None:
        for topic, msgtype in list(self.pending.items()):
            if msgtype:
                self._subscribe(topic, msgtype)

    def _on_raw(self, topic: str, data: bytes) -> None:
        if self.done:
            return
        if topic == METADATA_TOPIC:           # someone else's metadata: merge, one stream in the bag
            try:
                self.recorder.update_metadata(**json.loads(self._decode(topic, data).data))
            except ValueError:
                self.get_logger().warning(f"{METADATA_TOPIC}: not JSON, ignored")
            return
        self.recorder.write(topic, data)
        if topic == "/instruction":
            self.recorder.update_metadata(instruction=self._decode(topic, data).data)
        elif topic == "/sim/episode_result":
            r = self._decode(topic, data)
            self.recorder.update_metadata(success=bool(r.success), suite=r.suite, task_name=r.task_name,
                                          init_state_index=int(r.init_state_index), steps=int(r.steps),
                                          end_message=r.message)
            self.get_logger().info(f"episode result: {r.suite} {r.task_name} init {r.init_state_index} "
                                   f"success={bool(r.success)} steps={r.steps}")
            if self.stop_on_result:
                self.done = True

    def _decode(self, topic: str, data: bytes):
        return deserialize_message(data, msg_class(self.types[topic]))

    def close(self) -> None:
        """Close the bag (footer, metadata.yaml): Ctrl-C, SIGTERM, max_duration, the episode result."""
        self.recorder.close()
        counts = self.recorder.counts
        print(f"[lightvla_recorder] closed {self.recorder.path}: {sum(counts.values())} messages {counts}", flush=True)

    def _tick(self) -> None:
        if self.pending:   # late topics: their type comes from the graph
            graph = dict(self.get_topic_names_and_types())
            for topic in list(self.pending):
                if graph.get(topic):
                    self._subscribe(topic, graph[topic][0])
        self.recorder.flush()
        if self.max_duration > 0 and time.monotonic() - self.started >= self.max_duration:
            self.done = True


def _cli_overrides(argv: list[str]) -> list:
    """`lightvla-record -o DIR --storage sqlite3 --topics a b ...` -> parameter overrides."""
    ap = argparse.ArgumentParser(prog="lightvla-record", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output")
    ap.add_argument("--storage", choices=["mcap", "sqlite3"])
    ap.add_argument("--compression", choices=["none", "zstd"], help="zstd: compressed mcap chunks / sqlite3 messages")
    ap.add_argument("--max-bag-size", dest="max_bagfile_size", type=int, metavar="BYTES",
                    help="split into a new storage file after this many bytes (0 = never)")
    ap.add_argument("--max-bag-duration", dest="max_bagfile_duration", type=float, metavar="S",
                    help="split into a new storage file after this many seconds of bag time (0 = never)")
    ap.add_argument("--topics", nargs="+")
    ap.add_argument("--task")
    ap.add_argument("--instruction")
    ap.add_argument("--checkpoint")
    ap.add_argument("--metadata-json")
    ap.add_argument("--max-duration", type=float)
    ap.add_argument("--no-latched-history", dest="latched_history", action="store_const", const=False,
                    help="do not record what latched topics published before the recorder started")
    args = ap.parse_args(argv)
    out = []
    for name, value in vars(args).items():
        if value is not None:
            out.append(Parameter(name, value=list(value) if isinstance(value, list) else value))
    return out


def main(args: list[str] | None = None) -> int:
    argv = sys.argv if args is None else args
    overrides = _cli_overrides(remove_ros_args(argv)[1:])
    return spin_node(lambda: RecorderNode(parameter_overrides=overrides), num_threads=1, args=args,
                     name="lightvla_recorder")


if __name__ == "__main__":
    sys.exit(main())
