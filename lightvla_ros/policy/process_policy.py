"""VLAPolicy in a child process: the model runs on its own interpreter, so a forward pass never
holds the node's interpreter lock and the step timer keeps its period while the model computes.

    policy = ProcessPolicy("/ckpt", device="cuda")   # same arguments as VLAPolicy
    out = policy.infer(obs)                          # one request at a time (the inference worker)
    policy.close()

The child loads VLAPolicy and answers requests over a pipe (observations and outputs are pickled:
two 256 px images are ~0.4 MB, well under a millisecond). It ignores SIGINT (Ctrl-C in a terminal
reaches the whole process group; the parent decides when to stop), exits when the parent closes
the pipe or dies. On CPU it uses all cores but one for torch, so the node's executor (the step
timer, the sensor callbacks) always has a core. The parent never imports torch: it loads only the tokenizer, to answer
`instruction_problem` without waiting for a forward pass in flight.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

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
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(child.fileno()), str(checkpoint), json.dumps(vla_kwargs)],
            pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
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
        out = self._call("infer", obs)
        self.num_inferences += 1
        return out

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

    def _call(self, kind: str, payload):
        with self._lock:
            try:
                self._conn.send((kind, payload))
                status, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as e:
                raise ModelProcessError(f"the model process is gone (exit code {self._proc.poll()}): "
                                   f"{type(e).__name__}") from None
        if status == "error":
            raise ModelProcessError(value)
        return value


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def _serve(conn, checkpoint: str, vla_kwargs: dict) -> None:
    """The child: load the model, then answer (kind, payload) requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if str(vla_kwargs.get("device", "auto")).startswith("cpu") or not _cuda_available():
            import torch   # CPU inference leaves cores to the node: its executor runs the control loop
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - CORES_FOR_THE_NODE))
        from lightvla_ros.policy.vla_policy import VLAPolicy

        policy = VLAPolicy(checkpoint, **vla_kwargs)
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
            value = policy.warmup(payload) if kind == "warmup" else policy.infer(payload)
            reply = ("ok", value)
        except Exception as e:  # noqa: BLE001  (the node counts it; the child keeps serving)
            reply = ("error", f"{type(e).__name__}: {str(e)[:300]}")
        try:
            conn.send(reply)
        except (OSError, BrokenPipeError):
            return


if __name__ == "__main__":   # the child: python -m lightvla_ros.policy.process_policy FD CHECKPOINT KWARGS_JSON
    _serve(Connection(int(sys.argv[1])), sys.argv[2], json.loads(sys.argv[3]))
