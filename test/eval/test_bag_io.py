"""bag_io: both storage formats, custom types, crash recovery, damage, read-only."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lightvla_ros.eval.bag_io import BagError, BagReader, BagWriter, make_typestore
from bagtools import CAMS, tree_fingerprint, write_episode

REPO = Path(__file__).resolve().parents[2]


def test_custom_types_registered_from_msg_text():
    ts = make_typestore()
    fields = [f[0] for f in ts.fielddefs["lightvla_interfaces/msg/ActionChunk"][1]]
    assert fields == ["header", "chunk_size", "action_dim", "actions", "action_space", "inference_latency",
                      "visual_tokens_kept", "visual_tokens_total"]
    assert "lightvla_interfaces/msg/PruningStats" in ts.fielddefs
    assert "lightvla_interfaces/msg/EpisodeResult" in ts.fielddefs


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_roundtrip_and_rclpy_bytes_interchange(tmp_path, storage):
    bag = write_episode(tmp_path / "ep", storage, steps=2, with_chunks=True)
    with BagReader(bag) as r:
        assert r.storage == storage and not r.recovered and not r.damage
        assert r.topics["/lightvla/action_chunk"].msgtype == "lightvla_interfaces/msg/ActionChunk"
        assert r.topics[CAMS[0]].count == 2
        assert r.episode_metadata()["task"] == "synthetic"
        chunks = [m for m in r.messages(["/lightvla/action_chunk"])]
        assert [m.t_ns for m in chunks] == sorted(m.t_ns for m in chunks)
        msg = r.decode(chunks[1])
        assert np.allclose(msg.actions, 0.1) and msg.chunk_size == 8
        # the same bytes decode with rclpy's generated type (what the live system uses)
        from lightvla_interfaces.msg import ActionChunk
        from rclpy.serialization import deserialize_message
        live = deserialize_message(chunks[1].raw, ActionChunk)
        assert live.chunk_size == 8 and np.allclose(np.asarray(live.actions), msg.actions)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_kill_9_leaves_a_readable_bag(tmp_path, storage):
    bag = tmp_path / "crash"
    code = textwrap.dedent(f"""
        import time
        from lightvla_ros.eval.bag_io import BagWriter
        w = BagWriter({str(bag)!r}, {storage!r})
        S = w.typestore.types["std_msgs/msg/String"]
        for i in range(200):
            w.write_msg("/instruction", 1000 + i, S("step %d" % i))
            if i == 149:
                w.flush()
                print("flushed", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == b"flushed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert not (bag / "metadata.yaml").exists()          # the writer never closed
    with BagReader(bag) as r:
        texts = [r.decode(m).data for m in r.messages()]
        assert r.recovered
    assert texts == [f"step {i}" for i in range(150)]      # everything flushed, in order


def test_truncated_mcap_reads_up_to_the_damage(tmp_path):
    bag = write_episode(tmp_path / "ep", "mcap", steps=4, with_chunks=False, flush_each_step=True)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "cut.mcap").write_bytes(data[: int(len(data) * 0.6)])   # no footer, last chunks gone
    with BagReader(cut) as r:
        n = sum(1 for m in r.messages([CAMS[0]]))
        assert 1 <= n < 4
        assert r.damage and "cut.mcap" in r.damage[0]


def test_corrupt_and_empty_files_name_the_bag(tmp_path):
    bad = tmp_path / "garbage"
    bad.mkdir()
    (bad / "garbage.mcap").write_bytes(os.urandom(4096))
    with pytest.raises(BagError, match=f"bag {bad}.*not a readable mcap"):
        BagReader(bad)
    db = tmp_path / "garbage_db"
    db.mkdir()
    (db / "garbage_db.db3").write_bytes(b"SQLite format 3\0" + os.urandom(4096))
    with pytest.raises(BagError, match=f"bag {db}: cannot open"):
        BagReader(db)
    empty = tmp_path / "zero"
    empty.mkdir()
    (empty / "zero.mcap").write_bytes(b"")
    with pytest.raises(BagError, match="empty"):
        BagReader(empty)
    with pytest.raises(BagError, match="no such file"):
        BagReader(tmp_path / "nope")


