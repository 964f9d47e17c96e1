"""The inference_path parameter: RunnerConfig -> VLAPolicy (in the node's thread or its child
process) -> the model's path (docs/model.md, static path). CPU: auto is dynamic, graphed runs static."""
import numpy as np
import pytest

from lightvla_ros.policy.config import DEFAULTS, INFERENCE_PATHS, RunnerConfig
from lightvla_ros.policy.process_policy import ModelProcessError, ProcessPolicy
from lightvla_ros.policy.types import Observation
from lightvla_ros.policy.vla_policy import VLAPolicy


def _obs(policy, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(policy.num_images)]
    return Observation(images=images, instruction="put the bowl on the plate",
                       proprio=np.zeros(policy.proprio_dim, np.float32), stamp=1)


def test_runner_config_parameter():
    from lightvla_ros.model.static import INFERENCE_PATHS as MODEL_PATHS

    assert INFERENCE_PATHS == MODEL_PATHS  # restated where torch is not imported
    assert DEFAULTS.inference_path == "auto"
    for path in ("auto", *INFERENCE_PATHS):
        assert RunnerConfig(inference_path=path).inference_path == path
    with pytest.raises(ValueError, match="inference_path must be one of"):
        RunnerConfig(inference_path="fast")


def test_policy_paths_on_cpu(tiny_checkpoint):
    auto = VLAPolicy(tiny_checkpoint, device="cpu")
    assert auto.inference_path == "dynamic"  # measured faster on a CPU (docs/benchmarks.md)
    static = VLAPolicy(tiny_checkpoint, device="cpu", inference_path="static")
    graphed = VLAPolicy(tiny_checkpoint, device="cpu", inference_path="graphed")
    assert static.inference_path == graphed.inference_path == "static"  # no graphs on a CPU
    graphed.warmup()
    assert graphed.warmup_report == {}
    a, b = auto.infer(_obs(auto)), static.infer(_obs(auto))
    np.testing.assert_allclose(b.actions, a.actions, rtol=0, atol=1e-4)  # unnormalised: bounds up to ~1
    assert static.model.last_llm_length % 16 == 0
    with pytest.raises(ValueError, match="inference_path must be"):
        VLAPolicy(tiny_checkpoint, device="cpu", inference_path="graphs")


def test_process_policy_passes_it_to_the_child(tiny_checkpoint):
    with pytest.raises(ModelProcessError, match="inference_path must be"):
        ProcessPolicy(tiny_checkpoint, device="cpu", dtype="float32", inference_path="graphs")
    remote = ProcessPolicy(tiny_checkpoint, device="cpu", dtype="float32", inference_path="static")
    try:
        local = VLAPolicy(tiny_checkpoint, device="cpu", dtype="float32", inference_path="static")
        np.testing.assert_array_equal(remote.infer(_obs(local)).actions, local.infer(_obs(local)).actions)
    finally:
        remote.close()
