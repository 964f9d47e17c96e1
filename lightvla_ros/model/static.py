"""The static-shape inference path: pruned sequences padded to length buckets, and the CUDA graphs
that replay each stage per bucket (docs/model.md "Static path and CUDA graphs").

After pruning, the LLM sequence `[BOS] [kept patches] [proprio] [prompt] [placeholders] [STOP]`
has a length that changes with every frame. Padding it up to a multiple of BUCKET_MULTIPLE gives
a handful of shapes, so each can be captured once as a CUDA graph and replayed: at batch 1 the 7B
LLM is bound by kernel launches in eager mode, and a replay issues the whole forward at once.

The padding goes right after the patch block (where the pruner already pads a batch to its
largest kept count) with attention mask 0. The LLM attends bidirectionally and a padded key gets
weight exactly 0 in every softmax; attention is the only place tokens meet (norms and MLPs are
per token), so the real tokens' hidden states do not depend on the padding. Real tokens keep
their position ids, and the action head's rows are counted from the end of the sequence, which
the padding does not move.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

cuda = torch.cuda  # every CUDA call of the graphed path goes through this name (tests replace it on CPU)

BUCKET_MULTIPLE = 16  # LLM sequence lengths are padded to a multiple of this (at most 15 padding tokens)
INFERENCE_PATHS = ("dynamic", "static", "graphed")
CAPTURE_WARMUP_RUNS = 2  # eager runs on a side stream before a capture (lazy cuBLAS / allocator set-up)


def resolve_inference_path(requested: str, device: torch.device | str, compile: bool = False) -> str:
    """auto -> the fastest path the device supports; graphed on a CPU -> static (no graphs there).

    auto: graphed on CUDA (unless compile is on: torch.compile's own path is the dynamic one, and
    graphs over compiled code are opt-in), dynamic on CPU (measured faster there, docs/benchmarks.md).
    """
    requested = str(requested).lower()
    if requested not in ("auto", *INFERENCE_PATHS):
        raise ValueError(f"inference_path must be auto or one of {list(INFERENCE_PATHS)}, got {requested!r}")
    cuda = torch.device(device).type == "cuda"
    if requested == "auto":
        return "graphed" if cuda and not compile else "dynamic"
    if requested == "graphed" and not cuda:
        return "static"  # the same static path, without graphs
    return requested


def bucket_length(length: int, multiple: int = BUCKET_MULTIPLE) -> int:
    """The smallest multiple of `multiple` that holds `length` tokens."""
    return -(-int(length) // multiple) * multiple


def bucket_lengths(shortest: int, longest: int, multiple: int = BUCKET_MULTIPLE) -> list[int]:
    """Every bucket a sequence of `shortest` to `longest` tokens can land in."""
    return list(range(bucket_length(shortest, multiple), bucket_length(longest, multiple) + 1, multiple))


def pad_to_bucket(tokens: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                  patch_end: int, length: int):
    """Insert `length - L` padding slots at `patch_end` (right after the patch block).

    tokens (B, L, D), position_ids / attention_mask (B, L) -> (B, length, ...). Padding: zero
    vectors, mask 0, position id of the slot before it (as the pruner pads a batch); every real
    token keeps its value, position id and mask entry.
    """
    bsz, seq_len, dim = tokens.shape
    pad = length - seq_len
    if pad < 0:
        raise ValueError(f"cannot pad a sequence of {seq_len} tokens to {length}")
    if pad == 0:
        return tokens, position_ids, attention_mask
    pad_tokens = tokens.new_zeros(bsz, pad, dim)
    pad_pos = position_ids[:, patch_end - 1:patch_end].expand(-1, pad)
    pad_mask = attention_mask.new_zeros(bsz, pad)

    def insert(x, filler):
        return torch.cat([x[:, :patch_end], filler, x[:, patch_end:]], dim=1)

    return insert(tokens, pad_tokens), insert(position_ids, pad_pos), insert(attention_mask, pad_mask)


class GraphCaptureError(RuntimeError):
    """A stage could not be captured, or its replay disagreed with the eager run it was captured from."""


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list  # static input buffers (None where the stage takes None)
    output: torch.Tensor


class CUDAGraphs:
    """Replays each stage from a CUDA graph captured once per input signature (stage, function,
    shapes, dtypes, static arguments), all graphs in one memory pool.

    Stages never run concurrently and each output is cloned after its replay, so the graphs can
    share the pool (a later capture may reuse another graph's intermediates). Every capture is
    checked: its first replay must equal the eager run on the same inputs, else GraphCaptureError.
    """

    def __init__(self, device: torch.device):
        if not cuda.is_available():
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.device = torch.device(device)
        self.pool = cuda.graph_pool_handle()
        self.graphs: dict[tuple, _Graph] = {}
        self.capture_s = 0.0

    @staticmethod
    def key(name: str, fn, args: tuple, static: dict) -> tuple:
        sig = tuple(None if a is None else (tuple(a.shape), a.dtype) for a in args)
        return (name, fn, sig, tuple(sorted(static.items())))

    def __call__(self, name: str, fn, *args, **static) -> torch.Tensor:
        """fn(*args, **static) -> one tensor; args are tensors (or None), static are plain values."""
        with torch.inference_mode():
            key = self.key(name, fn, args, static)
            entry = self.graphs.get(key)
            if entry is None:
                entry = self.graphs[key] = self._capture(fn, args, static)
            for buf, a in zip(entry.inputs, args):
                if buf is not None:
                    buf.copy_(a)
            entry.graph.replay()
            return entry.output.clone()  # the pool's memory may be reused by another graph's replay

    def _capture(self, fn, args: tuple, static: dict) -> _Graph:
        t0 = time.perf_counter()
        with cuda.device(self.device):
            inputs = [None if a is None else a.detach().clone() for a in args]
            side = cuda.Stream()
            side.wait_stream(cuda.current_stream())
            with cuda.stream(side):
                for _ in range(CAPTURE_WARMUP_RUNS):
                    expected = fn(*inputs, **static)
            cuda.current_stream().wait_stream(side)
            graph = cuda.CUDAGraph()
            with cuda.graph(graph, pool=self.pool):
                output = fn(*inputs, **static)
            graph.replay()
            cuda.synchronize()
        if not replay_matches(output, expected):
            raise GraphCaptureError(f"replay differs from the eager run (output {tuple(output.shape)})")
        self.capture_s += time.perf_counter() - t0
        return _Graph(graph, inputs, output)


def replay_matches(output: torch.Tensor, expected: torch.Tensor) -> bool:
    """The replay runs the eager run's kernels on the same inputs: equal up to float noise."""
    if output.shape != expected.shape or output.dtype != expected.dtype:
        return False
    if not output.is_floating_point():
        return bool(torch.equal(output, expected))
    out, exp = output.float(), expected.float()
    finite = exp[torch.isfinite(exp)]
    scale = max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0)
    return bool(torch.isclose(out, exp, rtol=0, atol=1e-3 * scale, equal_nan=True).all())  # NaN where eager has NaN


