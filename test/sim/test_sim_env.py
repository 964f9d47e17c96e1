"""The SimEnv contract on real MuJoCo: LIBERO-Object and robosuite Lift."""
import numpy as np
import pytest

from lightvla_ros.sim import NOOP_ACTION, SimConfig, list_tasks, make_env
from robosuite.utils.transform_utils import quat2axisangle  # the reference the proprio must match
from lightvla_ros.sim.rendering import to_convention


def test_libero_reset_observation_shapes(libero_env):
    env = libero_env
    obs = env.reset(0)
    assert env.suite == "libero_object" and env.max_steps == 280 and env.num_wait_steps == 10
    assert env.task_name == "pick_up_the_alphabet_soup_and_place_it_in_the_basket"
    assert "alphabet soup" in env.instruction and env.num_init_states == 50
    assert env.camera_names == ["agentview", "wrist"] and list(obs.images) == ["agentview", "wrist"]
    for img in obs.images.values():
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]
        assert img.std() > 5  # a rendered scene, not a blank frame
    assert obs.proprio.shape == (8,) and obs.proprio.dtype == np.float32
    assert obs.joint_positions.shape == (9,) and len(obs.joint_names) == 9
    assert obs.joint_names == env.joint_names
    assert obs.joint_names[:7] == [f"robot0_joint{i}" for i in range(1, 8)]
    assert all("finger" in n for n in obs.joint_names[7:])
    assert {"alphabet_soup_1", "basket_1"} <= set(obs.privileged)
    assert all(v.shape == (7,) for v in obs.privileged.values())
    assert obs.sim_time == 0.0


def test_proprio_is_oft_layout(libero_env):
    obs = libero_env.reset(0)
    np.testing.assert_allclose(obs.proprio[:3], obs.eef_pos, atol=1e-6)
    np.testing.assert_allclose(obs.proprio[3:6], quat2axisangle(np.array(obs.eef_quat)), atol=1e-5)
    np.testing.assert_allclose(obs.proprio[6:8], obs.joint_positions[7:9], atol=1e-6)
    # gripper pointing down at the start: axis-angle of a ~180 degree rotation about x
    assert abs(np.linalg.norm(obs.proprio[3:6]) - np.pi) < 0.2
    assert np.isclose(np.linalg.norm(obs.eef_quat), 1.0)


def test_image_conventions_are_rotations_of_the_raw_frame(libero_env):
    env = libero_env
    env.reset(0)
    images = {}
    for conv in ("raw", "openvla", "upright"):
        env.config.image_convention = conv
        images[conv] = env.observe().images["agentview"]
    env.config.image_convention = "openvla"
    raw = images["raw"]
    assert not np.array_equal(raw, images["openvla"])
    np.testing.assert_array_equal(images["openvla"], raw[::-1, ::-1])  # 180 degrees, as OpenVLA trained
    np.testing.assert_array_equal(images["upright"], raw[::-1])
    with pytest.raises(ValueError, match="image_convention"):
        to_convention(raw, "sideways")


def test_step_moves_the_arm_and_counts_time(libero_env):
    env = libero_env
    obs0 = env.reset(0)
    obs, success = env.step([0, 0, 1.0, 0, 0, 0, -1])  # up
    for _ in range(4):
        obs, success = env.step(np.array([0, 0, 1.0, 0, 0, 0, -1], dtype=np.float32))
    assert obs.eef_pos[2] > obs0.eef_pos[2] + 0.01
    assert success is False and env.steps == 5
    assert obs.sim_time == pytest.approx(5 * 0.05)


@pytest.mark.parametrize("bad, match", [
    ([0.0] * 6, r"shape \(7,\)"),
    ([0.0] * 8, r"shape \(7,\)"),
    ([0, 0, np.nan, 0, 0, 0, -1], "non-finite"),
    ([0, 0, 0, np.inf, 0, 0, -1], "non-finite"),
    (["a"] * 7, "7 numbers"),
    (None, "shape"),
])
def test_bad_actions_raise_without_stepping(libero_env, bad, match):
    env = libero_env
    env.reset(0)
    env.step(NOOP_ACTION)
    qpos, steps, t = env.sim.data.qpos.copy(), env.steps, env.sim.data.time
    with pytest.raises(ValueError, match=match):
        env.step(bad)
    assert env.steps == steps and env.sim.data.time == t
    np.testing.assert_array_equal(env.sim.data.qpos, qpos)


def test_init_state_index_is_checked(libero_env):
    with pytest.raises(ValueError, match=r"init_state_index must be an int in \[0, 50\) .* or >= 1000"):
        libero_env.reset(50)
    with pytest.raises(ValueError, match="init_state_index"):
        libero_env.reset(-1)


