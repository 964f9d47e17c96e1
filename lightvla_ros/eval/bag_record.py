"""Recording a running system into a bag, without ROS: BagRecorder (thread-safe; CDR bytes or
rclpy messages in, a rosbag2 bag out), the contract's topics and their QoS classes.
The recorder node (nodes/recorder_node.py) and `lightvla-bag-eval --via-ros --record-to` use it.
"""
from __future__ import annotations

import importlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from lightvla_ros.eval.bag_io import INPUTS_TOPIC, METADATA_TOPIC, BagWriter, normalise_type, qos_profile

# topic -> type; the contract's defaults (docs/interfaces.md)
DEFAULT_TOPICS = {
    "/camera/agentview/image_raw": "sensor_msgs/msg/Image",
    "/camera/wrist/image_raw": "sensor_msgs/msg/Image",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/eef_pose": "geometry_msgs/msg/PoseStamped",
    "/instruction": "std_msgs/msg/String",
    "/lightvla/action": "lightvla_interfaces/msg/ActionChunk",
    "/lightvla/action_chunk": "lightvla_interfaces/msg/ActionChunk",
    "/lightvla/pruning_stats": "lightvla_interfaces/msg/PruningStats",
    "/sim/episode_result": "lightvla_interfaces/msg/EpisodeResult",
    METADATA_TOPIC: "std_msgs/msg/String",
    INPUTS_TOPIC: "std_msgs/msg/String",
}
LATCHED = {"/instruction", "/sim/episode_result", METADATA_TOPIC}   # reliable + transient local
SENSOR = {"/camera/agentview/image_raw", "/camera/wrist/image_raw", "/joint_states", "/eef_pose"}


def default_output() -> str:
    return time.strftime("lightvla_%Y%m%d_%H%M%S")


class BagRecorder:
    """Thread-safe bag writer for a running system: CDR bytes or rclpy messages in, a bag out."""

    def __init__(self, path: str | Path, storage: str = "mcap", topics: dict[str, str] | None = None,
                 metadata: dict | None = None, flush_period: float = 1.0, clock=time.time_ns,
                 compression: str = "none", max_bagfile_size: int = 0, max_bagfile_duration: float = 0.0):
        self.path = Path(path)
        self._bag = BagWriter(self.path, storage, compression=compression, max_bagfile_size=max_bagfile_size,
                              max_bagfile_duration=max_bagfile_duration)
        self._lock = threading.Lock()
        self._clock = clock                       # () -> ns; bag time of a write without a stamp
        self.flush_period = float(flush_period)
        self._last_flush = time.monotonic()
        self.metadata: dict = {}
        for topic, msgtype in (topics or {}).items():
            self.add_topic(topic, msgtype)
        self.update_metadata(**(metadata or {}))

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._bag.counts)

    def add_topic(self, topic: str, msgtype: str, reliable: bool | None = None,
                  transient_local: bool | None = None) -> None:
        reliable = topic not in SENSOR if reliable is None else reliable
        transient_local = topic in LATCHED if transient_local is None else transient_local
        with self._lock:
            self._bag.add_topic(topic, msgtype, qos_profile(reliable, transient_local))

    def write(self, topic: str, data: bytes, t_ns: int | None = None) -> None:
        """CDR bytes (a raw subscription or rclpy.serialization.serialize_message)."""
        with self._lock:
            if self._bag.closed:
                return
            self._bag.write(topic, self._clock() if t_ns is None else t_ns, data)
            if time.monotonic() - self._last_flush >= self.flush_period:
                self._bag.flush()
                self._last_flush = time.monotonic()

    def write_msg(self, topic: str, msg: Any, t_ns: int | None = None) -> None:
        """An rclpy message; the topic is added on first use with the message's own type."""
        from rclpy.serialization import serialize_message

        mod = type(msg).__module__.split(".")            # e.g. sensor_msgs.msg._image
        self.add_topic(topic, f"{mod[0]}/msg/{type(msg).__name__}")
        self.write(topic, serialize_message(msg), t_ns)

    def update_metadata(self, t_ns: int | None = None, **values: Any) -> None:
        """Merge episode metadata and write it as JSON on METADATA_TOPIC (+ custom_data at close)."""
        self.metadata.update({k: v for k, v in values.items() if v is not None})
        text = json.dumps(self.metadata, sort_keys=True, default=str)
        with self._lock:
            if self._bag.closed:
                return
            self._bag.add_topic(METADATA_TOPIC, "std_msgs/msg/String", qos_profile(True, True))
            store = self._bag.typestore
            msg = store.types["std_msgs/msg/String"](data=text)
            self._bag.write(METADATA_TOPIC, self._clock() if t_ns is None else t_ns,
                            store.serialize_cdr(msg, "std_msgs/msg/String"))
            self._bag.set_metadata(self.metadata)

    def flush(self) -> None:
        with self._lock:
            if not self._bag.closed:
                self._bag.flush()

    def close(self) -> None:
        with self._lock:
            if not self._bag.closed:
                self._bag.set_metadata(self.metadata)
                self._bag.close()

    def __enter__(self) -> "BagRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def msg_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    pkg, _, name = normalise_type(msgtype).split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def parse_topic(entry: str) -> tuple[str, str | None]:
    """'/cam' or '/cam:sensor_msgs/msg/Image' -> (topic, type or None)."""
    topic, _, msgtype = entry.partition(":")
    return topic.strip(), (normalise_type(msgtype) if msgtype.strip() else DEFAULT_TOPICS.get(topic.strip()))
