"""Start ROS 2 nodes as real processes for tests, on a private loopback-only DDS domain.

There is no `ros2 launch` here (no launch wheels): nodes run through their console scripts in the
venv's bin/ with `--ros-args`. Everything is bounded in time and cleaned up on exit.

    from lightvla_ros.ros.launcher import ros_domain

    with ros_domain(log_dir=tmp_path) as dom:       # unique ROS_DOMAIN_ID, LOCALHOST discovery
        policy = dom.start_node(
            "lightvla-policy",                      # console script (venv bin/) or a path
            params={"checkpoint": str(ckpt), "chunk_size": 8},    # -> -p checkpoint:=... -p ...
            params_file="config/policy.yaml",       # -> --params-file config/policy.yaml
            remaps={"/camera/agentview/image_raw": "/cam0"},     # -> -r from:=to
            name="policy",                          # -> -r __node:=policy
        )
        policy.wait_for_log_line(r"ready", timeout=60)          # regex on the captured output
        with dom.rclpy_node("probe") as probe:      # in-test node, own Context, same domain
            probe.wait_for_topic("/lightvla/action_chunk", timeout=20)
            chunks = probe.collect("/lightvla/action_chunk", ActionChunk, count=2, timeout=30)
        policy.stop()                               # optional: the domain stops what is left
    # here: every process stopped (SIGINT, then SIGTERM, then SIGKILL, each bounded; whole
    # process group), stale Fast DDS /dev/shm segments removed, the domain id released.

- `dom.env`: the environment for anything else you start yourself (`subprocess.Popen(env=dom.env)`).
- `dom.start_process(argv, name=...)`: any command (e.g. `[sys.executable, script]`) with the same
  env, log capture and teardown.
- `NodeProcess`: `.pid`, `.log_path`, `.log_text()`, `.wait_for_log_line(regex, timeout)`,
  `.is_running()`, `.stop()` -> exit code, `.returncode`.
- `Probe` (from `dom.rclpy_node()`): `.node`, `.executor`, `.spin_until(pred, timeout)`,
  `.wait_for_topic(name, timeout)`, `.wait_for_service(name, timeout)`, `.collect(topic, type, count, timeout, qos)`.
- Every wait raises TimeoutError (with the tail of the process log where there is one); a node that
  dies while being waited on raises RuntimeError with its exit code and log tail.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

# ROS 2 domain ids that are safe on Linux (the ranges whose DDS ports stay below the ephemeral
# range); 0 is left out because every unconfigured ROS process uses it.
DOMAIN_IDS = list(range(1, 102)) + list(range(215, 233))
_LOCK_DIR = Path(tempfile.gettempdir()) / "lightvla_ros_domains"
_counter = itertools.count()

# Fast DDS shared-memory files (Fast DDS 3 names them fastdds_*, 2.x fastrtps_*).
_SHM_DIR = Path("/dev/shm")
_SHM_RE = re.compile(r"^(sem\.)?(fastdds_|fastrtps_|fast_datasharing)")

# Teardown budget per signal, seconds.
SIGINT_WAIT = 5.0
SIGTERM_WAIT = 3.0
SIGKILL_WAIT = 2.0


# --------------------------------------------------------------------------------------------
# Environment and domain ids


def ros_env(domain_id: int, base: Mapping[str, str] | None = None, log_dir: Path | None = None) -> dict[str, str]:
    """Environment for a ROS process on `domain_id`, with DDS discovery kept on this machine."""
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # ROS_LOCALHOST_ONLY is ignored in Kilted
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.pop("ROS_STATIC_PEERS", None)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)  # nothing sets it with pip-only ROS
    env["PYTHONUNBUFFERED"] = "1"                     # prints reach the log as they happen
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    if log_dir is not None:
        env["ROS_LOG_DIR"] = str(Path(log_dir) / "ros_log")  # not ~/.ros/log
    return env


class _DomainLock:
    """An exclusive flock on one domain id, so concurrent test runs on this machine never share one."""

    def __init__(self, seed: int | None = None):
        _LOCK_DIR.mkdir(parents=True, exist_ok=True)
        n = len(DOMAIN_IDS)
        start = (os.getpid() * 7 + next(_counter) if seed is None else seed) % n
        for i in range(n):
            domain_id = DOMAIN_IDS[(start + i) % n]
            fd = os.open(_LOCK_DIR / f"{domain_id}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    continue
                raise
            self.domain_id, self._fd = domain_id, fd
            return
        raise RuntimeError(f"all {n} ROS domain ids are in use by other test runs (locks in {_LOCK_DIR})")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------------------------
# Processes


def resolve_executable(executable: str) -> str:
    """A console script of this venv (bin/ beside sys.executable) first, then PATH, or a path."""
    if os.sep in executable:
        if not os.access(executable, os.X_OK):
            raise FileNotFoundError(f"{executable} does not exist or is not executable")
        return executable
    candidate = Path(sys.executable).parent / executable
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(executable)
    if found is None:
        raise FileNotFoundError(
            f"console script {executable!r} not found in {candidate.parent} or on PATH "
            "(is lightvla_ros installed in this venv? `pip install -e .`)")
    return found


def _param_value(value: Any) -> str:
    # `-p name:=value` parses value as YAML; JSON is YAML, and quoting keeps "1" a string.
    if isinstance(value, (Path,)):
        value = str(value)
    if isinstance(value, (list, tuple)):
        value = list(value)
    return json.dumps(value)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def ros_args(params: Mapping[str, Any] | None = None, params_file: str | os.PathLike | None = None,
             remaps: Mapping[str, str] | None = None, name: str | None = None,
             log_level: str | None = None) -> list[str]:
    """The `--ros-args ...` tail of a node's command line ([] when there is nothing to pass)."""
    out: list[str] = []
    if params_file is not None:
        if not Path(params_file).is_file():
            raise FileNotFoundError(f"params file {params_file} does not exist")
        out += ["--params-file", str(params_file)]
    for key, value in _flatten(params or {}):
        out += ["-p", f"{key}:={_param_value(value)}"]
    for src, dst in (remaps or {}).items():
        out += ["-r", f"{src}:={dst}"]
    if name:
        out += ["-r", f"__node:={name}"]
    if log_level:
        out += ["--log-level", log_level]
    return ["--ros-args", *out] if out else []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class NodeProcess:
    """A process in its own process group, its stdout and stderr captured to `log_path`."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, name: str,
                 cwd: str | os.PathLike | None = None):
        self.argv, self.name, self.log_path = list(argv), name, Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self._log.write(("$ " + " ".join(self.argv) + "\n").encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,  # own group: signals reach children
            # a launcher started as a background job (bash without job control) has SIGINT ignored;
            # children would inherit that and never see the SIGINT that stop() sends first
            preexec_fn=_default_sigint)
        self.pid = self.popen.pid
        self.pgid = self.pid

    # ---- state
    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def group_alive(self) -> bool:
        """Whether any process of this node's process group (children included) still exists."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ---- bounded waits
    def wait_for_log_line(self, pattern: str, timeout: float = 30.0, poll: float = 0.05) -> re.Match:
        """Wait until a line of the output matches regex `pattern`; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                m = regex.search(line)
                if m:
                    return m
            if not self.is_running():
                # one last read: the line may have landed just before the exit
                m = next((regex.search(line) for line in self.log_text().splitlines() if regex.search(line)), None)
                if m:
                    return m
                raise RuntimeError(f"{self.name} exited with code {self.returncode} before logging "
                                   f"/{pattern}/; log {self.log_path}:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} logged nothing matching /{pattern}/ in {timeout:.1f} s; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(poll)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; TimeoutError if it does not."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout:.1f} s; "
                               f"log {self.log_path}:\n{self.log_tail()}") from None

    # ---- teardown
    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def _wait_group(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.popen.poll()  # reap the leader so the group can empty
            if not self.group_alive():
                return True
            time.sleep(0.02)
        self.popen.poll()
        return not self.group_alive()

    def stop(self, sigint_wait: float = SIGINT_WAIT, sigterm_wait: float = SIGTERM_WAIT,
             sigkill_wait: float = SIGKILL_WAIT) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL to the whole process group, each wait bounded.

        Returns the leader's exit code (negative: killed by that signal)."""
        for sig, wait in ((signal.SIGINT, sigint_wait), (signal.SIGTERM, sigterm_wait),
                          (signal.SIGKILL, sigkill_wait)):
            if not self.group_alive():
                break
            self._signal_group(sig)
            if self._wait_group(wait):
                break
        try:
            self.popen.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()
        if self.group_alive():
            raise RuntimeError(f"{self.name} (pgid {self.pgid}) survived SIGKILL")
        return self.popen.returncode

    def __repr__(self) -> str:
        return f"NodeProcess({self.name!r}, pid={self.pid}, returncode={self.returncode})"


