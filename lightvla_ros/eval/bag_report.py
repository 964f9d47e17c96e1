"""The bag-eval report: metrics, the JSON schema "lightvla.bag_eval/1", the stdout summary, compare.

A frame is one replayed observation: the predicted chunk (chunk_size, action_dim), the recorded
chunk for the same observation stamp if the bag has one, the policy's timings and kept tokens.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SCHEMA = "lightvla.bag_eval/1"
COMPARE_SCHEMA = "lightvla.bag_eval_compare/1"
STAGES = ("vision", "pruner", "llm", "head", "total")


@dataclass
class Frame:
    stamp_ns: int
    predicted: np.ndarray                 # (chunk_size, action_dim)
    recorded: np.ndarray | None           # (chunk_size', action_dim) or None
    timings: dict[str, float]             # s
    kept: int                             # visual tokens kept, all images
    total: int                            # visual tokens before pruning
    recorded_latency: float | None = None
    recorded_kept: int | None = None
    ros_latency: float | None = None      # via-ros: observation published -> chunk received, s


@dataclass
class EvalOptions:
    gripper_dim: int = -1                 # the action dim that is the gripper
    gripper_threshold: float = 0.0        # > threshold = close (LIBERO: -1 open, +1 close)
    hist_bins: int = 20


# ---------------------------------------------------------------- identity

# ---------------------------------------------------------------- metrics

def _stats(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "p50": float(np.median(v)),
            "p90": float(np.percentile(v, 90)), "min": float(v.min()), "max": float(v.max())}


def action_metrics(frames: Sequence[Frame], opts: EvalOptions) -> dict:
    """Per-dimension L1 / MSE over every compared step, gripper open/close agreement."""
    pairs = [(f.predicted, f.recorded) for f in frames if f.recorded is not None]
    if not pairs:
        return {"steps_compared": 0, "chunks_compared": 0}
    diffs, grip_p, grip_r = [], [], []
    for pred, rec in pairs:
        if pred.shape[1] != rec.shape[1]:
            raise ValueError(f"predicted action_dim {pred.shape[1]} != recorded action_dim {rec.shape[1]}: "
                             "is this the checkpoint (action space) the bag was recorded with?")
        n = min(len(pred), len(rec))
        diffs.append(pred[:n].astype(np.float64) - rec[:n].astype(np.float64))   # (n, action_dim)
        grip_p.append(pred[:n, opts.gripper_dim] > opts.gripper_threshold)
        grip_r.append(rec[:n, opts.gripper_dim] > opts.gripper_threshold)
    d = np.concatenate(diffs)                                                     # (steps, action_dim)
    first = np.stack([x[0] for x in diffs])                                       # (chunks, action_dim)
    agree = np.concatenate(grip_p) == np.concatenate(grip_r)
    return {
        "steps_compared": int(d.shape[0]), "chunks_compared": len(pairs),
        "l1_per_dim": np.abs(d).mean(0).tolist(), "mse_per_dim": (d ** 2).mean(0).tolist(),
        "l1": float(np.abs(d).mean()), "mse": float((d ** 2).mean()), "max_abs_diff": float(np.abs(d).max()),
        "l1_first_step": float(np.abs(first).mean()),
        "gripper_agreement": float(agree.mean()),
    }


def token_histogram(kept: Sequence[int], bins: int) -> dict:
    if not kept:
        return {"edges": [], "counts": []}
    lo, hi = min(kept), max(kept)
    counts, edges = np.histogram(kept, bins=max(1, min(bins, hi - lo + 1)), range=(lo - 0.5, hi + 0.5))
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def frame_metrics(frames: Sequence[Frame], opts: EvalOptions) -> dict:
    kept = [f.kept for f in frames]
    rec_kept = [(f.kept, f.recorded_kept) for f in frames if f.recorded_kept is not None]
    return {
        "frames": len(frames),
        "actions": action_metrics(frames, opts),
        "latency": {s: _stats([f.timings.get(s) for f in frames]) for s in STAGES},
        "recorded_latency": _stats([f.recorded_latency for f in frames]),
        "ros_latency": _stats([f.ros_latency for f in frames]),
        "kept_tokens": {**_stats(kept), "total_per_frame": max((f.total for f in frames), default=0),
                        "histogram": token_histogram(kept, opts.hist_bins),
                        "recorded_equal": (float(np.mean([a == b for a, b in rec_kept])) if rec_kept else None)},
    }


def frames_detail(frames: Sequence[Frame]) -> list[dict]:
    return [{"stamp_ns": f.stamp_ns, "predicted": f.predicted.tolist(),
             "recorded": None if f.recorded is None else f.recorded.tolist(),
             "timings": f.timings, "kept": f.kept, "recorded_kept": f.recorded_kept,
             "ros_latency": f.ros_latency} for f in frames]


def episode_entry(bag: dict, frames: Sequence[Frame], opts: EvalOptions, detail: bool = True) -> dict:
    return {**bag, **frame_metrics(frames, opts), **({"frames_detail": frames_detail(frames)} if detail else {})}


def build_report(mode: str, config: dict, checkpoint: dict, episodes: list[dict],
                 all_frames: Sequence[Frame], opts: EvalOptions) -> dict:
    overall = frame_metrics(all_frames, opts)
    overall["episodes"] = len(episodes)
    overall["complete"] = all(e.get("complete", True) for e in episodes)
    successes = [e["metadata"].get("success") for e in episodes if isinstance(e.get("metadata"), dict)]
    successes = [bool(s) for s in successes if s is not None]
    overall["recorded_success_rate"] = float(np.mean(successes)) if successes else None
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": mode,
            "config": config, "checkpoint": checkpoint, "episodes": episodes, "overall": overall,
            "plots": {}}


def load_report(path: str | Path) -> dict:
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON report ({err})") from err
    if not isinstance(rep, dict) or rep.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema is {rep.get('schema') if isinstance(rep, dict) else None!r}, "
                         f"expected {SCHEMA!r}")
    return rep


# ---------------------------------------------------------------- text

def _ms(stats: dict, key: str = "mean") -> str:
    return f"{stats[key] * 1e3:8.1f}" if stats.get("n") else "       -"


def summary_text(report: dict) -> str:
    o = report["overall"]
    lines = [f"lightvla bag eval ({report['mode']}), checkpoint {report['checkpoint'].get('path')} "
             f"[{report['checkpoint'].get('sha256', '')[:12]}]"]
    if (report.get("policy") or {}).get("action_rows"):
        lines.append(f"action rows: {report['policy']['action_rows']}")
    for e in report["episodes"]:
        a = e["actions"]
        flag = "" if e.get("complete", True) else "  PARTIAL: " + "; ".join(e.get("damage", []))[:120]
        l1 = f"L1 {a['l1']:.4g} MSE {a['mse']:.4g} grip {a['gripper_agreement']:.2f}" if a.get("steps_compared") \
            else "no recorded chunks to compare"
        lines.append(f"  {Path(e['bag']).name}: {e['frames']} frames, {l1}{flag}")
    a = o["actions"]
    if a.get("steps_compared"):
        lines.append(f"overall: {o['frames']} frames, {a['chunks_compared']} chunks / {a['steps_compared']} steps "
                     f"compared; L1 {a['l1']:.4g}, MSE {a['mse']:.4g}, max |diff| {a['max_abs_diff']:.3g}, "
                     f"gripper agreement {a['gripper_agreement']:.3f}")
        lines.append("  L1 per dim:  " + " ".join(f"{x:.3g}" for x in a["l1_per_dim"]))
        lines.append("  MSE per dim: " + " ".join(f"{x:.3g}" for x in a["mse_per_dim"]))
    else:
        lines.append(f"overall: {o['frames']} frames, nothing recorded to compare with")
    lines.append("latency ms   " + " ".join(f"{s:>8}" for s in STAGES))
    lines.append("  mean       " + " ".join(_ms(o["latency"][s]) for s in STAGES))
    lines.append("  p90        " + " ".join(_ms(o["latency"][s], "p90") for s in STAGES))
    if o["recorded_latency"].get("n"):
        lines.append(f"  recorded (live node) inference mean {_ms(o['recorded_latency']).strip()} ms")
    if o["ros_latency"].get("n"):
        lines.append(f"  via ROS obs->chunk mean {_ms(o['ros_latency']).strip()} ms, "
                     f"p90 {_ms(o['ros_latency'], 'p90').strip()} ms")
    k = o["kept_tokens"]
    if k.get("n"):
        lines.append(f"kept visual tokens: mean {k['mean']:.1f} of {k['total_per_frame']} "
                     f"(min {k['min']:.0f}, max {k['max']:.0f})"
                     + (f", equal to recorded in {k['recorded_equal']:.0%} of frames"
                        if k["recorded_equal"] is not None else ""))
    if o.get("recorded_success_rate") is not None:
        lines.append(f"recorded episode success rate {o['recorded_success_rate']:.2f}")
    if not o["complete"]:
        lines.append("WARNING: some bags were damaged; they were evaluated up to the damage (see 'damage').")
    for name, p in report.get("plots", {}).items():
        lines.append(f"plot {name}: {p['path']} ({p['panels']} panels)")
    return "\n".join(lines)


# ---------------------------------------------------------------- compare

def _get(d: dict, path: str):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


COMPARE_KEYS = ["overall.frames", "overall.actions.l1", "overall.actions.mse", "overall.actions.gripper_agreement",
                *[f"overall.latency.{s}.mean" for s in STAGES], "overall.ros_latency.mean",
                "overall.kept_tokens.mean", "overall.kept_tokens.total_per_frame"]


def compare_reports(a: dict, b: dict) -> dict:
    """B relative to A, key by key; plus how far B's predictions are from A's on the same stamps."""
    rows = []
    for key in COMPARE_KEYS:
        va, vb = _get(a, key), _get(b, key)
        row = {"key": key, "a": va, "b": vb}
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            row["delta"] = vb - va
            row["ratio"] = (vb / va) if va else None
        rows.append(row)
    # frames pair up by (episode, observation stamp); episodes by bag name, else by position
    names = lambda r: [Path(e["bag"]).name for e in r["episodes"]]  # noqa: E731
    by_name = sorted(names(a)) == sorted(names(b))
    ep_key = lambda i, e: Path(e["bag"]).name if by_name else i  # noqa: E731
    pa = {(ep_key(i, e), f["stamp_ns"]): np.asarray(f["predicted"]) for i, e in enumerate(a["episodes"])
          for f in e.get("frames_detail", [])}
    diffs = [np.abs(np.asarray(f["predicted"]) - pa[k]).mean() for i, e in enumerate(b["episodes"])
             for f in e.get("frames_detail", []) if (k := (ep_key(i, e), f["stamp_ns"])) in pa
             and np.shape(f["predicted"]) == pa[k].shape]
    same_ckpt = _get(a, "checkpoint.sha256") == _get(b, "checkpoint.sha256")
    return {"schema": COMPARE_SCHEMA, "a": {"checkpoint": a.get("checkpoint"), "mode": a.get("mode")},
            "b": {"checkpoint": b.get("checkpoint"), "mode": b.get("mode")}, "same_checkpoint": same_ckpt,
            "rows": rows, "prediction_l1_b_vs_a": float(np.mean(diffs)) if diffs else None,
            "frames_matched": len(diffs)}


def compare_text(cmp: dict, name_a: str, name_b: str) -> str:
    def fmt(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    lines = [f"compare A={name_a}  B={name_b}  (same checkpoint: {cmp['same_checkpoint']})",
             f"{'metric':42} {'A':>12} {'B':>12} {'B-A':>12} {'B/A':>8}"]
    for r in cmp["rows"]:
        lines.append(f"{r['key']:42} {fmt(r['a']):>12} {fmt(r['b']):>12} {fmt(r.get('delta')):>12} "
                     f"{fmt(r.get('ratio')):>8}")
    if cmp["frames_matched"]:
        lines.append(f"predictions B vs A on {cmp['frames_matched']} shared frames: mean |diff| "
                     f"{cmp['prediction_l1_b_vs_a']:.4g}")
    return "\n".join(lines)
