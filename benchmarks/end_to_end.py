"""Whole-model latency per action chunk, pruned vs unpruned, at any size (7B geometry on a GPU).

    python benchmarks/end_to_end.py --size 7b --device cuda --dtype bfloat16 [--compile]
    python benchmarks/end_to_end.py --size tiny --device cpu --dtype float32

Weights are random (no released checkpoint can be downloaded here): the 7B geometry is built
directly on the device from the generator's config, the tokenizer and statistics come from a
generated tiny checkpoint. With random weights the number of kept tokens is whatever the votes
give; benchmarks/pruning.py measures the LLM at controlled kept counts. Everything printed comes
from one run: same process, same inputs, pruned and unpruned calls interleaved.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a plain checkout too

from lightvla_ros.model.checkpoint import build_vla, load_vla  # noqa: E402
from lightvla_ros.model.config import get_platform, resolve_device, resolve_dtype  # noqa: E402
from lightvla_ros.model.make_checkpoint import make_checkpoint, make_config  # noqa: E402


def build(size: str, device: torch.device, dtype: torch.dtype, tiny_dir: Path):
    """Random-init model of `size` on `device`, with the tiny checkpoint's tokenizer and statistics."""
    tiny = load_vla(tiny_dir, device="cpu", dtype="float32")
    if size == "tiny":
        vla = load_vla(tiny_dir, device=str(device), dtype=str(dtype).replace("torch.", ""))
    else:
        torch.manual_seed(0)
        vla = build_vla(make_config(size), get_platform("libero"), num_images=2, device=device)
        vla = vla.to(dtype).eval()
    vla.tokenizer, vla.norm_stats, vla.default_unnorm_key = tiny.tokenizer, tiny.norm_stats, tiny.default_unnorm_key
    return vla


def time_calls(vla, images, proprio, prune: bool, repeats: int) -> dict:
    vla.prune = prune
    runs = []
    for _ in range(repeats):
        pred = vla.predict_action(images, "put the bowl on the plate", proprio)
        runs.append(pred)
    med = {k: statistics.median(r.timings[k] for r in runs) * 1e3 for k in runs[0].timings}
    return {"ms": med, "kept": runs[-1].kept_total, "total": sum(runs[-1].total_per_image),
            "actions": runs[-1].actions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "small", "7b"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone and the LLM")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2)]
    proprio = np.zeros(8, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(Path(tmp) / "tiny", size="tiny", seed=0)
        t0 = time.perf_counter()
        vla = build(args.size, device, dtype, Path(tmp) / "tiny")
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in vla.parameters())
    if args.compile:
        vla.enable_compile()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, dtype {dtype}, size {args.size} ({n_params / 1e9:.3f} B params), "
          f"built in {build_s:.1f} s, compile={args.compile}, torch {torch.__version__}")

    t0 = time.perf_counter()
    for prune in (True, False):  # warm-up (and compilation) for both sequence lengths
        time_calls(vla, images, proprio, prune, args.warmup)
    print(f"warm-up {time.perf_counter() - t0:.1f} s")
    pruned = time_calls(vla, images, proprio, True, args.repeats)
    full = time_calls(vla, images, proprio, False, args.repeats)

    print(f"\n{'':<10}{'kept':>10}{'vision':>9}{'pruner':>9}{'llm':>9}{'head':>9}{'forward':>9}{'total':>9}  (ms, median of {args.repeats})")
    for label, r in (("unpruned", full), ("pruned", pruned)):
        ms = r["ms"]
        print(f"{label:<10}{r['kept']:>5}/{r['total']:<4}{ms['vision']:>9.2f}{ms['pruner']:>9.2f}{ms['llm']:>9.2f}"
              f"{ms['head']:>9.2f}{ms.get('forward', ms['total']):>9.2f}{ms['total']:>9.2f}")
    ratio = full["ms"]["total"] / pruned["ms"]["total"]
    llm_ratio = full["ms"]["llm"] / pruned["ms"]["llm"]
    print(f"\nspeed-up per chunk {ratio:.2f}x (latency -{(1 - 1 / ratio) * 100:.1f}%), LLM alone {llm_ratio:.2f}x; "
          f"pruned: {1e3 / pruned['ms']['total']:.1f} chunks/s = "
          f"{1e3 / pruned['ms']['total'] * pruned['actions'].shape[0]:.0f} actions/s")
    print(f"actions finite: {bool(np.isfinite(pruned['actions']).all() and np.isfinite(full['actions']).all())}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "dtype": str(dtype), "size": args.size, "compile": args.compile,
            "params": n_params, "pruned": {k: v for k, v in pruned.items() if k != "actions"},
            "unpruned": {k: v for k, v in full.items() if k != "actions"}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
