"""rosbag2 bags (mcap, sqlite3) read and written with `rosbags`; no ROS install needed.

Reading never writes: mcap files are opened "rb", sqlite3 read-only + immutable. A bag whose
writer died (kill -9: mcap without footer, no metadata.yaml) is read up to the damage, and the
reader says so in `damage`. Custom types (lightvla_interfaces) register from the .msg texts.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from rosbags.interfaces import (Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat, Qos,
                                QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.enums import CompressionMode
from rosbags.rosbag2.metadata import dump_qos_v9
from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from rosbags.rosbag2.writer import zstd     # the zstd binding rosbags itself compresses with

INTERFACES_PKG = "lightvla_interfaces"
CUSTOM_MSGS = ("ActionChunk", "PruningStats", "EpisodeResult")
METADATA_TOPIC = "/lightvla/episode_metadata"   # std_msgs/String, JSON; the latest one wins
# std_msgs/String, JSON {"stamp_ns": chunk stamp, "inputs": {"camera:<name>" | "eef" | "joint:<name>": stamp ns}}:
# the inputs each chunk was computed from, so a replay assembles exactly them (docs/bags.md)
INPUTS_TOPIC = "/lightvla/observation_inputs"
CUSTOM_DATA_KEY = "lightvla.episode"            # the same JSON in metadata.yaml custom_data


class BagError(RuntimeError):
    """A bag cannot be used as asked; the message names the bag and, where it applies, the topic."""

    def __init__(self, bag: str | Path, message: str, topic: str | None = None):
        self.bag, self.topic = str(bag), topic
        where = f"bag {self.bag}" + (f", topic {topic}" if topic else "")
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------- types

def _msg_dirs() -> list[Path]:
    """Where lightvla_interfaces' .msg texts live: the source tree, then installed share dirs."""
    dirs = [Path(__file__).resolve().parents[2] / "msg"]
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) / "share" / INTERFACES_PKG / "msg" for p in prefixes]
    return [d for d in dirs if d.is_dir()]


def make_typestore() -> Typestore:
    """ROS 2 Kilted standard types + lightvla_interfaces/msg/* from their .msg text."""
    store = get_typestore(Stores.ROS2_KILTED)
    for name in CUSTOM_MSGS:
        src = next((d / f"{name}.msg" for d in _msg_dirs() if (d / f"{name}.msg").is_file()), None)
        if src is not None:
            store.register(get_types_from_msg(src.read_text(), f"{INTERFACES_PKG}/msg/{name}"))
    return store


def qos_profile(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """A rosbag2 offered_qos_profiles entry (what `ros2 bag play` republishes with)."""
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


# ---------------------------------------------------------------- writing

ROS_DISTRO = "kilted"           # the distro whose wheels and message hashes (Stores.ROS2_KILTED) we use
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame; CDR data starts with its encapsulation header instead
COMPRESSIONS = ("none", "zstd")


def ros_distro() -> str:
    """What rosbag2 writes as ros_distro: $ROS_DISTRO, else the distro of the wheels used here."""
    return os.environ.get("ROS_DISTRO") or ROS_DISTRO


def _dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=True)


class _McapStorage(McapWriter):
    """rosbags' mcap storage as rosbag2 writes it: a named file, `topic_type_hash` in channel metadata."""

    def __init__(self, path: Path, compression: CompressionMode, filename: str):
        super().__init__(path, compression)          # creates <dir>/<dir name>.mcap, writes the header
        if self.path.name != filename:               # move it before any data (a split file's name)
            self.bio.close()
            target = path / filename
            if target.exists():
                raise BagError(path, f"storage file {filename} exists already")
            os.rename(self.path, target)
            self.path, self.bio = target, target.open("r+b")
            self.bio.seek(0, os.SEEK_END)

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        meta = BytesIO()
        for key, value in (("offered_qos_profiles", offered_qos_profiles), ("topic_type_hash", connection.digest)):
            write_string(meta, key)
            write_string(meta, value)
        self.channels.append(Channel(connection.id, connection.msgtype, connection.topic,
                                     connection.ext.serialization_format, meta.getvalue()))
        self.channel_stats[connection.id] = 0
        write_channel(self.chunk.bio, self.channels[-1], self.schemas)

    def size(self) -> int:
        return self.bio.tell() + self.chunk.bio.tell()


