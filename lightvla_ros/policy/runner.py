"""The control loop, without a transport: what the robot does, decided in one place.

ChunkedPolicyRunner owns observation assembly (ObservationAssembler), the chunk scheduler
(open_loop | async | temporal_ensemble), the step gate (each step at most once, in order), the
safety rules (staleness watchdog, old chunks, NaN, action limits, hold) and the counters. The
policy node, bag replay and the in-process sim loop drive the same runner with their own clock;
every time is integer nanoseconds (policy/clock.py). The runner never calls the model itself: it
hands out Requests and takes the results, so a caller can run the model inline (sim, bag replay)
or on a worker thread (the node, InferenceWorker below).

    runner = ChunkedPolicyRunner(RunnerConfig(...), chunk_size=8, action_dim=7)
    runner.add_image("agentview", rgb, stamp_ns, now_ns)      # ... joint states, eef pose
    req = runner.take_request()                                # an observation the scheduler wants inferred
    if req: result = runner.on_result(req, policy.infer(req.obs), now_ns)   # result.chunk, result.step
    step = runner.step(now_ns)                                 # once per control period: Step or None

The rules are written down in docs/safety.md. All public methods are thread-safe (one lock).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .chunking import make_scheduler
from .clock import to_sec
from .config import RUNTIME, RunnerConfig
from .observation_sync import ObservationAssembler, Rejection
from .step_gate import StepGate
from .types import Observation, PolicyOutput

SHOWN_CHARS = 80  # logs and diagnostics show at most this much of an instruction


def shorten(text: str, limit: int = SHOWN_CHARS) -> str:
    """An instruction for logs and diagnostics: at most `limit` characters, with its full length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def pctl(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


@dataclass(frozen=True)
class Request:
    """An observation to infer. The result goes back through on_result (or on_error)."""
    obs: Observation
    epoch: int          # a reset / stall since the request drops its result
    requested_ns: int   # runner clock when requested
    since_ns: int       # the oldest input of the observation: the chunk's age counts from here
    wall_start: float   # time.monotonic() at the request (node overhead = wall time - model time)


@dataclass(frozen=True)
class Step:
    """The action for one control step, checked against the limits in force when it was made."""
    stamp_ns: int
    action: np.ndarray   # (action_dim,) float32
    hold: bool = False   # the hold action sent once when observations stopped


@dataclass(frozen=True)
class Result:
    chunk: PolicyOutput | None = None   # the chunk as it will be executed (limits applied); None: dropped
    step: Step | None = None            # a step found empty, served now that the chunk arrived
    obs: Observation | None = None      # the observation the chunk was computed from


class ChunkedPolicyRunner:
    def __init__(self, config: RunnerConfig, chunk_size: int, action_dim: int,
                 action_space: str = "eef_delta_pose_gripper",
                 log: Callable[[str, str], None] | None = None,
                 instruction_problem: Callable[[str], str | None] | None = None):
        """log(level, message), level in debug | info | warning | error (default: Python logging).
        instruction_problem(text) -> why the model cannot take it, or None."""
        self.chunk_size, self.action_dim, self.action_space = int(chunk_size), int(action_dim), str(action_space)
        self._log = log or _python_log
        self._instruction_problem = instruction_problem or (lambda text: None)
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self.config = config
        self.period_ns = config.control_period_ns
        self.assembler = ObservationAssembler(list(config.camera_names), proprio_sources=config.proprio_sources,
                                              instruction=config.instruction)
        self.scheduler = make_scheduler(config.execution_mode, self.chunk_size, self.action_dim, self.period_ns,
                                        **_scheduler_options(config))
        self._limits = self._check_runtime(config)
        if config.instruction:
            problem = self._instruction_problem(config.instruction)
            if problem:
                raise ValueError(f"instruction: {problem}")
        self._apply(config, self._limits)
        # state (under the lock)
        self._epoch = 0                        # bumped by reset / stall / new instruction
        self._job: Request | None = None       # the request queued or in flight
        self._job_taken = False
        self._closed = False
        # called, lock held, on the thread that made a request (InferenceWorker sends it from there)
        self.on_request: Callable[[], None] | None = None
        self._last_good: int | None = None     # fresh_since of the newest observation that assembled
        self._fresh = False                    # the watchdog's state: each fresh <-> stale transition logged
        self._obs_after = -1                   # an inference needs an observation stamped after this
        self._gate: StepGate = StepGate(on_refused=self._step_refused)
        self.publishing = False
        self._last_action: np.ndarray | None = None
        self.rejected: Counter = Counter()     # observation rejections by reason
        self.bad_input: Counter = Counter()    # malformed input by kind
        self.safety: Counter = Counter()       # nan_action, clipped_chunks, rejected_chunks, stalls, old_chunks, ...
        self._logged: set[str] = set()
        self._tick_times: deque[float] = deque(maxlen=200)
        self._action_times: deque[float] = deque(maxlen=200)
        self._model_latency: deque[float] = deque(maxlen=200)
        self._node_latency: deque[float] = deque(maxlen=200)
        self._chunk_age: deque[float] = deque(maxlen=200)
        self.inferences = 0
        self.actions_published = 0

    # ------------------------------------------------------------------ configuration
    def _check_runtime(self, cfg: RunnerConfig) -> dict:
        """What the config check cannot do without the model: limits of the right length."""
        def limits(name):
            vals = [float(v) for v in getattr(cfg, name)]
            if not vals:
                return None
            if len(vals) == 1:
                vals = vals * self.action_dim
            if len(vals) != self.action_dim:
                raise ValueError(f"{name} has {len(vals)} values; give 1 or action_dim = {self.action_dim}")
            return np.asarray(vals, dtype=np.float32)

        out = {n: limits(n) for n in ("action_min", "action_max", "hold_action")}
        if out["action_min"] is not None and out["action_max"] is not None and \
                np.any(out["action_min"] > out["action_max"]):
            raise ValueError(f"action_min {out['action_min'].tolist()} exceeds action_max "
                             f"{out['action_max'].tolist()}")
        if cfg.execution_mode == "open_loop" and cfg.open_loop_steps > self.chunk_size:
            raise ValueError(f"open_loop_steps must be in [0, {self.chunk_size}], got {cfg.open_loop_steps}")
        return out

    def _apply(self, cfg: RunnerConfig, limits: dict) -> None:
        self.config, self._limits = cfg, limits
        a = self.assembler
        a.max_observation_age, a.pairing_tolerance = cfg.ns("max_observation_age"), cfg.ns("pairing_tolerance")
        a.future_tolerance, a.proprio_sync_tolerance = cfg.ns("future_stamp_tolerance"), cfg.proprio_sync_ns
        s = self.scheduler  # execution knobs act from the next chunk / request on
        if s.name == "open_loop":
            s.steps_per_chunk = cfg.open_loop_steps or self.chunk_size
        elif s.name == "async":
            s.blend = list(cfg.async_blend_weights) or cfg.async_blend
            s.latency_margin_steps, s.delay_compensation = cfg.async_latency_margin_steps, cfg.async_delay_compensation
        else:
            s.m, s.query_every = cfg.ensemble_m, cfg.ensemble_query_every

    def configure(self, **changes) -> RunnerConfig:
        """Change run-time parameters: all validated together, then applied at once (queued actions
        meet new limits at their step), or ValueError with the reason and nothing changed."""
        fixed = sorted(n for n in changes if n not in RUNTIME)
        if fixed:
            raise ValueError(f"{', '.join(fixed)}: read at start-up only")
        cfg = self.config.replace(**changes)
        limits = self._check_runtime(cfg)
        text = changes.get("instruction")
        if text:
            problem = self._instruction_problem(text)
            if problem:
                raise ValueError(f"instruction refused: {problem}")
        with self._lock:
            self._apply(cfg, limits)
        if text:
            self.set_instruction(text, "parameter")
        return cfg

    # ------------------------------------------------------------------ inputs
    def add_image(self, camera: str, rgb: np.ndarray, stamp: int, now: int) -> None:
        with self._lock:
            self.assembler.add_image(camera, rgb, stamp, received=now)
            self._maybe_request(now, count_rejection=False)

    def add_joint_state(self, names, positions, stamp: int, now: int) -> bool:
        """A malformed message (length mismatch, a name twice with two values) is rejected whole."""
        with self._lock:
            try:
                self.assembler.add_joint_state(list(names), list(positions), stamp, received=now)
            except ValueError as e:
                self.report_bad_input("bad_joint_state", f"joint states: {e}")
                return False
            self._maybe_request(now, count_rejection=False)  # the last piece may complete it
            return True

    def add_eef_pose(self, position, quat_xyzw, stamp: int, now: int) -> None:
        with self._lock:
            self.assembler.add_eef_pose(position, quat_xyzw, stamp, received=now)
            self._maybe_request(now, count_rejection=False)

    def report_bad_input(self, kind: str, message: str) -> None:
        """A transport could not decode an input (bad encoding, size, ...): counted, logged once per kind."""
        with self._lock:
            self._report(self.bad_input, kind, message)

    def set_instruction(self, text: str, source: str, now: int | None = None) -> tuple[bool, str]:
        if not text or not text.strip():
            self.report_bad_input("empty_instruction", f"empty instruction from the {source} ignored")
            return False, "empty instruction ignored; the previous one stays"
        if text == self.assembler.instruction:  # e.g. delivered by two subscriptions: checked once
            return True, f"instruction set: '{shorten(text)}'"
        problem = self._instruction_problem(text)
        if problem:
            self.report_bad_input("instruction_too_long", f"instruction from the {source} '{shorten(text)}' "
                                                          f"refused: {problem}")
            return False, f"instruction refused: {problem}; the previous one stays"
        with self._lock:
            self.assembler.set_instruction(text)
            self._clear_queue(now)
        self._log("info", f"instruction ({source}): '{shorten(text)}'")
        return True, f"instruction set: '{shorten(text)}'"

    def reset(self, now: int) -> None:
        """A new episode: queued actions, in-flight results and buffered observations are dropped;
        a clock restarted at an earlier time starts the steps over."""
        with self._lock:
            self._clear_queue(now)
            self._gate.rebase(now)
            self.assembler.clear()
            self._last_good = None

    # ------------------------------------------------------------------ the control step
    def step(self, now: int) -> Step | None:
        """The control step at `now`: its action, the hold action once when observations stopped, or
        None (nothing to execute, stale, or a step already begun)."""
        with self._lock:
            self._tick_times.append(time.monotonic())
            obs = self.assembler.assemble(now)
            since = self._mark_good() if isinstance(obs, Observation) else None
            if not self._publishing_allowed(now):
                return self._stopped(now, obs)
            self._maybe_request(now, count_rejection=True, obs=obs, since=since)
            action = self._gate.serve(now, lambda: self.scheduler.next_action(now))
            return self._make_step(action, now) if action is not None else None

    def _stopped(self, now: int, obs) -> Step | None:
        hold = None
        if self._fresh:  # the watchdog: fresh -> stale, logged once per transition
            self._fresh = False
            self.safety["stalls"] += 1
            age = "never" if self._last_good is None else f"{to_sec(now - self._last_good):.2f} s ago"
            which = "; ".join(self.assembler.stale_inputs(now)) or \
                (obs.message if isinstance(obs, Rejection) else "no usable observation")
            self._log("warning", f"observations stopped: {which} (last usable observation {age}); "
                                 "no actions until every input is fresh")
        if self.publishing:
            self.publishing = False
            self._clear_queue(now)
            if self.config.publish_hold_on_stale:
                hold = self._hold_vector()
        if isinstance(obs, Rejection):
            self._report(self.rejected, obs.reason, obs.message)
        # no hold: the step waits (lock-step: the first step is due before any observation)
        if self._gate.serve(now, lambda: hold) is None:
            return None
        self.safety["holds"] += 1
        return Step(now, np.asarray(hold, dtype=np.float32).copy(), hold=True)

    def _make_step(self, action: np.ndarray, now: int) -> Step | None:
        """The last check of a step's action, against the limits in force now (a limit changed at
        run time applies to actions queued before the change)."""
        if not np.all(np.isfinite(action)):
            self._report(self.safety, "nan_action", "a step action had NaN/Inf values: not sent")
            return None
        lo, hi = self._bounds()
        if np.any(action < lo) or np.any(action > hi):
            if self.config.limit_mode == "reject":
                self._report(self.safety, "out_of_limits_step", f"step action {action.tolist()} outside "
                                                                "[action_min, action_max]: not sent")
                return None
            action = np.clip(action, lo, hi).astype(np.float32)
            self.safety["clipped_steps"] += 1
        self.publishing = True
        self._last_action = action
        self.actions_published += 1
        self._action_times.append(time.monotonic())
        if self.config.execution_mode == "open_loop" and self.config.wait_for_new_observation:
            self._obs_after = max(self._obs_after, now)
        return Step(now, np.asarray(action, dtype=np.float32))

    def _bounds(self) -> tuple:
        lo, hi = self._limits["action_min"], self._limits["action_max"]
        return (-np.inf if lo is None else lo), (np.inf if hi is None else hi)

    def _hold_vector(self) -> np.ndarray:
        if self._limits["hold_action"] is not None:
            return self._limits["hold_action"]
        if self.action_space == "joint_position" and self._last_action is not None:
            return self._last_action
        return np.zeros(self.action_dim, dtype=np.float32)

    # ------------------------------------------------------------------ inference
    def take_request(self) -> Request | None:
        """The observation waiting to be inferred, if any (it is then in flight)."""
        with self._lock:
            if self._job is None or self._job_taken:
                return None
            self._job_taken = True
            return self._job

    def wait_request(self, timeout: float, busy: Callable[[], bool] | None = None) -> Request | None:
        """take_request, waiting up to `timeout` s; None after close(), or as soon as busy() (checked
        on every request and close) says the caller has something else to do."""
        busy = busy or (lambda: False)
        with self._cv:
            self._cv.wait_for(lambda: self._closed or busy() or (self._job is not None and not self._job_taken),
                              timeout)
            return None if self._closed or busy() else self.take_request()

    def on_result(self, req: Request, out: PolicyOutput, now: int) -> Result:
        """A chunk is back: dropped (reset since the request, too old, NaN, rejected by the limits) or
        checked and queued; a step found empty less than a period ago is served now (lock-step)."""
        with self._lock:
            if self._closed:
                return Result()
            if self._job is not req:   # reset / stall / new instruction while inferring
                self.safety["dropped_chunks"] += 1
                return Result()
            self._job = None
            self.inferences += 1
            age = now - req.since_ns
            self._chunk_age.append(to_sec(age))
            limit = self.config.max_chunk_age_ns
            if age > limit:  # executing it would act on what the robot saw long ago
                self._report(self.safety, "old_chunks", f"a chunk arrived {to_sec(age):.3f} s after its observation "
                                                        f"(max_chunk_age {to_sec(limit):.3f} s): dropped; the model "
                                                        "cannot keep up (model latency in diagnostics)")
                self.scheduler.inference_failed(now)
                return Result()
            actions = self._check_chunk(out.actions)
            if actions is None:
                self.scheduler.inference_failed(now)
                return Result()
            out.actions = actions
            model_time = float(out.timings.get("total", 0.0))
            self._model_latency.append(model_time)
            self._node_latency.append(max(0.0, time.monotonic() - req.wall_start - model_time))
            self.scheduler.add_chunk(actions, req.obs.stamp, now)
            if self.config.execution_mode == "open_loop" and self.config.wait_for_new_observation:
                # the next chunk needs a newer observation than this one too: a step served on arrival
                # may be older than the observation (wall clock), and one frame is inferred once
                self._obs_after = max(self._obs_after, req.obs.stamp)
            step = None
            # a step found empty less than a period ago (lock-step: time stands still) is served now,
            # unless a newer step began meanwhile (StepGate: never a step twice or out of order)
            if self.config.publish_on_arrival and self._publishing_allowed(now):
                got = self._gate.serve_pending(now, self.period_ns, lambda: self.scheduler.next_action(now))
                if got is not None:
                    step = self._make_step(got[1], got[0])
            return Result(out, step, req.obs)

    def check_chunk(self, actions: np.ndarray) -> np.ndarray | None:
        """The chunk rules alone (shape, NaN, limits per limit_mode): the chunk as it would be
        executed, or None if refused (bag replay compares like with like through this)."""
        with self._lock:
            return self._check_chunk(actions)

    def on_error(self, req: Request, error: Exception, now: int) -> None:
        """The model raised: counted and logged once; a new request may follow."""
        with self._lock:
            self._report(self.safety, "inference_error", f"inference failed: {type(error).__name__}: "
                                                         f"{str(error)[:200]}")
            if self._job is req:
                self._job = None
                self.scheduler.inference_failed(now)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No more requests or results (a worker waiting in wait_request returns None)."""
        with self._cv:
            self._closed = True
            self._job = None
            self._cv.notify_all()

    # ------------------------------------------------------------------ internals (lock held)
    def _report(self, counter: Counter, kind: str, message: str) -> None:
        counter[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            self._log("warning", f"{kind}: {message} (logged once; counted in diagnostics)")

    def _step_refused(self, kind: str, step_time: int, newest: int) -> None:
        why = ("the step timer fired twice at this time" if kind == "duplicate_step"
               else "the clock went backwards (a restarted sim: reset first)")
        self._report(self.safety, kind + "s", f"no action for the step at t={to_sec(step_time):.3f}: the step at "
                                              f"t={to_sec(newest):.3f} was already begun ({why})")

    def _clear_queue(self, now: int | None) -> None:
        """Drop queued actions and in-flight results; need a fresh observation."""
        self.scheduler.reset()
        self._epoch += 1
        self._gate.drop_pending()
        self._job = None
        if now is not None:
            self._obs_after = now - 1  # taken before now; one taken at now is new (lock-step: the next state)

    def _mark_good(self) -> int | None:
        """An observation assembled: usable until its oldest input is max_observation_age old.
        Returns that oldest input time (fresh_since)."""
        since = self.assembler.fresh_since()
        if since is not None:
            self._last_good = since if self._last_good is None else max(since, self._last_good)
        if not self._fresh:
            self._fresh = True
            if self.safety["stalls"]:
                self._log("info", "observations resumed")
        return since

    def _publishing_allowed(self, now: int) -> bool:
        return self._last_good is not None and now - self._last_good <= self.assembler.max_observation_age

    def _maybe_request(self, now: int, count_rejection: bool, obs=None, since: int | None = None) -> None:
        if self._closed or self._job is not None or not self.scheduler.wants_inference(now):
            return
        if obs is None:
            obs = self.assembler.assemble(now)
        if isinstance(obs, Rejection):
            if count_rejection:
                self._report(self.rejected, obs.reason, obs.message)
            return
        if since is None:   # not marked by the caller (step) yet
            since = self._mark_good()
        if obs.stamp <= self._obs_after:  # from before the last step / reset: wait for a newer one
            return
        self.scheduler.inference_started(now)
        self._job = Request(obs, self._epoch, now, obs.stamp if since is None else since, time.monotonic())
        self._job_taken = False
        self._cv.notify_all()
        if self.on_request is not None:
            self.on_request()

    def _check_chunk(self, actions: np.ndarray) -> np.ndarray | None:
        """NaN/Inf -> reject; outside limits -> clip or reject per limit_mode."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != self.action_dim:
            self._report(self.safety, "bad_chunk_shape", f"chunk of shape {actions.shape}: not used")
            return None
        if not np.all(np.isfinite(actions)):
            self._report(self.safety, "nan_action", "the model returned NaN/Inf actions: chunk not used")
            return None
        lo, hi = self._bounds()
        outside = (actions < lo) | (actions > hi)
        if outside.any():
            if self.config.limit_mode == "reject":
                self._report(self.safety, "rejected_chunks", f"{int(outside.sum())} action values outside "
                                                             "[action_min, action_max]: chunk rejected")
                return None
            self._report(self.safety, "clipped_chunks", f"{int(outside.sum())} action values clipped to "
                                                        "[action_min, action_max]")
            self.safety["clipped_values"] += int(outside.sum())
            actions = np.clip(actions, lo, hi).astype(np.float32)
        return actions

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> dict[str, str]:
        with self._lock:
            def rate(times):
                recent = [t for t in times if t > time.monotonic() - 2.0]
                return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
            s, max_age = self.scheduler.stats, to_sec(self.config.max_chunk_age_ns)
            v = {
                "execution_mode": self.config.execution_mode,
                "state": "publishing" if self.publishing else "waiting for observations",
                "step_rate_hz": f"{rate(self._tick_times):.2f}",
                "step_gap_max_s": f"{max(np.diff(list(self._tick_times)[-40:]), default=0.0):.4f}",
                "action_rate_hz": f"{rate(self._action_times):.2f}",
                "actions_published": str(self.actions_published),
                "inferences": str(self.inferences),
                "model_latency_median_s": f"{pctl(self._model_latency, 50):.4f}",
                "model_latency_p99_s": f"{pctl(self._model_latency, 99):.4f}",
                "node_overhead_median_s": f"{pctl(self._node_latency, 50):.4f}",
                "missed_steps": str(s.missed_steps),
                "pauses": str(s.pauses),
                "dropped_chunk_steps": str(s.dropped_steps),
                "instruction": shorten(self.assembler.instruction),
                "chunk_age_median_s": f"{pctl(self._chunk_age, 50):.4f}",
                "max_chunk_age_s": f"{max_age:.4f}",
                "keeping_up": "no" if self.safety["old_chunks"] and self._chunk_age and
                              self._chunk_age[-1] > max_age else "yes",
            }
            for c, prefix in ((self.rejected, "rejected_"), (self.bad_input, "bad_input_"), (self.safety, "safety_")):
                for k, n in sorted(c.items()):
                    v[prefix + k] = str(n)
            return v


class InferenceWorker:
    """Runs the model on its own thread: takes the runner's requests, hands back results.
    on_result(Result) is called on the worker thread for every chunk that was kept.

    A policy with submit(obs) / receive(timeout) (ProcessPolicy: the model in a child process) is
    sent each request on the thread that made it (a sensor callback, the step timer, this thread
    after a result), so a request does not wait for this thread to wake up (0.3 ms measured,
    docs/benchmarks.md); this thread waits for the replies. One request is in flight at a time."""

    def __init__(self, runner: ChunkedPolicyRunner, policy, clock_ns: Callable[[], int],
                 on_result: Callable[[Result], None]):
        self.runner, self.policy, self.clock_ns, self.on_result = runner, policy, clock_ns, on_result
        self.split = callable(getattr(policy, "submit", None)) and callable(getattr(policy, "receive", None))
        self._in_flight: Request | None = None   # split: the request the model process has (runner lock)
        self._thread = threading.Thread(target=self._work_split if self.split else self._work,
                                        name="lightvla_inference", daemon=True)

    def start(self) -> None:
        if self.split:
            self.runner.on_request = self._send_waiting
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Close the runner (an inference in flight is discarded) and join the thread."""
        self.runner.close()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)  # a long forward pass finishes on its own and is dropped

    def _work(self) -> None:
        while True:
            req = self.runner.wait_request(timeout=0.2)
            if req is None:
                if self.runner.closed:
                    return
                continue
            try:
                out = self.policy.infer(req.obs)
            except Exception as e:  # a model error must not take the node down
                self.runner.on_error(req, e, self.clock_ns())
                continue
            self._deliver(req, out)

    def _deliver(self, req: Request, out) -> None:
        result = self.runner.on_result(req, out, self.clock_ns())
        if result.chunk is not None:
            try:
                self.on_result(result)
            except Exception as e:  # a transport error must not stop inference
                self.runner.report_bad_input("publish_error", f"{type(e).__name__}: {str(e)[:200]}")

    # ---- split: requests sent where they are made, replies received here -----------------------
    def _send_waiting(self) -> None:
        """Send the waiting request to the model process unless one is in flight (any thread)."""
        with self.runner._lock:
            if self._in_flight is None and not self.runner.closed:
                self._send(self.runner.take_request())

    def _send(self, req: Request | None) -> None:
        if req is None:
            return
        with self.runner._lock:
            self._in_flight = req
            try:
                self.policy.submit(req.obs)
            except Exception as e:  # the model process is gone: counted, the node keeps running
                self._in_flight = None
                self.runner.on_error(req, e, self.clock_ns())

    def _work_split(self) -> None:
        while not self.runner.closed:
            if self._in_flight is None:   # normally sent where it was made; one made before start() here
                self._send(self.runner.wait_request(0.2, busy=lambda: self._in_flight is not None))
                continue
            try:
                out = self.policy.receive(timeout=0.2)
            except Exception as e:  # an error reply or the process gone: counted, next request
                req, self._in_flight = self._in_flight, None
                self.runner.on_error(req, e, self.clock_ns())
                self._send_waiting()
                continue
            if out is None:
                continue
            req, self._in_flight = self._in_flight, None
            self._deliver(req, out)
            self._send_waiting()   # a request made while the model ran


def run_inline(runner: ChunkedPolicyRunner, policy, now: int) -> Result | None:
    """Run the waiting request, if any, on this thread (lock-step sim, bag replay)."""
    req = runner.take_request()
    if req is None:
        return None
    return runner.on_result(req, policy.infer(req.obs), now)


def _scheduler_options(cfg: RunnerConfig) -> dict:
    return dict(open_loop_steps=cfg.open_loop_steps or None, blend=list(cfg.async_blend_weights) or cfg.async_blend,
                latency_margin_steps=cfg.async_latency_margin_steps, delay_compensation=cfg.async_delay_compensation,
                ensemble_m=cfg.ensemble_m, query_every=cfg.ensemble_query_every)


def _python_log(level: str, message: str) -> None:
    logging.getLogger("lightvla_ros.runner").log(getattr(logging, level.upper(), logging.INFO), message)
