"""Scripted experts succeed on real MuJoCo, closed loop and with open-loop chunks."""
import numpy as np
import pytest

from lightvla_ros.sim import SimConfig, make_env
from lightvla_ros.sim.expert_table import run_expert_episode
from lightvla_ros.sim.experts import make_expert


@pytest.mark.parametrize("chunk_size", [1, 8])
def test_lift_expert_succeeds(chunk_size):
    with make_env(SimConfig(suite="robosuite", task="Lift", seed=0, use_cameras=False)) as env:
        r = run_expert_episode(env, 0, chunk_size)
    assert r.success, r
    assert r.steps < 100


def test_libero_object_expert_succeeds_with_chunks():
    with make_env(SimConfig(suite="libero_object", task=1, use_cameras=False)) as env:  # the flat cream cheese
        r = run_expert_episode(env, 0, chunk_size=8)
    assert r.success, r
    assert r.steps <= 280


def test_expert_chunk_shape_and_range(lift_env):
    obs = lift_env.reset(0)
    expert = make_expert(lift_env)
    expert.reset()
    chunk = expert.act_chunk(obs, 8)
    assert chunk.shape == (8, 7) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0) and np.all(chunk[:, 6] == -1.0)  # open while approaching
    assert expert.act(obs).shape == (7,)
    with pytest.raises(ValueError, match="chunk_size"):
        expert.act_chunk(obs, 0)


def test_no_expert_for_other_suites_says_which_exist():
    class Fake:
        suite, task_name = "libero_goal", "open_the_drawer"
    with pytest.raises(ValueError, match="Lift.*libero_object"):
        make_expert(Fake())


def test_a_plan_leaves_the_expert_as_it_was(lift_env):
    """WaypointExpert.plan: the chunk act_chunk would give, with no change to the expert's state."""
    obs = lift_env.reset(2)
    expert = make_expert(lift_env)
    planned = expert.plan(obs, 8)
    state = (expert.phase, expert.count, dict(expert.memory))
    again = expert.plan(obs, 8)
    assert (expert.phase, expert.count) == state[:2] and expert.memory.keys() == state[2].keys()
    np.testing.assert_array_equal(planned, again)
    np.testing.assert_array_equal(planned, expert.act_chunk(obs, 8))   # the same as acting
    assert expert.count == 8