def test_generated_init_states_are_new_placements_reproducible_by_index(libero_env):
    """Indices >= 1000: a placement drawn by the task's BDDL samplers, seeded by the index (training
    demos apart from the 50 benchmark states that evaluation uses)."""
    def objects(index):
        obs = libero_env.reset(index)
        return np.concatenate([pose[:3] for pose in obs.privileged.values()])

    a, b, again = objects(1000), objects(1001), objects(1000)
    np.testing.assert_array_equal(a, again)
    assert np.abs(a - b).max() > 0.005
    assert all(np.abs(a - objects(i)).max() > 0.005 for i in range(3))


def test_unknown_suite_and_task_list_the_valid_ones():
    with pytest.raises(ValueError, match="libero_spatial.*libero_object.*robosuite"):
        make_env(SimConfig(suite="libero_nope"))
    with pytest.raises(ValueError, match="pick_up_the_alphabet_soup_and_place_it_in_the_basket"):
        make_env(SimConfig(suite="libero_object", task="pick up the moon"))
    with pytest.raises(ValueError, match="out of range"):
        make_env(SimConfig(suite="libero_object", task=10))
    with pytest.raises(ValueError, match="Lift, 1: Stack, 2: PickPlaceCan"):
        make_env(SimConfig(suite="robosuite", task="Door"))
    with pytest.raises(ValueError, match="render_quality"):
        make_env(SimConfig(suite="robosuite", task="Lift", render_quality="ultra"))
    assert len(list_tasks("libero_10")) == 10 and len(list_tasks("libero_90")) == 90


def test_task_by_name_or_instruction_resolves_to_the_index():
    from lightvla_ros.sim.libero_env import _benchmark, resolve_task

    bench = _benchmark("libero_spatial")
    name = bench.get_task_names()[3]
    assert resolve_task(bench, name) == 3
    assert resolve_task(bench, bench.get_task(3).language) == 3
    assert resolve_task(bench, "3") == 3


def test_soft_reset_gives_the_same_state_as_hard_reset(libero_env):
    """The soft reset (no model reload, ~10x faster) restores exactly what LIBERO's hard reset does."""
    soft = libero_env
    soft.reset(0)
    for _ in range(5):
        soft.step([0.5, -0.5, 0.5, 0.1, 0, 0, 1])  # disturb the state between episodes
    soft_obs = soft.reset(3)
    hard = make_env(SimConfig(suite="libero_object", task=0, camera_size=64, hard_reset=True))
    try:
        hard_obs = hard.reset(3)
        for cam in ("agentview", "wrist"):
            np.testing.assert_array_equal(soft_obs.images[cam], hard_obs.images[cam])
        np.testing.assert_allclose(soft_obs.joint_positions, hard_obs.joint_positions, atol=1e-9)
        np.testing.assert_allclose(soft_obs.privileged["alphabet_soup_1"], hard_obs.privileged["alphabet_soup_1"],
                                   atol=1e-9)
        a = [0.3, 0.2, -0.3, 0, 0, 0.1, 1]
        for _ in range(3):  # and the dynamics go on identically
            s, _ = soft.step(a)
            h, _ = hard.step(a)
        np.testing.assert_allclose(s.eef_pos, h.eef_pos, atol=1e-9)
    finally:
        hard.close()


def test_fast_render_quality_turns_off_msaa_shadows_reflections(libero_env):
    import mujoco

    libero_env.reset(0)
    ctx = libero_env.sim._render_context_offscreen
    assert libero_env.sim.model._model.vis.quality.offsamples == 0 and ctx.con.offSamples == 0
    assert ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] == 0
    assert ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 0


def test_robosuite_lift_env(lift_env):
    env = lift_env
    obs = env.reset(2)
    assert env.suite == "robosuite" and env.task_name == "Lift" and env.max_steps == 200
    assert env.num_wait_steps == 0  # the one wait-step rule: robosuite objects start at rest
    assert obs.images["wrist"].shape == (64, 64, 3) and obs.proprio.shape == (8,)
    cube = obs.privileged["cube"].copy()
    env.step([0, 0, 0, 0, 0, 0, 1])
    again = env.reset(2)  # the same index gives the same scene
    np.testing.assert_allclose(again.privileged["cube"], cube, atol=1e-12)
    other = env.reset(3)
    assert not np.allclose(other.privileged["cube"][:2], cube[:2])
    assert env.check_success() is False


def test_cameras_off_has_no_images():
    with make_env(SimConfig(suite="robosuite", task="Lift", use_cameras=False)) as env:
        obs = env.reset(0)
        assert obs.images == {} and env.camera_names == []
        obs, _ = env.step(NOOP_ACTION)
        assert obs.proprio.shape == (8,)


def test_robosuite_scene_is_the_same_in_every_process():
    """robosuite draws Lift's cube size from numpy's global RNG while building the model: before the
    seed, the collector, the sim bridge and an in-process evaluation each had their own cube."""
    import numpy as np

    images = []
    for noise in (1, 2):
        np.random.seed(noise)  # whatever the process did before
        with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=64)) as env:
            images.append(env.reset(5).images["agentview"])
    np.testing.assert_array_equal(images[0], images[1])
