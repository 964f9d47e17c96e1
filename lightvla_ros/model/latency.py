"""Measure predict_action latency, pruned (LightVLA) vs unpruned (OpenVLA-OFT), in one run.

    python -m lightvla_ros.model.latency CHECKPOINT_DIR [--device auto] [--dtype auto] [--repeats 10]
    python -m lightvla_ros.model.latency --size 7b     # random weights at the real 7B geometry, no files

Random weights make the pruner's keep counts meaningless (they collapse to a few patches);
with a trained checkpoint they are the real ones. Prints one JSON line per mode.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from .checkpoint import _materialize_buffers, build_vla, load_vla
from .config import get_platform, resolve_device, resolve_dtype
from .make_checkpoint import make_config, make_statistics
from .tokenizer import PromptTokenizer, build_llama_like_tokenizer


def random_vla(size: str = "7b", platform: str = "libero", num_images: int = 2, device="auto", dtype="auto"):
    """A randomly initialised model built straight on the device (no CPU copy, no checkpoint)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    config = make_config(size, platform, num_images)
    vla = build_vla(config, get_platform(platform), num_images, device="meta").to(dtype)
    vla.to_empty(device=device)  # allocates once, already in the target dtype
    with torch.no_grad():
        for name, p in vla.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    _materialize_buffers(vla, device)  # rotary inv_freq, kept in float32
    key, stats = make_statistics(platform)
    vla.norm_stats, vla.default_unnorm_key = stats, key
    vla.tokenizer = PromptTokenizer(build_llama_like_tokenizer())
    return vla.eval()


# Peak memory bandwidth (TB/s, datasheet) by device name, most specific first; None: ask for --bandwidth-tbs
PEAK_BANDWIDTH_TBS = (("GH200", None), ("H200", 4.8), ("H100 NVL", 3.9), ("H100 PCIe", 2.0), ("H100", 3.35),
                      ("B200", 8.0), ("A100-SXM4-80GB", 2.039), ("A100 80GB PCIe", 1.935), ("A100", 1.555),
                      ("L40S", 0.864), ("RTX 4090", 1.008), ("RTX 3090", 0.936))


def peak_bandwidth_tbs(device_name: str) -> float | None:
    for key, tbs in PEAK_BANDWIDTH_TBS:
        if key in device_name:
            return tbs
    return None


def copy_bandwidth_tbs(device, gib: float = 1.0, repeats: int = 10) -> float:
    """Measured device-to-device copy rate (bytes read + written per second), in TB/s."""
    src = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    rate = 2 * src.numel() * repeats / (time.perf_counter() - t0) / 1e12
    del src, dst
    torch.cuda.empty_cache()
    return rate


def weight_bytes_read(vla) -> int:
    """Bytes of weights one forward reads, the floor of its memory traffic at batch 1: each ViT up to
    the block whose features are taken, projectors, the LLM's layers and final norm, the action head.
    Not read: the ViTs' later blocks and heads, the embedding table (a few rows), the LM head."""
    def size(params):
        return sum(p.numel() * p.element_size() for p in params)

    total = 0
    backbone = vla.vision_backbone
    for f in [backbone.featurizer] + ([backbone.fused_featurizer] if backbone.use_fused else []):
        used = len(f.blocks) - 1  # blocks 0 .. n-2 (stop_early)
        total += size(p for name, p in f.named_parameters()
                      if name.startswith(("patch_embed.", "cls_token", "reg_token", "pos_embed", "norm_pre."))
                      or (name.startswith("blocks.") and int(name.split(".")[1]) < used))
    llm = vla.language_model.model
    total += size(llm.layers.parameters()) + size(llm.norm.parameters())
    for module in (vla.projector, vla.proprio_projector, vla.action_head):
        if module is not None:
            total += size(module.parameters())
    return total


def measure(vla, repeats: int = 10, warmup: int = 2) -> dict:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(vla.num_images)]
    proprio = np.zeros(vla.platform.proprio_dim, np.float32)
    runs = []
    for i in range(warmup + repeats):
        pred = vla.predict_action(images, "pick up the alphabet soup and place it in the basket", proprio)
        if i >= warmup:
            runs.append(pred)
    keys = runs[0].timings.keys()
    out = {k: statistics.median(r.timings[k] for r in runs) * 1000 for k in keys}
    return {"prune": vla.prune, "kept_total": runs[-1].kept_total, "llm_length": vla.last_llm_length,
            "ms": {k: round(v, 2) for k, v in out.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightvla_ros.model.latency")
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--size", default="7b")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.checkpoint:
        vla = load_vla(args.checkpoint, device=args.device, dtype=args.dtype)
    else:
        vla = random_vla(args.size, device=args.device, dtype=args.dtype)
    param = next(vla.parameters())
    info = {"device": str(param.device), "dtype": str(param.dtype), "load_s": round(time.perf_counter() - t0, 1),
            "source": args.checkpoint or f"random {args.size}"}
    if param.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(param.device)
    for prune in (True, False):
        vla.prune = prune
        print(json.dumps(dict(info, **measure(vla, args.repeats))), flush=True)
    if param.device.type == "cuda":
        print(json.dumps({"max_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
