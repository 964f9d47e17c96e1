"""lightvla-sim-eval --record DIR: one `lightvla-record` process per episode, a bag per episode.

For each episode the worker starts `lightvla-record` in its ROS domain (a real process, like the
bridge and the policy), waits until the recorder has matched every publisher of the recorded
topics (its ~/status service against this process's view of the graph), runs the episode, waits
until the recorder has logged the EpisodeResult and written the episode's chunks and actions, and
stops it with SIGINT so the bag is closed (footer, metadata.yaml). Every wait is on a condition,
bounded in time. Bags go to DIR/<suite>_<task>_<init>[_<n>]/.

The bag's metadata (custom_data and /lightvla/episode_metadata) holds what `lightvla-bag-eval`
needs to replay it as the node ran: suite, task, init state, checkpoint path and sha256, policy
type, the policy node's proprio_sources and camera_topics; the recorder adds the instruction and
the EpisodeResult (success, steps, task_name). In lock-step the recorder runs on sim time
(use_sim_time), so bag time and the header stamps share one clock, as the policy node's do.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from lightvla_ros.eval.bag_record import DEFAULT_TOPICS

POLICY_KEYS = ("proprio_sources", "camera_topics", "pairing_tolerance", "max_observation_age",
               "proprio_sync_tolerance")
SUBSCRIBE_TIMEOUT = 30.0     # s for the recorder to start and offer ~/status
# The graph shows the recorder's subscriptions before every publisher has matched them: a policy
# node busy on a loaded CPU was seen to miss the new participant's first announcements and match
# only at the next periodic one (Fast DDS: every 3 s), losing the episode's first chunk. So the
# episode starts once the recorder's subscriptions have matched every publisher this process sees
# on the recorded topics (a publisher's participant sends its endpoints only to participants it
# has discovered), at most this long after the recorder came up.
MATCH_TIMEOUT = 30.0
RESULT_TIMEOUT = 15.0        # s for the recorder to log the EpisodeResult and write the last chunks
POLL = 0.05                  # s between two ~/status questions


def check_record_dir(path: str | Path) -> Path:
    """Create DIR (parents too); SystemExit with a clear message when it cannot be written."""
    root = Path(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".lightvla_write_test_{time.monotonic_ns()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"--record {path}: cannot write there ({e})") from None
    return root.resolve()


def bag_dir(root: Path, suite: str, task: str, init_state_index: int) -> Path:
    """root/<suite>_<task>_<init>, with _<n> appended when that exists (rosbags never overwrites)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{suite}_{task}_{int(init_state_index)}").strip("-")
    path, n = root / safe, 1
    while path.exists():
        path, n = root / f"{safe}_{n}", n + 1
    return path


def policy_parameters(probe, node_name: str, names=POLICY_KEYS, timeout: float = 10.0) -> dict:
    """The running policy node's parameters `names` (those it has) over ~/get_parameters; {} if none."""
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    client = probe.node.create_client(GetParameters, f"/{node_name}/get_parameters")
    try:
        if not probe.spin_until(client.service_is_ready, timeout):
            return {}
        fut = client.call_async(GetParameters.Request(names=list(names)))
        if not probe.spin_until(fut.done, timeout) or fut.result() is None:
            return {}
        return {n: parameter_value_to_python(v) for n, v in zip(names, fut.result().values)
                if v.type != ParameterType.PARAMETER_NOT_SET}
    finally:
        probe.node.destroy_client(client)