class _Sqlite3Storage(Sqlite3Writer):
    """rosbags' sqlite3 storage with a named file and the real ros_distro in its schema table."""

    def __init__(self, path: Path, compression: CompressionMode, filename: str):
        super().__init__(path, compression)
        if self.path.name != filename:
            self.conn.close()
            target = path / filename
            if target.exists():
                raise BagError(path, f"storage file {filename} exists already")
            os.rename(self.path, target)
            self.path = target
            self.conn = sqlite3.connect(f"file:{self.path}", uri=True)
            self.cursor = self.conn.cursor()
        self.cursor.execute("UPDATE schema SET ros_distro = ?", (ros_distro(),))
        self.conn.commit()


@dataclass
class _FileStats:
    path: Path
    start_ns: int = 2**63 - 1
    end_ns: int = 0
    count: int = 0
    size: int = 0          # bytes of message data written (the split criterion; sqlite pages lag)

    def info(self) -> dict:
        has = self.count > 0
        return {"path": self.path.name, "starting_time": {"nanoseconds_since_epoch": self.start_ns if has else 0},
                "duration": {"nanoseconds": self.end_ns - self.start_ns if has else 0},
                "message_count": self.count}


class BagWriter:
    """Writes a rosbag2 (version 9) bag directory. `flush()` makes everything so far survive a kill -9.

    compression "zstd": mcap chunks compressed (rosbag2's mcap zstd presets; every mcap reader reads
    them), sqlite3 per message (rosbag2's --compression-mode message). max_bagfile_size (bytes of
    messages) / max_bagfile_duration (s of bag time) > 0 split the bag into <name>_0, <name>_1, ...
    as rosbag2's --max-bag-size / --max-bag-duration do; 0 keeps one file, <name>.mcap / .db3."""

    def __init__(self, path: str | Path, storage: str = "mcap", typestore: Typestore | None = None,
                 compression: str = "none", max_bagfile_size: int = 0, max_bagfile_duration: float = 0.0):
        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', not {storage!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, not {compression!r}")
        if max_bagfile_size < 0 or max_bagfile_duration < 0:
            raise ValueError("max_bagfile_size and max_bagfile_duration must be >= 0 (0 = no splitting)")
        self.path, self.storage, self.compression = Path(path), storage, compression
        self.max_bagfile_size, self.max_split_ns = int(max_bagfile_size), int(max_bagfile_duration * 1e9)
        self.typestore = typestore or make_typestore()
        if self.path.exists():
            raise BagError(self.path, "exists already, not overwriting")
        self.path.mkdir(parents=True)
        self._mode = CompressionMode.NONE if compression == "none" else \
            CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE
        self._conns: dict[str, Connection] = {}
        self._qos_text: dict[str, str] = {}
        self._msgtypes: list[str] = []
        self.counts: dict[str, int] = {}
        self.files: list[_FileStats] = []
        self._storage: _McapStorage | _Sqlite3Storage | None = None
        self.custom_data: dict[str, str] = {}
        self.closed = False
        self._open_file()

    @property
    def split(self) -> bool:
        return bool(self.max_bagfile_size or self.max_split_ns)

    def _open_file(self) -> None:
        ext = "mcap" if self.storage == "mcap" else "db3"
        name = f"{self.path.name}_{len(self.files)}.{ext}" if self.split else f"{self.path.name}.{ext}"
        plugin = _McapStorage if self.storage == "mcap" else _Sqlite3Storage
        self._storage = plugin(self.path, self._mode, name)
        self.files.append(_FileStats(self._storage.path))
        done: set[str] = set()
        for topic, conn in self._conns.items():     # a new split file repeats every connection
            if conn.msgtype not in done:
                self._storage.add_msgtype(conn)
                done.add(conn.msgtype)
            self._storage.add_connection(conn, self._qos_text[topic])

    def add_topic(self, topic: str, msgtype: str, qos: Qos | None = None, msgdef: str | None = None,
                  digest: str | None = None) -> None:
        """A topic of a type in the typestore, or of any type given its definition text and RIHS01 hash."""
        if topic in self._conns:
            return
        msgtype = normalise_type(msgtype)
        if msgdef is None:
            if msgtype not in self.typestore.fielddefs:
                raise BagError(self.path, f"unknown message type {msgtype}", topic)
            msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
            digest = self.typestore.hash_rihs01(msgtype)
        conn = Connection(id=len(self._conns) + 1, topic=topic, msgtype=msgtype,
                          msgdef=MessageDefinition(MessageDefinitionFormat.MSG, msgdef),
                          digest=digest or "", msgcount=0,
                          ext=ConnectionExtRosbag2("cdr", [qos or qos_profile()]), owner=self)
        self._qos_text[topic] = _dump_yaml(dump_qos_v9(conn.ext.offered_qos_profiles)).strip()
        if msgtype not in self._msgtypes:
            self._storage.add_msgtype(conn)
            self._msgtypes.append(msgtype)
        self._storage.add_connection(conn, self._qos_text[topic])
        self._conns[topic] = conn
        self.counts[topic] = 0

    def write(self, topic: str, t_ns: int, data: bytes) -> None:
        """CDR bytes (rclpy serialize_message or a raw subscription) at bag time t_ns."""
        if topic not in self._conns:
            raise BagError(self.path, "write to a topic that was not added", topic)
        t_ns, data = int(t_ns), bytes(data)
        current = self.files[-1]
        if current.count and ((self.max_bagfile_size and current.size >= self.max_bagfile_size)
                              or (self.max_split_ns and t_ns - current.start_ns >= self.max_split_ns)):
            self._close_file()
            self._open_file()
            current = self.files[-1]
        if self._mode == CompressionMode.MESSAGE:
            data = zstd.compress(data)
        self._storage.write(self._conns[topic], t_ns, data)
        current.count += 1
        current.size += len(data)
        current.start_ns, current.end_ns = min(current.start_ns, t_ns), max(current.end_ns, t_ns)
        self.counts[topic] += 1

    def write_msg(self, topic: str, t_ns: int, msg: Any, msgtype: str | None = None) -> None:
        """A rosbags message object; the topic is added on first use."""
        msgtype = normalise_type(msgtype or msg.__msgtype__)
        self.add_topic(topic, msgtype)
        self.write(topic, t_ns, self.typestore.serialize_cdr(msg, msgtype))

    def set_metadata(self, metadata: dict) -> None:
        """Episode metadata into metadata.yaml custom_data (written at close)."""
        self.custom_data[CUSTOM_DATA_KEY] = json.dumps(metadata, sort_keys=True)

    def metadata(self) -> dict:
        """rosbag2_bagfile_information (version 9) of everything written so far."""
        written = [f for f in self.files if f.count]
        start = min((f.start_ns for f in written), default=0)
        end = max((f.end_ns for f in written), default=0)
        compressed = self._mode == CompressionMode.MESSAGE
        return {
            "version": 9, "storage_identifier": self.storage,
            "relative_file_paths": [f.path.name for f in self.files],
            "duration": {"nanoseconds": end - start}, "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(self.counts.values()),
            "topics_with_message_count": [
                {"topic_metadata": {"name": c.topic, "type": c.msgtype, "serialization_format": "cdr",
                                    "offered_qos_profiles": dump_qos_v9(c.ext.offered_qos_profiles),
                                    "type_description_hash": c.digest},
                 "message_count": self.counts[c.topic]} for c in self._conns.values()],
            "compression_format": "zstd" if compressed else "", "compression_mode": "message" if compressed else "",
            "files": [f.info() for f in self.files], "custom_data": dict(self.custom_data) or None,
            "ros_distro": ros_distro(),
        }

    def _close_file(self) -> None:
        self._storage.close(9, _dump_yaml(self.metadata()).strip())
        self._storage = None

    def flush(self) -> None:
        # rosbags keeps the open mcap chunk / sqlite transaction in memory until close: push it out.
        storage = self._storage
        if storage is None:
            return
        if self.storage == "mcap":
            if storage.chunk.bio.tell():
                storage.close_chunk()
            storage.bio.flush()
        else:
            storage.conn.commit()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._close_file()
        text = _dump_yaml({"rosbag2_bagfile_information": self.metadata()})
        tmp = self.path / "metadata.yaml.tmp"
        tmp.write_text(text, "utf8")
        tmp.replace(self.path / "metadata.yaml")

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_cdr(typestore: Typestore, raw: bytes, msgtype: str) -> Any:
    """CDR bytes -> a rosbags message, allowing trailing padding as rclpy and rosbag2 do.

    rclpy's serialize_message pads (a JointState with empty velocity and effort: 8 bytes more than
    the wire form); bags written from it (rosbag2_py, scripts) decode everywhere except in rosbags'
    strict size check, which allows 3 bytes."""
    from rosbags.serde import SerdeError
    try:
        return typestore.deserialize_cdr(raw, msgtype)
    except SerdeError as err:
        if "size mismatch" not in str(err) or len(raw) < 4 or raw[0] != 0:
            raise
        msgdef = typestore.get_msgdef(msgtype)
        func = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
        message, _ = func(raw[4:], 0, msgdef.cls, typestore)
        return message