# --------------------------------------------------------------------------------------------
# Fast DDS shared memory


def _shm_in_use() -> set[str]:
    """Names of /dev/shm files that a live process maps or holds open."""
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            with open(proc / "maps", "rb") as f:
                for line in f:
                    i = line.find(b"/dev/shm/")
                    if i >= 0:
                        used.add(line[i + 9:].split(b" ")[0].strip().decode(errors="replace"))
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("/dev/shm/"):
                    used.add(target[9:])
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError, OSError):
            continue
    return used


def _is_used(name: str, used: set[str]) -> bool:
    if name in used:
        return True
    # a named semaphore is mapped only while locked: it is in use while its segment is
    if name.startswith("sem.") and name.endswith("_mutex"):
        base = name[4:-6]
        return base in used or base + "_el" in used
    if name.endswith("_el"):  # the lock file of a segment
        return name[:-3] in used
    return False


def stale_shm_segments(since: float | None = None) -> list[Path]:
    """Fast DDS /dev/shm files that no live process uses, optionally only those created since `since`
    (a time.time() value): the ones the processes of a finished test left behind."""
    if not _SHM_DIR.is_dir():
        return []
    used = _shm_in_use()
    out = []
    for path in _SHM_DIR.iterdir():
        if not _SHM_RE.match(path.name) or _is_used(path.name, used):
            continue
        try:
            if since is not None and path.stat().st_mtime < since - 1.0:
                continue
        except FileNotFoundError:
            continue
        out.append(path)
    return sorted(out)


