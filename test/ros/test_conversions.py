"""numpy <-> ROS message conversions, every error case included."""
import math

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from lightvla_ros.policy.types import PolicyOutput
from lightvla_ros.ros.conversions import (action_chunk_to_policy_output, compressed_to_rgb, image_to_rgb,
                                          policy_output_to_action_chunk, policy_output_to_pruning_stats,
                                          quat_to_axis_angle, rgb_to_compressed, rgb_to_image, ns_to_time,
                                          time_to_ns)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)  # (H, W, 3)


# ---- Image

def test_rgb8_round_trip_and_header():
    msg = rgb_to_image(RGB, "rgb8", stamp=12_250_000_000, frame_id="agentview")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 5, 15, "rgb8")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 250_000_000, "agentview")
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, RGB)


def test_bgr8_rgba8_bgra8_mono8_to_rgb():
    bgr = np.ascontiguousarray(RGB[:, :, ::-1])
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(bgr, "bgr8")), RGB)
    rgba = np.concatenate([RGB, np.full((6, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgba, "rgba8")), RGB)
    bgra = np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]])
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(bgra, "bgra8")), RGB)
    grey = RGB[:, :, 0].copy()
    out = image_to_rgb(rgb_to_image(grey, "mono8"))
    assert out.shape == (6, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(grey[:, :, None], "mono8")), out)


def test_step_padding_is_honoured():
    msg = Image(height=6, width=5, encoding="rgb8", step=20)  # 15 bytes of pixels + 5 of padding per row
    padded = np.zeros((6, 20), np.uint8)
    padded[:, :15] = RGB.reshape(6, 15)
    padded[:, 15:] = 255
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


def test_non_contiguous_input_is_written_row_major():
    view = RGB[:, ::-1]  # a negative-stride view
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(view)), view)


@pytest.mark.parametrize("change, match", [
    (dict(encoding="yuv422"), "unsupported image encoding"),
    (dict(encoding="16UC1"), "unsupported image encoding"),
    (dict(height=7), "expected height 7 x step 15"),
    (dict(step=14), "step 14 is smaller"),
    (dict(width=0), "empty image"),
    (dict(data=b""), "has no data"),
    (dict(data=b"\x00" * 89), "89 bytes, expected"),
])
def test_image_errors(change, match):
    msg = rgb_to_image(RGB)
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ValueError, match=match):
        image_to_rgb(msg)


@pytest.mark.parametrize("arr, encoding, match", [
    (RGB.astype(np.float32), "rgb8", "uint8"),
    (RGB[:, :, :2], "rgb8", r"shape \(H, W, 3\)"),
    (RGB, "rgba8", r"shape \(H, W, 4\)"),
    (RGB, "mono8", r"shape \(H, W\)"),
    (np.zeros((0, 5, 3), np.uint8), "rgb8", "empty image"),
    (RGB, "jpeg", "unsupported image encoding"),
])
def test_rgb_to_image_errors(arr, encoding, match):
    with pytest.raises(ValueError, match=match):
        rgb_to_image(arr, encoding)


# ---- CompressedImage

def test_png_is_lossless_and_jpeg_is_close():
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[:, :, 0] = np.linspace(0, 255, 48, dtype=np.uint8)  # red ramp: catches an RGB/BGR swap
    smooth[:, :, 2] = 40
    png = rgb_to_compressed(smooth, "png", stamp=1_500_000_000)
    assert png.format == "png" and png.header.stamp.sec == 1
    np.testing.assert_array_equal(compressed_to_rgb(png), smooth)
    jpg = compressed_to_rgb(rgb_to_compressed(smooth, "jpeg"))
    assert jpg.shape == smooth.shape
    assert np.abs(jpg.astype(int) - smooth.astype(int)).mean() < 3
    assert jpg[:, -1, 0].mean() > 200 and jpg[:, -1, 2].mean() < 80  # red stayed red


@pytest.mark.parametrize("fmt, data, match", [
    ("jpeg", b"", "has no data"),
    ("jpeg", b"not an image at all", "could not decode"),
    ("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "could not decode"),
    ("tiff", b"II*\x00", "unsupported compressed format"),
])
def test_compressed_errors(fmt, data, match):
    msg = CompressedImage(format=fmt)
    msg.data = data
    with pytest.raises(ValueError, match=match):
        compressed_to_rgb(msg)


def test_rgb_to_compressed_errors():
    with pytest.raises(ValueError, match="unsupported compressed format"):
        rgb_to_compressed(RGB, "bmp")
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        rgb_to_compressed(RGB[:, :, 0], "png")


# ---- Time

@pytest.mark.parametrize("ns", [0, 1_500_000_000, 12_000_000_001, 1_700_000_000_123_456_789, 999_999_999])
def test_time_round_trip_is_exact(ns):
    t = ns_to_time(ns)
    assert 0 <= t.nanosec < 1_000_000_000
    assert time_to_ns(t) == ns  # integer ns both ways: nothing rounded


def test_time_errors():
    for bad in (-1, 2**31 * 1_000_000_000):
        with pytest.raises(ValueError):
            ns_to_time(bad)
    with pytest.raises(TypeError):
        ns_to_time(1.5)  # seconds by mistake: refused, not truncated


# ---- Quaternion -> axis-angle

def test_quat_to_axis_angle_matches_robosuite():
    from robosuite.utils.transform_utils import quat2axisangle

    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(quat_to_axis_angle(q), quat2axisangle(q.copy()), atol=1e-5)
    # known values: 90 degrees about z; identity; slightly off-unit input is normalised
    half = math.sqrt(0.5)
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, half, half]), [0, 0, math.pi / 2], atol=1e-6)
    np.testing.assert_array_equal(quat_to_axis_angle([0, 0, 0, 1]), np.zeros(3))
    np.testing.assert_allclose(quat_to_axis_angle([0, 0, 2 * half, 2 * half]), [0, 0, math.pi / 2], atol=1e-6)


