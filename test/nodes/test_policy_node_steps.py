"""The policy node's two per-step paths, driven in-process with a fake sim clock and a fake model.

The step timer's callback and a chunk landing (the worker thread) are called in the orders they
may run in (the timer twice at one clock value after a /clock jump, the clock going back, a chunk
landing after the next step is due, a hold then a chunk). The rule under test: one action per control
step at most, stamps strictly increasing, refusals counted in /diagnostics.
"""
import os

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time as TimeMsg  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.clock import ClockType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.time import Time  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from lightvla_ros.policy.types import PolicyOutput  # noqa: E402

P = 0.05     # 20 Hz
CHUNK = 8
T0 = 1000.0


class CountingPolicy:
    """Chunk c, step i -> every value c + i / 100, so a published action names its origin."""
    num_images, chunk_size, action_dim, proprio_dim = 2, CHUNK, 7, 8
    action_space = "eef_delta_pose_gripper"

    def __init__(self):
        self.calls = 0

    def warmup(self):
        pass

    def reset(self):
        pass

    def infer(self, obs):
        c, self.calls = self.calls, self.calls + 1
        values = c + np.arange(CHUNK, dtype=np.float32) / 100
        return PolicyOutput(actions=np.repeat(values[:, None], 7, axis=1).astype(np.float32), stamp=obs.stamp)


def stamp(t: float) -> TimeMsg:
    ns = int(round(t * 1e9))
    return TimeMsg(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class Harness:
    def __init__(self, node, policy):
        self.node, self.policy = node, policy
        self.sent: list[tuple[float, float]] = []   # (stamp, action[0]) of every /lightvla/action
        publish = node.pub_action.publish

        def spy(msg):
            self.sent.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, float(msg.actions[0])))
            publish(msg)
        node.pub_action.publish = spy

    def clock(self, t: float) -> None:
        self.node.get_clock().set_ros_time_override(Time(nanoseconds=int(round(t * 1e9)),
                                                         clock_type=ClockType.ROS_TIME))

    def observe(self, t: float) -> None:
        """One observation stamped t through the node's own callbacks (as the sim bridge sends it)."""
        n = self.node
        img = Image(height=8, width=8, encoding="rgb8", step=24, data=bytes(8 * 8 * 3))
        img.header.stamp = stamp(t)
        for cam in ("agentview", "wrist"):
            n._on_image(cam, img, False)
        js = JointState(name=["finger_l", "finger_r"], position=[0.01, -0.01])
        js.header.stamp = stamp(t)
        n._on_joint_state(js)
        pose = PoseStamped()
        pose.header.stamp = stamp(t)
        pose.pose.orientation.w = 1.0
        n._on_eef_pose(pose)

    def step(self) -> None:
        self.node._on_step()          # what the step timer runs

    def land(self) -> bool:
        """The worker: run the requested inference now and hand the chunk back."""
        job = self.node._job
        if job is None:
            return False
        obs, epoch, t_request, since = job
        self.node._on_result(self.policy.infer(obs), obs, epoch, t_request, since)
        return True

    def stamps(self) -> list[float]:
        return [round(s, 6) for s, _ in self.sent]

    def safety(self, kind: str) -> int:
        return int(self.node.diagnostics_values().get("safety_" + kind, "0"))


