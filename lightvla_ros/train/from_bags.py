"""lightvla-dataset from-bags: recorded rosbag2 bags -> fine-tuning episodes (lightvla.dataset/1).

    lightvla-dataset from-bags BAG [BAG...] OUT [--camera-topics T ...] [--proprio-sources S ...]
        [--joint-states-topic T] [--eef-pose-topic T] [--action-topic /lightvla/action]
        [--instruction TEXT] [--max-observation-age S]

One bag = one episode (`lightvla-record` writes one episode per bag). A sample is (the observation
at step t, the action executed at step t): every message on the action topic (per-step
ActionChunk, chunk_size 1, header stamp = the control-step time) is one step, and its observation
is what the policy node's own ObservationAssembler builds from the camera frames, joint states and
eef poses stamped at or before that time, judged at that time (pairing tolerance, staleness,
proprio sync). Everything is ordered by header stamps, not by bag time: a recorder sees topics in
its own order. A step whose observation does not assemble is skipped and counted by the
assembler's reason (stale, unpaired, missing_camera, ...); so are malformed or repeated actions.
Topics, proprio sources and tolerances: the command line, else the bag's episode metadata, else
the policy node's defaults. Output: OUT/<bag name>.npz per episode plus OUT/dataset.json
(docs/training.md "From bags"). Exit codes: 0 some episode written, 1 none, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import heapq
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..eval.bag_io import BagError, BagReader
from ..eval.bag_replay import CHUNK_TYPE, DEFAULT_CAMERAS, IMAGE_TYPES, ReplayConfig, image_to_rgb, node_setting
from ..ros.conversions import action_chunk_actions, time_to_ns
from ..policy.clock import NEVER, to_ns
from ..policy.observation_sync import ObservationAssembler, Rejection, parse_proprio_sources
from .collect import PROPRIO_SOURCES, write_dataset_meta
from .dataset import Episode, save_episode

# skip reasons of our own, beside the assembler's (observation_sync.REASONS)
BAD_ACTION = "bad_action"           # not chunk_size 1, wrong size, another action_dim, NaN/Inf
DUPLICATE_STEP = "duplicate_step"   # a second action for a step stamp already seen (the first is kept)
IMAGE_SIZE = "image_size"           # a camera's frame size changed within the episode


@dataclass
class FromBagsConfig:
    camera_topics: list[str] | None = None    # policy order; None: the bag's metadata, else DEFAULT_CAMERAS
    joint_states_topic: str = ReplayConfig.joint_topic
    eef_pose_topic: str = ReplayConfig.eef_topic
    instruction_topic: str = ReplayConfig.instruction_topic
    action_topic: str = "/lightvla/action"    # per-step ActionChunk (chunk_size 1), stamp = step time
    proprio_sources: list[str] | None = None  # None: the bag's metadata, else the policy node's default
    instruction: str = ""                     # replaces the bag's (topic, then metadata)
    pairing_tolerance: float | None = None    # s; None: the bag's metadata, else the node's; < 0 off
    proprio_sync_tolerance: float | None = None
    max_observation_age: float | None = None
    # s of stamp time an input may be recorded after a newer one of another stream; past that a
    # step is judged with what has arrived (bounds the memory when a stream stops)
    reorder_window: float = 1.0


@dataclass
class BagConversion:
    """What one bag gave: the episode (None if no step assembled) and what was skipped, by reason."""
    bag: str
    episode: Episode | None = None
    steps: int = 0
    skipped: Counter = field(default_factory=Counter)
    camera_topics: list[str] = field(default_factory=list)
    camera_names: list[str] = field(default_factory=list)
    proprio_sources: list[str] = field(default_factory=list)
    action_space: str = ""
    settings: dict = field(default_factory=dict)   # the tolerances and action topic actually used
    episode_file: str = ""                          # its name in OUT, once written
    notes: list[str] = field(default_factory=list)  # damage, changed instruction, ...
    error: str = ""                                 # why the bag gave no episode at all


def _meta_list(meta: dict, key: str) -> list[str] | None:
    value = meta.get(key)
    return [str(v) for v in value] if isinstance(value, list) and value else None


def _bag_instruction(reader: BagReader, cfg: FromBagsConfig, meta: dict, notes: list[str]) -> str:
    """--instruction, else the last text on the instruction topic, else the metadata's."""
    if cfg.instruction.strip():
        return cfg.instruction
    texts: list[str] = []
    topic = reader.topics.get(cfg.instruction_topic)
    if topic is not None and topic.count != 0 and cfg.instruction_topic not in reader.unknown_types:
        reader.require({cfg.instruction_topic: "std_msgs/msg/String"})
        texts = [reader.decode(m).data for m in reader.messages([cfg.instruction_topic])]
        texts = [t for t in texts if t.strip()]
    if len(set(texts)) > 1:
        notes.append(f"{len(set(texts))} different instructions on {cfg.instruction_topic}: used the last")
    text = texts[-1] if texts else str(meta.get("instruction") or "")
    if not text.strip():
        raise BagError(reader.path, f"no instruction: none on {cfg.instruction_topic}, none in the metadata; "
                       "pass --instruction")
    return text


