"""The LIBERO / robosuite episode protocol, once, for every transport. No ROS here.

run_episode owns the protocol: reset to an init state, SimEnv.num_wait_steps no-op steps the policy
is not asked about, then up to max_steps policy steps on a sim clock (integer ns), the gripper
post-processing, the hold action for a step without one, and stop at success. Who decides the
action is an `act(obs, t_ns)` callable:
- the sim bridge node passes one that publishes the observation over ROS and waits for the
  policy node's action (lock-step),
- RunnerAgent (below) runs the policy in-process through the same ChunkedPolicyRunner as the node,
  so `lightvla-sim-eval --in-process` gives the same actions as the ROS path with no DDS.

    from lightvla_ros.sim import SimConfig, make_env
    from lightvla_ros.sim.episode import run_policy_episode
    with make_env(SimConfig(suite="robosuite", task="Lift", camera_size=128)) as env:
        result = run_policy_episode(env, VLAPolicy(ckpt, device="cpu"), init_state=0)
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..policy.clock import to_ns
from ..policy.config import LIBERO_PROPRIO, RunnerConfig
from ..policy.gripper import libero_gripper_postprocess
from ..policy.runner import ChunkedPolicyRunner, run_inline
from .base import NOOP_ACTION

PROPRIO_SOURCES = LIBERO_PROPRIO
GRIPPER_POSTPROCESS = ("none", "libero")


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
    dropped_steps: int = 0        # steps without an action from the policy (the hold action ran)
    message: str = ""             # success | max_steps | aborted: ...
    actions: list[list[float]] = field(default_factory=list)  # the actions applied (record_actions=True)

    def to_dict(self) -> dict:
        return asdict(self)


class SimClock:
    """Lock-step sim time in integer ns, one control period per sim step; monotonic across episodes
    (a policy node keeps its step gate; the bridge publishes it on /clock)."""

    def __init__(self, period_ns: int, start_ns: int | None = None):
        self.period_ns = int(period_ns)
        self.now = self.period_ns if start_ns is None else int(start_ns)

    def advance(self) -> int:
        self.now += self.period_ns
        return self.now


def hold_action(obs) -> np.ndarray:
    """No motion; the gripper keeps its state (closed if the fingers are near closed)."""
    a = np.zeros(7)
    a[-1] = -1.0 if float(np.sum(np.abs(obs.proprio[6:8]))) > 0.06 else 1.0
    return a


def run_episode(env, act: Callable[[object, int], np.ndarray | None], init_state: int = 0, max_steps: int = 0,
                gripper_postprocess: str = "none", clock: SimClock | None = None, obs=None,
                timeout: float = math.inf, record_actions: bool = False,
                stop: Callable[[], bool] | None = None) -> EpisodeOutcome:
    """One episode. act(obs, t_ns) -> (7,) action or None (the hold action runs, counted as dropped).
    obs: the observation after a reset done by the caller (else this resets to init_state).
    stop(): polled every step; True ends the episode early ("aborted: stopped")."""
    if gripper_postprocess not in GRIPPER_POSTPROCESS:
        raise ValueError(f"gripper_postprocess must be none or libero, got {gripper_postprocess!r}")
    t0 = time.monotonic()
    clock = clock or SimClock(to_ns(env.control_period))
    max_steps = int(max_steps) or env.max_steps
    if obs is None:
        obs = env.reset(init_state)
    out = EpisodeOutcome(env.suite, env.task_name, int(init_state), False, 0, 0, 0, 0.0, message="max_steps")
    for _ in range(env.num_wait_steps):  # objects settle; the policy is not asked
        obs, _ = env.step(NOOP_ACTION)
        out.wait_steps += 1
        clock.advance()
    for _ in range(max_steps):
        if time.monotonic() - t0 > timeout:
            out.message = f"aborted: episode timeout {timeout:g} s"
            break
        if stop is not None and stop():
            out.message = "aborted: stopped"
            break
        action = act(obs, clock.now)
        if action is None:
            out.dropped_steps += 1
            action = hold_action(obs)
        elif gripper_postprocess == "libero":
            action = np.asarray(libero_gripper_postprocess(np.asarray(action, dtype=np.float32)), dtype=np.float64)
        action = np.asarray(action, dtype=np.float64)
        if record_actions:
            out.actions.append(action.tolist())
        obs, success = env.step(action)
        out.policy_steps += 1
        clock.advance()
        if success:
            out.success, out.message = True, "success"
            break
    out.seconds = round(time.monotonic() - t0, 2)
    return out


class RunnerAgent:
    """A policy in-process behind the node's ChunkedPolicyRunner: each step feeds the sim observation
    as the bridge's messages would arrive (stamped and received at the sim time), runs the model
    inline when the runner asks, and returns the step's action."""

    def __init__(self, policy, config: RunnerConfig):
        self.policy, self.config = policy, config
        self.runner = ChunkedPolicyRunner(config, policy.chunk_size, policy.action_dim,
                                          str(getattr(policy, "action_space", "eef_delta_pose_gripper")))
        self.kept: list[int] = []
        self.total = 0

    @classmethod
    def for_env(cls, policy, env, open_loop_steps: int = 0, proprio_sources=PROPRIO_SOURCES, **overrides):
        """The lock-step configuration of config/sim_*.yaml for this env's cameras."""
        cfg = RunnerConfig(camera_names=tuple(env.camera_names), camera_topics=tuple(env.camera_names),
                           instruction=env.instruction, proprio_sources=tuple(proprio_sources),
                           control_rate_hz=1.0 / env.control_period, open_loop_steps=int(open_loop_steps),
                           proprio_sync_tolerance=0.001, **overrides)
        return cls(policy, cfg)

    def reset(self, now: int) -> None:
        self.runner.reset(now)
        self.policy.reset()

    def act(self, obs, now: int) -> np.ndarray | None:
        r = self.runner
        for cam in r.assembler.camera_names:
            r.add_image(cam, obs.images[cam], now, now)
        r.add_joint_state(obs.joint_names, obs.joint_positions, now, now)
        r.add_eef_pose(obs.eef_pos, obs.eef_quat, now, now)
        step = r.step(now)
        if step is None:  # the step found nothing queued: infer (lock-step: time stands still), serve it
            result = run_inline(r, self.policy, now)
            if result is not None and result.chunk is not None:
                self.kept.append(result.chunk.kept_total)
                self.total = result.chunk.total_tokens
            step = result.step if result is not None else None
        return None if step is None else step.action


