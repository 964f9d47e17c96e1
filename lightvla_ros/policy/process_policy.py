"""VLAPolicy in a child process: the model runs on its own interpreter, so a forward pass never
holds the node's interpreter lock and the step timer keeps its period while the model computes.

    policy = ProcessPolicy("/ckpt", device="cuda")   # same arguments as VLAPolicy
    out = policy.infer(obs)                          # one request at a time (the inference worker)
    policy.close()

The child loads VLAPolicy and answers requests over a pipe. The camera images go through memory
both processes map (a memfd): two memcpys instead of 0.3 MB through the socket, which cost the node
~1 ms per request on a busy 2-core machine (docs/benchmarks.md); the rest of the observation and
the output are pickled (a few hundred bytes). It ignores SIGINT (Ctrl-C in a terminal
reaches the whole process group; the parent decides when to stop), exits when the parent closes
the pipe or dies. On CPU it uses all cores but one for torch, so the node's executor (the step
timer, the sensor callbacks) always has a core. The parent never imports torch: it loads only the tokenizer, to answer
`instruction_problem` without waiting for a forward pass in flight.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from .types import Observation, PolicyOutput

START_TIMEOUT_S = 900.0  # loading a 7B checkpoint from a slow disk
CORES_FOR_THE_NODE = 1   # CPU inference: torch threads = cores - this (at least 1)


class ModelProcessError(RuntimeError):
    """The child could not load the model or answer a request; the message names the cause."""


class ProcessPolicy:
    """The VLAPolicy interface (infer, warmup, reset, instruction_problem and the shape properties),
    served by a child process."""

    def __init__(self, checkpoint, **vla_kwargs):
        from lightvla_ros.model.tokenizer import PromptTokenizer

        # a plain child interpreter (no fork of a process with DDS threads and locks, and no
        # multiprocessing helper processes) talking pickles over a socket pair
        parent, child = socket.socketpair()
        self._lock = threading.Lock()   # one request on the pipe at a time
        self._images = ImageBuffer()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(child.fileno()), str(checkpoint), json.dumps(vla_kwargs),
             str(self._images.fd)], pass_fds=[child.fileno(), self._images.fd], stdin=subprocess.DEVNULL)
        child.close()
        self._conn = Connection(parent.detach())
        if not self._conn.poll(START_TIMEOUT_S):
            self.close()
            raise ModelProcessError(f"the model process did not start within {START_TIMEOUT_S:g} s")
        kind, info = self._conn.recv()
        if kind != "ready":
            self.close()
            raise ModelProcessError(info)
        self.info = info
        self._tokenizer = PromptTokenizer.from_file(Path(checkpoint) / "tokenizer.json")
        self.num_inferences = 0

    # ---- what the transport needs to know (from the child, once) ----------------------------
    chunk_size = property(lambda self: self.info["chunk_size"])
    action_dim = property(lambda self: self.info["action_dim"])
    proprio_dim = property(lambda self: self.info["proprio_dim"])
    num_images = property(lambda self: self.info["num_images"])
    action_space = property(lambda self: self.info["action_space"])
    action_rows = property(lambda self: self.info["action_rows"])

    def instruction_problem(self, instruction: str) -> str | None:
        """As VLAPolicy.instruction_problem, computed here (the child may be mid-inference)."""
        n = len(self._tokenizer.prompt_ids(instruction)) + self.info["fixed_positions"]
        limit = self.info["max_positions"]
        if n > limit:
            return (f"it makes a sequence of {n} positions (prompt, image patches, proprio, actions) but the "
                    f"model has {limit}")
        return None

    # ---- API --------------------------------------------------------------------------------
    def reset(self) -> None:
        self.num_inferences = 0   # the model is stateless: nothing to send

    def warmup(self, iterations: int = 1) -> PolicyOutput:
        return self._call("warmup", iterations)

    def infer(self, obs: Observation) -> PolicyOutput:
        out = self._call("infer", obs)   # the images are written to the shared buffer under the pipe's lock
        self.num_inferences += 1
        return out

    # ---- split calls: InferenceWorker sends where a request is made and receives on its thread
    def submit(self, obs: Observation) -> None:
        """Send one request; its reply comes from receive(). One in flight at a time, and not mixed
        with infer() / warmup() (the caller, InferenceWorker, keeps to that)."""
        payload = self._images.pack(obs)   # the child is idle: nothing reads the buffer now
        try:
            self._conn.send(("infer", payload))
        except (OSError, BrokenPipeError) as e:
            raise ModelProcessError(f"the model process is gone (exit code {self._proc.poll()}): "
                                    f"{type(e).__name__}") from None

    def receive(self, timeout: float) -> PolicyOutput | None:
        """The reply to submit(), or None if it did not come within `timeout` s."""
        try:
            if not self._conn.poll(timeout):
                return None
            status, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            raise ModelProcessError(f"the model process is gone (exit code {self._proc.poll()}): "
                                    f"{type(e).__name__}") from None
        if status == "error":
            raise ModelProcessError(value)
        self.num_inferences += 1
        return value

    def close(self, timeout: float = 1.0) -> None:
        """Stop the child: an idle one exits as the pipe closes; one mid-forward-pass is terminated
        (its result would be discarded anyway)."""
        try:
            self._conn.close()          # the child's recv ends: it exits
        except OSError:
            pass
        try:
            self._proc.wait(0.1)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._images.close()

    def _call(self, kind: str, payload):
        with self._lock:
            if kind == "infer":
                payload = self._images.pack(payload)
            try:
                self._conn.send((kind, payload))
                status, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as e:
                raise ModelProcessError(f"the model process is gone (exit code {self._proc.poll()}): "
                                   f"{type(e).__name__}") from None
        if status == "error":
            raise ModelProcessError(value)
        return value


class ImageBuffer:
    """The observation's images in memory both processes map: an anonymous memfd (nothing to clean
    up after a crash), grown by the parent as needed; the mapping's size travels with each request.
    One request at a time (ProcessPolicy's lock), so the parent never writes while the child reads."""

    def __init__(self, fd: int | None = None):
        self.fd = os.memfd_create("lightvla_images") if fd is None else fd
        self._map: mmap.mmap | None = None
        self.size = 0

    def _map_size(self, size: int) -> None:
        if size != self.size:
            self._map = mmap.mmap(self.fd, size) if size else None   # the old map closes when unreferenced
            self.size = size

    def pack(self, obs: Observation):
        """Parent: copy the images into the buffer -> (observation without images, layout, size).
        Anything but a list of uint8 arrays goes pickled as it is (the child's check names the problem)."""
        images = obs.images
        if not (isinstance(images, (list, tuple)) and images
                and all(isinstance(a, np.ndarray) and a.dtype == np.uint8 for a in images)):
            return obs
        need = sum(a.nbytes for a in images)
        if need > self.size:
            size = -(-max(need, 2 * self.size) // mmap.PAGESIZE) * mmap.PAGESIZE
            os.ftruncate(self.fd, size)
            self._map_size(size)
        layout, offset = [], 0
        for a in images:
            np.frombuffer(self._map, np.uint8, a.nbytes, offset).reshape(a.shape)[...] = a
            layout.append((offset, a.shape))
            offset += a.nbytes
        return dataclasses.replace(obs, images=[]), layout, self.size

    def unpack(self, payload) -> Observation:
        """Child: the observation with read-only views of its images in the buffer, valid until the
        reply is sent (the parent writes the next request only after it has the reply)."""
        if isinstance(payload, Observation):
            return payload
        obs, layout, size = payload
        self._map_size(size)
        images = []
        for offset, shape in layout:
            view = np.frombuffer(self._map, np.uint8, int(np.prod(shape)), offset).reshape(shape)
            view.flags.writeable = False
            images.append(view)
        return dataclasses.replace(obs, images=images)

    def close(self) -> None:
        self._map = None
        try:
            os.close(self.fd)
        except OSError:
            pass


# glibc mallopt parameters: buffers under MMAP_THRESHOLD come from the heap, and the heap keeps up
# to TRIM_THRESHOLD free instead of returning it to the kernel
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BUFFERS_BELOW = 16 * 2**20   # 16 MiB: a request's input and output tensors (2.4 MB for two 224 px images)
KEEP_FREE_HEAP = 1 * 2**30


def keep_buffers_mapped() -> bool:
    """Reuse the heap for each request's buffers instead of mapping and unmapping them (glibc).

    With glibc's defaults, every request's megabyte-sized tensors are fresh mmaps, unmapped when the
    call returns: 0.42 ms per call with the tiny checkpoint (two 224 px images), measured as the
    time predict_action took beyond its own `total` timer; 0.07 ms with these settings
    (2026-12-03, docs/benchmarks.md). False where there is no glibc mallopt (nothing changes)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BUFFERS_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE_HEAP))


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def _serve(conn, checkpoint: str, vla_kwargs: dict, images: ImageBuffer) -> None:
    """The child: load the model, then answer (kind, payload) requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_buffers_mapped()   # the process does nothing but answer requests: keep their buffers
    try:
        if str(vla_kwargs.get("device", "auto")).startswith("cpu") or not _cuda_available():
            import torch   # CPU inference leaves cores to the node: its executor runs the control loop
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - CORES_FOR_THE_NODE))
        from lightvla_ros.policy.vla_policy import VLAPolicy

        policy = VLAPolicy(checkpoint, **vla_kwargs)
        gc.collect()
        gc.freeze()   # the model's objects live as long as the process: no collection scans them again
        m = policy.model
        fixed = policy.sequence_length("x") - len(m.tokenizer.prompt_ids("x"))  # all but the prompt
        conn.send(("ready", {"chunk_size": policy.chunk_size, "action_dim": policy.action_dim,
                             "proprio_dim": policy.proprio_dim, "num_images": policy.num_images,
                             "action_space": policy.action_space, "action_rows": policy.action_rows,
                             "fixed_positions": fixed, "max_positions": int(m.text_config.max_position_embeddings)}))
    except Exception as e:  # noqa: BLE001  (the parent reports it as one line)
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            value = policy.warmup(payload) if kind == "warmup" else policy.infer(images.unpack(payload))
            reply = ("ok", value)
        except Exception as e:  # noqa: BLE001  (the node counts it; the child keeps serving)
            reply = ("error", f"{type(e).__name__}: {str(e)[:300]}")
        try:
            conn.send(reply)
        except (OSError, BrokenPipeError):
            return


if __name__ == "__main__":   # the child: python -m lightvla_ros.policy.process_policy FD CHECKPOINT KWARGS IMAGES_FD
    _serve(Connection(int(sys.argv[1])), sys.argv[2], json.loads(sys.argv[3]), ImageBuffer(int(sys.argv[4])))