def _read_steps(reader: BagReader, cfg: FromBagsConfig, conv: BagConversion) -> list[tuple[int, np.ndarray]]:
    """(step stamp ns, (action_dim,) float32) sorted by stamp; malformed and repeated steps counted."""
    reader.require({cfg.action_topic: CHUNK_TYPE})
    steps: dict[int, np.ndarray] = {}
    dim, chunk_sizes = None, Counter()
    for m in reader.messages([cfg.action_topic]):
        msg = reader.decode(m)
        try:
            actions = action_chunk_actions(msg)     # (chunk_size, action_dim)
        except ValueError:
            conv.skipped[BAD_ACTION] += 1
            continue
        chunk_sizes[actions.shape[0]] += 1
        if actions.shape[0] != 1:
            conv.skipped[BAD_ACTION] += 1
            continue
        dim = actions.shape[1] if dim is None else dim
        if actions.shape[1] != dim or not np.isfinite(actions).all():
            conv.skipped[BAD_ACTION] += 1
            continue
        stamp = time_to_ns(msg.header)
        if stamp in steps:
            conv.skipped[DUPLICATE_STEP] += 1
            continue
        steps[stamp] = actions[0]
        conv.action_space = conv.action_space or str(msg.action_space)
    if not steps and chunk_sizes:
        raise BagError(reader.path, f"carries chunks of {max(chunk_sizes)} steps, not one executed step per "
                       "message: name the per-step action topic (/lightvla/action)", cfg.action_topic)
    return sorted(steps.items())


