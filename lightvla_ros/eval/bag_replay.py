"""Turn a recorded bag back into the policy's observations, in bag time. No ROS here.

The same ObservationAssembler as the policy node (newest frame per camera, pairing tolerance,
staleness against `now` = the bag time of the message just read). A recorded ActionChunk on the
chunk topic names the observation it came from by its header stamp (= observation stamp); the
replayed observation for that stamp is the last one assembled before the chunk was recorded, or,
when the recorder got a camera frame of that stamp only after the chunk (a recorder sees topics in
its own order), the first one assembled after it. Times are integer ns (bag time and header stamps
as recorded), so a chunk finds its observation by exact stamp. The replayed chunk goes through the
same ChunkedPolicyRunner chunk rules as the live node, with the node's recorded limits
(`BagReplay.as_executed`), so live and replay compare like with like.
"""
from __future__ import annotations

import json

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from lightvla_ros.eval.bag_io import INPUTS_TOPIC, BagError, BagReader
from lightvla_ros.policy.clock import NEVER, to_ns
from lightvla_ros.policy.config import DEFAULTS, RunnerConfig
from lightvla_ros.policy.observation_sync import ObservationAssembler, Rejection
from lightvla_ros.policy.runner import ChunkedPolicyRunner
from lightvla_ros.policy.types import Observation
from lightvla_ros.ros.conversions import action_chunk_actions, compressed_to_rgb, time_to_ns
from lightvla_ros.ros.conversions import image_to_rgb as ros_image_to_rgb

DEFAULT_CAMERAS = list(DEFAULTS.camera_topics)
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CHUNK_TYPE = "lightvla_interfaces/msg/ActionChunk"


def node_setting(arg, meta: dict, key: str, default):
    """A tolerance as the recorded node had it: the command line, else the bag's metadata, else
    the node's default. Negative means off (None)."""
    value = arg if arg is not None else meta.get(key, default)
    return None if value is None or float(value) < 0 else float(value)


@dataclass
class ReplayConfig:
    camera_topics: list[str] = field(default_factory=lambda: list(DEFAULT_CAMERAS))
    joint_topic: str = DEFAULTS.joint_states_topic
    eef_topic: str = DEFAULTS.eef_pose_topic
    instruction_topic: str = DEFAULTS.instruction_topic
    chunk_topic: str = "/lightvla/action_chunk"
    proprio_sources: list[str] = field(default_factory=list)
    instruction: str = ""               # used when the bag has no instruction topic
    pairing_tolerance: float = DEFAULTS.pairing_tolerance      # s, as the policy node
    proprio_sync_tolerance: float | None = None                 # s, as the policy node (None: off)
    max_observation_age: float = DEFAULTS.max_observation_age  # s, as the policy node
    action_min: list[float] = field(default_factory=list)       # the node's limits ([] = none)
    action_max: list[float] = field(default_factory=list)
    limit_mode: str = DEFAULTS.limit_mode
    max_frames: int = 0                 # 0 = all
    keep_pending: int = 64              # observations kept while waiting for their recorded chunk
    late_frame_window: float = 1.0      # s of bag time a chunk waits for a camera frame recorded after it


@dataclass
class RecordedChunk:
    stamp_ns: int
    t_ns: int                           # bag time it was recorded
    actions: np.ndarray                 # (chunk_size, action_dim) float32
    latency: float                      # s, what the node reported
    kept: int
    total: int


@dataclass
class Pair:
    observation: Observation
    stamp_ns: int
    t_ns: int                           # bag time the observation was complete
    recorded: RecordedChunk | None


def image_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """A bag's Image / CompressedImage -> (H, W, 3) uint8 RGB with the node's own decoders (the same
    pixels live and in replay); unsupported encodings raise ValueError."""
    return compressed_to_rgb(msg) if msgtype.endswith("CompressedImage") else ros_image_to_rgb(msg)


