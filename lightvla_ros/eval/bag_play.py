"""--via-ros: play a bag onto its topics in real time against a policy node, record what it publishes.

The inputs (cameras, joint states, eef pose, instruction) are republished with header stamps moved
to now (each message keeps its recorded age: publish time - (bag time - stamp)), so the node's
staleness rules see a live stream. Each ActionChunk the node publishes maps back to the original
observation stamp and is compared with the chunk recorded for it; the time from publishing the
observation's last camera frame to receiving its chunk is the whole ROS path (ros_latency).
"""
from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from lightvla_ros.eval.bag_io import BagError, BagReader
from lightvla_ros.eval.bag_replay import DEFAULT_CAMERAS, CHUNK_TYPE, node_setting
from lightvla_ros.policy.config import DEFAULTS
from lightvla_ros.ros.conversions import action_chunk_actions, time_to_ns
from lightvla_ros.eval.bag_report import Frame

SENSOR_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/JointState",
                "geometry_msgs/msg/PoseStamped")


def _node_params(args: argparse.Namespace, cams: list[str], meta: dict) -> dict:
    params: dict[str, Any] = {"checkpoint": str(args.checkpoint), "device": args.device, "dtype": args.dtype,
                              "camera_topics": cams, "camera_names": [f"cam{i}" for i in range(len(cams))],
                              "pairing_tolerance": node_setting(args.pairing_tolerance, meta, "pairing_tolerance",
                                                                  DEFAULTS.pairing_tolerance),
                              "max_observation_age": args.max_observation_age,
                              "action_rows": getattr(args, "action_rows", "auto")}
    sync = node_setting(getattr(args, "proprio_sync_tolerance", None), meta, "proprio_sync_tolerance", None)
    if sync is not None:
        params["proprio_sync_tolerance"] = sync
    sources = args.proprio_sources if args.proprio_sources is not None else meta.get("proprio_sources")
    if sources is not None:
        params["proprio_sources"] = list(sources)
    for item in args.node_param:
        name, sep, value = item.partition(":=")
        if not sep:
            raise ValueError(f"--node-param {item!r}: expected NAME:=VALUE")
        import yaml
        params[name] = yaml.safe_load(value)
    return params


def _wait_for_node(probe: Any, pubs: dict, cams: list[str], instruction_topic: str, own: int,
                   domain_id: int, timeout: float = 60.0) -> None:
    """Wait until the node's subscriptions have matched our publishers, so nothing played is lost.

    A publisher's match count includes our own recording subscriptions (`own` per topic), so a node
    counts only above that. The cameras and the instruction are required (the node always subscribes
    to both; a latched instruction matched late reaches the node only after frames went by). A
    proprio topic is waited for when the graph shows another node subscribed to it."""
    name = probe.node.get_name()

    def matched(t: str) -> bool:
        return pubs[t].get_subscription_count() > own

    required = [t for t in (*cams, instruction_topic) if t in pubs]
    if not probe.spin_until(lambda: all(matched(t) for t in required), timeout):
        missing = [t for t in required if not matched(t)]
        raise RuntimeError(f"no policy node subscribed to {missing} within {timeout:.0f} s (domain {domain_id})")
    others = [t for t in pubs if t not in required
              and any(i.node_name != name for i in probe.node.get_subscriptions_info_by_topic(t))]
    if not probe.spin_until(lambda: all(matched(t) for t in others), timeout):
        raise RuntimeError(f"the policy node's subscriptions to {[t for t in others if not matched(t)]} "
                           f"did not match within {timeout:.0f} s (domain {domain_id})")


