"""The one simulation interface (no ROS): config, observation, and the env shared by LIBERO and robosuite.

Both backends are robosuite `MujocoEnv`s underneath (LIBERO builds on robosuite 1.4.0), so the
observation, action checks, rendering and success live here; the subclasses only build the env
and restore an initial state.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lightvla_ros.policy.observation_sync import quat_to_axis_angle
from lightvla_ros.sim.rendering import IMAGE_CONVENTIONS, RENDER_QUALITIES, apply_render_quality, to_convention

# OSC_POSE delta: dpos (3, 0.05 m per unit), daxis-angle (3, 0.5 rad per unit), gripper (-1 open, +1 close)
ACTION_DIM = 7
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)  # what the LIBERO protocol's wait steps send
CAMERA_NAMES = ["agentview", "wrist"]
_ROBOSUITE_CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}


@dataclass
class SimConfig:
    """What to simulate and how to render it. Defaults run LIBERO-Object task 0 like the OFT eval."""

    suite: str = "libero_object"      # libero_spatial|libero_object|libero_goal|libero_10|libero_90|robosuite
    task: int | str = 0               # index in the suite, or the task name (robosuite: Lift|Stack|PickPlaceCan)
    camera_size: int = 256            # rendered square resolution, pixels (the policy resizes itself)
    render_quality: str = "fast"      # "fast": no MSAA/reflections/shadows; "full": MuJoCo defaults
    image_convention: str = "openvla"  # "openvla": raw[::-1, ::-1]; "raw": robosuite's frame; "upright": raw[::-1]
    use_cameras: bool = True          # False: no rendering at all (expert-only runs); images is then empty
    hard_reset: bool = False          # True reloads the MuJoCo model on every reset (LIBERO's default; slow)
    seed: int = 0
    control_freq: int = 20            # Hz

    def validate(self) -> None:
        if self.render_quality not in RENDER_QUALITIES:
            raise ValueError(f"unknown render_quality {self.render_quality!r}; valid: {', '.join(RENDER_QUALITIES)}")
        if self.image_convention not in IMAGE_CONVENTIONS:
            raise ValueError(f"unknown image_convention {self.image_convention!r}; "
                             f"valid: {', '.join(IMAGE_CONVENTIONS)}")
        if not (isinstance(self.camera_size, int) and 8 <= self.camera_size <= 2048):
            raise ValueError(f"camera_size must be an int in [8, 2048], got {self.camera_size!r}")
        if not (isinstance(self.control_freq, (int, float)) and self.control_freq > 0):
            raise ValueError(f"control_freq must be > 0, got {self.control_freq!r}")


@dataclass
class SimObservation:
    """One observation of the sim, in plain arrays."""

    images: dict[str, np.ndarray]     # camera -> (H, W, 3) uint8 RGB in the env's image_convention
    proprio: np.ndarray               # (8,) float32, OFT layout: eef pos (3), eef axis-angle (3), gripper qpos (2)
    eef_pos: np.ndarray               # (3,) float64, robot base world frame, metres
    eef_quat: np.ndarray              # (4,) float64, xyzw
    joint_names: list[str]            # 7 arm joints + 2 finger joints, names from the sim
    joint_positions: np.ndarray       # (9,) float64, rad / m
    privileged: dict[str, np.ndarray] = field(default_factory=dict)  # object -> (7,) pos + quat xyzw; experts only
    sim_time: float = 0.0             # seconds since reset (steps / control_freq)


def privileged_state(obs: SimObservation, stamp_ns: int, episode: dict) -> dict:
    """One step of the expert's input as plain JSON types: what the bridge publishes on /sim/privileged
    and what an in-process expert episode (sim/episode.py) steps the same ExpertAgent with. The
    images stay out (the expert does not look). episode: episode_id, suite, task_name, task_index,
    init_state_index, goal_state (LIBERO's BDDL goal)."""
    return {"stamp_ns": int(stamp_ns), **episode,
            "eef_pos": obs.eef_pos.tolist(), "eef_quat": obs.eef_quat.tolist(), "proprio": obs.proprio.tolist(),
            "joint_names": list(obs.joint_names), "joint_positions": obs.joint_positions.tolist(),
            "sim_time": float(obs.sim_time),
            "privileged": {k: np.asarray(v).tolist() for k, v in obs.privileged.items()}}


def observation_from_state(d: dict) -> SimObservation:
    """privileged_state's dict -> SimObservation without images (JSON keeps float64 exactly)."""
    return SimObservation(
        images={}, proprio=np.asarray(d["proprio"], dtype=np.float32),
        eef_pos=np.asarray(d["eef_pos"], dtype=np.float64), eef_quat=np.asarray(d["eef_quat"], dtype=np.float64),
        joint_names=list(d["joint_names"]), joint_positions=np.asarray(d["joint_positions"], dtype=np.float64),
        privileged={k: np.asarray(v, dtype=np.float64) for k, v in d["privileged"].items()},
        sim_time=float(d.get("sim_time", 0.0)))


def check_action(action) -> np.ndarray:
    """(7,) finite float action or ValueError; values outside [-1, 1] are clipped by the controller."""
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"action must be {ACTION_DIM} numbers, got {action!r}") from e
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"action must have shape ({ACTION_DIM},) [dx dy dz droll dpitch dyaw gripper], "
                         f"got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action has non-finite values (NaN/Inf): {a.tolist()}")
    return a


