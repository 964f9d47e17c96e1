"""ChunkedPolicyRunner with a fake clock and a fake model: no ROS, no threads, integer ns time.

The step semantics the node, bag replay and the in-process sim share: one action per control step
at most, stamps strictly increasing (the timer twice at one clock value, the clock going back, a
chunk landing after the next step is due, a hold then a chunk), refusals counted; run-time changes
take effect (queued actions included) or are refused with the reason; stale, NaN, old chunks.
"""
import numpy as np
import pytest

from lightvla_ros.policy.config import DEFAULTS, RUNTIME, RunnerConfig
from lightvla_ros.policy.runner import ChunkedPolicyRunner
from lightvla_ros.policy.types import PolicyOutput

S = 1_000_000_000
P = S // 20      # 20 Hz
CHUNK = 8
T0 = 1000 * S
SOURCES = ("eef_pos", "eef_axis_angle", "joint:finger_l", "joint:finger_r")


class CountingPolicy:
    """Chunk c, step i -> every value c + i / 100, so an action names its origin."""
    chunk_size, action_dim = CHUNK, 7

    def __init__(self, scale: float = 1.0):
        self.calls, self.scale = 0, scale

    def infer(self, obs):
        c, self.calls = self.calls, self.calls + 1
        values = (c + np.arange(CHUNK, dtype=np.float32) / 100) * self.scale
        return PolicyOutput(actions=np.repeat(values[:, None], 7, axis=1).astype(np.float32), stamp=obs.stamp)


class Harness:
    def __init__(self, policy=None, **cfg):
        cfg = {"instruction": "stack the blocks", "proprio_sources": SOURCES, **cfg}
        self.policy = policy or CountingPolicy()
        self.logs: list[tuple[str, str]] = []
        self.runner = ChunkedPolicyRunner(RunnerConfig(**cfg), CHUNK, 7, log=lambda lv, m: self.logs.append((lv, m)))
        self.now = T0
        self.sent: list[tuple[int, float]] = []   # (stamp ns, action[0]) of every step sent

    def clock(self, t: int) -> None:
        self.now = t

    def observe(self, t: int) -> None:
        """One observation stamped t, received now (as the sim bridge sends it)."""
        r, img = self.runner, np.zeros((8, 8, 3), np.uint8)
        for cam in ("agentview", "wrist"):
            r.add_image(cam, img, t, self.now)
        r.add_joint_state(["finger_l", "finger_r"], [0.01, -0.01], t, self.now)
        r.add_eef_pose([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], t, self.now)

    def step(self) -> None:
        self._send(self.runner.step(self.now))

    def land(self) -> bool:
        """The worker: run the requested inference now and hand the chunk back."""
        req = self.runner.take_request()
        if req is None:
            return False
        self._send(self.runner.on_result(req, self.policy.infer(req.obs), self.now).step)
        return True

    def _send(self, step) -> None:
        if step is not None:
            self.sent.append((step.stamp_ns, float(step.action[0])))

    def stamps(self) -> list[int]:
        return [s for s, _ in self.sent]

    def safety(self, kind: str) -> int:
        return int(self.runner.diagnostics().get("safety_" + kind, "0"))


def strictly_increasing(xs) -> bool:
    return all(b > a for a, b in zip(xs, xs[1:]))


def lock_step_start(h: Harness) -> None:
    """Step 0 is due before the chunk: it waits, and is served the moment the chunk lands."""
    h.observe(T0)
    h.clock(T0)
    h.step()
    assert h.sent == [] and h.land()
    assert h.sent == [(T0, 0.0)]


# ---- the step rule ----
def test_timer_twice_at_one_clock_value_after_a_jump_sends_one_action():
    h = Harness()
    lock_step_start(h)
    for k in (1, 2):
        h.observe(T0 + k * P)
        h.clock(T0 + k * P)
        h.step()
    t = T0 + 12 * P                 # the sim ran 10 steps without /clock (LIBERO wait steps)
    h.observe(t)
    h.clock(t)
    h.step()
    h.step()                        # the timer again: the clock still reads t
    assert h.stamps() == [T0, T0 + P, T0 + 2 * P, t]
    assert [v for _, v in h.sent] == pytest.approx([0.0, 0.01, 0.02, 0.03])  # no action eaten
    assert h.safety("duplicate_steps") == 1
    h.observe(t + P)
    h.clock(t + P)
    h.step()
    assert h.sent[-1][1] == pytest.approx(0.04)


