"""PNG plots for a bag-eval report (matplotlib, Agg backend; no display needed).

- actions.png: one panel per action dimension, predicted vs recorded over bag time
  (first step of each chunk: the action the chunk was computed for);
- latency.png: one histogram panel per stage (vision, pruner, llm, head, total);
- kept_tokens.png: one panel, histogram of visual tokens kept per frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lightvla_ros.eval.bag_report import STAGES, Frame  # noqa: E402


def _save(fig, path: Path, panels: int) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return {"path": str(path), "panels": panels}


def episode_time(frames: Sequence[Frame], sizes: Sequence[int] | None = None) -> np.ndarray:
    """Seconds since each episode's first frame, episodes laid end to end (1 s gap)."""
    sizes = list(sizes) if sizes else [len(frames)]
    t, i, offset = [], 0, 0.0
    for n in sizes:
        ep = frames[i:i + n]
        t += [offset + (f.stamp_ns - ep[0].stamp_ns) * 1e-9 for f in ep]
        offset = (t[-1] + 1.0) if ep else offset
        i += n
    return np.asarray(t)


def plot_actions(frames: Sequence[Frame], path: Path, dim_names: Sequence[str] | None = None,
                 episode_sizes: Sequence[int] | None = None) -> dict:
    if not frames:
        raise ValueError("no frames to plot")
    d = frames[0].predicted.shape[1]
    t = episode_time(frames, episode_sizes)
    pred = np.stack([f.predicted[0] for f in frames])                      # (frames, action_dim)
    rec_idx = [i for i, f in enumerate(frames) if f.recorded is not None]
    fig, axes = plt.subplots(d, 1, figsize=(8, 1.6 * d), sharex=True, squeeze=False)
    for j in range(d):
        ax = axes[j, 0]
        ax.plot(t, pred[:, j], ".-", lw=1, ms=3, label="predicted (replay)")
        if rec_idx:
            ax.plot(t[rec_idx], [frames[i].recorded[0, j] for i in rec_idx], "x--", lw=1, ms=4, label="recorded")
        ax.set_ylabel(dim_names[j] if dim_names and j < len(dim_names) else f"a[{j}]")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("observation time in episode (s; episodes end to end)")
    fig.suptitle("actions: predicted vs recorded (first step of each chunk)")
    fig.tight_layout()
    return _save(fig, path, d)


def plot_latency(frames: Sequence[Frame], path: Path) -> dict:
    fig, axes = plt.subplots(1, len(STAGES), figsize=(3 * len(STAGES), 2.8), squeeze=False)
    for j, stage in enumerate(STAGES):
        ax = axes[0, j]
        v = [f.timings[stage] * 1e3 for f in frames if stage in f.timings]
        if v:
            ax.hist(v, bins=20)
        ax.set_title(stage)
        ax.set_xlabel("ms")
    fig.suptitle("inference latency per stage")
    fig.tight_layout()
    return _save(fig, path, len(STAGES))


def plot_kept_tokens(frames: Sequence[Frame], path: Path) -> dict:
    fig, axes = plt.subplots(1, 1, figsize=(5, 3), squeeze=False)
    kept = [f.kept for f in frames]
    if kept:
        lo, hi = min(kept), max(kept)
        axes[0, 0].hist(kept, bins=np.arange(lo - 0.5, hi + 1.5, max(1, (hi - lo + 1) // 30 or 1)))
    total = max((f.total for f in frames), default=0)
    axes[0, 0].set_xlabel(f"visual tokens kept per frame (of {total})")
    axes[0, 0].set_ylabel("frames")
    fig.tight_layout()
    return _save(fig, path, 1)


def write_plots(frames: Sequence[Frame], out_dir: str | Path, dim_names: Sequence[str] | None = None,
                episode_sizes: Sequence[int] | None = None) -> dict:
    out = Path(out_dir)
    return {"actions": plot_actions(frames, out / "actions.png", dim_names, episode_sizes),
            "latency": plot_latency(frames, out / "latency.png"),
            "kept_tokens": plot_kept_tokens(frames, out / "kept_tokens.png")}
