"""ObservationAssembler: pairing, staleness, proprio assembly and reason codes (caller-provided clock)."""
import math

import numpy as np
import pytest

from lightvla_ros.policy import observation_sync as osync
from lightvla_ros.policy.observation_sync import ObservationAssembler, Rejection, quat_to_axis_angle
from lightvla_ros.policy.types import Observation

LIBERO_SOURCES = ["eef_pos", "eef_axis_angle", "joint:finger_l", "joint:finger_r"]


def ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


class Asm(ObservationAssembler):
    """The assembler driven in seconds, for readable tests: every time goes in as integer ns (the
    core's unit), fresh_since comes back in seconds."""

    def __init__(self, cams, pairing_tolerance=0.05, max_observation_age=0.5, proprio_sources=(), instruction="",
                 proprio_sync_tolerance=None, future_tolerance=0.1):
        super().__init__(cams, ns(pairing_tolerance), ns(max_observation_age), proprio_sources, instruction,
                         None if proprio_sync_tolerance is None else ns(proprio_sync_tolerance), ns(future_tolerance))

    def add_image(self, camera, image, stamp, received=None):
        super().add_image(camera, image, ns(stamp), None if received is None else ns(received))

    def add_joint_state(self, names, positions, stamp, received=None):
        super().add_joint_state(names, positions, ns(stamp), None if received is None else ns(received))

    def add_eef_pose(self, position, quat, stamp, received=None):
        super().add_eef_pose(position, quat, ns(stamp), None if received is None else ns(received))

    def assemble(self, now):
        return super().assemble(ns(now))

    def fresh_since(self):
        t = super().fresh_since()
        return None if t is None else t / 1e9

    def stale_inputs(self, now):
        return super().stale_inputs(ns(now))


def img(v: int) -> np.ndarray:
    return np.full((8, 8, 3), v, dtype=np.uint8)


def ready(now: float = 10.0, **kw) -> ObservationAssembler:
    a = Asm(["agentview", "wrist"], pairing_tolerance=0.02, max_observation_age=0.3,
                             proprio_sources=LIBERO_SOURCES, instruction="pick up the bowl", **kw)
    a.add_image("agentview", img(1), now - 0.01)
    a.add_image("wrist", img(2), now - 0.005)
    a.add_joint_state(["j1", "finger_l", "finger_r"], [0.3, 0.04, -0.04], now - 0.01)
    a.add_eef_pose([0.1, 0.2, 0.3], [0.0, 0.0, 0.0, 1.0], now - 0.01)
    return a


def test_assembles_in_camera_and_source_order():
    a = ready()
    obs = a.assemble(10.0)
    assert isinstance(obs, Observation)
    assert [int(i[0, 0, 0]) for i in obs.images] == [1, 2]
    assert obs.stamp == 9_990_000_000  # oldest camera, integer ns exactly
    np.testing.assert_allclose(obs.proprio, [0.1, 0.2, 0.3, 0, 0, 0, 0.04, -0.04], atol=1e-6)
    assert obs.proprio.dtype == np.float32 and a.proprio_dim == 8
    assert obs.instruction == "pick up the bowl"


def test_newest_frame_per_camera_wins():
    a = ready()
    a.add_image("agentview", img(7), 9.995)
    obs = a.assemble(10.0)
    assert int(obs.images[0][0, 0, 0]) == 7
    assert obs.stamp == ns(9.995)  # the newer frame of agentview is the oldest camera now


@pytest.mark.parametrize("make_bad, reason", [
    (lambda a: a.add_image("wrist", img(2), 9.9), osync.UNPAIRED),
    (lambda a: a.set_instruction("  "), osync.MISSING_INSTRUCTION),
    (lambda a: a.add_eef_pose([np.nan, 0, 0], [0, 0, 0, 1], 9.99), osync.NAN_PROPRIO),
    (lambda a: a.add_eef_pose([0, 0, 0], [0, 0, 0, 0], 9.99), osync.NAN_PROPRIO),  # zero quaternion
    (lambda a: a.add_joint_state(["finger_l"], [float("inf")], 9.99), osync.NAN_PROPRIO),
    (lambda a: a.add_eef_pose([0, 0, 0], [0, 0, 0, 1], 9.0), osync.STALE),
])
def test_rejections(make_bad, reason):
    a = ready()
    make_bad(a)
    r = a.assemble(10.0)
    assert isinstance(r, Rejection) and r.reason == reason, r
    assert r.message


