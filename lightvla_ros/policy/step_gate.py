"""Which control step may still get an action: each step at most once, in time order. No ROS; time
(integer nanoseconds, policy/clock.py) is passed in, so "the same step" is an exact comparison.

Two paths hand out per-step actions in the policy node: the step timer (the step at `now`) and, in
lock-step simulation, the arrival of a chunk (the step the timer found with nothing queued). Both ask
this gate, which keeps one monotonic stamp, the newest step begun. A step at or before it is refused
and counted: a timer that fires twice at the same clock value gives a `duplicate_step`, a clock that
went backwards an `old_step`; a step found empty is served on arrival only while no newer step began.

    action = gate.serve(now, lambda: sched.next_action(now))          # timer; None: refused or empty
    got = gate.serve_pending(now, max_delay, lambda: sched.next_action(now))  # chunk arrived
    if got is not None: step_time, action = got

pop() runs under the gate's lock and is called only for a step that will be served (the queue is not
consumed by a refused step). The whole decision is atomic, so the two paths may run on two threads.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

A = TypeVar("A")


@dataclass
class StepGateStats:
    served: int = 0            # steps that got an action
    duplicate_steps: int = 0   # a step begun again at the same time (refused)
    old_steps: int = 0         # a step older than the newest one begun (refused)


class StepGate(Generic[A]):
    def __init__(self, on_refused: Callable[[str, int, int], None] | None = None):
        self._lock = threading.Lock()
        self.on_refused = on_refused      # (kind, step_time, newest) for logging; called under the lock
        self.stats = StepGateStats()
        self.newest: int | None = None  # the newest step begun (served or waiting): monotonic
        self.pending: int | None = None  # that step, if it found nothing to execute
        self.last_served: int | None = None

    def serve(self, step_time: int, pop: Callable[[], A | None]) -> A | None:
        """Begin the step at `step_time`: its action from pop(), or None (refused, or nothing: it waits)."""
        with self._lock:
            if not self._is_new(step_time):
                return None
            self.newest = step_time
            action = pop()
            self.pending = step_time if action is None else None  # an older waiting step is never served now
            if action is not None:
                self._served(step_time)
            return action

    def serve_pending(self, now: int, max_delay: int, pop: Callable[[], A | None]) -> tuple[int, A] | None:
        """The waiting step and its action, if it is still the newest step and less than max_delay old
        (a control period: once the next step is due, this one has passed and is never served)."""
        with self._lock:
            step = self.pending
            if step is None or step != self.newest or not 0 <= now - step < max_delay:
                return None
            action = pop()
            if action is None:
                return None
            self.pending = None
            self._served(step)
            return step, action

    def drop_pending(self) -> None:
        """The waiting step gets no action (queue cleared, reset): it stays begun, so never served later."""
        with self._lock:
            self.pending = None

    def rebase(self, now: int) -> None:
        """A new episode: if the clock is behind the newest step (a restarted sim), start time over."""
        with self._lock:
            self.pending = None
            if self.newest is not None and now < self.newest:
                self.newest = self.last_served = None

    def _is_new(self, step_time: int) -> bool:
        if self.newest is None or step_time > self.newest:
            return True
        kind = "duplicate_step" if step_time == self.newest else "old_step"
        if kind == "duplicate_step":
            self.stats.duplicate_steps += 1
        else:
            self.stats.old_steps += 1
        if self.on_refused is not None:
            self.on_refused(kind, step_time, self.newest)
        return False

    def _served(self, step_time: int) -> None:
        self.last_served = step_time
        self.stats.served += 1
