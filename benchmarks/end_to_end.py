"""Whole-model latency per action chunk, every inference path side by side, pruned and unpruned.

    python benchmarks/end_to_end.py                                  # tiny, this machine (CPU: eager, static)
    python benchmarks/end_to_end.py --size 7b --device cuda --dtype bfloat16   # an H100 / H200

Modes (docs/model.md, static path): eager (the dynamic path), static (the LLM length padded to a
multiple of 16), graphed (static + CUDA graphs captured per bucket at warm-up), compiled
(torch.compile, dynamic path) and compiled+graphed (graphs over the compiled modules). --modes
auto runs eager, static, graphed, compiled, compiled+graphed on CUDA and eager, static on a CPU,
saying why each other mode was skipped. A mode that fails prints its error and the others still run.

Weights are random (built straight on the device, no checkpoint), so the number of kept tokens is
whatever the votes give; benchmarks/pruning.py measures the LLM at controlled kept counts. The
weight-read limit is the bytes of weights one forward reads over the GPU's memory bandwidth
(datasheet by device name, or --bandwidth-tbs; also the measured copy rate): at batch 1 nothing can
be faster. Everything printed comes from one run: same process, same inputs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a plain checkout too

from lightvla_ros.model.latency import (copy_bandwidth_tbs, measure, peak_bandwidth_tbs,  # noqa: E402
                                        random_vla, weight_bytes_read)

MODES = ("eager", "static", "graphed", "compiled", "compiled+graphed")
STAGES = ("vision", "pruner", "llm", "head", "forward", "total")


def skipped_modes(modes: list[str], cuda: bool, explicit: bool) -> dict[str, str]:
    """Mode -> why it does not run here."""
    why = {}
    for mode in modes:
        if "graphed" in mode and not cuda:
            why[mode] = "CUDA graphs need a CUDA device"
        elif mode == "compiled" and not cuda and not explicit:
            why[mode] = "not by default on a CPU (the first compile takes minutes); --modes eager,static,compiled"
    return why


def set_mode(vla, mode: str) -> dict:
    """Configure the model for `mode`; -> the graph capture report (graphed modes) or {}."""
    vla.enable_compile("compiled" in mode)
    path = {"eager": "dynamic", "compiled": "dynamic", "static": "static"}.get(mode, "graphed")
    vla.set_inference_path(path)
    return vla.capture_graphs() if path == "graphed" else {}


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", choices=["tiny", "small", "7b"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--modes", default="auto", help=f"auto or a comma list of {', '.join(MODES)}")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="calls before timing, per mode and pruning setting")
    ap.add_argument("--bandwidth-tbs", type=float, default=None,
                    help="the GPU's memory bandwidth in TB/s (default: the datasheet value for its name)")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    import timm
    import transformers

    torch.manual_seed(0)
    t0 = time.perf_counter()
    vla = random_vla(args.size, device=args.device, dtype=args.dtype)
    build_s = time.perf_counter() - t0
    param = next(vla.parameters())
    cuda = param.device.type == "cuda"
    n_params = sum(p.numel() for p in vla.parameters())
    name = torch.cuda.get_device_name(param.device) if cuda else "cpu"
    explicit = args.modes != "auto"
    modes = [m.strip() for m in args.modes.split(",")] if explicit else list(MODES)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    print(f"device {name}, dtype {param.dtype}, size {args.size} ({n_params / 1e9:.3f} B params), built in "
          f"{build_s:.1f} s; torch {torch.__version__}, transformers {transformers.__version__}, timm "
          f"{timm.__version__}; commit {commit()}, {time.strftime('%Y-%m-%d')}")

    weights = weight_bytes_read(vla)
    limit_ms, bandwidth, copy_rate = None, None, None
    if cuda:
        bandwidth = args.bandwidth_tbs or peak_bandwidth_tbs(name)
        copy_rate = copy_bandwidth_tbs(param.device)
        limit_ms = weights / (bandwidth * 1e12) * 1e3 if bandwidth else None
        spec = f"{bandwidth:.2f} TB/s" if bandwidth else "unknown bandwidth (pass --bandwidth-tbs)"
        print(f"weights read per forward {weights / 1e9:.2f} GB; at {spec}: weight-read limit "
              + (f"{limit_ms:.2f} ms" if limit_ms else "n/a")
              + f"; measured copy rate {copy_rate:.2f} TB/s -> {weights / (copy_rate * 1e12) * 1e3:.2f} ms")
    else:
        print(f"weights read per forward {weights / 1e9:.4f} GB; weight-read limit n/a on a CPU")

    skipped = skipped_modes(modes, cuda, explicit)
    results, notes = {}, {}
    for mode in modes:
        if mode in skipped:
            continue
        t0 = time.perf_counter()
        try:
            report = set_mode(vla, mode)
            if report.get("failure"):
                notes[mode] = f"CUDA graphs turned off, ran the static path eagerly: {report['failure']}"
            elif report.get("graphs"):
                notes[mode] = (f"{report['graphs']} graphs ({len(report['llm_buckets'])} LLM buckets "
                               f"{report['llm_buckets'][0]}..{report['llm_buckets'][-1]}), "
                               f"{report['memory_bytes'] / 2**20:.0f} MiB, captured in {report['total_s']:.1f} s")
            for prune in (True, False):  # warm-up (and compilation) inside measure, per sequence length
                vla.prune = prune
                results[(mode, prune)] = measure(vla, repeats=args.repeats, warmup=args.warmup)
            if vla.graphs is not None and vla.graphs.failure and mode not in notes:
                notes[mode] = f"CUDA graphs turned off during the run: {vla.graphs.failure}"
            took = f"set-up and runs {time.perf_counter() - t0:.1f} s"
            notes[mode] = f"{notes[mode]}; {took}" if notes.get(mode) else took
        except Exception as e:  # noqa: BLE001  (one mode failing must not hide the others)
            skipped[mode] = f"FAILED: {type(e).__name__}: {str(e)[:300]}"
        finally:
            vla.prune = True
    vla.enable_compile(False)
    vla.set_inference_path("dynamic")

    head = f"{'mode':<18}{'':<10}{'kept':>9}{'LLM len':>8}" + "".join(f"{s:>9}" for s in STAGES) + f"{'/limit':>8}"
    print(f"\n{head}\n(ms, medians of {args.repeats} calls, each column its own median; forward: the network "
          "(vision, pruner, llm, head); total adds preprocessing and unnormalising; /limit: forward / weight-read "
          "limit)")
    total_patches = vla.vision_backbone.num_patches * vla.num_images
    for (mode, prune), r in results.items():
        ms = r["ms"]
        ratio = f"{ms['forward'] / limit_ms:>8.2f}" if limit_ms else f"{'n/a':>8}"
        print(f"{mode:<18}{'pruned' if prune else 'unpruned':<10}{r['kept_total']:>5}/{total_patches:<3}"
              f"{r['llm_length']:>8}" + "".join(f"{ms[s]:>9.2f}" for s in STAGES) + ratio)
    for mode, why in skipped.items():
        print(f"{mode:<18}skipped: {why}" if not why.startswith("FAILED") else f"{mode:<18}{why}")
    for mode, note in notes.items():
        print(f"{mode:<18}{note}")
    for mode in modes:
        if (mode, True) in results:
            pruned, full = results[(mode, True)]["ms"], results[(mode, False)]["ms"]
            change = (pruned["forward"] / full["forward"] - 1) * 100
            print(f"{mode:<18}pruned vs unpruned forward {change:+.1f}% ({full['forward'] / pruned['forward']:.2f}x); "
                  f"pruned {1e3 / pruned['total']:.1f} chunks/s with preprocessing")
    if cuda:
        print(f"max GPU memory allocated {torch.cuda.max_memory_allocated(param.device) / 2**30:.1f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "dtype": str(param.dtype), "size": args.size, "params": n_params,
            "torch": torch.__version__, "transformers": transformers.__version__, "timm": timm.__version__,
            "commit": commit(), "weight_bytes_read": weights, "bandwidth_tbs": bandwidth,
            "copy_bandwidth_tbs": copy_rate, "weight_read_limit_ms": limit_ms, "skipped": skipped, "notes": notes,
            "results": [dict(r, mode=mode) for (mode, _), r in results.items()]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
