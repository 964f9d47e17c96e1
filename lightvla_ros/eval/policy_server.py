"""One model for many simulators: observations from several sim workers batched into one forward pass.

BatchingPolicy (no Ray) queues `infer` calls and runs them as `policy.infer_batch` batches: a batch
starts with the first waiting request and closes when `max_batch` requests are in or `max_wait_s`
has passed, whichever comes first; requests arriving during a forward pass form the next batch.
The forward pass runs on a worker thread, so the queue keeps filling meanwhile.

PolicyServer is that, holding a VLAPolicy, as a Ray actor (lightvla_ros.eval.ray_eval starts it
once per run, with max_restarts / max_task_retries: a killed server is restarted and its in-flight
requests are retried); RemotePolicy is what a sim worker holds instead of a model: the policy API
(`infer`, `reset`, `chunk_size`, ...) with each call sent to the server.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from lightvla_ros.policy.types import Observation, PolicyOutput


class BatchingPolicy:
    """Batches concurrent `await infer(obs)` calls into `policy.infer_batch` calls."""

    def __init__(self, policy, max_batch: int = 8, max_wait_s: float = 0.005):
        if int(max_batch) < 1 or float(max_wait_s) < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        self.policy = policy
        self.max_batch, self.max_wait_s = int(max_batch), float(max_wait_s)
        self._queue: asyncio.Queue | None = None
        self._loop_task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self.started = time.monotonic()
        self.busy_s = 0.0           # time spent in forward passes
        self.batch_sizes: Counter = Counter()

    async def infer(self, obs: Observation) -> tuple[PolicyOutput, int]:
        """-> (the chunk, the size of the batch it ran in)."""
        validate = getattr(self.policy, "validate", None)
        if validate is not None:
            validate(obs)  # a bad observation fails its own request, not the batch it would join
        if self._loop_task is None or self._loop_task.done():
            self._queue = asyncio.Queue()
            self._loop_task = asyncio.get_running_loop().create_task(self._serve())
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((obs, done))
        return await done

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            observations = [obs for obs, _ in batch]
            t0 = time.monotonic()
            try:
                outputs = await loop.run_in_executor(self._executor, self.policy.infer_batch, observations)
                error = None
            except Exception as e:  # noqa: BLE001  (handed to every caller of the batch)
                outputs, error = None, e
            self.busy_s += time.monotonic() - t0
            self.batch_sizes[len(batch)] += 1
            for i, (_, done) in enumerate(batch):
                if done.cancelled():
                    continue
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result((outputs[i], len(batch)))

    def stats(self) -> dict:
        uptime = time.monotonic() - self.started
        batches = sum(self.batch_sizes.values())
        return {"pid": os.getpid(), "uptime_s": uptime, "busy_s": self.busy_s,
                "busy_fraction": self.busy_s / uptime if uptime > 0 else 0.0, "batches": batches,
                "requests": sum(k * v for k, v in self.batch_sizes.items()),
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "max_batch": self.max_batch, "max_wait_s": self.max_wait_s}


class PolicyServer:
    """Ray actor body: loads the checkpoint once (on the GPU it was given, or the CPU) and serves
    batched inference. All methods are async: Ray runs them on one event loop."""

    def __init__(self, checkpoint: str, device: str = "cpu", dtype: str = "auto", max_batch: int = 8,
                 max_wait_s: float = 0.005, **policy_kwargs):
        from lightvla_ros.policy.vla_policy import VLAPolicy

        self.policy = VLAPolicy(checkpoint, device=device, dtype=dtype, **policy_kwargs)
        self.device = str(self.policy.device)
        self.batching = BatchingPolicy(self.policy, max_batch, max_wait_s)

    async def describe(self) -> dict:
        p = self.policy
        return {"chunk_size": p.chunk_size, "action_dim": p.action_dim, "action_space": p.action_space,
                "uses_proprio": p.uses_proprio, "proprio_dim": p.proprio_dim, "num_images": p.num_images,
                "action_rows": p.action_rows, "pid": os.getpid(), "device": self.device}

    async def infer(self, obs: Observation) -> tuple[PolicyOutput, int, int]:
        """-> (chunk, batch size, server pid)."""
        out, batch_size = await self.batching.infer(obs)
        return out, batch_size, os.getpid()

    async def stats(self) -> dict:
        return {**self.batching.stats(), "device": self.device, **gpu_utilisation(self.device)}


def gpu_utilisation(device: str) -> dict:
    """What the GPU reports about itself (NVML through torch), {} on a CPU or without NVML."""
    if not device.startswith("cuda"):
        return {}
    try:
        import torch

        return {"gpu_utilisation_percent": float(torch.cuda.utilization(torch.device(device))),
                "gpu_memory_allocated_bytes": int(torch.cuda.memory_allocated(torch.device(device)))}
    except Exception:  # noqa: BLE001  (pynvml missing or no permission: the report says nothing)
        return {}


def start_server(checkpoint: str, max_batch: int = 8, max_wait_s: float = 0.005, num_cpus: float = 1.0,
                 num_gpus: float = 0.0, max_restarts: int = 3, max_concurrency: int = 64, **policy_kwargs):
    """The PolicyServer actor. Ray restarts it up to max_restarts times when its process dies and
    resubmits the requests it had not answered (max_task_retries=-1: inference is idempotent)."""
    import ray

    return ray.remote(PolicyServer).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, max_task_retries=-1,
        max_concurrency=max_concurrency).remote(checkpoint, max_batch=max_batch, max_wait_s=max_wait_s,
                                                 **policy_kwargs)


class RemotePolicy:
    """The policy API for a sim worker, backed by a PolicyServer actor handle."""

    def __init__(self, server, timeout_s: float = 600.0):
        import ray

        self.server, self.timeout_s = server, float(timeout_s)
        self._ray = ray
        self.spec = ray.get(server.describe.remote(), timeout=self.timeout_s)
        self.last_batch_size = 0
        self.last_server_pid: int | None = None

    def __getattr__(self, name):  # chunk_size, action_dim, action_space, uses_proprio, ...
        spec = self.__dict__.get("spec") or {}
        if name in spec:
            return spec[name]
        raise AttributeError(name)

    def reset(self) -> None:
        """New episode: the server is stateless."""

    def infer(self, obs: Observation) -> PolicyOutput:
        out, self.last_batch_size, self.last_server_pid = self._ray.get(self.server.infer.remote(obs),
                                                                        timeout=self.timeout_s)
        return out
