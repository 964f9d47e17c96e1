"""ProcessPolicy: the model in a child process gives VLAPolicy's outputs, errors as one line."""
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
