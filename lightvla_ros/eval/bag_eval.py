"""lightvla-bag-eval: replay recorded bags through the policy and compare with what was recorded.

    lightvla-bag-eval BAG... --checkpoint DIR [--report out.json] [--plots DIR]
    lightvla-bag-eval BAG... --checkpoint DIR --via-ros          # through a real policy node over DDS
    lightvla-bag-eval compare A.json B.json [--out cmp.json]

Offline mode needs no ROS: bags are read with rosbags, observations assembled in bag time by the
policy node's ObservationAssembler, and VLAPolicy.infer runs on each. Input bags are only read.
Exit codes: 0 ok, 1 evaluated but some bag was damaged (partial), 2 error (bad bag, bad args, a
checkpoint that is missing or does not load).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from lightvla_ros.eval.bag_io import BagError, BagReader
from lightvla_ros.eval.bag_replay import DEFAULT_CAMERAS, BagReplay, ReplayConfig, node_setting
from lightvla_ros.eval.sim_report import checkpoint_fingerprint
from lightvla_ros.policy.config import DEFAULTS
from lightvla_ros.eval.bag_report import (EvalOptions, Frame, build_report, compare_reports,
                                          compare_text, episode_entry, load_report, summary_text)
from lightvla_ros.model.errors import CheckpointError
from lightvla_ros.paths import resolve_checkpoint

LIBERO_DIM_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def default_proprio_sources(policy: Any, meta: dict) -> list[str]:
    """The node's proprio layout: from the bag's metadata, else the policy node's default."""
    if not getattr(policy, "proprio_dim", 0):
        return []
    if isinstance(meta.get("proprio_sources"), list):
        return [str(s) for s in meta["proprio_sources"]]
    return list(DEFAULTS.proprio_sources)


def replay_config(args: argparse.Namespace, policy: Any, meta: dict) -> ReplayConfig:
    cams = args.camera_topics or meta.get("camera_topics") or DEFAULT_CAMERAS[: getattr(policy, "num_images", 2)]
    return ReplayConfig(
        camera_topics=list(cams), joint_topic=args.joint_topic, eef_topic=args.eef_topic,
        instruction_topic=args.instruction_topic, chunk_topic=args.chunk_topic,
        proprio_sources=args.proprio_sources if args.proprio_sources is not None
        else default_proprio_sources(policy, meta),
        instruction=args.instruction or "",
        pairing_tolerance=node_setting(args.pairing_tolerance, meta, "pairing_tolerance", DEFAULTS.pairing_tolerance),
        action_min=list(meta.get("action_min") or []), action_max=list(meta.get("action_max") or []),
        limit_mode=str(meta.get("limit_mode") or DEFAULTS.limit_mode),
        proprio_sync_tolerance=node_setting(args.proprio_sync_tolerance, meta, "proprio_sync_tolerance", None),
        max_observation_age=args.max_observation_age, max_frames=args.max_frames)



def bag_entry(reader: BagReader, meta: dict, replay: BagReplay | None) -> dict:
    return {"bag": str(reader.path), "storage": reader.storage, "metadata": meta,
            "replay_config": asdict(replay.cfg) if replay else None,
            "message_count": reader.message_count, "recovered": reader.recovered,
            "damage": list(reader.damage), "complete": not reader.damage,
            "chunks_recorded": replay.chunks_recorded if replay else 0,
            "chunks_unmatched": replay.chunks_unmatched if replay else 0,
            "chunks_refused_by_limits": replay.refused_chunks if replay else 0,
            "exact_inputs": replay.exact if replay else False,   # rebuilt from the node's recorded inputs
            "rejections": dict(replay.rejections) if replay else {}}


def evaluate_bag(path: str | Path, policy: Any, args: argparse.Namespace, progress=None) -> tuple[dict, list[Frame]]:
    """Offline replay of one bag. Raises BagError for a bag that cannot be evaluated at all."""
    with BagReader(path) as reader:
        if reader.message_count == 0:
            raise BagError(reader.path, "bag is empty (no messages)")
        meta = reader.episode_metadata()
        cfg = replay_config(args, policy, meta)
        replay = BagReplay(reader, cfg)
        frames: list[Frame] = []
        policy.reset()
        for pair in replay:
            out = policy.infer(pair.observation)
            out.actions = replay.as_executed(out.actions)   # the node's limits, as live
            rec = pair.recorded
            frames.append(Frame(pair.stamp_ns, out.actions, None if rec is None else rec.actions,
                                dict(out.timings), int(out.kept_total), int(out.total_tokens),
                                None if rec is None else rec.latency, None if rec is None else rec.kept))
            if progress is not None:
                progress.update(1)
        if not frames:
            why = ", ".join(f"{k}: {v}" for k, v in replay.rejections.items()) or "no complete camera set"
            extra = (f"; {replay.chunks_unmatched} recorded chunks matched no observation"
                     if replay.chunks_unmatched else "")
            raise BagError(reader.path, f"no observation could be assembled ({why}){extra}"
                           + (f"; damage: {reader.damage}" if reader.damage else ""))
        return bag_entry(reader, meta, replay), frames