def yaml_policy_parameters(cfg: Path, section: str, names=POLICY_KEYS) -> dict:
    import yaml

    try:
        params = (yaml.safe_load(Path(cfg).read_text()) or {}).get(section, {}).get("ros__parameters", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return {k: params[k] for k in names if k in params}


class EpisodeRecorder:
    """Per worker: the fixed part of the metadata; start() / finish() a recorder per episode."""

    def __init__(self, args, dom, probe, cfg: Path, policy_name: str):
        self.args, self.dom, self.probe = args, dom, probe
        self.root = Path(args.record).resolve()
        self.storage = args.record_storage
        self.lock_step = args.mode == "lock_step"
        node_params = policy_parameters(probe, policy_name) if args.policy == "vla" else {}
        self.policy_params = {**yaml_policy_parameters(cfg, policy_name), **node_params}
        self.policy_params_from = "node" if node_params else "config"
        cams = [str(t) for t in self.policy_params.get("camera_topics", [])]
        self.topics = list(DEFAULT_TOPICS) + [t for t in cams if t not in DEFAULT_TOPICS]
        if self.lock_step:
            self.topics.append("/clock:rosgraph_msgs/msg/Clock")
        self.base = {"suite": args.suite, "policy": args.policy, "mode": args.mode,
                     "action_input": args.action_input, "max_steps": int(args.max_steps),
                     "recorded_by": "lightvla-sim-eval", "policy_parameters_from": self.policy_params_from,
                     **self.policy_params}
        if args.policy == "vla":
            from lightvla_ros.eval.sim_report import checkpoint_fingerprint

            fp = checkpoint_fingerprint(args.checkpoint)
            self.base.update(checkpoint=fp["path"], checkpoint_sha256=fp["sha256"],
                             checkpoint_config_sha256=fp.get("config_sha256"),
                             checkpoint_weights_fingerprint=fp.get("weights_fingerprint"))
        self._count = 0

    def _status(self, client) -> dict:
        """The recorder's ~/status: {"messages": {topic: n}, "matched": {topic: publishers}} ({} if no answer)."""
        fut = client.call_async(self._trigger.Request())
        if not self.probe.spin_until(fut.done, 5.0) or fut.result() is None:
            return {}
        return json.loads(fut.result().message)

    def _unmatched(self, status: dict) -> dict[str, str]:
        """Recorded topics with a publisher (in this process's graph) the recorder has not matched yet."""
        matched = status.get("matched")
        if matched is None:
            return {"~/status": "no answer"}
        out = {}
        for entry in self.topics:
            topic = entry.split(":")[0]
            n = self.probe.node.count_publishers(topic)
            if matched.get(topic, 0) < n:
                out[topic] = f"matched {matched.get(topic, 0)} of {n} publishers"
        return out

    def _wait(self, client, done, timeout: float) -> tuple[bool, dict]:
        """Ask ~/status every POLL s until done(status) or `timeout` s; (done, last status)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self._status(client)
            if done(status):
                return True, status
            if time.monotonic() >= deadline:
                return False, status
            self.probe.spin_until(lambda: time.monotonic() >= deadline, POLL)

    def start(self, ep: dict) -> tuple[Any, Path]:
        """Start the recorder for `ep` and wait until it has matched every publisher of the recorded
        topics. Raises RuntimeError/TimeoutError (the recorder is stopped then)."""
        from std_srvs.srv import Trigger

        self._trigger = Trigger
        self._count += 1
        path = bag_dir(self.root, self.args.suite, str(ep["task"]), int(ep["init_state_index"]))
        name = f"lightvla_recorder_{self._count}"
        meta = {**self.base, "task": str(ep["task"]), "init_state_index": int(ep["init_state_index"])}
        proc = self.dom.start_node("lightvla-record", name=name, params={"use_sim_time": self.lock_step}, args=[
            "-o", str(path), "--storage", self.storage, "--no-latched-history",
            "--metadata-json", json.dumps(meta), "--topics", *self.topics])
        client = self.probe.node.create_client(Trigger, f"/{name}/status")
        try:
            proc.wait_for_log_line(r"recording \[", timeout=SUBSCRIBE_TIMEOUT)
            if not self.probe.spin_until(client.service_is_ready, SUBSCRIBE_TIMEOUT):
                raise TimeoutError(f"recorder {name}: no ~/status service after {SUBSCRIBE_TIMEOUT:g} s; "
                                   f"log {proc.log_path}")
            ok, status = self._wait(client, lambda st: not self._unmatched(st), MATCH_TIMEOUT)
            if not ok:
                raise TimeoutError(f"recorder {name} has not matched the publishers of {self._unmatched(status)} "
                                   f"after {MATCH_TIMEOUT:g} s (DDS discovery); log {proc.log_path}")
        except (TimeoutError, RuntimeError):
            proc.stop()
            self.probe.node.destroy_client(client)
            raise
        self._client = client
        return proc, path

    def finish(self, proc, path: Path, rec: dict) -> None:
        """Wait for the EpisodeResult and the episode's chunks and actions in the recorder, SIGINT it,
        check the bag; fill rec['bag'...]."""
        rec["bag"] = str(path)
        rec["bag_storage"] = self.storage
        if rec.get("steps") is not None:   # the bridge published a result: let the recorder write it
            try:
                proc.wait_for_log_line(r"episode result:", timeout=RESULT_TIMEOUT)
            except (TimeoutError, RuntimeError) as e:
                rec["bag_error"] = f"the recorder did not get the EpisodeResult: {str(e).splitlines()[0]}"
            # the last chunks and actions travel on their own writers: wait until the bag has what this
            # process saw (a shortfall is reported below as bag_error)
            want = {t: n for t, n in (("/lightvla/action_chunk", rec.get("chunks")),
                                      ("/lightvla/action", rec.get("actions_applied"))) if n}
            self._wait(self._client, lambda st: all(st.get("messages", {}).get(t, 0) >= n for t, n in want.items()),
                       RESULT_TIMEOUT)
        self.probe.node.destroy_client(self._client)
        code = proc.stop()
        if code != 0 or "closed" not in proc.log_text():
            rec["bag_error"] = f"recorder exited with {code}; log {proc.log_path}:\n{proc.log_tail(10)}"
            return
        try:
            from lightvla_ros.eval.bag_io import BagReader

            with BagReader(path) as reader:
                rec["bag_messages"] = int(reader.message_count)
                rec["bag_topics"] = {t: int(i.count or 0) for t, i in reader.topics.items()}
                meta = reader.episode_metadata()
            if rec.get("steps") is not None and "success" not in meta:
                rec.setdefault("bag_error", "the bag's metadata has no success (EpisodeResult not recorded)")
            missing = {t: f"{rec['bag_topics'].get(t, 0)} of {n}" for t, n in (
                ("/lightvla/action_chunk", rec.get("chunks")), ("/lightvla/action", rec.get("actions_applied")))
                if n is not None and rec["bag_topics"].get(t, 0) < n}
            if missing:   # the live run saw more than the bag holds: the replay will miss them
                rec.setdefault("bag_error", f"the bag is missing messages the episode had: {missing}")
        except Exception as e:  # noqa: BLE001  (reported in the episode record, the eval goes on)
            rec["bag_error"] = f"cannot read the recorded bag {path}: {type(e).__name__}: {e}"
