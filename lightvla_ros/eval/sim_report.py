"""The JSON report of a closed-loop sim evaluation: per-episode records -> per-task and overall. No ROS."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import numpy as np

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npz")
_EDGE = 4 << 20  # bytes hashed at each end of a weight file (real checkpoints are GBs)


def checkpoint_fingerprint(path: str | Path | None) -> dict:
    """Which checkpoint ran: its path, sha256 of its config files, a fingerprint of its weights and
    `sha256`, one hash of both (the identity bag and sim reports compare; 64 hex digits).

    Config-like files are hashed whole; weight files by (name, size, first and last 4 MiB), so a
    7B checkpoint is fingerprinted in well under a second. The one checkpoint fingerprint of the
    package: sim reports, bag reports and recorded bags use it."""
    if not path:
        return {"path": None}
    root = Path(path)
    if not root.exists():
        return {"path": str(root), "error": "does not exist"}
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    cfg_h, w_h = hashlib.sha256(), hashlib.sha256()
    n_weights, weight_bytes = 0, 0
    for p in files:
        rel = str(p.relative_to(root) if root.is_dir() else p.name).encode()
        if p.suffix in WEIGHT_SUFFIXES:
            size = p.stat().st_size
            n_weights += 1
            weight_bytes += size
            w_h.update(rel + str(size).encode())
            with open(p, "rb") as f:
                w_h.update(f.read(_EDGE))
                if size > 2 * _EDGE:
                    f.seek(size - _EDGE)
                    w_h.update(f.read(_EDGE))
        else:
            cfg_h.update(rel + b"\0" + p.read_bytes())
    whole = hashlib.sha256(cfg_h.digest() + w_h.digest()).hexdigest()
    return {"path": str(root.resolve()), "sha256": whole, "files": len(files), "config_sha256": cfg_h.hexdigest()[:16],
            "weights_fingerprint": w_h.hexdigest()[:16], "weight_files": n_weights, "weight_bytes": weight_bytes,
            "hash_method": "config files whole; weight files by name, size and first and last 4 MiB"}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("lightvla_ros", "torch", "mujoco", "robosuite", "libero", "numpy", "transformers", "timm",
                 "ros-rclpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    # a sourced ROS install sets ROS_DISTRO; the pinned pip wheels (ros-rclpy 9.x) are Kilted
    out["ros_distro"] = os.environ.get("ROS_DISTRO") or ("kilted" if out["ros-rclpy"] else None)
    return out


def _stats(values) -> dict | None:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None
    return {"mean": float(v.mean()), "p50": float(np.median(v)), "p95": float(np.percentile(v, 95)),
            "max": float(v.max()), "count": int(v.size)}


def summarize(episodes: list[dict]) -> dict:
    """Per-task and overall success, steps, latency and kept tokens."""
    per_task: dict[str, dict] = {}
    for ep in episodes:
        key = f"{ep.get('task_index', -1)}: {ep.get('task_name', '?')}"
        t = per_task.setdefault(key, {"episodes": 0, "successes": 0, "steps": []})
        t["episodes"] += 1
        t["successes"] += int(bool(ep.get("success")))
        t["steps"].append(ep.get("policy_steps", 0))
    for t in per_task.values():
        t["success_rate"] = t["successes"] / t["episodes"]
        t["mean_steps"] = float(np.mean(t.pop("steps")))
    n = len(episodes)
    ok = sum(int(bool(e.get("success"))) for e in episodes)
    step_lat = [x for e in episodes for x in e.get("step_latencies", [])]
    infer_lat = [x for e in episodes for x in e.get("inference_latencies", [])]
    kept = [x for e in episodes for x in e.get("kept_tokens", [])]
    total = [x for e in episodes for x in e.get("total_tokens", [])]
    overall = {
        "episodes": n, "successes": ok, "success_rate": (ok / n) if n else 0.0,
        "errors": sum(1 for e in episodes if e.get("error")),
        "policy_steps": int(sum(e.get("policy_steps", 0) for e in episodes)),
        "actions_applied": int(sum(e.get("actions_applied", 0) for e in episodes)),
        "dropped_steps": int(sum(e.get("dropped_steps", 0) for e in episodes)),
        "late_actions": int(sum(e.get("late_actions", 0) for e in episodes)),
        "bad_actions": int(sum(e.get("bad_actions", 0) for e in episodes)),
        "step_latency_s": _stats(step_lat),
        "inference_latency_s": _stats(infer_lat),
        "kept_tokens": _stats(kept),
        "total_tokens": _stats(total),
    }
    return {"per_task": per_task, "overall": overall}


def format_summary(report: dict) -> str:
    """One screen of text: what ran, per-task success, latency, tokens, where the report is."""
    o = report["overall"]
    ck = report.get("checkpoint") or {}
    lines = ["=" * 72,
             f"lightvla-sim-eval: {report['policy']} policy on {report['suite']} ({report['mode']}, "
             f"{report['workers']} worker(s), {report['wall_time_s']:.1f} s)"]
    if report["policy"] == "vla":
        lines.append(f"checkpoint: {ck.get('path')}  config {ck.get('config_sha256')}  "
                     f"weights {ck.get('weights_fingerprint')}")
        rows = report.get("action_rows") or {}
        if rows:
            lines.append(f"action rows: {rows.get('resolved')} (requested {rows.get('requested')})")
    else:
        lines.append("checkpoint: none (scripted expert with privileged state)")
    lines.append(f"{'task':<52} {'succ':>6} {'rate':>6} {'steps':>6}")
    for name, t in report["per_task"].items():
        lines.append(f"{name[:52]:<52} {t['successes']:>3}/{t['episodes']:<2} {t['success_rate']:>6.0%} "
                     f"{t['mean_steps']:>6.1f}")
    lines.append(f"overall: {o['successes']}/{o['episodes']} = {o['success_rate']:.0%} success, "
                 f"{o['policy_steps']} policy steps, {o['actions_applied']} actions applied, "
                 f"dropped {o['dropped_steps']}, late {o['late_actions']}, bad {o['bad_actions']}, "
                 f"errors {o['errors']}")
    if o.get("step_latency_s"):
        s = o["step_latency_s"]
        lines.append(f"per-step latency (observation -> action): mean {s['mean'] * 1e3:.1f} ms, "
                     f"p95 {s['p95'] * 1e3:.1f} ms, max {s['max'] * 1e3:.1f} ms")
    if o.get("inference_latency_s"):
        s = o["inference_latency_s"]
        lines.append(f"inference latency: mean {s['mean'] * 1e3:.1f} ms over {s['count']} chunks")
    if o.get("kept_tokens") and o.get("total_tokens"):
        lines.append(f"visual tokens kept: mean {o['kept_tokens']['mean']:.1f} of {o['total_tokens']['mean']:.0f}")
    for e in report["episodes"]:
        if e.get("error"):
            lines.append(f"error: task {e.get('task')} init {e.get('init_state_index')}: {e['error'][:200]}")
    if report.get("report_path"):
        lines.append(f"report: {report['report_path']}")
    lines.append("=" * 72)
    return "\n".join(lines)
