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
        w._writer.add_connection("/camera/agentview/image_raw", "acme_msgs/msg/FancyImage",
                                 msgdef="", rihs01="RIHS01_" + "0" * 64)
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
