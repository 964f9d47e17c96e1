"""lightvla-dataset from-bags: a recorded bag becomes an episode the node would have seen, and trains."""
import json

import numpy as np
import pytest

from lightvla_ros.eval.bag_io import METADATA_TOPIC, BagWriter
from lightvla_ros.train.dataset import load_episode
from lightvla_ros.train.finetune import FinetuneConfig, finetune
from lightvla_ros.train.from_bags import main

CAMS = ["/cam/front/image_raw", "/cam/wrist/image_raw"]   # not the defaults: they come from the metadata
JOINTS = [f"arm_{i}" for i in range(7)] + ["finger_l", "finger_r"]
SOURCES = ["eef_pos", "eef_axis_angle", "joint:finger_l", "joint:finger_r"]
T0 = 1_700_000_000 * 10**9      # epoch-sized stamps
STEP = 100_000_000              # 10 Hz
STEPS = 10
NO_WRIST_FRAME = 4              # this step's wrist frame is never recorded: the step is unpaired
INSTRUCTION = "put the cube in the bowl"


def step_values(k: int):
    """Known inputs of step k: two images, finger joints, eef position, a rotation of 0.1 k about z."""
    rng = np.random.default_rng(k)
    images = [rng.integers(0, 255, (12, 16, 3), dtype=np.uint8) for _ in CAMS]
    fingers = np.array([0.02 + 0.001 * k, -0.02 - 0.001 * k])
    pos = np.array([0.1 * k, -0.05 * k, 0.3])
    angle = 0.1 * k
    quat = np.array([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)])   # x, y, z, w
    action = (np.arange(7) * 0.01 + k).astype(np.float32)
    return images, fingers, pos, quat, action


def expected_proprio(k: int) -> np.ndarray:
    """As the node builds it: eef_pos, axis-angle of the quaternion, the finger joints."""
    _, fingers, pos, _, _ = step_values(k)
    return np.concatenate([pos, [0.0, 0.0, 0.1 * k], fingers]).astype(np.float32)


