"""rosbag2 bags (mcap, sqlite3) read and written with `rosbags`; no ROS install needed.

Reading never writes: mcap files are opened "rb", sqlite3 read-only + immutable. A bag whose
writer died (kill -9: mcap without footer, no metadata.yaml) is read up to the damage, and the
reader says so in `damage`. Custom types (lightvla_interfaces) register from the .msg texts.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

INTERFACES_PKG = "lightvla_interfaces"
CUSTOM_MSGS = ("ActionChunk", "PruningStats", "EpisodeResult")
METADATA_TOPIC = "/lightvla/episode_metadata"   # std_msgs/String, JSON; the latest one wins
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

class BagWriter:
    """Writes a rosbag2 bag directory. `flush()` makes everything so far survive a kill -9."""

    def __init__(self, path: str | Path, storage: str = "mcap", typestore: Typestore | None = None):
        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', not {storage!r}")
        self.path, self.storage = Path(path), storage
        self.typestore = typestore or make_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, qos: Qos | None = None) -> None:
        if topic in self._conns:
            return
        msgtype = normalise_type(msgtype)
        if msgtype not in self.typestore.fielddefs:
            raise BagError(self.path, f"unknown message type {msgtype}", topic)
        self._conns[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore, offered_qos_profiles=[qos or qos_profile()])
        self.counts[topic] = 0

    def write(self, topic: str, t_ns: int, data: bytes) -> None:
        """CDR bytes (rclpy serialize_message or a raw subscription) at bag time t_ns."""
        if topic not in self._conns:
            raise BagError(self.path, "write to a topic that was not added", topic)
        self._writer.write(self._conns[topic], int(t_ns), bytes(data))
        self.counts[topic] += 1

    def write_msg(self, topic: str, t_ns: int, msg: Any, msgtype: str | None = None) -> None:
        """A rosbags message object; the topic is added on first use."""
        msgtype = normalise_type(msgtype or msg.__msgtype__)
        self.add_topic(topic, msgtype)
        self.write(topic, t_ns, self.typestore.serialize_cdr(msg, msgtype))

    def set_metadata(self, metadata: dict) -> None:
        """Episode metadata into metadata.yaml custom_data (written at close)."""
        self._writer.set_custom_data(CUSTOM_DATA_KEY, json.dumps(metadata, sort_keys=True))

    def flush(self) -> None:
        # rosbags keeps the open mcap chunk / sqlite transaction in memory until close: push it out.
        storage = self._writer.storage
        if storage is None:
            return
        if self.storage == "mcap":
            if storage.chunk.bio.tell():
                storage.close_chunk()
            storage.bio.flush()
        else:
            storage.conn.commit()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
        self._file: Path | None = None
        if not self.path.exists():
            raise BagError(self.path, "no such file or directory")
        self._open()

    # -- opening
    def _storage_file(self) -> Path:
        if self.path.is_file():
            return self.path
        files = sorted(self.path.glob("*.mcap")) + sorted(self.path.glob("*.db3"))
        if not files:
            raise BagError(self.path, "no .mcap or .db3 storage file in the bag directory")
        if len(files) > 1:
            raise BagError(self.path, f"split bags are not supported ({len(files)} storage files)")
        return files[0]

    def _open(self) -> None:
        self._file = self._storage_file()
        if self._file.stat().st_size == 0:
            raise BagError(self.path, f"storage file {self._file.name} is empty (0 bytes)")
        self.storage = "mcap" if self._file.suffix == ".mcap" else "sqlite3"
        has_yaml = self.path.is_dir() and (self.path / "metadata.yaml").is_file()
        target = self.path if has_yaml else self._file
        try:
            reader = Reader(target)
            reader.open()
            self._reader = reader
        except Exception as err:  # noqa: BLE001 - any failure of the normal path goes to recovery
            if self.storage != "mcap":
                raise BagError(self.path, f"cannot open {self._file.name}: {err}") from err
            self.recovered = f"normal reader failed ({err}); scanned {self._file.name} record by record"
            self._scan_mcap_topics()
            if not self.topics:
                raise BagError(self.path, f"not a readable mcap file ({err}; {'; '.join(self.damage)})") from err
        else:
            if not has_yaml and self.path.is_dir():
                self.recovered = "metadata.yaml missing (writer did not close); read the storage file directly"
            for conn in reader.connections:
                self._add_connection(conn.topic, conn.msgtype, conn.msgdef)
            for name, info in reader.topics.items():
                self.topics[name].count = info.msgcount
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
        """Schema/channel/message records of an mcap file in file order, up to the first damage."""
        from mcap.records import Channel, Footer, Message, Schema
        from mcap.stream_reader import StreamReader
        from rosbags.interfaces import MessageDefinition, MessageDefinitionFormat

        schemas: dict[int, tuple[str, str]] = {}
        channels: dict[int, tuple[str, str]] = {}
        self.damage = [d for d in self.damage if not d.startswith("mcap:")]
        with open(self._file, "rb") as f:
            reader = StreamReader(f, skip_magic=False, record_size_limit=1 << 31)
            try:
                for rec in reader.records:
                    if isinstance(rec, Schema):
                        schemas[rec.id] = (rec.name, rec.data.decode("utf-8", "replace"))
                    elif isinstance(rec, Channel):
                        name, text = schemas.get(rec.schema_id, ("", ""))
                        channels[rec.id] = (rec.topic, name)
                        yield "channel", (rec.topic, name, MessageDefinition(MessageDefinitionFormat.MSG, text))
                    elif isinstance(rec, Message):
                        if rec.channel_id not in channels:
                            self.damage.append(f"mcap: message on unknown channel {rec.channel_id} skipped")
                            continue
                        topic, msgtype = channels[rec.channel_id]
                        yield "message", (topic, normalise_type(msgtype), rec.log_time, bytes(rec.data))
                    elif isinstance(rec, Footer):
                        return
            except Exception as err:  # noqa: BLE001 - truncation, bad record, bad chunk
                at, size = f.tell(), self._file.stat().st_size
                why = "ends without footer" if at >= size else "is damaged"
                self.damage.append(f"mcap: {self._file.name} {why} at byte {at} of {size} "
                                   f"({type(err).__name__}: {err}); read what came before it")
                return
        self.damage.append("mcap: no footer (writer did not close); read up to the end of the data")

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
                    yield BagMessage(*payload)
            return
        conns = [c for c in self._reader.connections if c.topic in wanted]
        if not conns:
            return
        try:
            for conn, t_ns, raw in self._reader.messages(connections=conns):
                yield BagMessage(conn.topic, normalise_type(conn.msgtype), int(t_ns), bytes(raw))
        except Exception as err:  # noqa: BLE001 - corrupt chunk / page: keep what came before
            self.damage.append(f"{self.storage}: read error ({type(err).__name__}: {err}); "
                               "messages after it are lost")

    def decode(self, m: BagMessage) -> Any:
        try:
            return self.typestore.deserialize_cdr(m.raw, m.msgtype)
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

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
