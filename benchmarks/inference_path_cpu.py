"""Which inference path `auto` picks on a CPU: dynamic vs static, interleaved, in CPU time.

    python benchmarks/inference_path_cpu.py [--sizes tiny,small] [--checkpoint DIR ...] [--repeats 40]

The two paths run the same stages; static pads the LLM sequence to a multiple of 16 and hands the
LLM a 4-D mask (docs/model.md). On a CPU there are no kernel launches to save, so the question is
only whether the padding costs more than it saves. Calls alternate (static, dynamic, dynamic,
static, ...) on the same inputs, torch runs one thread, and each forward is timed in the calling
thread's CPU time: other jobs on the machine change the wall time, hardly the CPU time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a plain checkout too

from lightvla_ros.model import load_vla  # noqa: E402
from lightvla_ros.model.latency import random_vla  # noqa: E402

WARMUP = 3


def compare(vla, repeats: int) -> list[dict]:
    size = vla.image_transform.size
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(vla.num_images)]
    pixel_values, input_ids, mask = vla.build_inputs(images, "pick up the black bowl and place it on the plate")
    proprio = None if vla.proprio_projector is None else torch.zeros(1, vla.platform.proprio_dim)
    rows = []
    for prune in (True, False):
        vla.prune = prune
        cpu_ms, lengths = {"dynamic": [], "static": []}, {}
        for i in range(WARMUP + repeats):
            for path in ("dynamic", "static") if i % 2 else ("static", "dynamic"):
                vla.set_inference_path(path)
                with torch.inference_mode():
                    t0 = time.thread_time()
                    vla(pixel_values, input_ids, mask, proprio=proprio)
                    spent = time.thread_time() - t0
                lengths[path] = vla.last_llm_length
                if i >= WARMUP:
                    cpu_ms[path].append(spent * 1e3)
        dyn, sta = statistics.median(cpu_ms["dynamic"]), statistics.median(cpu_ms["static"])
        rows.append({"prune": prune, "kept": int(vla.last_keep_mask.sum()), "length": lengths,
                     "dynamic_ms": dyn, "static_ms": sta, "ratio": sta / dyn})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,small", help="random models built here (comma list; '' for none)")
    ap.add_argument("--checkpoint", action="append", default=[], help="also a checkpoint directory (repeatable)")
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = [(s, lambda s=s: random_vla(s, device="cpu", dtype="float32")) for s in args.sizes.split(",") if s]
    models += [(Path(c).name, lambda c=c: load_vla(c, device="cpu", dtype="float32")) for c in args.checkpoint]
    print(f"torch {torch.__version__}, 1 thread; CPU ms per forward, median of {args.repeats} interleaved calls")
    print(f"{'model':<16}{'':<10}{'kept':>6}{'LLM len dyn/static':>20}{'dynamic':>10}{'static':>10}{'static/dyn':>12}")
    for name, build in models:
        for r in compare(build(), args.repeats):
            lengths = f"{r['length']['dynamic']}/{r['length']['static']}"
            print(f"{name:<16}{'pruned' if r['prune'] else 'unpruned':<10}{r['kept']:>6}{lengths:>20}"
                  f"{r['dynamic_ms']:>10.2f}{r['static_ms']:>10.2f}{r['ratio']:>12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