def write_bag(path):
    """Per step: both cameras (the wrist camera recorded two steps late, as a recorder may), joint
    states, eef pose, the executed action (ActionChunk, chunk_size 1, stamp = step time) and, as
    lightvla-record records it too, an 8-step chunk on /lightvla/action_chunk. Broken
    steps: no wrist frame for step NO_WRIST_FRAME; an action before any data; one long after it; a
    second action for step 2; an action with a wrong size."""
    with BagWriter(path) as w:
        T = w.typestore.types

        def hdr(ns):
            return T["std_msgs/msg/Header"](T["builtin_interfaces/msg/Time"](ns // 10**9, ns % 10**9), "")

        def action(t_bag, stamp, values, dim=7):
            w.write_msg("/lightvla/action", t_bag, T["lightvla_interfaces/msg/ActionChunk"](
                hdr(stamp), 1, dim, np.asarray(values, np.float32), "eef_delta_pose_gripper", 0.0, 0, 0))

        meta = {"instruction": "an older instruction", "camera_topics": CAMS, "proprio_sources": SOURCES}
        w.set_metadata(meta)
        w.write_msg(METADATA_TOPIC, T0 - 3 * STEP, T["std_msgs/msg/String"](json.dumps(meta)))
        w.write_msg("/instruction", T0 - 3 * STEP, T["std_msgs/msg/String"](INSTRUCTION))
        action(T0 - STEP, T0 - STEP, np.zeros(7))                          # before any data: missing_camera
        for k in range(STEPS):
            stamp = T0 + k * STEP
            images, fingers, pos, quat, act = step_values(k)
            h, wd, _ = images[0].shape
            w.write_msg(CAMS[0], stamp + 1_000_000, T["sensor_msgs/msg/Image"](
                hdr(stamp), h, wd, "rgb8", 0, wd * 3, images[0].reshape(-1)))
            if k != NO_WRIST_FRAME:
                w.write_msg(CAMS[1], stamp + 2 * STEP, T["sensor_msgs/msg/Image"](
                    hdr(stamp), h, wd, "bgr8", 0, wd * 3, images[1][..., ::-1].reshape(-1)))
            w.write_msg("/joint_states", stamp + 2_000_000, T["sensor_msgs/msg/JointState"](
                hdr(stamp), JOINTS, np.concatenate([np.zeros(7), fingers]), np.zeros(0), np.zeros(0)))
            Pose, P, Q = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"]
            w.write_msg("/eef_pose", stamp + 2_000_000, T["geometry_msgs/msg/PoseStamped"](
                hdr(stamp), Pose(P(*pos), Q(*quat))))
            action(stamp + 3_000_000, stamp, act)
            w.write_msg("/lightvla/action_chunk", stamp + 3_000_000, T["lightvla_interfaces/msg/ActionChunk"](
                hdr(stamp), 8, 7, np.zeros(56, np.float32), "eef_delta_pose_gripper", 0.01, 3, 72))
            if k == 2:
                action(stamp + 4_000_000, stamp, act + 100)                   # duplicate_step
                action(stamp + 4_000_000, stamp + STEP // 2, np.zeros(6))     # bad_action
        action(T0 + 16 * STEP, T0 + 16 * STEP, np.zeros(7))                # 0.7 s after the last data: stale
    return path


@pytest.fixture
def converted(tmp_path, capsys):
    bag = write_bag(tmp_path / "demo_bag")
    out = tmp_path / "dataset"
    assert main(["from-bags", str(bag), str(out)]) == 0
    return out, capsys.readouterr().out


def test_bag_becomes_the_episode_the_node_would_have_seen(converted):
    out, printed = converted
    ep = load_episode(out / "demo_bag.npz")
    kept = [k for k in range(STEPS) if k != NO_WRIST_FRAME]
    assert len(ep) == len(kept) and ep.instruction == INSTRUCTION   # the topic's, not the metadata's
    np.testing.assert_array_equal(ep.actions, np.stack([step_values(k)[4] for k in kept]))  # the first of step 2
    np.testing.assert_allclose(ep.proprio, np.stack([expected_proprio(k) for k in kept]), atol=1e-6)
    assert ep.images.shape == (len(kept), 2, 12, 16, 3)
    for i, k in enumerate(kept):
        for c in range(2):   # the wrist camera recorded as bgr8: back to RGB
            np.testing.assert_array_equal(ep.images[i, c], step_values(k)[0][c])
    np.testing.assert_allclose(ep.timestamps, [(T0 + k * STEP) * 1e-9 for k in kept], rtol=0, atol=1e-6)
    assert ep.camera_names == tuple(CAMS)

    line = next(ln for ln in printed.splitlines() if "demo_bag:" in ln)
    assert "9 steps written, 5 skipped" in line
    for reason in ("bad_action 1", "duplicate_step 1", "missing_camera 1", "stale 1", "unpaired 1"):
        assert reason in line
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "lightvla.dataset/1" and meta["source"] == "lightvla-dataset from-bags"
    assert meta["camera_topics"] == CAMS and meta["proprio_sources"] == SOURCES
    assert meta["control_rate_hz"] == pytest.approx(10.0) and meta["action_space"] == "eef_delta_pose_gripper"
    assert meta["bags"][0]["episode"] == "demo_bag.npz" and meta["bags"][0]["steps"] == 9
    assert meta["bags"][0]["skipped"] == {"missing_camera": 1, "unpaired": 1, "stale": 1,
                                          "duplicate_step": 1, "bad_action": 1}


def test_bad_bags_are_reported_in_one_line(tmp_path, capsys):
    bag = write_bag(tmp_path / "demo_bag")
    assert main(["from-bags", str(tmp_path / "no_such_bag"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_bag: no such file or directory" in err
    # a chunk topic is not the executed actions; a missing topic names itself
    assert main(["from-bags", str(bag), str(tmp_path / "out"), "--action-topic", "/lightvla/action_chunk"]) == 1
    assert "demo_bag: no episode: topic /lightvla/action_chunk: carries chunks of 8 steps" in capsys.readouterr().out
    assert main(["from-bags", str(bag), str(tmp_path / "out"), "--camera-topics", "/camera/top"]) == 1
    assert "/camera/top: topic not in bag" in capsys.readouterr().out
    assert not (tmp_path / "out" / "demo_bag.npz").exists()


def test_converted_episodes_train(converted, tiny_checkpoint, tmp_path):
    out, _ = converted
    result = finetune(FinetuneConfig(checkpoint=str(tiny_checkpoint), out_dir=str(tmp_path / "run"), data=str(out),
                                     max_steps=2, batch_size=2, device="cpu", dtype="float32"), log=None)
    assert len(result.history) == 2 and all(np.isfinite(r.loss) for r in result.history)
    assert (tmp_path / "run" / "config.json").is_file()