class BagReplay:
    """Iterates (observation, recorded chunk) pairs of one bag; counts what the assembler rejected."""

    def __init__(self, reader: BagReader, cfg: ReplayConfig):
        self.reader, self.cfg = reader, cfg
        self.rejections: Counter[str] = Counter()
        self.chunks_recorded = 0
        self.chunks_unmatched = 0
        self.refused_chunks = 0              # chunks the node's limits / NaN rule would have refused
        self.exact = False                   # True: observations rebuilt from the node's recorded inputs
        self._checker: ChunkedPolicyRunner | None = None
        self.has_chunks = cfg.chunk_topic in reader.topics and (reader.topics[cfg.chunk_topic].count or 0) > 0
        required: dict[str, str | None] = {t: None for t in cfg.camera_topics}
        if cfg.proprio_sources and any(s.startswith("joint:") for s in cfg.proprio_sources):
            required[cfg.joint_topic] = "sensor_msgs/msg/JointState"
        if cfg.proprio_sources and any(not s.startswith("joint:") for s in cfg.proprio_sources):
            required[cfg.eef_topic] = "geometry_msgs/msg/PoseStamped"
        if not cfg.instruction:
            required[cfg.instruction_topic] = "std_msgs/msg/String"
        reader.require(required)
        for t in cfg.camera_topics:
            if reader.topics[t].msgtype not in IMAGE_TYPES:
                raise BagError(reader.path, f"type {reader.topics[t].msgtype} is not an image type", t)
        if self.has_chunks:
            reader.require({cfg.chunk_topic: CHUNK_TYPE})

    def as_executed(self, actions: np.ndarray, action_dim: int | None = None) -> np.ndarray:
        """A replayed chunk as the live node would have published it: the runner's chunk rules (NaN,
        limits, limit_mode) with the node's recorded limits. A chunk the node would have refused is
        counted in `refused_chunks` and returned as computed."""
        actions = np.asarray(actions, dtype=np.float32)
        if self._checker is None or self._checker.action_dim != actions.shape[-1]:
            cfg = RunnerConfig(camera_names=tuple(self.cfg.camera_topics), camera_topics=tuple(self.cfg.camera_topics),
                               proprio_sources=tuple(self.cfg.proprio_sources), action_min=tuple(self.cfg.action_min),
                               action_max=tuple(self.cfg.action_max), limit_mode=self.cfg.limit_mode)
            self._checker = ChunkedPolicyRunner(cfg, actions.shape[0], actions.shape[-1])
        checked = self._checker.check_chunk(actions)
        if checked is None:
            self.refused_chunks += 1
            return actions
        return checked

    def __iter__(self) -> Iterator[Pair]:
        if self.has_chunks and (self.reader.topics.get(INPUTS_TOPIC) and self.reader.topics[INPUTS_TOPIC].count):
            self.exact = True
            yield from self._iter_exact()
            return
        cfg, reader = self.cfg, self.reader
        asm = ObservationAssembler(cfg.camera_topics, to_ns(cfg.pairing_tolerance),
                                   NEVER if cfg.max_observation_age is None else to_ns(cfg.max_observation_age),
                                   cfg.proprio_sources, instruction=cfg.instruction,
                                   proprio_sync_tolerance=None if cfg.proprio_sync_tolerance is None
                                   else to_ns(cfg.proprio_sync_tolerance))
        topics = set(cfg.camera_topics) | {cfg.joint_topic, cfg.eef_topic, cfg.instruction_topic, cfg.chunk_topic}
        pending: OrderedDict[int, tuple[Observation, int]] = OrderedDict()   # stamp ns -> (obs, t_ns)
        waiting: dict[int, RecordedChunk] = {}   # stamp ns -> chunk recorded before its observation
        current: tuple[int, Observation, int] | None = None
        emitted = 0
        for m in reader.messages(topics & set(reader.topics)):
            if cfg.max_frames and emitted >= cfg.max_frames:
                return
            msg = reader.decode(m)
            now = m.t_ns
            if m.topic == cfg.chunk_topic:
                self.chunks_recorded += 1
                rec = RecordedChunk(time_to_ns(msg.header), m.t_ns, action_chunk_actions(msg),
                                    float(msg.inference_latency),
                                    int(msg.visual_tokens_kept), int(msg.visual_tokens_total))
                if rec.stamp_ns in pending:
                    obs, t_obs = pending.pop(rec.stamp_ns)
                    emitted += 1
                    yield Pair(obs, rec.stamp_ns, t_obs, rec)
                else:   # the recorder may get a camera frame after the chunk (topics are not ordered)
                    waiting[rec.stamp_ns] = rec
                for k in [k for k, r in waiting.items() if m.t_ns - r.t_ns > to_ns(cfg.late_frame_window)]:
                    del waiting[k]
                    self.chunks_unmatched += 1
                continue
            try:
                if m.topic in cfg.camera_topics:
                    asm.add_image(m.topic, image_to_rgb(msg, m.msgtype), time_to_ns(msg.header))
                elif m.topic == cfg.joint_topic:
                    asm.add_joint_state(list(msg.name), np.asarray(msg.position, dtype=np.float64),
                                        time_to_ns(msg.header))
                elif m.topic == cfg.eef_topic:
                    p, q = msg.pose.position, msg.pose.orientation
                    asm.add_eef_pose([p.x, p.y, p.z], [q.x, q.y, q.z, q.w], time_to_ns(msg.header))
                elif m.topic == cfg.instruction_topic and not cfg.instruction:
                    asm.set_instruction(msg.data)
            except ValueError as err:
                raise BagError(reader.path, f"message at t={m.t_ns} ns: {err}", m.topic) from err
            out = asm.assemble(now)
            if isinstance(out, Rejection):
                if m.topic in cfg.camera_topics:
                    self.rejections[out.reason] += 1
                continue
            s = out.stamp                      # integer ns: the recorded chunk's stamp exactly
            if s in waiting and m.topic in cfg.camera_topics:
                emitted += 1
                rec = waiting.pop(s)
                yield Pair(out, rec.stamp_ns, m.t_ns, rec)
            elif self.has_chunks:
                pending[s] = (out, m.t_ns)       # the last assembly for this stamp wins
                pending.move_to_end(s)
                while len(pending) > cfg.keep_pending:
                    pending.popitem(last=False)
            else:                                # no recorded chunks: each new stamp is one frame
                if current is not None and current[0] != s:
                    emitted += 1
                    yield Pair(current[1], current[0], current[2], None)
                current = (s, out, m.t_ns)
        self.chunks_unmatched += len(waiting)
        if current is not None and not (cfg.max_frames and emitted >= cfg.max_frames):
            yield Pair(current[1], current[0], current[2], None)

    def _iter_exact(self) -> Iterator[Pair]:
        """Each recorded chunk with the observation rebuilt from exactly the inputs the node used
        (INPUTS_TOPIC: the stamp of every camera frame, eef pose and joint it was assembled from),
        whatever order the recorder received the topics in."""
        cfg, reader = self.cfg, self.reader
        used: dict[int, dict[str, int]] = {}
        for m in reader.messages({INPUTS_TOPIC}):
            d = json.loads(reader.decode(m).data)
            used[int(d["stamp_ns"])] = {k: int(v) for k, v in d["inputs"].items()}
        frames = {t: OrderedDict() for t in cfg.camera_topics}     # topic -> stamp -> (msg, type)
        joints: OrderedDict[int, dict[str, float]] = OrderedDict()  # stamp -> name -> position
        eefs: OrderedDict[int, tuple[list, list]] = OrderedDict()   # stamp -> (position, quaternion xyzw)
        instruction = cfg.instruction
        waiting: list[RecordedChunk] = []
        emitted = 0
        topics = set(cfg.camera_topics) | {cfg.joint_topic, cfg.eef_topic, cfg.instruction_topic, cfg.chunk_topic}
        for m in reader.messages(topics & set(reader.topics)):
            msg = reader.decode(m)
            if m.topic == cfg.chunk_topic:
                self.chunks_recorded += 1
                waiting.append(RecordedChunk(time_to_ns(msg.header), m.t_ns, action_chunk_actions(msg),
                                             float(msg.inference_latency), int(msg.visual_tokens_kept),
                                             int(msg.visual_tokens_total)))
            elif m.topic in frames:
                _keep(frames[m.topic], time_to_ns(msg.header), (msg, m.msgtype), cfg.keep_pending)
            elif m.topic == cfg.joint_topic:
                _keep(joints, time_to_ns(msg.header), dict(zip(msg.name, np.asarray(msg.position).tolist())),
                      cfg.keep_pending)
            elif m.topic == cfg.eef_topic:
                p, q = msg.pose.position, msg.pose.orientation
                _keep(eefs, time_to_ns(msg.header), ([p.x, p.y, p.z], [q.x, q.y, q.z, q.w]), cfg.keep_pending)
            elif m.topic == cfg.instruction_topic and not cfg.instruction:
                instruction = msg.data
            for rec in list(waiting):
                obs = self._rebuild(used.get(rec.stamp_ns), frames, joints, eefs, instruction)
                if obs is not None:
                    waiting.remove(rec)
                    emitted += 1
                    yield Pair(obs, rec.stamp_ns, m.t_ns, rec)
                    if cfg.max_frames and emitted >= cfg.max_frames:
                        return
                elif m.t_ns - rec.t_ns > to_ns(cfg.late_frame_window):
                    waiting.remove(rec)
                    self.chunks_unmatched += 1
        self.chunks_unmatched += len(waiting)

    def _rebuild(self, inputs: dict[str, int] | None, frames, joints, eefs, instruction: str) -> Observation | None:
        """The node's observation from its recorded inputs, or None while one is not in the bag yet."""
        if inputs is None:
            return None
        cams = [k for k in inputs if k.startswith("camera:")]   # in the model's camera order
        if len(cams) != len(self.cfg.camera_topics):
            return None
        joint_keys = [k for k in inputs if k.startswith("joint:")]
        if any(inputs[k] not in frames[t] for t, k in zip(self.cfg.camera_topics, cams)) \
                or ("eef" in inputs and inputs["eef"] not in eefs) \
                or any(k[6:] not in joints.get(inputs[k], {}) for k in joint_keys):
            return None
        asm = ObservationAssembler(self.cfg.camera_topics, NEVER, NEVER, self.cfg.proprio_sources,
                                   instruction=instruction)
        for topic, key in zip(self.cfg.camera_topics, cams):
            msg, msgtype = frames[topic][inputs[key]]
            asm.add_image(topic, image_to_rgb(msg, msgtype), inputs[key])
        if "eef" in inputs:
            asm.add_eef_pose(*eefs[inputs["eef"]], inputs["eef"])
        for key in joint_keys:
            asm.add_joint_state([key[6:]], [joints[inputs[key]][key[6:]]], inputs[key])
        obs = asm.assemble(max(inputs.values()))
        return obs if isinstance(obs, Observation) else None


def _keep(history: OrderedDict, stamp: int, value, limit: int) -> None:
    history[stamp] = value
    history.move_to_end(stamp)
    while len(history) > max(limit, 8):
        history.popitem(last=False)
