"""Action-chunk execution: which action runs at each control step. No ROS; time is passed in, as
integer nanoseconds (policy/clock.py), the control period too.

The caller (policy node, sim runner, bag replay) drives a scheduler with its own clock:

    if sched.wants_inference(now):          # ask for a new chunk
        sched.inference_started(now)         # ... hand the observation to the model ...
    sched.add_chunk(actions, obs_stamp, now) # when the chunk (chunk_size, action_dim) is back
    action = sched.next_action(now)          # once per control step; None = nothing to execute

Three schedulers, picked by name with `make_scheduler`:
- open_loop:          execute K steps of a chunk, then re-infer; the robot waits (OFT LIBERO protocol).
- async:              request the next chunk while the current one runs, early enough to land before
                      it runs out; drop the steps that passed since the new chunk's observation and
                      blend the overlap with what is left of the old chunk.
- temporal_ensemble:  ACT: every step averages all chunks covering it, w_i = exp(-m * i), i = 0 oldest.

A step counts as executed when next_action returns an action. A "missed step" is a next_action call
with nothing to execute once the first chunk has arrived; a "pause" is a run of missed steps
(a stop at a chunk boundary).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from operator import index
from typing import Sequence

import numpy as np

SCHEDULERS = ("open_loop", "async", "temporal_ensemble")


@dataclass
class SchedulerStats:
    steps: int = 0            # actions handed out
    missed_steps: int = 0     # steps with nothing to execute (after the first chunk)
    pauses: int = 0           # runs of consecutive missed steps
    chunks: int = 0           # chunks accepted
    dropped_steps: int = 0    # chunk steps skipped by delay compensation
    discarded_chunks: int = 0  # chunks that arrived entirely in the past


class ChunkScheduler:
    """Shared bookkeeping: in-flight request, latency estimate, executed step times, pause counting."""

    name = "base"

    def __init__(self, chunk_size: int, action_dim: int, control_period: int, latency_window: int = 5):
        if chunk_size < 1 or action_dim < 1:
            raise ValueError(f"chunk_size and action_dim must be >= 1, got {chunk_size}, {action_dim}")
        if not control_period > 0:
            raise ValueError(f"control_period must be > 0 ns, got {control_period}")
        self.chunk_size = int(chunk_size)
        self.action_dim = int(action_dim)
        self.control_period = index(control_period)
        self._latencies: deque[int] = deque(maxlen=latency_window)
        self.stats = SchedulerStats()
        self.reset()

    # --- state ---
    def reset(self) -> None:
        """Forget queued actions and any request in flight (stats and latency estimate are kept)."""
        self._in_flight = False
        self._requested_at: int | None = None
        self._started = False          # a chunk has arrived since the last reset
        self._in_pause = False
        self._step_index = 0           # index of the next step to execute
        self._step_times: deque[int] = deque(maxlen=4096)
        self._reset_queue()

    def _reset_queue(self) -> None:
        raise NotImplementedError

    @property
    def latency_estimate(self) -> int | None:
        """Nanoseconds from request to chunk; the max of the last few, so jitter does not cause pauses."""
        return max(self._latencies) if self._latencies else None

    @property
    def queued_steps(self) -> int:
        """Steps that can still be executed without a new chunk."""
        raise NotImplementedError

    # --- inference requests ---
    def wants_inference(self, now: int) -> bool:
        return not self._in_flight and self._wants(now)

    def inference_started(self, now: int) -> None:
        self._in_flight = True
        self._requested_at = index(now)

    def inference_failed(self, now: int) -> None:
        """The request came back without a chunk (rejected, error): allow a new one."""
        self._in_flight = False
        self._requested_at = None

    def add_chunk(self, actions: np.ndarray, obs_stamp: int, now: int) -> None:
        """actions: (T, action_dim), step 0 meant for the time of the observation `obs_stamp`."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != self.action_dim:
            raise ValueError(f"chunk must be (T>=1, {self.action_dim}), got {actions.shape}")
        start = self._requested_at if self._requested_at is not None else index(obs_stamp)
        self._latencies.append(max(0, index(now) - start))
        self._in_flight = False
        self._requested_at = None
        self._started = True
        self.stats.chunks += 1
        self._accept(actions, index(obs_stamp), index(now))

    def steps_since(self, obs_stamp: int) -> int:
        """Executed steps that fall at or after the observation (within half a period)."""
        limit = obs_stamp - self.control_period // 2
        n = 0
        for t in reversed(self._step_times):
            if t < limit:
                break
            n += 1
        return n

    # --- stepping ---
    def next_action(self, now: int) -> np.ndarray | None:
        """The action for the control step at `now`, (action_dim,) float32, or None (nothing queued)."""
        action = self._pop(index(now))
        if action is None:
            if self._started:
                self.stats.missed_steps += 1
                if not self._in_pause:
                    self.stats.pauses += 1
                self._in_pause = True
            return None
        self._in_pause = False
        self.stats.steps += 1
        self._step_times.append(index(now))
        self._step_index += 1
        return np.array(action, dtype=np.float32, copy=True)

    # --- per scheduler ---
    def _wants(self, now: int) -> bool:
        raise NotImplementedError

    def _accept(self, actions: np.ndarray, obs_stamp: int, now: int) -> None:
        raise NotImplementedError

    def _pop(self, now: int) -> np.ndarray | None:
        raise NotImplementedError