def test_stale_when_cameras_are_old():
    a = ready()
    r = a.assemble(10.5)
    assert isinstance(r, Rejection) and r.reason == osync.STALE
    assert "max_observation_age" in r.message
    assert isinstance(a.assemble(10.2), Observation)  # 0.21 s: still fresh


def test_missing_camera_and_missing_proprio():
    a = Asm(["agentview", "wrist"], proprio_sources=LIBERO_SOURCES, instruction="x")
    a.add_image("agentview", img(1), 1.0)
    r = a.assemble(1.0)
    assert r.reason == osync.MISSING_CAMERA and "wrist" in r.message
    a.add_image("wrist", img(1), 1.0)
    assert a.assemble(1.0).reason == osync.MISSING_PROPRIO
    a.add_eef_pose([0, 0, 0], [0, 0, 0, 1], 1.0)
    assert a.assemble(1.0).reason == osync.MISSING_PROPRIO  # no joint states yet
    a.add_joint_state(["arm_1"], [0.0], 1.0)
    r = a.assemble(1.0)
    assert r.reason == osync.UNKNOWN_JOINT and "finger_l" in r.message
    a.add_joint_state(["finger_l", "finger_r"], [0.0, 0.0], 1.0)
    assert isinstance(a.assemble(1.0), Observation)


def test_bad_inputs_raise_clearly():
    a = ready()
    with pytest.raises(KeyError, match="unknown camera"):
        a.add_image("left", img(0), 1.0)
    with pytest.raises(ValueError, match="2 names but 1 positions"):
        a.add_joint_state(["a", "b"], [0.0], 1.0)
    with pytest.raises(ValueError, match="unknown proprio source"):
        Asm(["c"], proprio_sources=["eef_quat"])
    with pytest.raises(ValueError):
        Asm([])
    with pytest.raises(ValueError):
        Asm(["a", "a"])


def test_no_proprio_sources_gives_none_and_clear_forgets_frames():
    a = Asm(["cam"], instruction="go")
    a.add_image("cam", img(3), 5.0)
    obs = a.assemble(5.1)
    assert obs.proprio is None and obs.stamp == 5_000_000_000
    a.clear()
    assert a.assemble(5.1).reason == osync.MISSING_CAMERA
    assert a.instruction == "go"


def test_quat_to_axis_angle():
    # 90 degrees about z
    q = [0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)]
    np.testing.assert_allclose(quat_to_axis_angle(np.array(q)), [0, 0, math.pi / 2], atol=1e-6)
    # like robosuite, -q is not folded back: angle 2 acos(-w) = 3 pi / 2 about -z
    np.testing.assert_allclose(quat_to_axis_angle(-np.array(q)), [0, 0, -3 * math.pi / 2], atol=1e-6)
    # 180 degrees about x (LIBERO's typical gripper-down orientation)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([1.0, 0, 0, 0])), [math.pi, 0, 0], atol=1e-6)
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0, 0, 0, 2.0])), [0, 0, 0])  # identity, unnormalised
    assert np.all(np.isnan(quat_to_axis_angle(np.zeros(4))))


def test_proprio_behind_the_images_waits_when_sync_tolerance_is_set():
    # lock-step: the images of step t arrived, the proprio is still the one of step t - 0.05
    a = ready(proprio_sync_tolerance=0.001)
    a.add_image("agentview", img(3), 10.05)
    a.add_image("wrist", img(4), 10.05)
    r = a.assemble(10.05)
    assert isinstance(r, Rejection) and r.reason == osync.PROPRIO_BEHIND and "older than the images" in r.message
    a.add_eef_pose([0.5, 0.2, 0.3], [0.0, 0.0, 0.0, 1.0], 10.05)
    assert isinstance(a.assemble(10.05), Rejection)          # the finger joints are still behind
    a.add_joint_state(["finger_l", "finger_r"], [0.01, -0.01], 10.05)
    obs = a.assemble(10.05)
    assert isinstance(obs, Observation)
    assert obs.proprio[0] == pytest.approx(0.5) and obs.proprio[6] == pytest.approx(0.01)
    # off (the default): the older proprio is used as before
    b = ready()
    b.add_image("agentview", img(3), 10.05)
    b.add_image("wrist", img(4), 10.05)
    assert isinstance(b.assemble(10.05), Observation)


