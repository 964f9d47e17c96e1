"""Simulation environments with no ROS inside: LIBERO suites and robosuite tasks behind one API.

    from lightvla_ros.sim import SimConfig, make_env
    env = make_env(SimConfig(suite="libero_object", task=0, camera_size=256))
    obs = env.reset(init_state_index=0)        # SimObservation
    for _ in range(env.num_wait_steps):        # LIBERO protocol: let objects settle
        obs, success = env.step(NOOP_ACTION)
    obs, success = env.step(action)            # action (7,): dpos, daxis-angle, gripper (-1 open, +1 close)
    env.close()

Suites: libero_spatial, libero_object, libero_goal, libero_10, libero_90 (task = index or name),
and "robosuite" (task = Lift | Stack | PickPlaceCan; Panda, OSC_POSE).
`SimObservation`: images {"agentview", "wrist"} -> (H, W, 3) uint8 in config.image_convention
("openvla" = raw[::-1, ::-1], what OpenVLA/LIBERO checkpoints were trained on; "raw"; "upright"
= raw[::-1]), proprio (8,) float32 in the OFT layout (eef pos, axis-angle, gripper qpos),
eef_pos, eef_quat (xyzw), joint_names/joint_positions (7 arm + 2 finger), privileged object
poses (experts only), sim_time. Scripted experts: `lightvla_ros.sim.experts.make_expert(env)`.
"""
from __future__ import annotations

from lightvla_ros.sim.base import ACTION_DIM, CAMERA_NAMES, NOOP_ACTION, SimConfig, SimEnv, SimObservation, check_action
from lightvla_ros.sim.libero_setup import LiberoAssetsMissingError

LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
SUITES = LIBERO_SUITES + ("robosuite",)


def make_env(config: SimConfig | None = None, **overrides) -> SimEnv:
    """Builds the environment for `config` (a SimConfig; keyword overrides apply on top)."""
    import dataclasses

    config = dataclasses.replace(config or SimConfig(), **overrides)
    if config.suite in LIBERO_SUITES:
        from lightvla_ros.sim.libero_env import LiberoEnv

        return LiberoEnv(config)
    if config.suite == "robosuite":
        from lightvla_ros.sim.robosuite_env import RobosuiteEnv

        return RobosuiteEnv(config)
    raise ValueError(f"unknown suite {config.suite!r}; valid: {', '.join(SUITES)}")


def list_tasks(suite: str) -> list[str]:
    """Task names of a suite, in index order."""
    if suite == "robosuite":
        from lightvla_ros.sim.robosuite_env import ROBOSUITE_TASKS

        return list(ROBOSUITE_TASKS)
    if suite in LIBERO_SUITES:
        from lightvla_ros.sim.libero_env import list_tasks as libero_tasks

        return libero_tasks(suite)
    raise ValueError(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")


__all__ = ["ACTION_DIM", "CAMERA_NAMES", "NOOP_ACTION", "SUITES", "LIBERO_SUITES", "SimConfig", "SimEnv",
           "SimObservation", "LiberoAssetsMissingError", "check_action", "make_env", "list_tasks"]
