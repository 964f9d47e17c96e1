"""robosuite 1.4.0 tasks (Lift, Stack, PickPlaceCan; Panda, OSC_POSE) behind SimEnv.

robosuite has no benchmark init states: `reset(init_state_index=k)` seeds the object placement
and robot joint noise from (config.seed, k), so every index gives a fixed, repeatable scene.
"""
from __future__ import annotations

import numpy as np

from lightvla_ros.sim.base import SimConfig, SimEnv

ROBOSUITE_TASKS = ("Lift", "Stack", "PickPlaceCan")
MAX_STEPS = {"Lift": 200, "Stack": 300, "PickPlaceCan": 400}
INSTRUCTIONS = {
    "Lift": "lift the red cube",
    "Stack": "stack the red cube on the green cube",
    "PickPlaceCan": "pick up the can and place it in its bin",
}
NUM_INIT_STATES = 1000  # any index below this gives a deterministic placement


def resolve_task(task: int | str) -> str:
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool) and 0 <= task < len(ROBOSUITE_TASKS):
        return ROBOSUITE_TASKS[int(task)]
    if isinstance(task, str):
        for name in ROBOSUITE_TASKS:
            if task.lower() == name.lower():
                return name
    raise ValueError(f"unknown robosuite task {task!r}; valid: "
                     + ", ".join(f"{i}: {n}" for i, n in enumerate(ROBOSUITE_TASKS)))


class RobosuiteEnv(SimEnv):
    suite = "robosuite"
    num_wait_steps = 0  # objects start at rest (see SimEnv.num_wait_steps)

    def __init__(self, config: SimConfig):
        super().__init__(config)
        import robosuite

        self._task_name = resolve_task(config.task)
        self._instruction = INSTRUCTIONS[self._task_name]
        self._max_steps = MAX_STEPS[self._task_name]
        size = config.camera_size
        # robosuite draws model properties from numpy's global RNG while it builds the model (Lift's
        # cube size is uniform in [0.020, 0.022] m): seed it, or every process (the collector, the
        # sim bridge, an in-process evaluation) gets its own cube and the same seed is not the same scene
        np.random.seed(np.random.SeedSequence([config.seed, 0x5EED]).generate_state(1)[0])
        self._env = robosuite.make(
            self._task_name, robots="Panda",
            controller_configs=robosuite.load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False, has_offscreen_renderer=config.use_cameras, use_camera_obs=config.use_cameras,
            camera_names=["agentview", "robot0_eye_in_hand"], camera_heights=size, camera_widths=size,
            control_freq=config.control_freq, hard_reset=config.hard_reset,
            ignore_done=True, horizon=100_000,  # the caller caps steps (max_steps)
        )

    @property
    def num_init_states(self) -> int:
        return NUM_INIT_STATES

    def _reset_to(self, init_state_index: int) -> None:
        # robosuite 1.4.0 samples placements and joint noise from numpy's global RNG
        seed = np.random.SeedSequence([self.config.seed, init_state_index]).generate_state(1)[0]
        np.random.seed(int(seed))
        self._env.reset()

    def _privileged(self) -> dict[str, np.ndarray]:
        env = self._env
        if self._task_name == "Lift":
            return {"cube": self._body_pose(env.cube_body_id)}
        if self._task_name == "Stack":
            return {"cubeA": self._body_pose(env.cubeA_body_id), "cubeB": self._body_pose(env.cubeB_body_id)}
        # PickPlaceCan: the can and the centre of its target bin compartment
        target = np.concatenate([env.target_bin_placements[env.object_to_id["can"]], [0, 0, 0, 1]])
        return {"can": self._body_pose(env.obj_body_id["Can"]), "target": target}