# ---- one staleness rule for every input: stamp and arrival, future stamps rejected ----
@pytest.mark.parametrize("which", ["camera", "eef", "joint"])
def test_a_stamp_far_in_the_future_is_rejected_not_forever_fresh(which):
    """Before: a +1 h stamp had a negative age, so it never went stale."""
    a = ready()
    if which == "camera":
        a.add_image("wrist", img(2), 10.0 + 3600, received=10.0)
    elif which == "eef":
        a.add_eef_pose([0.1, 0.2, 0.3], [0, 0, 0, 1], 10.0 + 3600, received=10.0)
    else:
        a.add_joint_state(["finger_l"], [0.04], 10.0 + 3600, received=10.0)
    r = a.assemble(10.0)
    assert isinstance(r, Rejection) and r.reason == osync.FUTURE_STAMP, r
    assert any("ahead" in s for s in a.stale_inputs(10.0))


def test_a_small_lead_is_tolerated_and_ages_by_arrival():
    a = ready(future_tolerance=0.1)
    a.add_image("agentview", img(1), 10.05, received=9.99)  # lock-step: arrived before its /clock
    a.add_image("wrist", img(2), 10.05, received=9.99)
    a.add_eef_pose([0.1, 0.2, 0.3], [0, 0, 0, 1], 10.05, received=9.99)
    a.add_joint_state(["finger_l", "finger_r"], [0.04, -0.04], 10.05, received=9.99)
    assert isinstance(a.assemble(10.05), Observation)
    # ages from the arrival (9.99) once it is older than the stamp: stale after 9.99 + 0.3
    assert a.fresh_since() == pytest.approx(9.99)
    assert isinstance(a.assemble(10.28), Observation)
    r = a.assemble(10.30)
    assert isinstance(r, Rejection) and r.reason == osync.STALE and "arrival" in r.message


def test_an_arrival_long_before_the_stamp_counts_from_stamp_minus_tolerance():
    """Sim time: the first observation may arrive while the node's clock still reads 0."""
    a = ready(now=1000.0, future_tolerance=0.1)
    for cam in ("agentview", "wrist"):
        a.add_image(cam, img(1), 1000.0, received=0.0)
    assert isinstance(a.assemble(1000.0), Observation)


def test_fresh_since_is_the_oldest_input_so_silent_proprio_goes_stale():
    a = ready()
    assert a.fresh_since() == pytest.approx(9.99)
    for t in (10.1, 10.2):  # cameras keep coming, proprio does not
        a.add_image("agentview", img(1), t)
        a.add_image("wrist", img(2), t)
    assert a.fresh_since() == pytest.approx(9.99)  # the eef pose and the joints
    r = a.assemble(10.30)
    assert isinstance(r, Rejection) and r.reason == osync.STALE
    assert any("eef pose" in s for s in a.stale_inputs(10.30))


@pytest.mark.parametrize("names, positions", [
    (["j1", "finger_l", "finger_r", "a", "b", "c", "d", "e", "f"], [0.1, 0.2, 0.3]),   # 9 names, 3 positions
    (["finger_l", "finger_r", "finger_l"], [0.01, 0.02, 0.5]),                        # one name, two values
])
def test_a_malformed_joint_state_is_rejected_whole(names, positions):
    a = ready()
    before = a.assemble(10.0).proprio.copy()
    with pytest.raises(ValueError):
        a.add_joint_state(names, positions, 10.1)
    np.testing.assert_array_equal(a.assemble(10.1).proprio, before)  # nothing of it was taken
    assert a.fresh_since() == pytest.approx(9.99)                      # and nothing refreshed