def test_clock_going_back_is_never_served_until_reset():
    h = Harness()
    lock_step_start(h)
    for k in (1, 2, 3):
        h.observe(T0 + k * P)
        h.clock(T0 + k * P)
        h.step()
    for k in (1, 2):                # a restarted sim: time back to T0 + k * P, chunk still queued
        h.observe(T0 + k * P)
        h.clock(T0 + k * P)
        h.step()
    assert h.stamps() == [T0 + k * P for k in range(4)]
    assert h.safety("old_steps") == 2
    h.runner.reset(h.now)           # a new episode: its steps start over
    h.observe(T0 + 3 * P)
    h.clock(T0 + 3 * P)
    h.step()
    assert h.land()
    assert h.sent[-1] == (T0 + 3 * P, pytest.approx(1.0))  # a fresh chunk, not the old queue


def test_chunk_landing_after_the_next_step_is_due_does_not_serve_the_passed_step():
    h = Harness()
    h.observe(T0)
    h.clock(T0)
    h.step()                        # step T0 waits for the chunk
    h.clock(T0 + P)                 # the next step is due (the bridge gave up on T0) ...
    h.observe(T0 + P)
    assert h.land()                 # ... and the chunk lands before the timer runs
    assert h.sent == []             # T0 has passed: never served
    h.step()
    assert h.sent == [(T0 + P, 0.0)]


def test_a_hold_action_serves_its_step_and_a_chunk_landing_then_does_not():
    h = Harness(publish_hold_on_stale=True, hold_action=(0.5,))
    lock_step_start(h)
    t = T0 + 600_000_000            # observations stopped: stale at t, one hold action for step t
    h.clock(t)
    h.step()
    assert h.sent[-1] == (t, 0.5) and h.safety("holds") == 1
    assert any("observations stopped" in m for _, m in h.logs)
    h.observe(t + 10_000_000)       # the stream resumes at once; a chunk lands within the same period
    h.clock(t + 20_000_000)
    assert h.land()
    assert h.stamps().count(t) == 1
    h.clock(t + P)
    h.step()
    assert h.sent[-1] == (t + P, 1.0)
    assert strictly_increasing(h.stamps())


def test_interleaved_lock_step_episode_every_step_once_in_order():
    """24 lock-step steps with chunks landing before, at and after the timer, plus double fires."""
    h = Harness(open_loop_steps=4)
    steps = [T0 + k * P for k in range(24)]
    for k, t in enumerate(steps):
        h.observe(t)                # the bridge: observation, then /clock
        if k % 3 == 0:
            h.land()                # a chunk lands before the /clock is processed
        h.clock(t)
        h.step()
        if k % 5 == 0:
            h.step()                # the timer runs twice
        h.land()
        h.land()
        assert h.stamps()[-1:] == [t], (k, h.stamps()[-3:])
    assert h.stamps() == steps
    assert h.safety("duplicate_steps") == 5


def test_new_episode_clock_before_its_observation_is_still_served():
    """reset, then the sim's clock for the episode's first step is processed before its observation:
    the stall clears the queue, and the observation taken at that instant still starts an inference."""
    h = Harness()
    lock_step_start(h)
    h.runner.reset(h.now)
    t = T0 + 12 * P
    h.clock(t)
    h.step()
    h.observe(t)
    assert h.land(), "no inference from the new episode's first observation: lock-step would wait out its timeout"
    assert h.stamps() == [T0, t]


def test_one_camera_frame_is_inferred_once_even_when_its_chunk_serves_an_older_step():
    """Wall clock: a step found empty, then a newer frame whose chunk lands within the period and
    serves that (older) step. Before, the next step inferred again from the same frame."""
    h = Harness(open_loop_steps=1)
    h.clock(T0)
    h.step()                                  # step T0: nothing yet, it waits
    t_frame = T0 + 10_000_000
    h.clock(t_frame)
    h.observe(t_frame)                        # a frame newer than the waiting step
    h.clock(T0 + 30_000_000)
    assert h.land() and h.sent == [(T0, 0.0)]  # served on arrival, for step T0
    h.clock(T0 + P)
    h.step()                                  # the queue is empty; the only frame was used already
    assert h.runner.take_request() is None and h.policy.calls == 1
    h.observe(T0 + P)                         # a new frame: a new inference
    assert h.runner.take_request() is not None


# ---- safety ----
def test_stale_inputs_stop_the_actions_and_resume_later():
    h = Harness(max_observation_age=0.2)
    lock_step_start(h)
    h.clock(T0 + 300_000_000)       # no new observation for 0.3 s > 0.2 s
    h.step()
    assert len(h.sent) == 1 and h.safety("stalls") == 1
    assert h.runner.diagnostics()["state"] == "waiting for observations"
    t = T0 + 400_000_000
    h.observe(t)
    h.clock(t)
    h.step()
    assert h.land() and h.sent[-1][0] == t  # the queue was cleared: a fresh chunk (chunk 1)
    assert h.sent[-1][1] == pytest.approx(1.0)


