"""LIBERO suites (libero_spatial, libero_object, libero_goal, libero_10, libero_90) behind SimEnv.

Tasks come from LIBERO's benchmark (task order 0, as in the OpenVLA-OFT eval); initial states
are the benchmark's `*.pruned_init` files (50 per task), restored after a soft reset (the model
is not reloaded: ~10x faster than LIBERO's default hard reset, same state; see test_sim_env.py).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from lightvla_ros.sim.base import SimConfig, SimEnv
from lightvla_ros.sim.libero_setup import setup_libero

LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# LIBERO protocol step caps (OpenVLA-OFT run_libero_eval.py); libero_90 has no published cap
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
# init-state indices from here on are generated placements (seeded by the index), e.g. training
# demos apart from the benchmark's 50 fixed init states that evaluation uses
GENERATED_INIT_STATES = 1000
_MAX_RESET_TRIES = 100  # object placement can fail (RandomizationError); LIBERO itself retries forever


def _benchmark(suite: str):
    setup_libero()
    from libero.libero import benchmark

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the task order
        return benchmark.get_benchmark_dict()[suite]()


def list_tasks(suite: str) -> list[str]:
    """Task names of a LIBERO suite, in benchmark order (index = task id)."""
    if suite not in LIBERO_SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(LIBERO_SUITES)}")
    return _benchmark(suite).get_task_names()


def resolve_task(bench, task: int | str) -> int:
    """Task index from an index, a task name, or its language instruction."""
    names = bench.get_task_names()
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= task < len(names):
            return int(task)
        raise ValueError(f"task index {task} out of range for {bench.name} ({len(names)} tasks: 0..{len(names) - 1})")
    if isinstance(task, str):
        if task.isdigit():
            return resolve_task(bench, int(task))
        for i, t in enumerate(bench.tasks):
            if task in (t.name, t.language):
                return i
    listing = "\n  ".join(f"{i}: {n}" for i, n in enumerate(names))
    raise ValueError(f"unknown task {task!r} in {bench.name}; valid tasks (index: name):\n  {listing}")


class LiberoEnv(SimEnv):
    def __init__(self, config: SimConfig):
        super().__init__(config)
        if config.suite not in LIBERO_SUITES:
            raise ValueError(f"unknown LIBERO suite {config.suite!r}; valid: {', '.join(LIBERO_SUITES)}")
        self.suite = config.suite
        bench = _benchmark(config.suite)
        self.task_index = resolve_task(bench, config.task)
        task = bench.get_task(self.task_index)
        self._task_name = task.name
        self._init_states = bench.get_task_init_states(self.task_index)  # (N, state_dim) flattened MuJoCo states
        self._max_steps = MAX_STEPS[config.suite]

        from libero.libero.envs.env_wrapper import ControlEnv

        size = config.camera_size
        self._control = ControlEnv(
            bddl_file_name=bench.get_task_bddl_file_path(self.task_index),
            camera_heights=size, camera_widths=size,
            has_offscreen_renderer=config.use_cameras, use_camera_obs=config.use_cameras,
            control_freq=config.control_freq, hard_reset=config.hard_reset,
            ignore_done=True, horizon=100_000,  # the caller caps steps (max_steps)
        )
        self._env = self._control.env
        self._instruction = self._control.language_instruction
        np.random.seed(config.seed)  # placement sampling before set_init_state; the init state decides

    @property
    def num_init_states(self) -> int:
        return len(self._init_states)

    def valid_init_state(self, index: int) -> bool:
        return 0 <= index < self.num_init_states or GENERATED_INIT_STATES <= index

    @property
    def init_state_range(self) -> str:
        return f"[0, {self.num_init_states}) (the benchmark's) or >= {GENERATED_INIT_STATES} (generated)"

    @property
    def goal_state(self) -> list[list[str]]:
        """BDDL goal predicates, e.g. [["in", "alphabet_soup_1", "basket_1_contain_region"]]."""
        return [list(p) for p in self._env.parsed_problem["goal_state"]]

    def _reset_to(self, init_state_index: int) -> None:
        from robosuite.utils.errors import RandomizationError

        generated = init_state_index >= GENERATED_INIT_STATES
        if generated:  # a new placement, drawn as LIBERO drew its init states: the BDDL regions'
            np.random.seed(init_state_index)  # placement samplers use np.random
        for _ in range(_MAX_RESET_TRIES):
            try:
                self._env.reset()
                break
            except RandomizationError:
                continue
        else:
            raise RuntimeError(f"LIBERO reset failed {_MAX_RESET_TRIES} times (object placement)")
        env = self._env
        if not generated:
            env.sim.set_state_from_flattened(self._init_states[init_state_index])
        env.sim.forward()
        env._check_success()  # updates predicate caches, as LIBERO's set_init_state does
        env._post_process()
        env._update_observables(force=True)

    def _privileged(self) -> dict[str, np.ndarray]:
        return {name: self._body_pose(bid) for name, bid in self._env.obj_body_id.items()}