def convert_bag(path: str | Path, cfg: FromBagsConfig) -> BagConversion:
    """One bag -> one episode. Raises BagError when the bag cannot be used at all."""
    conv = BagConversion(str(path))
    with BagReader(path) as reader:
        if reader.message_count == 0:
            raise BagError(reader.path, "bag is empty (no messages)")
        meta = reader.episode_metadata()
        cams = cfg.camera_topics or _meta_list(meta, "camera_topics") or list(DEFAULT_CAMERAS)
        sources = cfg.proprio_sources if cfg.proprio_sources is not None else \
            (_meta_list(meta, "proprio_sources") or list(PROPRIO_SOURCES))
        names = _meta_list(meta, "camera_names")
        conv.camera_topics, conv.proprio_sources = list(cams), list(sources)
        conv.camera_names = names if names and len(names) == len(cams) else list(cams)
        age = node_setting(cfg.max_observation_age, meta, "max_observation_age", ReplayConfig.max_observation_age)
        pairing = node_setting(cfg.pairing_tolerance, meta, "pairing_tolerance", ReplayConfig.pairing_tolerance)
        try:   # the node's assembler, as the recorded node was configured (None: off)
            sync = node_setting(cfg.proprio_sync_tolerance, meta, "proprio_sync_tolerance", None)
            asm = ObservationAssembler(
                cams, NEVER if pairing is None else to_ns(pairing), NEVER if age is None else to_ns(age), sources,
                instruction=_bag_instruction(reader, cfg, meta, conv.notes),
                proprio_sync_tolerance=None if sync is None else to_ns(sync))
        except ValueError as err:   # e.g. a proprio source in the metadata it does not know
            raise BagError(reader.path, str(err)) from err
        conv.settings = {"action_topic": cfg.action_topic, "pairing_tolerance": pairing,
                         "max_observation_age": age, "proprio_sync_tolerance": sync}

        inputs = {t: "image" for t in cams}
        if asm.joint_names:
            inputs[cfg.joint_states_topic] = "joints"
        if asm.needs_eef:
            inputs[cfg.eef_pose_topic] = "eef"
        reader.require({t: None if kind == "image" else
                        ("sensor_msgs/msg/JointState" if kind == "joints" else "geometry_msgs/msg/PoseStamped")
                        for t, kind in inputs.items()})
        for t in cams:
            if reader.topics[t].msgtype not in IMAGE_TYPES:
                raise BagError(reader.path, f"type {reader.topics[t].msgtype} is not an image type", t)

        steps = _read_steps(reader, cfg, conv)
        if not steps:
            raise BagError(reader.path, f"no usable action (skipped: {dict(conv.skipped)})", cfg.action_topic)
        images, proprio, actions, stamps = [], [], [], []
        queue: list[tuple[int, int, str, Any, str]] = []   # (stamp ns, seq, topic, message, type), a heap
        newest: dict[str, int] = {}                        # topic -> newest stamp seen
        window = int(cfg.reorder_window * 1e9)
        next_step = 0
        bad_inputs: Counter[str] = Counter()

        def feed_until(stamp: int) -> None:
            """Inputs stamped at or before `stamp` into the assembler, in stamp order; a camera's
            frames are superseded by its newest one, so only that one is converted."""
            frames: dict[str, tuple[Any, str, int]] = {}
            while queue and queue[0][0] <= stamp:
                t, _, topic, msg, msgtype = heapq.heappop(queue)
                kind = inputs[topic]
                if kind == "image":
                    frames[topic] = (msg, msgtype, t)
                elif kind == "joints":
                    try:
                        asm.add_joint_state(list(msg.name), np.asarray(msg.position, dtype=np.float64), t)
                    except ValueError:   # as the node: a malformed joint state is dropped, nothing else
                        bad_inputs[topic] += 1
                else:
                    p, q = msg.pose.position, msg.pose.orientation
                    asm.add_eef_pose([p.x, p.y, p.z], [q.x, q.y, q.z, q.w], t)
            for topic, (msg, msgtype, t) in frames.items():
                try:
                    asm.add_image(topic, image_to_rgb(msg, msgtype), t)
                except ValueError as err:
                    raise BagError(reader.path, f"frame stamped {t} ns: {err}", topic) from err

        def judge(stamp: int, action: np.ndarray) -> None:
            feed_until(stamp)
            obs = asm.assemble(stamp)
            if isinstance(obs, Rejection):
                conv.skipped[obs.reason] += 1
                return
            frame = [np.asarray(im) for im in obs.images]
            if images and any(im.shape != ref.shape for im, ref in zip(frame, images[0])):
                conv.skipped[IMAGE_SIZE] += 1
                return
            if not images and len({im.shape for im in frame}) > 1:
                raise BagError(reader.path, f"the cameras' frames differ in size ({[im.shape for im in frame]}); "
                               "an episode stacks them: record the cameras at one size")
            images.append(frame)
            proprio.append(np.zeros(0, np.float32) if obs.proprio is None else obs.proprio)
            actions.append(action)
            stamps.append(stamp)

        for seq, m in enumerate(reader.messages(list(inputs))):
            msg = reader.decode(m)
            t = time_to_ns(msg.header)
            heapq.heappush(queue, (t, seq, m.topic, msg, m.msgtype))
            newest[m.topic] = max(t, newest.get(m.topic, t))
            # a step is judged once every input has moved past it (nothing older can come), or
            # once some input is reorder_window past it
            passed = min(newest.values()) if len(newest) == len(inputs) else None
            while next_step < len(steps) and (
                    (passed is not None and passed > steps[next_step][0]) or
                    max(newest.values()) - steps[next_step][0] > window):
                judge(*steps[next_step])
                next_step += 1
        for stamp, action in steps[next_step:]:
            judge(stamp, action)
        conv.notes += [f"{n} malformed message(s) on {t} ignored" for t, n in bad_inputs.items()]
        conv.notes += list(reader.damage)

        conv.steps = len(actions)
        if actions:
            conv.episode = Episode(images=np.stack([np.stack(f) for f in images]), proprio=np.stack(proprio),
                                   actions=np.stack(actions), instruction=asm.instruction,
                                   camera_names=tuple(conv.camera_names),
                                   timestamps=np.asarray(stamps, dtype=np.int64) * 1e-9)
        else:
            conv.error = "no step's observation assembled"
    return conv