class OpenLoopScheduler(ChunkScheduler):
    """Execute the first K steps of each chunk, then ask again; nothing runs while inferring."""

    name = "open_loop"

    def __init__(self, chunk_size: int, action_dim: int, control_period: int, steps: int | None = None, **kw):
        self.steps_per_chunk = int(steps) if steps else int(chunk_size)
        if not 1 <= self.steps_per_chunk <= chunk_size:
            raise ValueError(f"open_loop steps must be in [1, {chunk_size}], got {steps}")
        super().__init__(chunk_size, action_dim, control_period, **kw)

    def _reset_queue(self) -> None:
        self._queue: deque[np.ndarray] = deque()

    @property
    def queued_steps(self) -> int:
        return len(self._queue)

    def _wants(self, now: int) -> bool:
        return not self._queue

    def _accept(self, actions: np.ndarray, obs_stamp: int, now: int) -> None:
        # The robot waited for this chunk, so step 0 is still the right first action.
        self._queue = deque(actions[: self.steps_per_chunk])

    def _pop(self, now: int) -> np.ndarray | None:
        return self._queue.popleft() if self._queue else None


def blend_weights(blend: str | Sequence[float], n: int) -> np.ndarray:
    """Weight of the NEW chunk at each of n overlapping steps, (n,) in [0, 1]; old gets 1 - w."""
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    if isinstance(blend, str):
        if blend == "linear":      # hand over gradually from old to new
            return (np.arange(1, n + 1, dtype=np.float32) / (n + 1)).astype(np.float32)
        if blend == "none":        # the new chunk replaces the old one at once
            return np.ones(n, dtype=np.float32)
        raise ValueError(f"unknown blend {blend!r}: use 'linear', 'none' or a list of weights in [0, 1]")
    w = np.asarray(list(blend), dtype=np.float32)
    if w.size == 0 or np.any(~np.isfinite(w)) or np.any(w < 0) or np.any(w > 1):
        raise ValueError(f"blend weights must be a non-empty list of values in [0, 1], got {list(blend)}")
    idx = np.minimum(np.arange(n), w.size - 1)  # the last weight repeats
    return w[idx]


