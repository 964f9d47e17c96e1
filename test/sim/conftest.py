"""Real MuJoCo environments shared by the sim tests (built once per module: construction ~5-10 s)."""
import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="module")
def libero_env():
    from lightvla_ros.sim import SimConfig, make_env

    env = make_env(SimConfig(suite="libero_object", task=0, camera_size=64, render_quality="fast"))
    yield env
    env.close()


@pytest.fixture(scope="module")
def lift_env():
    from lightvla_ros.sim import SimConfig, make_env

    env = make_env(SimConfig(suite="robosuite", task="Lift", camera_size=64, render_quality="fast"))
    yield env
    env.close()