def load_policy(args: argparse.Namespace):
    from lightvla_ros.policy.vla_policy import VLAPolicy
    policy = VLAPolicy(args.checkpoint, device=args.device, dtype=args.dtype, action_rows=args.action_rows)
    if args.warmup:
        policy.warmup(args.warmup)   # as the node does: the first inference pays allocation costs
    return policy


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    for bag in args.bags:       # fail before loading the model when a path is plainly wrong
        if not Path(bag).exists():
            raise BagError(bag, "no such file or directory")
    if not args.existing_node:  # a name like lightvla-lift, or a path; CheckpointNotFound says where it looked
        args.checkpoint = resolve_checkpoint(args.checkpoint)
    opts = EvalOptions(args.gripper_dim, args.gripper_threshold)
    policy = None if args.via_ros else load_policy(args)   # via ROS, the node runs the model
    episodes, all_frames = [], []
    total = sum(_estimate_frames(b, args) for b in args.bags)
    with tqdm(total=total or None, unit="frame", desc="bag eval", disable=args.no_progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for bag in args.bags:
            if args.via_ros:
                from lightvla_ros.eval.bag_play import evaluate_bag_via_ros
                entry, frames = evaluate_bag_via_ros(bag, policy, args, progress=bar)
            else:
                entry, frames = evaluate_bag(bag, policy, args, progress=bar)
            episodes.append(episode_entry(entry, frames, opts, detail=not args.no_frames_detail))
            all_frames += frames
    config = json.loads(json.dumps(vars(args), default=str))
    report = build_report("via_ros" if args.via_ros else "offline", config,
                          checkpoint_fingerprint(args.checkpoint), episodes, all_frames, opts)
    report["policy"] = {k: getattr(policy, k, None) for k in ("chunk_size", "action_dim", "proprio_dim",
                                                               "num_images", "action_space", "action_rows")}
    report["policy"]["action_rows_requested"] = requested_action_rows(args)
    if policy is None and not args.existing_node:  # via ROS the node runs the model: resolve as it does
        from lightvla_ros.model.checkpoint import read_action_rows
        report["policy"]["action_rows"] = read_action_rows(args.checkpoint, requested_action_rows(args))
    if args.plots:
        from lightvla_ros.eval.bag_plots import write_plots
        dims = LIBERO_DIM_NAMES if report["policy"].get("action_dim") == 7 else None
        report["plots"] = write_plots(all_frames, args.plots, dims, [e["frames"] for e in episodes])
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=1))
    print(summary_text(report))
    if args.report:
        print(f"report: {args.report}")
    return 0 if report["overall"]["complete"] else 1


def requested_action_rows(args: argparse.Namespace) -> str:
    """--action-rows, or a --node-param action_rows:=... given for the started node (it wins there)."""
    for item in getattr(args, "node_param", None) or []:
        name, sep, value = item.partition(":=")
        if sep and name.strip() == "action_rows" and args.via_ros:
            return value.strip()
    return args.action_rows


def _estimate_frames(bag: str, args: argparse.Namespace) -> int:
    """Recorded chunks (or camera frames) in the bag, for the progress bar; 0 if unknown."""
    try:
        with BagReader(bag) as r:
            n = (r.topics.get(args.chunk_topic) and r.topics[args.chunk_topic].count) or \
                (r.topics.get(DEFAULT_CAMERAS[0]) and r.topics[DEFAULT_CAMERAS[0]].count) or 0
            return min(n, args.max_frames) if args.max_frames else n
    except Exception:  # noqa: BLE001 - the real error is reported by the evaluation itself
        return 0


def run_compare(args: argparse.Namespace) -> int:
    a, b = load_report(args.a), load_report(args.b)
    cmp = compare_reports(a, b)
    print(compare_text(cmp, args.a, args.b))
    if args.out:
        Path(args.out).write_text(json.dumps(cmp, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lightvla-bag-eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("bags", nargs="+", type=Path, help="bag directories (or .mcap / .db3 files)")
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--plots", type=Path, help="write PNG plots into this directory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | auto")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up inferences before timing (0 = none)")
    ap.add_argument("--action-rows", choices=("auto", "oft", "lightvla"), default="auto",
                    help="hidden-state rows the action head reads (docs/model.md); via ROS: the node's action_rows")
    ap.add_argument("--camera-topics", nargs="+", help="in the policy's camera order")
    ap.add_argument("--joint-topic", default="/joint_states")
    ap.add_argument("--eef-topic", default="/eef_pose")
    ap.add_argument("--instruction-topic", default="/instruction")
    ap.add_argument("--chunk-topic", default="/lightvla/action_chunk")
    ap.add_argument("--instruction", help="use this instead of the bag's instruction topic")
    ap.add_argument("--proprio-sources", nargs="*", help="as the node: eef_pos eef_axis_angle joint:<name> ...")
    ap.add_argument("--pairing-tolerance", type=float, default=None, help="s; default: the bag's metadata, else 0.05")
    ap.add_argument("--proprio-sync-tolerance", type=float, default=None,
                    help="s; default: the bag's metadata, else off (as the node's parameter)")
    ap.add_argument("--max-observation-age", type=float, default=DEFAULTS.max_observation_age)
    ap.add_argument("--max-frames", type=int, default=0, help="per bag; 0 = all")
    ap.add_argument("--gripper-dim", type=int, default=-1)
    ap.add_argument("--gripper-threshold", type=float, default=0.0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-frames-detail", action="store_true", help="leave per-frame actions out of the report")
    ros = ap.add_argument_group("--via-ros: play the bag in real time against a policy node")
    ros.add_argument("--via-ros", action="store_true")
    ros.add_argument("--existing-node", action="store_true",
                     help="use a policy node already running on this ROS_DOMAIN_ID instead of starting one")
    ros.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                     help="extra parameter for the started policy node")
    ros.add_argument("--record-to", type=Path, help="also write what the node published to this bag")
    ros.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    ros.add_argument("--settle", type=float, default=3.0,
                     help="at most this many s to wait for the chunk of the last frame after playback")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "compare":
            cp = argparse.ArgumentParser(prog="lightvla-bag-eval compare")
            cp.add_argument("a")
            cp.add_argument("b")
            cp.add_argument("--out")
            return run_compare(cp.parse_args(argv[1:]))
        return run_eval(build_parser().parse_args(argv))
    except (BagError, ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"lightvla-bag-eval: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