def held_memory(device: torch.device) -> int:
    """Bytes the caching allocator holds on `device` once its unused cache is released: what live
    tensors and captured graphs' private pools occupy."""
    cuda.synchronize(device)
    cuda.empty_cache()
    return cuda.memory_reserved(device)


class GraphedStages:
    """The model's stages through CUDAGraphs, falling back to running them eagerly (the same static
    path) if a capture fails: the robot keeps a working policy, and `failure` says why."""

    def __init__(self, device: torch.device):
        self.graphs = CUDAGraphs(device)
        self.failure: str | None = None

    def __call__(self, name: str, fn, *args, **static) -> torch.Tensor:
        if self.failure is None:
            try:
                return self.graphs(name, fn, *args, **static)
            except Exception as e:  # noqa: BLE001  (any capture problem: run eagerly from now on)
                self.failure = f"{name}: {type(e).__name__}: {str(e)[:300]}"
                self.graphs.graphs.clear()
                warnings.warn(f"CUDA graphs disabled, running the static path eagerly ({self.failure})",
                              RuntimeWarning, stacklevel=2)
        return fn(*args, **static)

    @property
    def count(self) -> int:
        return len(self.graphs.graphs)

    def captured(self, name: str) -> int:
        """Graphs captured for one stage (llm: one per bucket and batch size)."""
        return sum(key[0] == name for key in self.graphs.graphs)
