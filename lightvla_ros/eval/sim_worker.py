"""A simulator worker: evaluation episodes in one process, one environment kept per task. No ROS, no Ray.

`lightvla-sim-eval --ray` runs one SimWorker per Ray actor (lightvla_ros.eval.ray_eval); the local
backend runs one in the calling process. Both run the same episode protocol
(lightvla_ros.sim.episode.run_policy_episode: wait steps, max steps, chunks open loop), so the same
EpisodeSpec gives the same outcome wherever it runs.

    worker = SimWorker({"robosuite": EpisodeSettings(policy="expert")})
    record = worker.run(EpisodeSpec("robosuite", "Lift", init_state_index=3))
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lightvla_ros.policy.types import Observation, PolicyOutput

PLACEHOLDER_IMAGE = np.zeros((8, 8, 3), dtype=np.uint8)  # what a blind expert's runner is shown


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode of the protocol: which task, which initial state, which seed."""

    suite: str
    task: str                 # task index (as text) or name, as given on the command line
    init_state_index: int     # LIBERO: benchmark init state; robosuite: placement seed
    seed: int = 0             # seeds python / numpy / torch before the episode (episode_seed)

    @property
    def key(self) -> str:
        """Identifies the episode in the JSONL results (resume skips finished keys)."""
        return f"{self.suite}/{self.task}/{self.init_state_index}/{self.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def episode_seed(base: int, suite: str, task: str, init_state_index: int) -> int:
    """A seed per episode that depends on nothing but the episode (not on order or worker)."""
    digest = hashlib.sha256(f"{base}/{suite}/{task}/{init_state_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class EpisodeSettings:
    """How episodes of one suite run: rendering, chunk execution, step cap. One per suite."""

    policy: str = "vla"               # vla | expert (scripted, privileged state)
    camera_size: int = 256
    render_quality: str = "fast"
    image_convention: str = "openvla"
    use_cameras: bool = True          # False: no rendering (a blind expert; cameras are ~90% of a step)
    gripper_postprocess: str = "none"  # none | libero
    execute: int = 0                  # steps run per chunk; 0 = the whole chunk (OFT's LIBERO protocol)
    max_steps: int = 0                # policy steps per episode; 0 = the suite's protocol
    expert_chunk_size: int = 8


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class _ObservedEnv:
    """The env as the episode loop sees it, remembering the last SimObservation for the expert
    (which reads privileged state the policy's Observation does not carry). Without cameras it
    shows the runner one placeholder image: the expert never looks at it."""

    def __init__(self, env):
        self.env = env
        self.last = None

    def __getattr__(self, name):
        return getattr(self.env, name)

    @property
    def camera_names(self) -> list[str]:
        return self.env.camera_names or ["agentview"]

    def _seen(self, obs):
        if not self.env.camera_names:
            obs.images = {"agentview": PLACEHOLDER_IMAGE}
        self.last = obs
        return obs

    def reset(self, init_state_index: int = 0):
        return self._seen(self.env.reset(init_state_index))

    def step(self, action):
        obs, success = self.env.step(action)
        return self._seen(obs), success


class ExpertPolicy:
    """The scripted expert behind the policy API: each `infer` plans a chunk from the state the
    Observation was taken in (lock-step: the env's last observation)."""

    action_dim = 7
    action_space = "eef_delta_pose_gripper"
    uses_proprio = False
    proprio_dim = 0

    def __init__(self, view: _ObservedEnv, chunk_size: int = 8):
        self.view, self.chunk_size = view, int(chunk_size)
        self.expert = None

    def reset(self) -> None:
        self.expert = None  # built on the first inference, after the wait steps (as expert_table does)

    def infer(self, obs: Observation) -> PolicyOutput:
        from lightvla_ros.sim.experts import make_expert

        if self.expert is None:
            self.expert = make_expert(self.view.env)
            self.expert.reset()
        return PolicyOutput(actions=self.expert.act_chunk(self.view.last, self.chunk_size), stamp=obs.stamp,
                            action_space=self.action_space)


class MeteredPolicy:
    """Times each inference as the simulator waits for it; keeps the batch size and server of each
    when the policy reports them (RemotePolicy)."""

    def __init__(self, policy, batched: bool = True):
        self.policy, self.batched = policy, batched  # batched: a model (batch sizes counted), not the expert
        self.latencies: list[float] = []
        self.batch_sizes: list[int] = []
        self.servers: set[int] = set()

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def reset(self) -> None:
        self.latencies, self.batch_sizes, self.servers = [], [], set()
        self.policy.reset()

    def infer(self, obs: Observation) -> PolicyOutput:
        t0 = time.perf_counter()
        out = self.policy.infer(obs)
        self.latencies.append(time.perf_counter() - t0)
        if self.batched:
            self.batch_sizes.append(int(getattr(self.policy, "last_batch_size", 1)))
        server = getattr(self.policy, "last_server_pid", None)
        if server is not None:
            self.servers.add(int(server))
        return out


class SimWorker:
    """Runs EpisodeSpecs one at a time. settings: suite -> EpisodeSettings; policy_factory() builds
    the VLA policy (a VLAPolicy, or a RemotePolicy to a shared batched server) on first use."""

    def __init__(self, settings: dict[str, EpisodeSettings], policy_factory: Callable[[], object] | None = None,
                 worker_id: int = 0, scratch_dir: str | None = None):
        self.settings = dict(settings)
        self.policy_factory = policy_factory
        self.worker_id = int(worker_id)
        self.scratch_dir = scratch_dir
        if scratch_dir:  # what this process writes through tempfile lands here: removed if the worker dies
            Path(scratch_dir).mkdir(parents=True, exist_ok=True)
            tempfile.tempdir = scratch_dir
            os.environ["TMPDIR"] = scratch_dir
        self._policy: MeteredPolicy | None = None
        self._env = None
        self._env_key: tuple | None = None

    def info(self) -> dict:
        return {"worker": self.worker_id, "pid": os.getpid(), "node": socket.gethostname(),
                "scratch_dir": self.scratch_dir}

    def _env_for(self, spec: EpisodeSpec, settings: EpisodeSettings):
        from lightvla_ros.sim import SimConfig, make_env

        key = (spec.suite, spec.task, settings.camera_size, settings.render_quality, settings.image_convention,
               settings.use_cameras)
        if key != self._env_key:
            self.close()
            task = int(spec.task) if str(spec.task).isdigit() else spec.task
            self._env = _ObservedEnv(make_env(SimConfig(
                suite=spec.suite, task=task, camera_size=settings.camera_size,
                render_quality=settings.render_quality, image_convention=settings.image_convention,
                use_cameras=settings.use_cameras)))
            self._env_key = key
        return self._env

    def _policy_for(self, settings: EpisodeSettings, env: _ObservedEnv) -> MeteredPolicy:
        if settings.policy == "expert":
            return MeteredPolicy(ExpertPolicy(env, settings.expert_chunk_size), batched=False)
        if self._policy is None:
            if self.policy_factory is None:
                raise ValueError("a VLA episode needs a policy_factory")
            self._policy = MeteredPolicy(self.policy_factory())
        return self._policy

    def run(self, spec: EpisodeSpec) -> dict:
        """One episode -> its record (the report's per-episode fields)."""
        from lightvla_ros.sim.episode import run_policy_episode

        if spec.suite not in self.settings:
            raise ValueError(f"no settings for suite {spec.suite!r}; have {sorted(self.settings)}")
        settings = self.settings[spec.suite]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        env = self._env_for(spec, settings)
        policy = self._policy_for(settings, env)
        setup = time.perf_counter() - wall0  # environment (and policy client) built for this episode
        seed_everything(spec.seed)
        out = run_policy_episode(env, policy, init_state=int(spec.init_state_index), max_steps=settings.max_steps,
                                 execute=settings.execute, gripper_postprocess=settings.gripper_postprocess)
        wall = time.perf_counter() - wall0
        dropped = int(getattr(out, "dropped_steps", 0))
        return {
            **spec.to_dict(), "key": spec.key, "task_index": getattr(env.env, "task_index", -1),
            "task_name": out.task, "instruction": env.instruction, "success": bool(out.success),
            "steps": out.wait_steps + out.policy_steps, "policy_steps": out.policy_steps,
            "wait_steps": out.wait_steps, "actions_applied": out.policy_steps - dropped, "dropped_steps": dropped,
            "duration": out.seconds, "message": getattr(out, "message", "") or
            ("success" if out.success else "max_steps"),
            "chunks": out.chunks, "kept_tokens": list(out.kept_tokens) if out.total_tokens else [],
            "total_tokens": [out.total_tokens] * len(out.kept_tokens) if out.total_tokens else [],
            "inference_latencies": policy.latencies, "batch_sizes": policy.batch_sizes,
            "policy_servers": sorted(policy.servers),
            "wall_s": round(wall, 3), "setup_s": round(setup, 3), "cpu_s": round(time.process_time() - cpu0, 3),
            "worker": self.worker_id, "pid": os.getpid(), "node": socket.gethostname(),
        }

    def close(self) -> None:
        if self._env is not None:
            self._env.env.close()
        self._env, self._env_key = None, None


def remove_scratch(path: str | None) -> bool:
    """Removes a (dead) worker's scratch directory; True when something was removed."""
    if not path or not Path(path).exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
