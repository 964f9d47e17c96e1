"""ProcessPolicy: the model in a child process gives VLAPolicy's outputs, errors as one line."""
import platform
import subprocess
import sys

import numpy as np
import pytest

from lightvla_ros.policy.process_policy import ModelProcessError, ProcessPolicy
from lightvla_ros.policy.types import Observation
from lightvla_ros.policy.vla_policy import VLAPolicy


def _obs(policy, seed=0, instruction="pick up the bowl"):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(policy.num_images)]
    proprio = rng.normal(size=policy.proprio_dim).astype(np.float32) if policy.proprio_dim else None
    return Observation(images=images, instruction=instruction, proprio=proprio, stamp=7_000_000_001)


def test_child_process_matches_in_process_policy(tiny_checkpoint):
    local = VLAPolicy(tiny_checkpoint, device="cpu", dtype="float32")
    remote = ProcessPolicy(tiny_checkpoint, device="cpu", dtype="float32")
    try:
        for name in ("chunk_size", "action_dim", "proprio_dim", "num_images", "action_space", "action_rows"):
            assert getattr(remote, name) == getattr(local, name), name
        for seed in range(2):
            a, b = local.infer(_obs(local, seed)), remote.infer(_obs(local, seed))
            np.testing.assert_array_equal(a.actions, b.actions)   # same weights, same process type
            assert b.stamp == 7_000_000_001 and b.kept_per_image == a.kept_per_image
        long = "pick " * 5000
        assert remote.instruction_problem("pick up the bowl") is None
        assert remote.instruction_problem(long) == local.instruction_problem(long) is not None
        with pytest.raises(ModelProcessError, match="image"):   # a bad request: one line, the child lives on
            remote.infer(Observation(images=[], instruction="x"))
        assert remote.infer(_obs(local)).actions.shape == (local.chunk_size, local.action_dim)
    finally:
        remote.close()
    assert remote._proc.poll() is not None


def test_a_checkpoint_that_does_not_load_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelProcessError, match="CheckpointError|config"):
        ProcessPolicy(tmp_path, device="cpu")


MALLINFO = """
import ctypes, sys
import numpy as np
from lightvla_ros.policy.process_policy import keep_buffers_mapped

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_buffers_mapped()
before = libc.mallinfo2().hblks
a = np.ones(4 * 2**20, np.uint8)   # a request-sized buffer (two 224 px images as float32 are 2.4 MB)
print(libc.mallinfo2().hblks - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")
def test_the_model_process_keeps_request_buffers_on_the_heap():
    """glibc maps each megabyte-sized buffer afresh and unmaps it on free (0.42 ms per request of the
    tiny checkpoint, docs/benchmarks.md); keep_buffers_mapped (the model process, the policy node)
    serves them from the heap: no new mapped block for a 4 MB array."""
    def mapped_blocks(mode):
        out = subprocess.run([sys.executable, "-c", MALLINFO, mode], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.strip())

    assert mapped_blocks("default") == 1
    assert mapped_blocks("keep") == 0


def test_requests_go_to_the_child_from_the_thread_that_made_them(tiny_checkpoint):
    """InferenceWorker with a ProcessPolicy: a request made in a sensor callback is sent to the model
    process on that thread (no wait for the worker thread to wake); the worker thread receives the
    reply, and the chunk equals VLAPolicy's for the observation sent. submit/receive on their own:
    a refused request is one ModelProcessError and the child serves the next one."""
    import threading

    from lightvla_ros.policy.config import RunnerConfig
    from lightvla_ros.policy.runner import ChunkedPolicyRunner, InferenceWorker

    local = VLAPolicy(tiny_checkpoint, device="cpu", dtype="float32")
    remote = ProcessPolicy(tiny_checkpoint, device="cpu", dtype="float32")
    sent, results, done = [], [], threading.Event()
    submit = remote.submit

    def traced_submit(obs):
        sent.append((threading.current_thread().name, obs))
        submit(obs)
    remote.submit = traced_submit
    try:
        assert remote.receive(timeout=0.05) is None                     # nothing in flight
        remote.submit(Observation(images=[], instruction="x"))
        with pytest.raises(ModelProcessError, match="image"):
            remote.receive(timeout=30)
        remote.submit(_obs(local))
        np.testing.assert_array_equal(remote.receive(timeout=30).actions, local.infer(_obs(local)).actions)
        sent.clear()

        runner = ChunkedPolicyRunner(RunnerConfig(instruction="pick up the bowl", camera_names=("cam0", "cam1"),
                                                  proprio_sources=("eef_pos", "eef_axis_angle", "joint:a", "joint:b"),
                                                  max_observation_age=1e6, max_chunk_age=1e6),
                                     local.chunk_size, local.action_dim)
        worker = InferenceWorker(runner, remote, lambda: now[0], lambda r: (results.append(r), done.set()))
        assert worker.split
        worker.start()
        images = _obs(local).images
        for k in range(2):
            done.clear()
            now = [7_000_000_000 + k * 10**9]
            runner.add_joint_state(["a", "b"], [0.02, -0.02], now[0], now[0])
            runner.add_eef_pose([0.1, 0.0, 0.9 + k / 10], [0.0, 0.0, 0.0, 1.0], now[0], now[0])
            for cam, image in zip(("cam0", "cam1"), images):
                runner.add_image(cam, image, now[0], now[0])            # the request is made here
            assert done.wait(30), (k, runner.diagnostics())
            runner.reset(now[0])                                         # the next observation: a new chunk
        worker.stop()
        assert [name for name, _ in sent] == [threading.current_thread().name] * 2
        for (_, obs), result in zip(sent, results):
            np.testing.assert_array_equal(result.chunk.actions, local.infer(obs).actions)
    finally:
        remote.close()
