"""lightvla-bag-eval offline: replay equals the recorded chunks, report, plots, compare, bad bags."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from bagtools import CAMS, tree_fingerprint, write_episode
from lightvla_ros.eval.bag_eval import main
from lightvla_ros.eval.bag_io import BagWriter
from lightvla_ros.eval.bag_report import SCHEMA


@pytest.fixture(scope="module")
def episodes(tmp_path_factory, tiny_policy):
    """The same 3-step episode in both storage formats, its chunks computed by the tiny policy."""
    root = tmp_path_factory.mktemp("bags")
    return {s: write_episode(root / f"ep_{s}", s, steps=3, policy=tiny_policy) for s in ("mcap", "sqlite3")}


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_replay_reproduces_recorded_chunks_both_formats(episodes, tiny_checkpoint, tmp_path, capsys):
    before = {s: tree_fingerprint(b) for s, b in episodes.items()}
    report_path, plots = tmp_path / "r.json", tmp_path / "plots"
    code, out, err = run([episodes["mcap"], episodes["sqlite3"], "--checkpoint", tiny_checkpoint,
                          "--report", report_path, "--plots", plots], capsys)
    assert code == 0, err
    rep = json.loads(report_path.read_text())
    assert rep["schema"] == SCHEMA and rep["mode"] == "offline"
    assert rep["checkpoint"]["path"] == str(tiny_checkpoint.resolve()) and len(rep["checkpoint"]["sha256"]) == 64
    assert [e["storage"] for e in rep["episodes"]] == ["mcap", "sqlite3"]
    for e in rep["episodes"]:
        assert e["frames"] == 3 and e["chunks_recorded"] == 3 and e["chunks_unmatched"] == 0 and e["complete"]
        assert e["metadata"]["task"] == "synthetic"
        assert e["actions"]["max_abs_diff"] < 1e-5 and e["actions"]["gripper_agreement"] == 1.0
        assert len(e["actions"]["l1_per_dim"]) == 7
        for f in e["frames_detail"]:
            assert np.allclose(f["predicted"], f["recorded"], atol=1e-5)
    o = rep["overall"]
    assert o["frames"] == 6 and o["actions"]["steps_compared"] == 6 * 8
    for stage in ("vision", "pruner", "llm", "head", "total"):
        assert o["latency"][stage]["n"] == 6 and o["latency"][stage]["mean"] > 0
    assert 0 < o["kept_tokens"]["mean"] <= o["kept_tokens"]["total_per_frame"]
    assert sum(o["kept_tokens"]["histogram"]["counts"]) == 6 and o["kept_tokens"]["recorded_equal"] == 1.0
    # plots: valid PNGs, panel counts recorded in the report
    assert {k: v["panels"] for k, v in rep["plots"].items()} == {"actions": 7, "latency": 5, "kept_tokens": 1}
    for name, p in rep["plots"].items():
        with Image.open(p["path"]) as im:
            im.verify()
        with Image.open(p["path"]) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
    heights = {k: Image.open(rep["plots"][k]["path"]).size[1] for k in ("actions", "kept_tokens")}
    assert heights["actions"] > 3 * heights["kept_tokens"]
    assert "L1" in out and "kept visual tokens" in out and len(out.splitlines()) < 25
    # nothing was written into the input bags
    assert {s: tree_fingerprint(b) for s, b in episodes.items()} == before

    # compare: a report against itself and against one with different recorded actions
    other_bag = write_episode(tmp_path / "ramp", "mcap", steps=3, policy=None)
    code, _, err = run([other_bag, "--checkpoint", tiny_checkpoint, "--report", tmp_path / "b.json",
                        "--no-progress"], capsys)
    assert code == 0, err
    code, out, _ = run(["compare", report_path, tmp_path / "b.json", "--out", tmp_path / "cmp.json"], capsys)
    assert code == 0
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["same_checkpoint"] is True
    rows = {r["key"]: r for r in cmp["rows"]}
    assert rows["overall.actions.l1"]["a"] < 1e-5 < rows["overall.actions.l1"]["b"]
    assert rows["overall.frames"]["delta"] == -3
    assert cmp["frames_matched"] == 3 and cmp["prediction_l1_b_vs_a"] < 1e-5   # same images -> same predictions
    assert "overall.actions.l1" in out


def test_bad_bags_give_clear_errors(tmp_path, tiny_checkpoint, capsys):
    ck = ["--checkpoint", tiny_checkpoint, "--no-progress"]
    # missing topic: no wrist camera
    one_cam = write_episode(tmp_path / "one_cam", "mcap", steps=1, cams=CAMS[:1], with_chunks=False)
    code, _, err = run([one_cam, *ck], capsys)
    assert code == 2 and f"bag {one_cam}, topic /camera/wrist/image_raw: topic not in bag" in err
    # empty bag: topics but no messages
    empty = tmp_path / "empty"
    with BagWriter(empty, "sqlite3") as w:
        w.add_topic(CAMS[0], "sensor_msgs/msg/Image")
    code, _, err = run([empty, *ck], capsys)
    assert code == 2 and f"bag {empty}: bag is empty" in err
    # corrupt file
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "garbage.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 8)
    code, _, err = run([garbage, *ck], capsys)
    assert code == 2 and f"bag {garbage}" in err and "not a readable mcap" in err
    # unknown message type (no definition in the bag) on a camera topic
    with BagWriter(tmp_path / "unknown2", "mcap") as w:
        T = w.typestore.types
        w.write_msg(CAMS[0], 1, T["sensor_msgs/msg/Image"](data=np.zeros(12, np.uint8), height=2, width=2,
                                                           encoding="rgb8", step=6, is_bigendian=0,
                                                           header=T["std_msgs/msg/Header"](
                                                               T["builtin_interfaces/msg/Time"](0, 1), "")))
        w.add_topic(CAMS[1], "acme_msgs/msg/FancyImage", msgdef="", digest="RIHS01_" + "0" * 64)
        w.write(CAMS[1], 2, b"\x00\x01\x00\x00")
    code, _, err = run([tmp_path / "unknown2", *ck], capsys)
    assert code == 2 and "topic /camera/wrist/image_raw: unknown message type acme_msgs/msg/FancyImage" in err
    # a camera topic that is not an image
    wrong = tmp_path / "wrong"
    write_episode(wrong, "mcap", steps=1, cams=CAMS[:1], with_chunks=False)
    shutil.rmtree(wrong)
    with BagWriter(wrong, "mcap") as w:
        S = w.typestore.types["std_msgs/msg/String"]
        for c in CAMS:
            w.write_msg(c, 1, S("not an image"))
    code, _, err = run([wrong, *ck, "--proprio-sources", "--instruction", "x"], capsys)
    assert code == 2 and "topic /camera/agentview/image_raw: type std_msgs/msg/String is not an image type" in err


def test_partly_corrupt_bag_is_evaluated_up_to_the_damage(tmp_path, tiny_checkpoint, capsys):
    bag = write_episode(tmp_path / "ep", "mcap", steps=4, policy=None, flush_each_step=True)
    data = next(bag.glob("*.mcap")).read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "cut.mcap").write_bytes(data[: int(len(data) * 0.7)])
    before = tree_fingerprint(cut)
    code, out, err = run([cut, "--checkpoint", tiny_checkpoint, "--report", tmp_path / "r.json", "--no-progress"],
                         capsys)
    assert code == 1, err                                    # evaluated, but partial
    rep = json.loads((tmp_path / "r.json").read_text())
    e = rep["episodes"][0]
    assert 1 <= e["frames"] < 4 and not e["complete"] and e["recovered"] and "cut.mcap" in e["damage"][0]
    assert rep["overall"]["complete"] is False and "PARTIAL" in out and "WARNING" in out
    assert tree_fingerprint(cut) == before


def test_truncated_bag_keeps_the_topics_and_proprio_of_its_metadata_yaml(tmp_path, tiny_checkpoint, capsys):
    """Defect (a): the recovery path read the storage file only, fell back to the default camera
    topics and exited 2 with 'topic not in bag'. metadata.yaml still names what the node used."""
    from bagtools import PROPRIO_SOURCES
    cams = ["/cam/front/image_raw", "/cam/side/image_raw"]
    bag = write_episode(tmp_path / "ep", "mcap", steps=4, policy=None, cams=cams, flush_each_step=True,
                        metadata={"camera_topics": cams, "proprio_sources": PROPRIO_SOURCES},
                        metadata_topic=False)
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * 0.7)])   # metadata.yaml stays
    code, out, err = run([bag, "--checkpoint", tiny_checkpoint, "--report", tmp_path / "r.json", "--no-progress"],
                         capsys)
    assert code == 1, err                                    # evaluated, partial
    e = json.loads((tmp_path / "r.json").read_text())["episodes"][0]
    assert e["recovered"] and not e["complete"] and 1 <= e["frames"] < 4
    assert e["replay_config"]["camera_topics"] == cams
    assert e["replay_config"]["proprio_sources"] == PROPRIO_SOURCES
    assert "PARTIAL" in out


def test_missing_or_broken_checkpoint_is_exit_2_without_traceback(episodes, tmp_path, capsys):
    """Defect (b): a missing checkpoint ended in a CheckpointError traceback with exit 1 (the code
    for 'evaluated but damaged')."""
    code, _, err = run([episodes["mcap"], "--checkpoint", tmp_path / "nonexistent", "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"checkpoint '{tmp_path / 'nonexistent'}' not found" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    code, _, err = run([episodes["mcap"], "--checkpoint", broken, "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err and "lightvla-bag-eval: error:" in err and str(broken) in err