def run_expert_policy_episode(env, init_state: int = 0, max_steps: int = 0, chunk_size: int = 8,
                              execution_mode: str = "open_loop", clock: SimClock | None = None,
                              record_actions: bool = False, episode_id: int = 1) -> EpisodeOutcome:
    """The scripted expert in-process, stepped as the expert node steps it over ROS: the same
    ExpertAgent on the same privileged state (base.privileged_state, what the bridge publishes), the
    same episode protocol (no gripper post-processing, as lightvla-sim-eval --policy expert runs it)."""
    from .base import privileged_state
    from .experts import ExpertAgent

    clock = clock or SimClock(to_ns(env.control_period))
    agent = ExpertAgent(chunk_size, execution_mode, clock.period_ns)
    obs = env.reset(init_state)
    episode = {"episode_id": episode_id, "suite": env.suite, "task_name": env.task_name,
               "task_index": getattr(env, "task_index", -1), "init_state_index": int(init_state),
               "goal_state": getattr(env, "goal_state", None)}
    chunks = 0

    def act(obs, now: int) -> np.ndarray | None:
        nonlocal chunks
        action, chunk = agent.step(privileged_state(obs, now, episode))
        chunks += chunk is not None
        return action

    out = run_episode(env, act, init_state, max_steps, "none", clock=clock, obs=obs, record_actions=record_actions)
    out.chunks = chunks
    return out


def run_policy_episode(env, policy, init_state: int = 0, max_steps: int = 0, execute: int = 0,
                       gripper_postprocess: str = "none", proprio_sources=PROPRIO_SOURCES,
                       clock: SimClock | None = None, record_actions: bool = False,
                       config: RunnerConfig | None = None) -> EpisodeOutcome:
    """One in-process episode of `policy` (VLAPolicy or anything with its infer / chunk_size /
    action_dim / reset). execute: steps per chunk (0 = the whole chunk, OFT's LIBERO protocol).
    config: the runner configuration (default: RunnerAgent.for_env's lock-step one)."""
    agent = RunnerAgent(policy, config) if config is not None else \
        RunnerAgent.for_env(policy, env, open_loop_steps=execute, proprio_sources=proprio_sources)
    clock = clock or SimClock(to_ns(env.control_period))
    obs = env.reset(init_state)
    agent.reset(clock.now)
    out = run_episode(env, agent.act, init_state, max_steps, gripper_postprocess, clock=clock, obs=obs,
                      record_actions=record_actions)
    out.chunks, out.kept_tokens, out.total_tokens = len(agent.kept), agent.kept, agent.total
    return out
