"""The transport-free VLAPolicy on the tiny checkpoint: outputs, properties, input validation."""
import numpy as np
import pytest
import torch

from lightvla_ros.policy.gripper import libero_gripper_postprocess
from lightvla_ros.policy.types import Observation, PolicyOutput
from lightvla_ros.policy.vla_policy import VLAPolicy


@pytest.fixture(scope="module")
def policy(tiny_checkpoint):
    return VLAPolicy(tiny_checkpoint, device="cpu")


def _obs(n_images=2, proprio=None, size=(256, 256), **kwargs):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n_images)]
    if proprio is None:
        proprio = np.array([-0.05, 0.0, 1.0, 3.1, -0.05, 0.0, 0.02, -0.02], np.float32)
    return Observation(images=images, instruction=kwargs.pop("instruction", "put the bowl on the plate"),
                       proprio=proprio, stamp=kwargs.pop("stamp", 12_500_000_000))


def test_properties(policy):
    assert (policy.chunk_size, policy.action_dim, policy.proprio_dim, policy.num_images) == (8, 7, 8, 2)
    assert policy.action_space == "eef_delta_pose_gripper"
    assert policy.device == torch.device("cpu")


def test_infer(policy):
    out = policy.infer(_obs())
    assert isinstance(out, PolicyOutput)
    assert out.actions.shape == (8, 7) and out.actions.dtype == np.float32
    assert np.all(np.isfinite(out.actions))
    assert out.stamp == 12_500_000_000 and out.action_space == "eef_delta_pose_gripper"
    assert out.total_per_image == [256, 256] and 2 <= out.kept_total <= 512
    assert {"vision", "pruner", "llm", "head", "total"} <= set(out.timings)
    # the gripper is NOT post-processed by the policy: raw, unmasked, continuous
    assert not set(np.unique(out.actions[:, -1])) <= {-1.0, 0.0, 1.0}


def test_reset_and_warmup(policy):
    policy.warmup()
    policy.infer(_obs())
    assert policy.num_inferences == 1
    policy.reset()
    assert policy.num_inferences == 0


@pytest.mark.parametrize("obs,match", [
    (_obs(n_images=1), "expected 2 image"),
    (_obs(n_images=3), "expected 2 image"),
    (Observation(images=[np.zeros((64, 64, 3), np.float32)] * 2, instruction="x", proprio=np.zeros(8)),
     "dtype uint8"),
    (Observation(images=[np.zeros((64, 64), np.uint8)] * 2, instruction="x", proprio=np.zeros(8)), "shape"),
    (Observation(images=[np.zeros((64, 64, 4), np.uint8)] * 2, instruction="x", proprio=np.zeros(8)), "shape"),
    (Observation(images=[np.zeros((0, 64, 3), np.uint8)] * 2, instruction="x", proprio=np.zeros(8)), "shape"),
    (Observation(images=["cam.png"] * 2, instruction="x", proprio=np.zeros(8)), "numpy array"),
    (_obs(instruction="  "), "instruction"),
    (_obs(proprio=np.full(8, np.nan, np.float32)), "finite"),
    (_obs(proprio=np.zeros(7, np.float32)), r"shape \(8,\)"),
    (_obs(proprio=np.zeros((1, 8), np.float32)), r"shape \(8,\)"),
])
def test_bad_observations(policy, obs, match):
    with pytest.raises(ValueError, match=match):
        policy.infer(obs)


def test_missing_proprio(policy):
    obs = _obs()
    obs.proprio = None
    with pytest.raises(ValueError, match="needs proprio"):
        policy.infer(obs)


def test_other_image_sizes_are_resized(policy):
    out = policy.infer(_obs(size=(480, 640)))
    assert out.actions.shape == (8, 7)


def test_non_finite_actions_raise(tiny_checkpoint):
    policy = VLAPolicy(tiny_checkpoint, device="cpu", center_crop=False)
    with torch.no_grad():
        policy.model.action_head.model.fc2.bias[0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        policy.infer(_obs())


def test_num_images_override(tiny_checkpoint):
    policy = VLAPolicy(tiny_checkpoint, device="cpu", num_images=1)
    assert policy.num_images == 1 and policy.model.pruner.num_patches == 256
    out = policy.infer(_obs(n_images=1))
    assert out.total_per_image == [256] and len(out.kept_per_image) == 1


def test_libero_gripper_postprocess():
    actions = np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0],
                        [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0],
                        [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.3],
                        [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.8]], np.float32)
    out = libero_gripper_postprocess(actions)
    np.testing.assert_array_equal(out[:, -1], [1.0, -1.0, 1.0, -1.0])  # model 0 = close -> robosuite +1 = close
    np.testing.assert_array_equal(out[:, :-1], actions[:, :-1])
    assert actions[1, -1] == 1.0  # input untouched
