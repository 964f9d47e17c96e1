"""One closed-loop episode of a VLA in the simulator, in-process: no ROS, no DDS.

The protocol is the sim bridge's (SimEnv.num_wait_steps no-op steps the policy is not asked
about, then up to max_steps policy steps, stop at success) and the observation is what the
policy node would assemble from the bridge's topics (lightvla_ros.train.collect.policy_view):
the same images, the same proprio through ObservationAssembler. Chunks run open loop, `execute`
steps each (OFT's LIBERO protocol: the whole chunk), as the node's open_loop mode in lock-step.

    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.sim.episode import run_policy_episode
    with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=128)) as env:
        result = run_policy_episode(env, VLAPolicy(ckpt, device="cpu"), init_state=0)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..policy.gripper import libero_gripper_postprocess
from ..policy.observation_sync import ObservationAssembler
from .base import NOOP_ACTION

PROPRIO_SOURCES = ("eef_pos", "eef_axis_angle", "joint:gripper0_finger_joint1", "joint:gripper0_finger_joint2")


@dataclass
class EpisodeOutcome:
    suite: str
    task: str
    init_state: int
    success: bool
    policy_steps: int
    wait_steps: int
    chunks: int
    seconds: float
    kept_tokens: list[int] = field(default_factory=list)  # visual tokens kept per chunk
    total_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def run_policy_episode(env, policy, init_state: int = 0, max_steps: int = 0, execute: int = 0,
                       gripper_postprocess: str = "none", proprio_sources=PROPRIO_SOURCES) -> EpisodeOutcome:
    """policy: anything with VLAPolicy's infer(Observation) -> PolicyOutput and chunk_size."""
    from ..train.collect import policy_view

    if gripper_postprocess not in ("none", "libero"):
        raise ValueError(f"gripper_postprocess must be none or libero, got {gripper_postprocess!r}")
    t0 = time.perf_counter()
    max_steps = int(max_steps) or env.max_steps
    execute = int(execute) or int(policy.chunk_size)
    obs = env.reset(init_state)
    policy.reset()
    for _ in range(env.num_wait_steps):
        obs, _ = env.step(NOOP_ACTION)
    assembler = ObservationAssembler(env.camera_names, proprio_sources=list(proprio_sources),
                                     instruction=env.instruction, max_observation_age=1e9)
    steps, chunks, success = 0, 0, False
    kept: list[int] = []
    total = 0
    while steps < max_steps and not success:
        out = policy.infer(policy_view(assembler, obs, obs.sim_time))
        chunks += 1
        kept.append(out.kept_total)
        total = out.total_tokens
        actions = np.asarray(out.actions, dtype=np.float64)
        if gripper_postprocess == "libero":
            actions = np.asarray(libero_gripper_postprocess(actions.astype(np.float32)), dtype=np.float64)
        for action in actions[:execute]:
            obs, success = env.step(action)
            steps += 1
            if success or steps >= max_steps:
                break
    return EpisodeOutcome(env.suite, env.task_name, int(init_state), bool(success), steps, env.num_wait_steps,
                          chunks, round(time.perf_counter() - t0, 2), kept, total)
