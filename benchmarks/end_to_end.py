"""Whole-model latency per action chunk, pruned vs unpruned, at any size (7B geometry on a GPU).

    python benchmarks/end_to_end.py --size 7b --device cuda --dtype bfloat16 [--compile]
    python benchmarks/end_to_end.py --size tiny --device cpu --dtype float32

A table front end on lightvla_ros.model.latency: weights are random (built straight on the
device, no checkpoint), so the number of kept tokens is whatever the votes give;
benchmarks/pruning.py measures the LLM at controlled kept counts. Everything printed comes from
one run: same process, same inputs, pruned and unpruned measured back to back.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a plain checkout too

from lightvla_ros.model.latency import measure, random_vla  # noqa: E402


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

    torch.manual_seed(0)
    t0 = time.perf_counter()
    vla = random_vla(args.size, device=args.device, dtype=args.dtype)
    build_s = time.perf_counter() - t0
    param = next(vla.parameters())
    n_params = sum(p.numel() for p in vla.parameters())
    if args.compile:
        vla.enable_compile()
    name = torch.cuda.get_device_name(param.device) if param.device.type == "cuda" else "cpu"
    print(f"device {name}, dtype {param.dtype}, size {args.size} ({n_params / 1e9:.3f} B params), "
          f"built in {build_s:.1f} s, compile={args.compile}, torch {torch.__version__}")

    results = {}
    for prune in (True, False):  # warm-up (and compilation) inside measure, per sequence length
        vla.prune = prune
        results[prune] = measure(vla, repeats=args.repeats, warmup=args.warmup)
    pruned, full = results[True], results[False]
    total = vla.vision_backbone.num_patches * vla.num_images

    print(f"\n{'':<10}{'kept':>10}{'vision':>9}{'pruner':>9}{'llm':>9}{'head':>9}{'forward':>9}{'total':>9}"
          f"  (ms, median of {args.repeats})")
    for label, r in (("unpruned", full), ("pruned", pruned)):
        ms = r["ms"]
        kept = total if label == "unpruned" else r["kept_total"]
        print(f"{label:<10}{kept:>5}/{total:<4}{ms['vision']:>9.2f}{ms['pruner']:>9.2f}{ms['llm']:>9.2f}"
              f"{ms['head']:>9.2f}{ms['forward']:>9.2f}{ms['total']:>9.2f}")
    ratio = full["ms"]["total"] / pruned["ms"]["total"]
    llm_ratio = full["ms"]["llm"] / pruned["ms"]["llm"]
    chunk = vla.platform.chunk_size
    print(f"\nspeed-up per chunk {ratio:.2f}x (latency -{(1 - 1 / ratio) * 100:.1f}%), LLM alone {llm_ratio:.2f}x; "
          f"pruned: {1e3 / pruned['ms']['total']:.1f} chunks/s = {1e3 / pruned['ms']['total'] * chunk:.0f} actions/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "dtype": str(param.dtype), "size": args.size,
                                               "compile": args.compile, "params": n_params,
                                               "pruned": pruned, "unpruned": full}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