def test_quat_from_message_and_errors():
    from geometry_msgs.msg import Quaternion

    np.testing.assert_allclose(quat_to_axis_angle(Quaternion(x=1.0, y=0.0, z=0.0, w=0.0)), [math.pi, 0, 0], atol=1e-6)
    for bad, match in (([0, 0, 1], "4 values"), ([0, 0, 0, 0], "zero quaternion"), ([0, 0, math.nan, 1], "non-finite")):
        with pytest.raises(ValueError, match=match):
            quat_to_axis_angle(bad)


# ---- PolicyOutput <-> ActionChunk / PruningStats

def _output():
    actions = np.arange(8 * 7, dtype=np.float32).reshape(8, 7) / 10  # (chunk_size, action_dim)
    return PolicyOutput(actions=actions, stamp=42_500_000_000, timings={"total": 0.12, "pruner": 0.003},
                        kept_per_image=[40, 31], total_per_image=[256, 256], action_space="eef_delta_pose_gripper")


def test_action_chunk_round_trip():
    from rclpy.serialization import deserialize_message, serialize_message
    from lightvla_interfaces.msg import ActionChunk

    out = _output()
    msg = policy_output_to_action_chunk(out, frame_id="base")
    assert (msg.chunk_size, msg.action_dim, msg.visual_tokens_kept, msg.visual_tokens_total) == (8, 7, 71, 512)
    assert msg.header.stamp.sec == 42 and msg.header.stamp.nanosec == 500_000_000
    assert msg.inference_latency == pytest.approx(0.12)
    msg = deserialize_message(serialize_message(msg), ActionChunk)  # through the wire format too
    back = action_chunk_to_policy_output(msg)
    np.testing.assert_array_equal(back.actions, out.actions)
    assert back.actions.dtype == np.float32 and back.actions.flags.writeable
    assert back.stamp == 42_500_000_000 and back.action_space == out.action_space
    assert (back.kept_total, back.total_tokens) == (71, 512)


def test_action_chunk_errors():
    from lightvla_interfaces.msg import ActionChunk

    with pytest.raises(ValueError, match="chunk_size 3 x action_dim 7"):
        action_chunk_to_policy_output(ActionChunk(chunk_size=3, action_dim=7, actions=[0.0] * 20))
    with pytest.raises(ValueError, match="empty action chunk"):
        action_chunk_to_policy_output(ActionChunk())
    bad = _output()
    bad.actions = bad.actions.reshape(-1)
    with pytest.raises(ValueError, match=r"\(chunk_size, action_dim\)"):
        policy_output_to_action_chunk(bad)
    bad.actions = np.full((2, 7), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        policy_output_to_action_chunk(bad)


def test_pruning_stats():
    stats = policy_output_to_pruning_stats(_output())
    assert list(stats.kept_per_image) == [40, 31] and list(stats.total_per_image) == [256, 256]
    assert (stats.kept_total, stats.total) == (71, 512)
    assert stats.pruner_time == pytest.approx(0.003) and stats.model_time == pytest.approx(0.12)
    bad = _output()
    bad.total_per_image = [256]
    with pytest.raises(ValueError, match="kept_per_image has 2 entries"):
        policy_output_to_pruning_stats(bad)


def test_joint_trajectory_points_are_timed_per_step():
    from lightvla_ros.ros.conversions import actions_to_joint_trajectory

    actions = np.arange(6, dtype=np.float32).reshape(3, 2)
    traj = actions_to_joint_trajectory(actions, 12_500_000_000, ["a", "b"], 50_000_000)
    assert traj.joint_names == ["a", "b"] and time_to_ns(traj.header.stamp) == 12_500_000_000
    assert [list(p.positions) for p in traj.points] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert [p.time_from_start.nanosec for p in traj.points] == [50_000_000, 100_000_000, 150_000_000]


def test_step_to_action_is_a_chunk_of_one_stamped_exactly():
    from lightvla_ros.ros.conversions import step_to_action

    msg = step_to_action(1_700_000_000_123_456_789, np.arange(7, dtype=np.float32), "eef_delta_pose_gripper")
    assert (msg.chunk_size, msg.action_dim) == (1, 7) and time_to_ns(msg.header.stamp) == 1_700_000_000_123_456_789
    np.testing.assert_array_equal(np.asarray(msg.actions), np.arange(7, dtype=np.float32))