def normalise_type(msgtype: str) -> str:
    """'sensor_msgs/Image' or 'sensor_msgs/msg/Image' -> 'sensor_msgs/msg/Image'."""
    parts = msgtype.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    return "/".join(parts)


# ---------------------------------------------------------------- reading

@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int | None   # None when unknown (recovered bag before the scan)


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    t_ns: int        # bag (receive) time
    raw: bytes       # CDR


class BagReader:
    """Read-only view of one bag directory (or a bare .mcap / .db3 file)."""

    def __init__(self, path: str | Path, typestore: Typestore | None = None):
        self.path = Path(path)
        self.storage = ""                              # "mcap" | "sqlite3"
        self.recovered = ""                            # why the normal reader was not used ("" if it was)
        self.damage: list[str] = []                    # what could not be read, in words
        self.topics: dict[str, TopicInfo] = {}
        self.custom_data: dict = {}                    # metadata.yaml custom_data[lightvla.episode]
        self.unknown_types: dict[str, str] = {}        # topic -> type with no definition
        self.typestore = typestore or make_typestore()
        self._reader: Reader | None = None
        self._file: Path | None = None                 # the first storage file
        self._files: list[Path] = []                   # all of them, in order (a split bag has several)
        if not self.path.exists():
            raise BagError(self.path, "no such file or directory")
        self._open()

    # -- opening
    def _yaml_info(self) -> dict:
        """metadata.yaml's rosbag2_bagfile_information, {} when absent or unreadable."""
        if not (self.path.is_dir() and (self.path / "metadata.yaml").is_file()):
            return {}
        try:
            info = yaml.safe_load((self.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            return info if isinstance(info, dict) else {}
        except Exception as err:  # noqa: BLE001 - a damaged metadata.yaml is damage, not a crash
            self.damage.append(f"metadata.yaml does not parse ({type(err).__name__}: {err})")
            return {}

    def _storage_files(self, info: dict) -> list[Path]:
        """The storage files in order: metadata.yaml's list, else by split index (<name>_<i>)."""
        if self.path.is_file():
            return [self.path]
        listed = [self.path / Path(str(f)).name for f in info.get("relative_file_paths") or []]
        if listed and all(f.is_file() for f in listed):
            return listed
        files = sorted(self.path.glob("*.mcap")) or sorted(self.path.glob("*.db3"))
        if not files:
            raise BagError(self.path, "no .mcap or .db3 storage file in the bag directory")

        def split_index(f: Path) -> tuple[int, str]:
            head, _, idx = f.stem.rpartition("_")
            return (int(idx), head) if idx.isdigit() else (-1, f.stem)
        return sorted(files, key=split_index)

    def _open(self) -> None:
        info = self._yaml_info()
        self._files = self._storage_files(info)
        self._file = self._files[0]
        for f in self._files:
            if f.stat().st_size == 0:
                raise BagError(self.path, f"storage file {f.name} is empty (0 bytes)")
        self.storage = "mcap" if self._file.suffix == ".mcap" else "sqlite3"
        has_yaml = bool(info)
        try:
            if not has_yaml and len(self._files) > 1:
                raise BagError(self.path, f"split bag of {len(self._files)} files without metadata.yaml")
            reader = Reader(self.path if has_yaml else self._file)
            reader.open()
            self._reader = reader
        except Exception as err:  # noqa: BLE001 - any failure of the normal path goes to recovery
            if self.storage != "mcap":
                raise BagError(self.path, f"cannot open {self._file.name}: {err}") from err
            names = ", ".join(f.name for f in self._files)
            self.recovered = f"normal reader failed ({err}); scanned {names} record by record"
            self._scan_mcap_topics()
            if not self.topics:
                raise BagError(self.path, f"not a readable mcap file ({err}; {'; '.join(self.damage)})") from err
            custom = info.get("custom_data") or {}     # the recorder's metadata survives in metadata.yaml
        else:
            if not has_yaml and self.path.is_dir():
                self.recovered = "metadata.yaml missing (writer did not close); read the storage file directly"
            for conn in reader.connections:
                self._add_connection(conn.topic, conn.msgtype, conn.msgdef)
            for name, topic_info in reader.topics.items():
                self.topics[name].count = topic_info.msgcount
            custom = getattr(reader.storage, "metadata", None)
            custom = getattr(custom, "custom", None) or {}
        if CUSTOM_DATA_KEY in custom:
            try:
                self.custom_data = json.loads(custom[CUSTOM_DATA_KEY])
            except ValueError:
                self.damage.append(f"custom_data {CUSTOM_DATA_KEY} is not JSON")

    def _add_connection(self, topic: str, msgtype: str, msgdef: Any) -> None:
        msgtype = normalise_type(msgtype)
        self.topics.setdefault(topic, TopicInfo(topic, msgtype, None))
        if msgtype in self.typestore.fielddefs:
            return
        text = getattr(msgdef, "data", "") or ""
        fmt = str(getattr(getattr(msgdef, "format", None), "name", ""))
        if text and fmt == "MSG":
            try:
                self.typestore.register(get_types_from_msg(text, msgtype))
                return
            except Exception as err:  # noqa: BLE001
                self.unknown_types[topic] = f"{msgtype} (definition in bag does not parse: {err})"
                return
        self.unknown_types[topic] = msgtype

    def _scan_mcap_topics(self) -> None:
        counts: dict[str, int] = {}
        for kind, payload in self._mcap_records():
            if kind == "channel":
                topic, msgtype, msgdef = payload
                self._add_connection(topic, msgtype, msgdef)
                counts.setdefault(topic, 0)
            elif kind == "message":
                counts[payload[0]] = counts.get(payload[0], 0) + 1
        for topic, n in counts.items():
            self.topics[topic].count = n

    def _mcap_records(self) -> Iterator[tuple[str, tuple]]:
        """Schema/channel/message records of the mcap files in order, each up to its first damage."""
        self.damage = [d for d in self.damage if not d.startswith("mcap:")]
        for path in self._files:
            yield from self._mcap_file_records(path)

    def _mcap_file_records(self, path: Path) -> Iterator[tuple[str, tuple]]:
        from mcap.records import Channel as McapChannel, Footer, Message, Schema
        from mcap.stream_reader import StreamReader
        from rosbags.interfaces import MessageDefinition, MessageDefinitionFormat

        schemas: dict[int, tuple[str, str]] = {}
        channels: dict[int, tuple[str, str]] = {}
        with open(path, "rb") as f:
            reader = StreamReader(f, skip_magic=False, record_size_limit=1 << 31)
            try:
                for rec in reader.records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = (rec.name, rec.data.decode("utf-8", "replace"))
                    elif isinstance(rec, McapChannel):
                        name, text = schemas.get(rec.schema_id, ("", ""))
                        channels[rec.id] = (rec.topic, name)
                        yield "channel", (rec.topic, name, MessageDefinition(MessageDefinitionFormat.MSG, text))
                    elif isinstance(rec, Message):
                        if rec.channel_id not in channels:
                            self.damage.append(
                                f"mcap: {path.name}: message on unknown channel {rec.channel_id} skipped")
                            continue
                        topic, msgtype = channels[rec.channel_id]
                        yield "message", (topic, normalise_type(msgtype), rec.log_time, bytes(rec.data))
                    elif isinstance(rec, Footer):
                        return
            except Exception as err:  # noqa: BLE001 - truncation, bad record, bad chunk
                at, size = f.tell(), path.stat().st_size
                why = "ends without footer" if at >= size else "is damaged"
                self.damage.append(f"mcap: {path.name} {why} at byte {at} of {size} "
                                   f"({type(err).__name__}: {err}); read what came before it")
                return
        self.damage.append(f"mcap: {path.name} has no footer (writer did not close); read up to the end of the data")

    # -- checks
    def require(self, topics: dict[str, str | None]) -> None:
        """Raise BagError if a topic is missing, has another type, or its type is unknown."""
        for topic, msgtype in topics.items():
            if topic not in self.topics:
                have = ", ".join(sorted(self.topics)) or "none"
                raise BagError(self.path, f"topic not in bag (topics: {have})", topic)
            if topic in self.unknown_types:
                raise BagError(self.path, f"unknown message type {self.unknown_types[topic]}: no definition "
                               "in the bag and not a known ROS 2 / lightvla_interfaces type", topic)
            if msgtype and normalise_type(msgtype) != self.topics[topic].msgtype:
                raise BagError(self.path, f"type is {self.topics[topic].msgtype}, expected "
                               f"{normalise_type(msgtype)}", topic)
            if self.topics[topic].count == 0:
                raise BagError(self.path, "topic has no messages", topic)

    @property
    def message_count(self) -> int:
        return int(sum(t.count or 0 for t in self.topics.values()))

    # -- messages
    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages of the given topics (all if None) in bag-time order, up to the first damage."""
        wanted = set(topics) if topics is not None else set(self.topics)
        if self._reader is None:
            for kind, payload in self._mcap_records():
                if kind == "message" and payload[0] in wanted:
                    yield _decompressed(BagMessage(*payload))
            return
        conns = [c for c in self._reader.connections if c.topic in wanted]
        if not conns:
            return
        try:
            for conn, t_ns, raw in self._reader.messages(connections=conns):
                yield _decompressed(BagMessage(conn.topic, normalise_type(conn.msgtype), int(t_ns), bytes(raw)))
        except Exception as err:  # noqa: BLE001 - corrupt chunk / page: keep what came before
            self.damage.append(f"{self.storage}: read error ({type(err).__name__}: {err}); "
                               "messages after it are lost")

    def decode(self, m: BagMessage) -> Any:
        try:
            return decode_cdr(self.typestore, m.raw, m.msgtype)
        except Exception as err:  # noqa: BLE001
            raise BagError(self.path, f"message at t={m.t_ns} ns does not decode as {m.msgtype}: {err}",
                           m.topic) from err

    def episode_metadata(self) -> dict:
        """custom_data JSON, overlaid with the latest /lightvla/episode_metadata message."""
        meta = dict(self.custom_data)
        if METADATA_TOPIC in self.topics and METADATA_TOPIC not in self.unknown_types:
            for m in self.messages([METADATA_TOPIC]):
                try:
                    meta.update(json.loads(self.decode(m).data))
                except (ValueError, BagError):
                    self.damage.append(f"{METADATA_TOPIC}: message at t={m.t_ns} is not JSON")
        return meta

    @property
    def ros_distro(self) -> str:
        return str(getattr(self._reader, "ros_distro", "") or "") if self._reader is not None else ""

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decompressed(m: BagMessage) -> BagMessage:
    """A message-compressed (zstd) bag read without its metadata.yaml: CDR never starts like zstd."""
    if m.raw[:4] == ZSTD_MAGIC:
        m.raw = zstd.decompress(m.raw)
    return m