class SimEnv:
    """A robosuite-backed environment with the project's observation and action conventions.

    Subclasses set `self._env` (robosuite MujocoEnv), `_task_name`, `_instruction`, `_max_steps`
    and implement `_reset_to(init_state_index)`.
    """

    suite: str
    # The episode protocol's one wait-step rule: no-op steps after reset while objects settle,
    # the policy not asked. LIBERO: 10 (its evaluation protocol, objects drop onto the table);
    # robosuite: 0 (RobosuiteEnv; its reset places objects at rest, and its demos start at once).
    # The sim bridge, the expert-demo path and dataset collection all read this attribute.
    num_wait_steps = 10

    def __init__(self, config: SimConfig):
        config.validate()
        self.config = config
        self._env = None
        self._steps = 0
        self._closed = False

    # ---- properties -------------------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return self._task_name

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def max_steps(self) -> int:
        return self._max_steps

    @property
    def num_init_states(self) -> int:
        raise NotImplementedError

    def valid_init_state(self, index: int) -> bool:
        return 0 <= index < self.num_init_states

    @property
    def init_state_range(self) -> str:
        return f"[0, {self.num_init_states})"

    @property
    def camera_names(self) -> list[str]:
        return list(CAMERA_NAMES) if self.config.use_cameras else []

    @property
    def image_convention(self) -> str:
        return self.config.image_convention

    @property
    def joint_names(self) -> list[str]:
        robot = self._env.robots[0]
        return list(robot.robot_joints) + list(robot.gripper.joints)

    @property
    def control_period(self) -> float:
        return 1.0 / self.config.control_freq

    @property
    def steps(self) -> int:
        """Control steps since the last reset."""
        return self._steps

    @property
    def sim(self):
        return self._env.sim

    # ---- episode ----------------------------------------------------------------------------
    def reset(self, init_state_index: int = 0) -> SimObservation:
        self._check_open()
        if not (isinstance(init_state_index, (int, np.integer)) and self.valid_init_state(int(init_state_index))):
            raise ValueError(f"init_state_index must be an int in {self.init_state_range}, got {init_state_index!r}")
        self._reset_to(int(init_state_index))
        for robot in self._env.robots:
            # a soft reset keeps the gripper's integrated command (robosuite 1.4.0): clear it as a
            # hard reset (new gripper model) would, or the first steps differ from a fresh episode
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        self._steps = 0
        return self.observe()

    def step(self, action) -> tuple[SimObservation, bool]:
        """Applies one 7-dim action for one control step; returns the new observation and success."""
        self._check_open()
        a = check_action(action)  # before touching the sim: bad input never steps
        raw, _, _, _ = self._env.step(a)  # renders the cameras once, at the control rate
        self._steps += 1
        return self._to_observation(raw), self.check_success()

    def check_success(self) -> bool:
        return bool(self._env._check_success())

    def observe(self) -> SimObservation:
        """A fresh observation of the current state (renders the cameras)."""
        apply_render_quality(self._env.sim, self.config.render_quality)
        return self._to_observation(self._env._get_observations(force_update=True))

    def _to_observation(self, obs: dict) -> SimObservation:
        env = self._env
        images = {}
        if self.config.use_cameras:
            for cam in CAMERA_NAMES:
                raw = obs[f"{_ROBOSUITE_CAMERAS[cam]}_image"]
                images[cam] = to_convention(raw, self.config.image_convention)
        eef_pos = np.array(obs["robot0_eef_pos"], dtype=np.float64)
        eef_quat = np.array(obs["robot0_eef_quat"], dtype=np.float64)
        gripper_qpos = np.array(obs["robot0_gripper_qpos"], dtype=np.float64)
        proprio = np.concatenate([eef_pos, quat_to_axis_angle(eef_quat), gripper_qpos]).astype(np.float32)
        robot = env.robots[0]
        qpos = env.sim.data.qpos
        joints = np.concatenate([qpos[robot._ref_joint_pos_indexes], qpos[robot._ref_gripper_joint_pos_indexes]])
        return SimObservation(
            images=images, proprio=proprio, eef_pos=eef_pos, eef_quat=eef_quat,
            joint_names=self.joint_names, joint_positions=np.array(joints, dtype=np.float64),
            privileged=self._privileged(), sim_time=self._steps * self.control_period,
        )

    def _body_pose(self, body_id: int) -> np.ndarray:
        data = self._env.sim.data
        wxyz = np.array(data.body_xquat[body_id])
        return np.concatenate([np.array(data.body_xpos[body_id]), wxyz[[1, 2, 3, 0]]])  # (7,) pos + xyzw

    def _privileged(self) -> dict[str, np.ndarray]:
        return {}

    def _reset_to(self, init_state_index: int) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this SimEnv is closed")

    def close(self) -> None:
        if not self._closed and self._env is not None:
            self._env.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