def evaluate_bag_via_ros(path: str | Path, policy: Any, args: argparse.Namespace,
                         progress=None) -> tuple[dict, list[Frame]]:
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.serialization import deserialize_message

    from lightvla_interfaces.msg import ActionChunk, PruningStats
    from lightvla_ros.eval.bag_record import BagRecorder, msg_class
    from lightvla_ros.ros.launcher import ros_domain, rclpy_node

    reader = BagReader(path)
    with ExitStack() as stack:
        stack.callback(reader.close)
        if reader.message_count == 0:
            raise BagError(reader.path, "bag is empty (no messages)")
        meta = reader.episode_metadata()
        cams = list(args.camera_topics or meta.get("camera_topics")
                    or [c for c in DEFAULT_CAMERAS if c in reader.topics])
        inputs = [*cams, args.joint_topic, args.eef_topic, args.instruction_topic]
        reader.require({c: None for c in cams})
        inputs = [t for t in inputs if t in reader.topics]
        recorded = {}
        if args.chunk_topic in reader.topics:
            reader.require({args.chunk_topic: CHUNK_TYPE})
            for m in reader.messages([args.chunk_topic]):
                msg = reader.decode(m)
                recorded[time_to_ns(msg.header)] = (action_chunk_actions(msg), float(msg.inference_latency),
                                                  int(msg.visual_tokens_kept))
        msgs = list(reader.messages(inputs))
        if not msgs:
            raise BagError(reader.path, f"no messages on the input topics {inputs}")

        if args.existing_node:
            import os
            domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0"))
        else:
            dom = stack.enter_context(ros_domain(log_dir=Path(args.report or ".").resolve().parent / "via_ros_logs"))
            domain_id = dom.domain_id
            node = dom.start_node("lightvla-policy", name="lightvla_policy", params=_node_params(args, cams, meta))
            node.wait_for_log_line("policy ready", timeout=300)
        probe = stack.enter_context(rclpy_node(domain_id, "lightvla_bag_player"))
        from lightvla_ros.ros.qos import LATCHED as latched
        pubs, classes = {}, {}
        for t in inputs:
            classes[t] = msg_class(reader.topics[t].msgtype)
            qos = qos_profile_sensor_data if reader.topics[t].msgtype in SENSOR_TYPES else latched
            pubs[t] = probe.node.create_publisher(classes[t], t, qos)
        got: dict[int, tuple[Any, float]] = {}     # new stamp -> (ActionChunk, receive time)
        stats: dict[int, Any] = {}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        key = time_to_ns
        probe.node.create_subscription(ActionChunk, "/lightvla/action_chunk",
                                       lambda m: got.__setitem__(key(m.header), (m, time.monotonic())), reliable)
        probe.node.create_subscription(PruningStats, "/lightvla/pruning_stats",
                                       lambda m: stats.__setitem__(key(m.header), m), reliable)
        out_bag = BagRecorder(args.record_to, "mcap", metadata={**meta, "via_ros_of": str(reader.path)}) \
            if args.record_to else None
        if out_bag is not None:
            stack.callback(out_bag.close)
            # the bytes as they arrive, as the live recorder stores them: rclpy's serialize_message pads
            # (316 bytes for a 308-byte JointState with empty velocity and effort)
            out_types = {t: reader.topics[t].msgtype for t in inputs}
            out_types.update({"/lightvla/action_chunk": "lightvla_interfaces/msg/ActionChunk",
                              "/lightvla/pruning_stats": "lightvla_interfaces/msg/PruningStats"})
            for t, msgtype in out_types.items():
                sensor = msgtype in SENSOR_TYPES and t in pubs
                qos = qos_profile_sensor_data if sensor else latched if t in pubs else reliable
                out_bag.add_topic(t, msgtype, reliable=not sensor, transient_local=qos is latched)
                probe.node.create_subscription(msg_class(msgtype), t,
                                               lambda data, t=t: out_bag.write(t, data), qos, raw=True)
        _wait_for_node(probe, pubs, cams, args.instruction_topic, own=1 if out_bag is not None else 0,
                       domain_id=domain_id)

        # play in real time (scaled by --rate), restamped to now
        clock = probe.node.get_clock()
        sent: dict[int, tuple[int, float]] = {}    # new stamp -> (original stamp, publish time of last frame)
        t_bag0, t_wall0 = msgs[0].t_ns, time.monotonic()
        for m in msgs:
            due = t_wall0 + (m.t_ns - t_bag0) * 1e-9 / args.rate
            probe.spin_until(lambda: time.monotonic() >= due, max(0.0, due - time.monotonic()) + 0.01)
            msg = deserialize_message(m.raw, classes[m.topic])
            if hasattr(msg, "header"):
                old = key(msg.header)
                age = max(0, m.t_ns - old)
                new = clock.now().nanoseconds - int(age / args.rate)
                msg.header.stamp.sec, msg.header.stamp.nanosec = new // 10**9, new % 10**9
                if m.topic in cams:
                    sent[new] = (old, time.monotonic())
            pubs[m.topic].publish(msg)
        # the node answers the last frame unless it was busy with an earlier one: wait for that chunk,
        # at most --settle s
        last = max(sent, default=None)
        probe.spin_until(lambda: last is None or last in got, args.settle)

        frames = []
        for new, (chunk, t_recv) in sorted(got.items()):
            if new not in sent:
                continue
            old, t_sent = sent[new]
            rec = recorded.get(old)
            st = stats.get(new)
            timings = {"total": float(chunk.inference_latency)}
            if st is not None:
                timings["pruner"] = float(st.pruner_time)
            actions = np.asarray(chunk.actions, np.float32).reshape(chunk.chunk_size, chunk.action_dim)
            frames.append(Frame(old, actions, None if rec is None else rec[0], timings, int(chunk.visual_tokens_kept),
                                int(chunk.visual_tokens_total), None if rec is None else rec[1],
                                None if rec is None else rec[2], ros_latency=t_recv - t_sent))
            if progress is not None:
                progress.update(1)
        if not frames:
            raise BagError(reader.path, f"the policy node published no chunk for the {len(sent)} replayed "
                           "observations (check its log: pairing, staleness, proprio sources)")
        entry = {"bag": str(reader.path), "storage": reader.storage, "metadata": meta,
                 "message_count": reader.message_count, "recovered": reader.recovered,
                 "damage": list(reader.damage), "complete": not reader.damage,
                 "chunks_recorded": len(recorded), "chunks_unmatched": sum(1 for f in frames if f.recorded is None),
                 "observations_played": len(sent), "chunks_received": len(got), "rejections": {},
                 "node_params": _node_params(args, cams, meta) if not args.existing_node else None}
        return entry, frames