def clean_stale_shm(since: float | None = None) -> list[Path]:
    """Remove the stale Fast DDS segments (see stale_shm_segments); return what was removed.

    Checked twice 50 ms apart, so a segment another process is creating right now is left alone."""
    first = set(stale_shm_segments(since))
    if not first:
        return []
    time.sleep(0.05)
    removed = []
    for path in sorted(first & set(stale_shm_segments(since))):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


# --------------------------------------------------------------------------------------------
# In-test rclpy node


class Probe:
    """An rclpy node with its own Context and executor, for looking at a running graph from a test."""

    def __init__(self, node, executor):
        self.node, self.executor = node, executor

    def spin_until(self, predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
        """Spin until predicate() is true (returns True) or timeout passes (returns False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.executor.spin_once(timeout_sec=min(step, left))

    def drain(self, timeout: float = 1.0) -> bool:
        """Run every callback that is ready now (messages DDS has already delivered), for at most
        `timeout` s; True once nothing is left ready."""
        from rclpy.executors import TimeoutException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                handler, _, _ = self.executor.wait_for_ready_callbacks(0.0)
            except TimeoutException:
                return True
            handler()
        return False

    def wait_for_topic(self, topic: str, timeout: float = 20.0, publishers: int = 1) -> None:
        """Wait until `topic` has at least `publishers` publishers in the graph."""
        if not self.spin_until(lambda: self.node.count_publishers(topic) >= publishers, timeout):
            seen = sorted(n for n, _ in self.node.get_topic_names_and_types())
            raise TimeoutError(f"no publisher on {topic} after {timeout:.1f} s (topics seen: {seen})")

    def wait_for_service(self, client, timeout: float = 20.0) -> None:
        """Wait until a service client's server is available."""
        if not self.spin_until(client.service_is_ready, timeout):
            raise TimeoutError(f"service {client.srv_name} not available after {timeout:.1f} s")

    def collect(self, topic: str, msg_type, count: int = 1, timeout: float = 20.0, qos=10) -> list:
        """Subscribe to `topic` and return the first `count` messages; TimeoutError if fewer come."""
        got: list = []
        sub = self.node.create_subscription(msg_type, topic, got.append, qos)
        try:
            if not self.spin_until(lambda: len(got) >= count, timeout):
                raise TimeoutError(f"{len(got)} of {count} messages on {topic} in {timeout:.1f} s")
            return got[:count]
        finally:
            self.node.destroy_subscription(sub)


@contextmanager
def rclpy_node(domain_id: int, name: str = "lightvla_test_probe") -> Iterator[Probe]:
    """An in-test rclpy node on `domain_id`, LOCALHOST discovery, its own Context (init/shutdown)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    # rcl reads the discovery range from the environment at init; restore it afterwards.
    saved = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    try:
        rclpy.init(context=context, domain_id=int(domain_id))
    finally:
        if saved is None:
            os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
        else:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = saved
    node = executor = None
    try:
        node = rclpy.create_node(name, context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        yield Probe(node, executor)
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)


# --------------------------------------------------------------------------------------------
# The domain: what a test holds


class RosDomain:
    """One test's private DDS domain: its env, the processes started in it, and their teardown."""

    def __init__(self, log_dir: str | os.PathLike | None = None, domain_id: int | None = None):
        self._lock = None
        if domain_id is None:
            self._lock = _DomainLock()
            domain_id = self._lock.domain_id
        self.domain_id = int(domain_id)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"lightvla_ros_d{domain_id}_"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = ros_env(self.domain_id, log_dir=self.log_dir)
        self.processes: list[NodeProcess] = []
        self.started_at = time.time()
        self._names = itertools.count()

    def start_process(self, argv: Sequence[str], name: str | None = None,
                      env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> NodeProcess:
        """Run any command in this domain (env merged over the domain's), output to log_dir/<name>.log."""
        name = name or Path(argv[0]).name
        log_path = self.log_dir / f"{name}.{next(self._names)}.log"
        proc = NodeProcess(argv, {**self.env, **(env or {})}, log_path, name, cwd=cwd)
        self.processes.append(proc)
        return proc

    def start_node(self, executable: str, *, params: Mapping[str, Any] | None = None,
                   params_file: str | os.PathLike | None = None, remaps: Mapping[str, str] | None = None,
                   name: str | None = None, args: Sequence[str] = (), log_level: str | None = None,
                   env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> NodeProcess:
        """Start a node through its console script: `<exe> <args> --ros-args ...`."""
        argv = [resolve_executable(executable), *args,
                *ros_args(params, params_file, remaps, name, log_level)]
        return self.start_process(argv, name=name or Path(executable).name, env=env, cwd=cwd)

    def rclpy_node(self, name: str = "lightvla_test_probe"):
        return rclpy_node(self.domain_id, name)

    def stop_all(self) -> list[Path]:
        """Stop every process (reverse start order), then remove the shm segments they left."""
        errors = []
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except RuntimeError as e:  # keep stopping the others
                errors.append(str(e))
        removed = clean_stale_shm(since=self.started_at)
        if errors:
            raise RuntimeError("; ".join(errors))
        return removed

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> "RosDomain":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ros_domain(log_dir: str | os.PathLike | None = None, domain_id: int | None = None) -> RosDomain:
    """A RosDomain to use as a context manager (see the module docstring)."""
    return RosDomain(log_dir=log_dir, domain_id=domain_id)


def start_node(executable: str, *, env: RosDomain, **kwargs) -> NodeProcess:
    """`env.start_node(executable, **kwargs)`: the node is stopped when the domain closes."""
    if not isinstance(env, RosDomain):
        raise TypeError("start_node needs the RosDomain from `with ros_domain() as dom:` as env")
    return env.start_node(executable, **kwargs)