def episode_file(out: Path, bag: str | Path, taken: set[str]) -> Path:
    """OUT/<bag name>.npz (a bare .mcap / .db3 file: its stem); _1, _2 ... when taken in this run."""
    bag = Path(bag)
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", bag.stem if bag.is_file() else bag.resolve().name).strip("-") or "episode"
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return out / f"{name}.npz"


def _rate_hz(stamps: np.ndarray) -> float | None:
    """The control rate from the step stamps (median period)."""
    if stamps is None or len(stamps) < 2:
        return None
    period = float(np.median(np.diff(stamps)))
    return round(1.0 / period, 3) if period > 0 else None


def from_bags(bags: Sequence[str | Path], out: str | Path, cfg: FromBagsConfig, log=print) -> list[BagConversion]:
    """Convert every bag, write the episodes and OUT/dataset.json; a bag that cannot be used is
    reported (its `error`) and the others go on. Every episode must match the first one and the
    dataset already in OUT: camera count, proprio sources, action dim."""
    out = Path(out)
    meta_path = out / "dataset.json"
    existing = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    layout = {k: existing[k] for k in ("proprio_sources", "num_cameras", "action_dim") if k in existing}
    if "num_cameras" not in layout and isinstance(existing.get("camera_names"), list):
        layout["num_cameras"] = len(existing["camera_names"])
    taken: set[str] = set()
    results: list[BagConversion] = []
    for bag in bags:
        try:
            conv = convert_bag(bag, cfg)
        except BagError as err:   # its message without the "bag PATH" the summary line starts with
            conv = BagConversion(str(bag), error=str(err).removeprefix(f"bag {err.bag}").lstrip(", :"))
        ep = conv.episode
        if ep is not None:
            mine = {"proprio_sources": conv.proprio_sources, "num_cameras": ep.num_cameras,
                    "action_dim": int(ep.actions.shape[1])}
            clash = [f"{k} {layout[k]} there, {v} here" for k, v in mine.items() if k in layout and layout[k] != v]
            if clash:
                conv.episode = None
                conv.error = "does not match the dataset in OUT or the bags before it: " + ", ".join(clash)
            else:
                layout.update(mine)
                conv.episode_file = save_episode(ep, episode_file(out, bag, taken)).name
                entry = {"bag": str(bag), "episode": conv.episode_file, "instruction": ep.instruction,
                         "steps": conv.steps, "skipped": dict(conv.skipped), "notes": conv.notes}
                listed = json.loads(meta_path.read_text()).get("bags", []) if meta_path.is_file() else []
                write_dataset_meta(out, source="lightvla-dataset from-bags", camera_names=conv.camera_names,
                                   camera_topics=conv.camera_topics, control_rate_hz=_rate_hz(ep.timestamps),
                                   action_space=conv.action_space or existing.get("action_space", ""),
                                   **mine, **conv.settings,
                                   bags=[b for b in listed if b.get("episode") != conv.episode_file] + [entry])
        results.append(conv)
        if log:
            log(summary_line(conv))
    return results