def test_nan_and_limits_are_applied_to_chunks_and_steps():
    class NaNPolicy(CountingPolicy):
        def infer(self, obs):
            out = super().infer(obs)
            out.actions[3, 2] = np.nan
            return out

    h = Harness(policy=NaNPolicy())
    h.observe(T0)
    h.step()
    assert h.land() and h.sent == [] and h.safety("nan_action") == 1   # the chunk is not used

    h = Harness(policy=CountingPolicy(scale=10.0), action_max=(0.3,))
    lock_step_start(h)
    for k in range(1, 4):
        h.observe(T0 + k * P)
        h.clock(T0 + k * P)
        h.step()
    assert [v for _, v in h.sent] == pytest.approx([0.0, 0.1, 0.2, 0.3])   # 0.3 clipped from 0.3
    assert h.safety("clipped_chunks") == 1


def test_a_chunk_older_than_max_chunk_age_is_dropped():
    h = Harness(max_chunk_age=0.1)
    h.observe(T0)
    h.step()
    req = h.runner.take_request()
    result = h.runner.on_result(req, h.policy.infer(req.obs), T0 + 150_000_000)
    assert result.chunk is None and result.step is None and h.safety("old_chunks") == 1
    assert h.runner.diagnostics()["keeping_up"] == "no"


def test_a_float_time_is_refused_not_truncated():
    h = Harness()
    with pytest.raises(TypeError):
        h.runner.add_image("agentview", np.zeros((8, 8, 3), np.uint8), 1000.5, T0)


# ---- run-time configuration: takes effect or is refused with the reason ----
def test_new_limits_apply_to_actions_already_queued():
    h = Harness(policy=CountingPolicy(scale=10.0))
    lock_step_start(h)
    h.runner.configure(action_max=[0.05] * 7, action_min=[-1.0])   # the chunk is queued unclipped
    h.observe(T0 + P)
    h.clock(T0 + P)
    h.step()
    assert h.sent[-1] == (T0 + P, pytest.approx(0.05)) and h.safety("clipped_steps") == 1
    h.runner.configure(limit_mode="reject")
    h.observe(T0 + 2 * P)
    h.clock(T0 + 2 * P)
    h.step()
    assert len(h.sent) == 2 and h.safety("out_of_limits_step") == 1


@pytest.mark.parametrize("changes, reason", [
    ({"action_max": [1.0, 2.0]}, "give 1 or action_dim"),
    ({"action_min": [2.0], "action_max": [1.0]}, "exceeds"),
    ({"limit_mode": "ignore"}, "limit_mode"),
    ({"max_observation_age": -1.0}, "max_observation_age"),
    ({"pairing_tolerance": float("nan")}, "pairing_tolerance"),
    ({"open_loop_steps": 9}, "open_loop_steps"),
    ({"control_rate_hz": 50.0}, "start-up only"),
    ({"checkpoint": "/x"}, "start-up only"),
])
def test_a_bad_change_is_refused_whole_with_its_reason(changes, reason):
    h = Harness(action_max=(0.5,))
    before = h.runner.config
    with pytest.raises(ValueError, match=reason):
        h.runner.configure(**changes, pairing_tolerance=0.01) if "pairing_tolerance" not in changes \
            else h.runner.configure(**changes)
    assert h.runner.config is before and h.runner.assembler.pairing_tolerance == 50_000_000


def test_tolerances_and_execution_knobs_take_effect():
    h = Harness(execution_mode="async")
    h.runner.configure(pairing_tolerance=0.01, max_observation_age=0.25, async_latency_margin_steps=3,
                       async_blend="none")
    a = h.runner.assembler
    assert (a.pairing_tolerance, a.max_observation_age) == (10_000_000, 250_000_000)
    assert h.runner.scheduler.latency_margin_steps == 3 and h.runner.scheduler.blend == "none"


def test_config_defaults_are_the_single_source():
    """Every run-time parameter is a config field; the YAML files set only known fields."""
    from pathlib import Path

    import yaml

    fields = set(RunnerConfig.__dataclass_fields__)
    assert RUNTIME <= fields
    root = Path(__file__).resolve().parents[2]
    for f in sorted((root / "config").glob("*.yaml")):
        data = yaml.safe_load(f.read_text()) or {}
        params = (data.get("lightvla_policy") or {}).get("ros__parameters") or {}
        unknown = set(params) - fields - {"use_sim_time", "chunk_size"}   # chunk_size: the scripted expert's
        assert not unknown, f"{f.name}: {sorted(unknown)}"
        restated = [k for k, v in params.items() if k in fields and k != "checkpoint"
                    and RunnerConfig(**{k: v}).to_dict()[k] == DEFAULTS.to_dict()[k]]
        assert not restated, f"{f.name} restates the defaults of {restated}: set only what differs"