def test_unknown_type_is_a_clear_error(tmp_path):
    bag = tmp_path / "unknown"
    with BagWriter(bag, "mcap") as w:
        w.add_topic("/camera/agentview/image_raw", "acme_msgs/msg/FancyImage", msgdef="",
                    digest="RIHS01_" + "0" * 64)
    with BagReader(bag) as r:
        with pytest.raises(BagError, match="topic /camera/agentview/image_raw: unknown message type "
                                           "acme_msgs/msg/FancyImage"):
            r.require({"/camera/agentview/image_raw": None})
        with pytest.raises(BagError, match="topic /joint_states: topic not in bag"):
            r.require({"/joint_states": None})


def test_reading_never_writes(tmp_path):
    for storage in ("mcap", "sqlite3"):
        bag = write_episode(tmp_path / storage, storage, steps=2)
        before = tree_fingerprint(bag)
        time.sleep(0.01)
        with BagReader(bag) as r:
            list(r.messages())
            r.episode_metadata()
        assert tree_fingerprint(bag) == before


def _strings(w: BagWriter, n: int, period_ns: int = 100_000_000, size: int = 400) -> None:
    S = w.typestore.types["std_msgs/msg/String"]
    for i in range(n):
        w.write_msg("/text", 10**18 + i * period_ns, S(f"{i:04d}" + "lightvla " * (size // 9)))


def test_mcap_channels_and_metadata_say_what_rosbag2_writes(tmp_path, monkeypatch):
    """topic_type_hash in every mcap channel's metadata (rosbag2 >= Jazzy writes it) and the real
    ros_distro (not 'rosbags') in metadata.yaml, the mcap's rosbag2 record and the sqlite3 schema."""
    import sqlite3

    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader
    from ruamel.yaml import YAML

    monkeypatch.delenv("ROS_DISTRO", raising=False)
    bag = write_episode(tmp_path / "ep", "mcap", steps=1)
    store = make_typestore()
    with open(next(bag.glob("*.mcap")), "rb") as f:
        reader = make_reader(f)
        channels = reader.get_summary().channels.values()
        assert channels and all(c.metadata["topic_type_hash"] == store.hash_rihs01(c.schema_id and
                                reader.get_summary().schemas[c.schema_id].name) for c in channels)
        assert all("offered_qos_profiles" in c.metadata for c in channels)
        embedded = YAML(typ="safe").load(next(reader.iter_metadata()).metadata["serialized_metadata"])
    info = YAML(typ="safe").load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["ros_distro"] == embedded["ros_distro"] == "kilted" and info["version"] == 9
    hashes = {t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
              for t in info["topics_with_message_count"]}
    assert hashes["/lightvla/action_chunk"] == store.hash_rihs01("lightvla_interfaces/msg/ActionChunk")
    with Reader(bag) as r:                     # rosbags itself reads the bag back
        assert r.ros_distro == "kilted" and r.message_count == info["message_count"]
    monkeypatch.setenv("ROS_DISTRO", "jazzy")   # a sourced ROS 2 install names its own distro
    db = write_episode(tmp_path / "db", "sqlite3", steps=1)
    with sqlite3.connect(next(db.glob("*.db3"))) as conn:
        assert conn.execute("SELECT ros_distro FROM schema").fetchone()[0] == "jazzy"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_split_by_size_and_by_duration(tmp_path, storage):
    """rosbag2's --max-bag-size / --max-bag-duration: <bag>_0, <bag>_1, ... listed in metadata.yaml."""
    from ruamel.yaml import YAML

    ext = "mcap" if storage == "mcap" else "db3"
    with BagWriter(tmp_path / "size", storage, max_bagfile_size=4000) as w:
        _strings(w, 30)                           # ~400 B each: a new file every 10 messages
    with BagWriter(tmp_path / "dur", storage, max_bagfile_duration=1.0) as w:
        _strings(w, 25)                           # 10 Hz of bag time: 1 s per file
    for name, want_files in (("size", 3), ("dur", 3)):
        bag = tmp_path / name
        info = YAML(typ="safe").load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        names = [f"{name}_{i}.{ext}" for i in range(want_files)]
        assert info["relative_file_paths"] == names and sorted(p.name for p in bag.glob(f"*.{ext}")) == names
        assert [f["message_count"] for f in info["files"]] == ([10, 10, 10] if name == "size" else [10, 10, 5])
        assert info["message_count"] == sum(f["message_count"] for f in info["files"])
        with BagReader(bag) as r:
            texts = [r.decode(m).data[:4] for m in r.messages()]
            assert not r.recovered and not r.damage and r.topics["/text"].count == len(texts)
        assert texts == [f"{i:04d}" for i in range(len(texts))]


def test_split_mcap_after_a_kill_reads_every_file(tmp_path):
    """A writer killed mid-bag: closed split files plus the flushed part of the open one, in order."""
    bag = tmp_path / "crash"
    w = BagWriter(bag, "mcap", max_bagfile_size=4000)
    _strings(w, 25)
    w.flush()                                     # then never closed: no metadata.yaml, no last footer
    assert not (bag / "metadata.yaml").exists() and len(list(bag.glob("*.mcap"))) == 3
    with BagReader(bag) as r:
        texts = [r.decode(m).data[:4] for m in r.messages()]
        assert r.recovered and "crash_2.mcap" in " ".join(r.damage)
    assert texts == [f"{i:04d}" for i in range(25)]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_zstd_compression(tmp_path, storage):
    """mcap: zstd chunks (every mcap reader decodes them); sqlite3: zstd per message (rosbag2's
    compression_mode message). Smaller on disk, the same messages back, also after a kill."""
    from ruamel.yaml import YAML

    sizes = {}
    for comp in ("none", "zstd"):
        with BagWriter(tmp_path / comp, storage, compression=comp) as w:
            _strings(w, 40)
        sizes[comp] = sum(p.stat().st_size for p in (tmp_path / comp).glob("*.*") if p.name != "metadata.yaml")
        with BagReader(tmp_path / comp) as r:
            assert [r.decode(m).data[:4] for m in r.messages()] == [f"{i:04d}" for i in range(40)]
    assert sizes["zstd"] < 0.7 * sizes["none"]
    info = YAML(typ="safe").load((tmp_path / "zstd" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    if storage == "mcap":
        from mcap.reader import make_reader
        with open(tmp_path / "zstd" / "zstd.mcap", "rb") as f:
            assert {c.compression for c in make_reader(f).get_summary().chunk_indexes} == {"zstd"}
        assert info["compression_mode"] == ""          # compression lives inside the mcap, as rosbag2 writes it
    else:
        assert (info["compression_mode"], info["compression_format"]) == ("message", "zstd")
    crashed = BagWriter(tmp_path / "crashed", storage, compression="zstd")
    _strings(crashed, 5)
    crashed.flush()                                       # never closed
    with BagReader(tmp_path / "crashed") as r:
        assert [r.decode(m).data[:4] for m in r.messages()] == [f"{i:04d}" for i in range(5)]


def test_rclpy_serialized_messages_decode(tmp_path):
    """Defect (c): rclpy's serialize_message pads (a JointState with empty velocity and effort is 8
    bytes longer than on the wire) and rosbags refused those bytes ('CDR message size mismatch')."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState

    from lightvla_ros.eval.bag_record import BagRecorder

    msg = JointState(name=[f"j{i}" for i in range(9)], position=[0.1 * i for i in range(9)])
    with BagRecorder(tmp_path / "rec", "mcap") as rec:
        rec.write_msg("/joint_states", msg, t_ns=1)
    with BagReader(tmp_path / "rec") as r:
        m = next(r.messages())
        assert len(m.raw) == len(serialize_message(msg))
        got = r.decode(m)
    assert got.name == msg.name and np.allclose(got.position, msg.position) and len(got.velocity) == 0
