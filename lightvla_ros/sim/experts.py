"""Scripted experts on privileged state: waypoint phase machines that act like a policy.

    expert = make_expert(env)          # robosuite Lift/Stack/PickPlaceCan, LIBERO-Object
    expert.reset()
    action = expert.act(sim_obs)       # (7,) float32, OSC_POSE delta, gripper -1 open / +1 close
    chunk = expert.act_chunk(sim_obs, chunk_size)   # (chunk_size, 7): the same controller rolled
                                                    # forward on a predicted end-effector position

Each expert follows eef waypoints built from object poses (`SimObservation.privileged`):
above the object, descend, close, lift, (carry over the target, lower, release, retreat).
`act_chunk` commits the phase machine as if the whole chunk runs open loop, so it can be driven
through the same chunk execution as the VLA; the next call re-plans from the real state.

ExpertAgent is the expert as a policy, one control step at a time: the expert node steps it with
the bridge's /sim/privileged messages, an in-process episode (sim/episode.py) with the same
state built from the env, so both apply the same actions (test/eval/test_sim_eval.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from robosuite.utils import transform_utils as T

from lightvla_ros.policy.chunking import make_scheduler
from lightvla_ros.sim.base import ACTION_DIM, SimEnv, SimObservation, observation_from_state

POS_SCALE = 0.05      # m per action unit (OSC_POSE output_max)
ROT_SCALE = 0.5       # rad per action unit
POS_GAIN = 3.0        # P gain on position error, in action units per POS_SCALE of error
ROT_GAIN = 1.0
# Measured: with a goal reset every step, the OSC end effector covers ~25% of the commanded delta
# per control step at steady state; the chunk rollout predicts with that.
TRACK = 0.25


def position_action(target: np.ndarray, eef: np.ndarray, speed: float = 1.0) -> np.ndarray:
    """The experts' P law: (3,) position action toward `target` from `eef` (world metres), each
    component capped at `speed` action units."""
    return np.clip(POS_GAIN * (np.asarray(target) - np.asarray(eef)) / POS_SCALE, -speed, speed)


@dataclass
class Phase:
    """Move the eef to `target` (a key into the plan's targets) with the gripper held at `gripper`."""

    name: str
    target: str
    gripper: float        # -1 open, +1 close
    tol: float = 0.01     # m; the phase ends once the eef is this close ...
    min_steps: int = 0    # ... and at least this many steps were spent in it (gripper travel)
    max_steps: int = 80   # give up waiting and go on (OSC may not reach a target pressed into the floor)
    speed: float = 1.0    # cap on each position action component (slow near objects)


class WaypointExpert:
    """Phase machine over eef waypoints; subclasses say which phases and where their targets are."""

    def __init__(self, env: SimEnv):
        self.env = env
        self.phases: list[Phase] = self._phases()
        self.reset()

    def reset(self) -> None:
        self.phase = 0
        self.count = 0           # steps spent in the current phase
        self.memory: dict[str, np.ndarray] = {}  # positions frozen on entering a phase (e.g. grasp point)
        self.target_quat: np.ndarray | None = None  # eef orientation held all episode (xyzw)

    def act(self, obs: SimObservation) -> np.ndarray:
        return self.act_chunk(obs, 1)[0]

    def act_chunk(self, obs: SimObservation, chunk_size: int) -> np.ndarray:
        """(chunk_size, 7) float32: the controller rolled forward on a predicted eef position."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if self.target_quat is None:
            self.target_quat = np.array(obs.eef_quat)
        eef = np.array(obs.eef_pos, dtype=np.float64)
        rot_err = self._rot_error(obs.eef_quat)
        chunk = np.zeros((chunk_size, 7), dtype=np.float32)
        for k in range(chunk_size):
            target = self._advance(obs, eef, observed=(k == 0))
            speed = self.phases[self.phase].speed
            dpos = position_action(target, eef, speed)
            drot = np.clip(ROT_GAIN * rot_err / ROT_SCALE, -1.0, 1.0)
            chunk[k, :3], chunk[k, 3:6] = dpos, drot
            chunk[k, 6] = self.phases[self.phase].gripper
            eef = eef + TRACK * POS_SCALE * dpos     # predicted motion for the rest of the chunk
            rot_err = rot_err - TRACK * ROT_SCALE * drot
            self.count += 1
        return chunk

    def plan(self, obs: SimObservation, chunk_size: int, rewind: int = 0) -> np.ndarray:
        """The chunk `act_chunk` would plan from `obs`, leaving the expert as it was.

        Used mid-chunk: `rewind` is how many steps of the chunk being executed have not been
        executed yet (`act_chunk` counted them in the phase's steps already); they are taken
        off that count first, so the plan sees the steps the phase has really run.
        """
        saved = self.phase, self.count, dict(self.memory), self.target_quat
        self.count = max(0, self.count - int(rewind))
        try:
            return self.act_chunk(obs, chunk_size)
        finally:
            self.phase, self.count, self.memory, self.target_quat = saved

    def _advance(self, obs: SimObservation, eef: np.ndarray, observed: bool) -> np.ndarray:
        """Target of the current phase, moving on to the next phase while this one is done.

        A phase ends only on an observed (not predicted) eef position, i.e. at the first step of
        a chunk: the real arm does not follow the rollout exactly (it lags, then overshoots), and
        descending or grasping on a predicted arrival knocks or misses the object. Within a chunk
        the controller keeps converging on the current target.
        """
        while True:
            phase = self.phases[self.phase]
            key = f"{self.phase}:{phase.target}"
            if key not in self.memory:  # freeze the target when the phase starts
                self.memory[key] = self._target(phase.target, obs, eef)
            target = self.memory[key]
            reached = np.linalg.norm(target - eef) < phase.tol and self.count >= phase.min_steps
            last = self.phase == len(self.phases) - 1
            if observed and (reached or self.count >= phase.max_steps) and not last:
                self.phase += 1
                self.count = 0
                continue
            return target

    def _rot_error(self, quat: np.ndarray) -> np.ndarray:
        """World-frame axis-angle taking the current orientation to the held one (OSC's delta frame)."""
        r_err = T.quat2mat(self.target_quat) @ T.quat2mat(np.asarray(quat)).T
        return T.quat2axisangle(T.mat2quat(r_err))

    # subclasses ------------------------------------------------------------------------------
    def _phases(self) -> list[Phase]:
        raise NotImplementedError

    def _target(self, name: str, obs: SimObservation, eef: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class PickPlaceExpert(WaypointExpert):
    """Pick `obj` (a privileged key), lift, and (unless place is None) carry it over `place` and drop it.

    Heights are world z in metres: grasp at the object's centre (not below `min_grasp_z`),
    approach `approach` above it, carry at `carry_z`, release at `release_z`.
    """

    def __init__(self, env: SimEnv, obj: str, place: str | None, *, approach=0.10, lift=0.15,
                 carry_z: float | None = None, release_z: float | None = None, min_grasp_z=-np.inf,
                 grasp_dz=0.0, place_offset=(0.0, 0.0)):
        self.obj, self.place = obj, place
        self.approach, self.lift = approach, lift
        self.carry_z, self.release_z = carry_z, release_z
        self.min_grasp_z, self.grasp_dz = min_grasp_z, grasp_dz
        self.place_offset = np.array([*place_offset, 0.0])
        super().__init__(env)

    def _phases(self) -> list[Phase]:
        pick = [
            Phase("above", "above_obj", -1.0, tol=0.01),
            Phase("descend", "grasp", -1.0, tol=0.008, max_steps=60, speed=0.5),
            Phase("close", "grasp", +1.0, tol=np.inf, min_steps=12),
        ]
        if self.place is None:
            return pick + [Phase("lift", "lifted", +1.0, tol=0.0)]
        return pick + [
            Phase("lift", "lifted", +1.0, tol=0.02),
            Phase("carry", "over_place", +1.0, tol=0.015),
            Phase("lower", "release", +1.0, tol=0.015, speed=0.5),
            Phase("release", "release", -1.0, tol=np.inf, min_steps=10),
            Phase("retreat", "retreat", -1.0, tol=0.0),
        ]

    def _target(self, name: str, obs: SimObservation, eef: np.ndarray) -> np.ndarray:
        obj = obs.privileged[self.obj][:3]
        grasp = np.array([obj[0], obj[1], max(obj[2] + self.grasp_dz, self.min_grasp_z)])
        if name == "above_obj":
            return grasp + [0, 0, self.approach]
        if name == "grasp":
            return grasp
        if name == "lifted":
            z = self.carry_z if self.carry_z is not None else eef[2] + self.lift
            return np.array([eef[0], eef[1], z])
        place = obs.privileged[self.place][:3] + self.place_offset
        if name == "over_place":
            return np.array([place[0], place[1], self.carry_z])
        if name == "release":
            return np.array([place[0], place[1], self.release_z])
        if name == "retreat":
            return np.array([place[0], place[1], self.carry_z + 0.05])
        raise KeyError(name)


def make_expert(env: SimEnv) -> WaypointExpert:
    """The scripted expert for env's task, or ValueError when there is none."""
    if env.suite == "robosuite":
        obs = env.observe()
        if env.task_name == "Lift":
            return PickPlaceExpert(env, "cube", None, approach=0.08, lift=0.15)
        if env.task_name == "Stack":
            b = obs.privileged["cubeB"][:3]
            # cubeA (half size 0.02) lands on cubeB (half size 0.025): centre 0.045 above cubeB's
            return PickPlaceExpert(env, "cubeA", "cubeB", approach=0.08, carry_z=b[2] + 0.12,
                                   release_z=b[2] + 0.055)
        if env.task_name == "PickPlaceCan":
            t = obs.privileged["target"][:3]  # bin floor; success needs the gripper > 4 cm from the can
            # the compartment's centre is at the edge of the Panda's reach, where the arm sags and
            # cannot retreat: drop the can ~5 cm inside the compartment's near corner instead
            return PickPlaceExpert(env, "can", "target", approach=0.10, carry_z=t[2] + 0.25,
                                   release_z=t[2] + 0.17, place_offset=(-0.05, -0.07))
    if env.suite == "libero_object":
        goal = env.goal_state  # [["in", "<object>_1", "basket_1_contain_region"]]
        obj = goal[0][1]
        place = goal[0][2].removesuffix("_contain_region")
        # floor at z 0, basket rim at ~0.14: carry at 0.30, release from above the rim
        return PickPlaceExpert(env, obj, place, approach=0.10, carry_z=0.30, release_z=0.25,
                               min_grasp_z=0.012)
    raise ValueError(f"no scripted expert for {env.suite}/{env.task_name}; experts exist for "
                     "robosuite Lift, Stack, PickPlaceCan and every libero_object task")


class TaskView:
    """What make_expert reads of an env (suite, task, BDDL goal, first observation), from a privileged state."""

    def __init__(self, state: dict, obs: SimObservation):
        self.suite, self.task_name = state["suite"], state["task_name"]
        self.goal_state = state.get("goal_state")
        self._obs = obs

    def observe(self) -> SimObservation:
        return self._obs


class ExpertAgent:
    """The scripted expert as a policy: a privileged state (base.privileged_state) per control step in,
    the action for that step out. It plans a chunk whenever the chunk scheduler (policy/chunking, the
    VLA node's) asks for one; a new episode_id starts a fresh expert."""

    def __init__(self, chunk_size: int = 8, execution_mode: str = "open_loop", period_ns: int = 50_000_000):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.sched = make_scheduler(execution_mode, self.chunk_size, ACTION_DIM, int(period_ns))
        self.expert: WaypointExpert | None = None
        self.episode_id = None

    def reset(self) -> None:
        self.sched.reset()
        self.expert, self.episode_id = None, None

    def step(self, state: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(the action for the step at state['stamp_ns'] or None, the chunk planned at this step or None)."""
        now = int(state["stamp_ns"])
        obs = observation_from_state(state)
        if state["episode_id"] != self.episode_id:   # a new episode: a fresh plan
            self.expert = make_expert(TaskView(state, obs))
            self.sched.reset()
            self.episode_id = state["episode_id"]
        chunk = None
        if self.sched.wants_inference(now):
            self.sched.inference_started(now)
            chunk = np.asarray(self.expert.act_chunk(obs, self.chunk_size), dtype=np.float32)  # (T, 7)
            self.sched.add_chunk(chunk, now, now)
        return self.sched.next_action(now), chunk
