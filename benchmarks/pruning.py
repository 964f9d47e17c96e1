"""Pruning benchmark: Llama-2-7B decoder layers on unpruned vs TokenPruner-pruned sequences.

Usage: .venv/bin/python benchmarks/pruning.py [--layers 2] [--repeats 4] [--kept 78 150 256]
       [--device cpu|cuda] [--dtype float32|bfloat16]

Real layer geometry (hidden 4096, 32 heads, intermediate 11008), random init, fp32, CPU,
bidirectional attention (config.is_causal = False) with a 2-D attention mask, as OFT runs it.
The sequence is [BOS] + 512 patches (2 images) + 80 text tokens = 593 tokens. Kept counts come
out of the TokenPruner in eval mode: the patches hold exactly K distinct vectors, each copy
votes for a copy of its own vector, and the pruner's kept count is asserted to be K.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
from lightvla_ros.model.pruner import TokenPruner  # noqa: E402

HIDDEN, HEADS, INTERMEDIATE = 4096, 32, 11008  # Llama-2-7B
NUM_PATCHES, NUM_TEXT = 512, 80  # 2 images x 256 patches; prompt + proprio + action slots


def voting_sequence(num_kept, gen):
    """[BOS] + 512 patches with exactly `num_kept` distinct vectors + 80 task tokens: (1, 593, D).

    Task tokens are +-e_d for d < 40, so a patch's task-aware query points along its own
    component in that subspace (small attention logits keep softmax nearly linear); each
    group of duplicates therefore votes for one of its own copies.
    """
    m = NUM_TEXT // 2
    alpha = 0.5 * m ** 0.5 / HIDDEN ** 0.5  # attention logits around 0.5
    a = F.normalize(torch.randn(num_kept, m, generator=gen), dim=-1) * alpha
    b = F.normalize(torch.randn(num_kept, HIDDEN - m, generator=gen), dim=-1)
    reps = torch.cat([a, b * (1 - alpha ** 2) ** 0.5], dim=-1)  # (K, D), unit norm
    groups = torch.cat([torch.arange(num_kept),
                        torch.randint(0, num_kept, (NUM_PATCHES - num_kept,), generator=gen)])
    groups = groups[torch.randperm(NUM_PATCHES, generator=gen)]  # (P,)
    eye = torch.eye(HIDDEN)[:m]
    task = torch.cat([eye, -eye])  # (T, D)
    bos = torch.randn(1, HIDDEN, generator=gen)
    return torch.cat([bos, reps[groups], task])[None]


def timed_ms(fn, sync):
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - start) * 1e3


def check_bidirectional(llm, device, dtype):
    """A later token must change an earlier position's output, else attention is causal."""
    x = torch.randn(1, 8, HIDDEN, device=device, dtype=dtype)
    y = x.clone()
    y[0, -1] += 1
    mask = torch.ones(1, 8, dtype=torch.long, device=device)
    with torch.inference_mode():
        a = llm(inputs_embeds=x, attention_mask=mask).last_hidden_state[0, 0]
        b = llm(inputs_embeds=y, attention_mask=mask).last_hidden_state[0, 0]
    if torch.equal(a, b):
        raise RuntimeError("attention is causal: config.is_causal=False had no effect")


def layer_flops(seq_len):
    """Per-layer FLOPs: projections 2L(4D^2 + 3DI) plus attention scores and mixing 4L^2 D."""
    return 2 * seq_len * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE) \
        + 4 * seq_len * seq_len * HIDDEN


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--kept", type=int, nargs="+", default=[78, 150, 256])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if not all(1 <= k <= NUM_PATCHES for k in args.kept):
        parser.error(f"--kept values must lie in [1, {NUM_PATCHES}]")

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # all cores this process may use
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    config = LlamaConfig(hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                         intermediate_size=INTERMEDIATE, num_hidden_layers=args.layers,
                         vocab_size=32, max_position_embeddings=4096)
    config.is_causal = False  # OFT's parallel decoding is bidirectional
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    with torch.device(device):  # inputs_embeds only, so a tiny vocabulary suffices
        llm = LlamaModel(config).to(dtype).eval()
    check_bidirectional(llm, device, dtype)
    pruner = TokenPruner(config, NUM_PATCHES).eval()

    def run_layers(tokens, position_ids, attention_mask):
        return llm(inputs_embeds=tokens, position_ids=position_ids,
                   attention_mask=attention_mask).last_hidden_state

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cases = []  # (kept, tokens, position_ids, attention_mask), all produced by the pruner
    with torch.inference_mode():
        for kept in [None] + list(args.kept):
            tokens = voting_sequence(kept or NUM_PATCHES, gen).to(device, dtype)  # (1, 593, D)
            seq_len = tokens.shape[1]
            position_ids = torch.arange(seq_len, device=device)[None]
            attention_mask = torch.ones(1, seq_len, dtype=torch.long, device=device)
            if kept is not None:
                tokens, position_ids, attention_mask = pruner(tokens, position_ids, attention_mask)
                got = int(pruner.last_kept_counts[0])
                assert got == kept, f"pruner kept {got} visual tokens, expected {kept}"
                assert tokens.shape[1] == 1 + kept + NUM_TEXT
            cases.append((kept or NUM_PATCHES, tokens, position_ids, attention_mask))

        base = cases[0][1:]
        pruner_times = [timed_ms(lambda: pruner(*base), sync) for _ in range(args.repeats + 3)]
        # warm up, then interleave the cases so a shared CPU's load hits them alike
        times = {kept: [] for kept, *_ in cases}
        for round_ in range(args.repeats + 1):
            for kept, *inputs in cases:
                ms = timed_ms(lambda: run_layers(*inputs), sync)
                if round_ > 0:
                    times[kept].append(ms / args.layers)

    pruner_ms = statistics.median(pruner_times)
    rows = [(kept, tokens.shape[1], statistics.median(times[kept]), min(times[kept]))
            for kept, tokens, *_ in cases]
    base_len, base_ms = rows[0][1], rows[0][2]
    load = ", load average %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, {args.device} {args.dtype}, threads "
          f"{torch.get_num_threads()}{load}; {args.layers} Llama-2-7B decoder layers "
          f"(bidirectional), {args.repeats} interleaved rounds")
    print(f"{'kept visual':>11} {'seq len':>7} {'ms/layer':>9} {'min ms':>8} {'speed-up':>8} "
          f"{'latency -%':>10} {'FLOPs ratio':>11} {'FLOPs -%':>8} {'32 layers ms':>12}")
    for kept, seq_len, ms, min_ms in rows:
        flops_ratio = layer_flops(seq_len) / layer_flops(base_len)
        full = 32 * ms + (pruner_ms if kept < NUM_PATCHES else 0)  # + pruner once
        print(f"{kept:>11} {seq_len:>7} {ms:>9.3f} {min_ms:>8.3f} {base_ms / ms:>8.2f} "
              f"{100 * (1 - ms / base_ms):>10.1f} {flops_ratio:>11.3f} "
              f"{100 * (1 - flops_ratio):>8.1f} {full:>12.1f}")
    print(f"TokenPruner cost at {NUM_PATCHES} patches + {NUM_TEXT} task tokens: "
          f"{pruner_ms:.3f} ms median (once per forward, before layer 0)")
    print("ms/layer = median; speed-up = unpruned ms / pruned ms; FLOPs ratio = pruned /"
          " unpruned per layer; '32 layers ms' extrapolates to the full LLM, pruner included"
          " when pruned")


if __name__ == "__main__":
    main()