@pytest.fixture
def make_node(tmp_path):
    from lightvla_ros.nodes.policy_node import PolicyNode
    from lightvla_ros.ros.launcher import ros_domain

    made = []
    with ros_domain(log_dir=tmp_path) as dom:
        saved = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=dom.domain_id)
        if saved is None:
            os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE")
        else:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = saved

        def make(**params):
            params = {"use_sim_time": True, "instruction": "stack the blocks", "execution_mode": "open_loop",
                      "control_rate_hz": 1.0 / P, "max_observation_age": 0.5,
                      "proprio_sources": ["eef_pos", "eef_axis_angle", "joint:finger_l", "joint:finger_r"],
                      **params}
            policy = CountingPolicy()
            node = PolicyNode(policy=policy, context=context,
                              parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
            made.append(node)  # not started: no worker thread, no executor; the test is the executor
            return Harness(node, policy)

        try:
            yield make
        finally:
            for node in made:
                node.destroy_node()
            rclpy.shutdown(context=context)


def strictly_increasing(xs) -> bool:
    return all(b > a for a, b in zip(xs, xs[1:]))


def lock_step_start(h: Harness) -> None:
    """Step 0 is due before the chunk: it waits, and is served the moment the chunk lands."""
    h.observe(T0)
    h.clock(T0)
    h.step()
    assert h.sent == [] and h.land()
    assert h.sent == [(T0, 0.0)]


def test_timer_twice_at_one_clock_value_after_a_jump_publishes_one_action(make_node):
    h = make_node()
    lock_step_start(h)
    for k in (1, 2):
        h.observe(T0 + k * P)
        h.clock(T0 + k * P)
        h.step()
    t = T0 + 12 * P                 # the sim ran 10 steps without /clock (LIBERO wait steps)
    h.observe(t)
    h.clock(t)
    h.step()
    h.step()                        # the executor runs the timer again: the clock still reads t
    assert h.stamps() == [round(x, 6) for x in (T0, T0 + P, T0 + 2 * P, t)]
    assert [v for _, v in h.sent] == pytest.approx([0.0, 0.01, 0.02, 0.03])  # no action eaten
    assert h.safety("duplicate_steps") == 1
    h.observe(t + P)
    h.clock(t + P)
    h.step()
    assert h.sent[-1][1] == pytest.approx(0.04)


def test_clock_going_back_is_never_served_until_reset(make_node):
    h = make_node()
    lock_step_start(h)
    for k in (1, 2, 3):
        h.observe(T0 + k * P)
        h.clock(T0 + k * P)
        h.step()
    for k in (1, 2):                # a restarted sim: time back to T0 + k * P, chunk still queued
        h.observe(T0 + k * P)
        h.clock(T0 + k * P)
        h.step()
    assert h.stamps() == [round(T0 + k * P, 6) for k in range(4)]
    assert h.safety("old_steps") == 2
    h.node._on_reset(Trigger.Request(), Trigger.Response())   # a new episode: its steps start over
    h.observe(T0 + 3 * P)
    h.clock(T0 + 3 * P)
    h.step()
    assert h.land()
    assert h.sent[-1] == (pytest.approx(T0 + 3 * P), pytest.approx(1.0))  # a fresh chunk, not the old queue


def test_chunk_landing_after_the_next_step_is_due_does_not_serve_the_passed_step(make_node):
    h = make_node()
    h.observe(T0)
    h.clock(T0)
    h.step()                        # step T0 waits for the chunk
    h.clock(T0 + P)                 # the next step is due (the bridge gave up on T0) ...
    h.observe(T0 + P)
    assert h.land()                 # ... and the chunk lands before the timer callback runs
    assert h.sent == []             # T0 has passed: never served
    h.step()
    assert h.sent == [(pytest.approx(T0 + P), 0.0)]


def test_a_hold_action_serves_its_step_and_a_chunk_landing_then_does_not(make_node):
    h = make_node(publish_hold_on_stale=True, hold_action=[0.5])
    lock_step_start(h)
    t = T0 + 0.6                    # observations stopped: stale at t, one hold action for step t
    h.clock(t)
    h.step()
    assert h.sent[-1] == (pytest.approx(t), 0.5) and h.safety("holds") == 1
    h.observe(t + 0.01)             # the stream resumes at once; a chunk lands within the same period
    h.clock(t + 0.02)
    assert h.land()
    assert h.stamps().count(round(t, 6)) == 1
    h.clock(t + P)
    h.step()
    assert h.sent[-1] == (pytest.approx(t + P), 1.0)
    assert strictly_increasing(h.stamps())


def test_interleaved_lock_step_episode_every_step_once_in_order(make_node):
    """24 lock-step steps with chunks landing before, at and after the timer, plus double fires."""
    h = make_node(open_loop_steps=4)
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
        assert h.stamps()[-1:] == [round(t, 6)], (k, h.stamps()[-3:])
    assert h.stamps() == [round(t, 6) for t in steps]
    assert h.safety("duplicate_steps") == 5


def test_new_episode_clock_before_its_observation_is_still_served(make_node):
    """~/reset, then the sim's /clock for the episode's first step is processed before its observation:
    the stall clears the queue, and the observation taken at that instant still starts an inference."""
    h = make_node()
    lock_step_start(h)
    h.node._on_reset(Trigger.Request(), Trigger.Response())
    t = T0 + 12 * P                 # the next episode after 10 wait steps
    h.clock(t)
    h.step()
    h.observe(t)
    assert h.land(), "no inference from the new episode's first observation: lock-step would wait out its timeout"
    assert h.stamps() == [round(T0, 6), round(t, 6)]
