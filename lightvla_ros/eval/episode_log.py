"""The results of a long evaluation as a JSONL file, the source of truth: one line per finished episode,
flushed and fsynced as it finishes, so a crash or a preemption loses at most the episodes in flight.

    log = EpisodeLog.open("out/libero.jsonl", header={"policy": "vla", ...}, resume=True)
    todo = [s for s in specs if s.key not in log.finished]
    log.append(record)

Line 1 is the run's header ({"kind": "header", ...}): on --resume the identity fields (policy,
checkpoint fingerprint, episode settings) must match, or the file is refused (results of two
different policies are never mixed). Then {"kind": "episode", ...} records. A record with an
"error" (the infrastructure failed, not the policy) is not finished: resume runs it again. A torn
last line (killed mid-write) is dropped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

IDENTITY = ("policy", "checkpoint", "settings")  # header fields a resumed run must share


class EpisodeLog:
    def __init__(self, path: Path, header: dict, records: list[dict]):
        self.path, self.header = path, header
        self.records = records  # every episode line, in file order (errors included)
        self.finished: dict[str, dict] = {r["key"]: r for r in records if not r.get("error")}
        self._file = open(path, "a", encoding="utf-8")

    @classmethod
    def open(cls, path, header: dict, resume: bool = False) -> "EpisodeLog":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"kind": "header", **header}
        if path.exists() and path.stat().st_size > 0:
            if not resume:
                raise SystemExit(f"{path} already holds results: pass --resume to continue that run, or remove it")
            old_header, records = read(path)
            if old_header is None:
                raise SystemExit(f"{path} has no header line: not a lightvla-sim-eval results file")
            for field in IDENTITY:
                if json.dumps(old_header.get(field), sort_keys=True) != json.dumps(header.get(field), sort_keys=True):
                    raise SystemExit(f"cannot resume {path}: its {field} differs from this run's\n"
                                     f"  file: {json.dumps(old_header.get(field), sort_keys=True)[:500]}\n"
                                     f"  now:  {json.dumps(header.get(field), sort_keys=True)[:500]}")
            return cls(path, old_header, records)
        _write_line(path, header, mode="w")
        return cls(path, header, [])

    def append(self, record: dict) -> None:
        line = json.dumps({"kind": "episode", **record})
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.append(record)
        if not record.get("error"):
            self.finished[record["key"]] = record

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read(path) -> tuple[dict | None, list[dict]]:
    """(header, episode records) of a results file; a torn last line is cut off the file."""
    path = Path(path)
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1  # a line without its newline was being written when the run died
    header, records = None, []
    for number, line in enumerate(data[:good_end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}:{number}: not a JSON line ({e}); fix or remove that line to resume") from e
        kind = item.pop("kind", None)
        if kind == "header":
            header = item
        elif kind == "episode":
            records.append(item)
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return header, records


def _write_line(path: Path, item: dict, mode: str) -> None:
    with open(path, mode, encoding="utf-8") as f:
        f.write(json.dumps(item) + "\n")
        f.flush()
        os.fsync(f.fileno())