def summary_line(conv: BagConversion) -> str:
    if conv.error and not conv.steps and not conv.skipped:   # the bag could not be used at all
        return f"{conv.bag}: no episode: {conv.error}"
    why = ", ".join(f"{k} {v}" for k, v in sorted(conv.skipped.items()))
    line = f"{conv.bag}: {conv.steps} steps written, {sum(conv.skipped.values())} skipped"
    line += f" ({why})" if why else ""
    line += f" -> {conv.episode_file}" if conv.episode is not None else f"; no episode: {conv.error}"
    return line + "".join(f"; {n}" for n in conv.notes)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lightvla-dataset", description="Fine-tuning datasets (lightvla.dataset/1).")
    sub = ap.add_subparsers(dest="command", required=True)
    fb = sub.add_parser("from-bags", help="rosbag2 bags -> episodes", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FromBagsConfig()
    fb.add_argument("bags", nargs="+", metavar="BAG", help="bag directory (or .mcap / .db3 file)")
    fb.add_argument("out", metavar="OUT", help="dataset directory (created; episodes are added)")
    fb.add_argument("--camera-topics", nargs="+", help="in the policy's camera order (default: the bag's metadata, "
                    f"else {' '.join(DEFAULT_CAMERAS)})")
    fb.add_argument("--joint-states-topic", default=d.joint_states_topic)
    fb.add_argument("--eef-pose-topic", default=d.eef_pose_topic)
    fb.add_argument("--instruction-topic", default=d.instruction_topic)
    fb.add_argument("--action-topic", default=d.action_topic, help="per-step ActionChunk (chunk_size 1)")
    fb.add_argument("--proprio-sources", nargs="*", help="as the node: eef_pos eef_axis_angle joint:<name> ... "
                    f"(default: the bag's metadata, else {' '.join(PROPRIO_SOURCES)}); none: no proprio")
    fb.add_argument("--instruction", default=d.instruction, help="use this instead of the bag's instruction")
    fb.add_argument("--pairing-tolerance", type=float, help="s; default: the bag's metadata, else "
                    f"{ReplayConfig.pairing_tolerance}")
    fb.add_argument("--proprio-sync-tolerance", type=float, help="s; default: the bag's metadata, else off")
    fb.add_argument("--max-observation-age", type=float, help="s; default: the bag's metadata, else "
                    f"{ReplayConfig.max_observation_age}; negative: off")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    bags, out = args.bags, args.out
    for bag in bags:   # fail before converting anything when a path is plainly wrong
        if not Path(bag).exists():
            print(f"lightvla-dataset: error: bag {bag}: no such file or directory", file=sys.stderr)
            return 2
    if args.proprio_sources is not None:
        try:
            parse_proprio_sources(args.proprio_sources)
        except ValueError as err:
            print(f"lightvla-dataset: error: {err}", file=sys.stderr)
            return 2
    cfg = FromBagsConfig(camera_topics=args.camera_topics, joint_states_topic=args.joint_states_topic,
                         eef_pose_topic=args.eef_pose_topic, instruction_topic=args.instruction_topic,
                         action_topic=args.action_topic, proprio_sources=args.proprio_sources,
                         instruction=args.instruction, pairing_tolerance=args.pairing_tolerance,
                         proprio_sync_tolerance=args.proprio_sync_tolerance,
                         max_observation_age=args.max_observation_age)
    results = from_bags(bags, out, cfg, log=lambda line: print(line, flush=True))
    written = sum(r.episode is not None for r in results)
    print(f"{written} of {len(results)} bag(s) written as episodes to {out}", flush=True)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