class AsyncScheduler(ChunkScheduler):
    """Request the next chunk while the current one runs, so it lands before the queue runs out."""

    name = "async"

    def __init__(self, chunk_size: int, action_dim: int, control_period: int,
                 blend: str | Sequence[float] = "linear", latency_margin_steps: int = 1,
                 delay_compensation: bool = True, **kw):
        self.blend = blend
        blend_weights(blend, 1)  # validate now, not at the first chunk
        self.latency_margin_steps = int(latency_margin_steps)
        self.delay_compensation = bool(delay_compensation)
        self.last_blend_weights = np.zeros(0, dtype=np.float32)  # weights used for the last overlap
        super().__init__(chunk_size, action_dim, control_period, **kw)

    def _reset_queue(self) -> None:
        self._queue: list[np.ndarray] = []

    @property
    def queued_steps(self) -> int:
        return len(self._queue)

    def lead_steps(self) -> int:
        """Request when this many steps (or fewer) are left: latency in steps plus a margin."""
        lat = self.latency_estimate or 0
        return -(-lat // self.control_period) + self.latency_margin_steps  # ceil, exact in integers

    def _wants(self, now: int) -> bool:
        return len(self._queue) <= self.lead_steps()

    def _accept(self, actions: np.ndarray, obs_stamp: int, now: int) -> None:
        drop = self.steps_since(obs_stamp) if self.delay_compensation else 0
        if drop >= actions.shape[0]:  # the whole chunk is in the past: keep executing the old one
            self.stats.discarded_chunks += 1
            self.stats.dropped_steps += actions.shape[0]
            return
        self.stats.dropped_steps += drop
        new = actions[drop:]
        old = np.asarray(self._queue, dtype=np.float32).reshape(-1, self.action_dim)
        n = min(len(old), len(new))
        w = blend_weights(self.blend, n)[:, None]                  # (n, 1)
        merged = (1.0 - w) * old[:n] + w * new[:n]                 # (n, action_dim)
        tail = new[n:] if len(new) > n else old[n:]
        self.last_blend_weights = w[:, 0].copy()
        self._queue = list(merged) + list(tail)

    def _pop(self, now: int) -> np.ndarray | None:
        return self._queue.pop(0) if self._queue else None


class TemporalEnsembleScheduler(ChunkScheduler):
    """ACT temporal ensembling: average every chunk that covers the step, w_i = exp(-m * i)."""

    name = "temporal_ensemble"

    def __init__(self, chunk_size: int, action_dim: int, control_period: int, m: float = 0.01,
                 query_every: int = 1, **kw):
        if not m >= 0:
            raise ValueError(f"ensemble m must be >= 0, got {m}")
        self.m = float(m)
        self.query_every = max(1, int(query_every))
        self.last_weights = np.zeros(0, dtype=np.float32)  # normalised weights of the last step, oldest first
        super().__init__(chunk_size, action_dim, control_period, **kw)

    def _reset_queue(self) -> None:
        self._chunks: list[tuple[int, np.ndarray]] = []   # (step index of action 0, (T, action_dim))
        self._last_request_step: int | None = None

    @property
    def queued_steps(self) -> int:
        k = self._step_index
        return max((s + len(a) - k for s, a in self._chunks), default=0)

    def inference_started(self, now: int) -> None:
        super().inference_started(now)
        self._last_request_step = self._step_index

    def _wants(self, now: int) -> bool:
        if self._last_request_step is None or self.queued_steps == 0:
            return True
        return self._step_index - self._last_request_step >= self.query_every

    def _accept(self, actions: np.ndarray, obs_stamp: int, now: int) -> None:
        start = self._step_index - self.steps_since(obs_stamp)
        if start + actions.shape[0] <= self._step_index:
            self.stats.discarded_chunks += 1
            return
        self._chunks.append((start, actions))

    def _pop(self, now: int) -> np.ndarray | None:
        k = self._step_index
        self._chunks = [(s, a) for s, a in self._chunks if s + len(a) > k]  # drop chunks that ended
        rows = [a[k - s] for s, a in self._chunks if s <= k]                 # oldest first
        if not rows:
            return None
        w = np.exp(-self.m * np.arange(len(rows), dtype=np.float64))
        w /= w.sum()
        self.last_weights = w.astype(np.float32)
        return (w[:, None] * np.stack(rows).astype(np.float64)).sum(axis=0).astype(np.float32)


def make_scheduler(name: str, chunk_size: int, action_dim: int, control_period: int, *,
                   open_loop_steps: int | None = None, blend: str | Sequence[float] = "linear",
                   latency_margin_steps: int = 1, delay_compensation: bool = True,
                   ensemble_m: float = 0.01, query_every: int = 1) -> ChunkScheduler:
    """A scheduler by name (see SCHEDULERS); options that do not apply to it are ignored."""
    if name == "open_loop":
        return OpenLoopScheduler(chunk_size, action_dim, control_period, steps=open_loop_steps)
    if name == "async":
        return AsyncScheduler(chunk_size, action_dim, control_period, blend=blend,
                              latency_margin_steps=latency_margin_steps, delay_compensation=delay_compensation)
    if name == "temporal_ensemble":
        return TemporalEnsembleScheduler(chunk_size, action_dim, control_period, m=ensemble_m,
                                         query_every=query_every)
    raise ValueError(f"unknown execution_mode {name!r}: use one of {', '.join(SCHEDULERS)}")
