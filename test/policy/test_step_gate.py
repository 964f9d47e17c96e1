"""StepGate with a fake clock: the step timer and the chunk-arrival path interleaved (and on two threads)
never serve a step twice, never one older than the last served, never one whose successor is due."""
import random
import threading
import time
from collections import deque

import numpy as np

from lightvla_ros.policy.chunking import OpenLoopScheduler
from lightvla_ros.policy.step_gate import StepGate

DT = 50_000_000  # ns: 20 Hz (the core's time is integer ns)


def sec(x: float) -> int:
    return round(x * 1_000_000_000)
D = 7


def chunk(c: int, n: int = 4) -> np.ndarray:
    return np.repeat((c * 100 + np.arange(n, dtype=np.float32))[:, None], D, axis=1)


class Loop:
    """The node's two paths around one gate and a real open-loop scheduler; `published` = (stamp, value)."""

    def __init__(self, n: int = 4):
        self.sched = OpenLoopScheduler(n, D, DT)
        self.refused = []
        self.gate = StepGate(on_refused=lambda kind, t, newest: self.refused.append((kind, t)))
        self.published: list[tuple[float, float]] = []
        self.chunks = 0

    def tick(self, now: float) -> None:                    # the step timer
        a = self.gate.serve(now, lambda: self.sched.next_action(now))
        if a is not None:
            self.published.append((now, float(a[0])))

    def arrive(self, now: float) -> None:                  # a chunk lands
        self.sched.add_chunk(chunk(self.chunks), now, now)
        self.chunks += 1
        got = self.gate.serve_pending(now, DT, lambda: self.sched.next_action(now))
        if got is not None:
            self.published.append((got[0], float(got[1][0])))

    def stamps(self):
        return [s for s, _ in self.published]


def strictly_increasing(xs) -> bool:
    return all(b > a for a, b in zip(xs, xs[1:]))


def test_lock_step_step_found_empty_is_served_once_on_arrival():
    loop = Loop()
    t = sec(1000.0)
    loop.tick(t)                      # nothing queued: the step waits
    assert loop.published == [] and loop.gate.pending == t
    loop.arrive(t)                    # time stands still: served now, with action 0 of the chunk
    assert loop.published == [(t, 0.0)]
    assert loop.gate.serve_pending(t, DT, lambda: loop.sched.next_action(t)) is None  # t is served
    loop.tick(t)                      # the timer fires again at the same time (after a /clock jump)
    assert loop.stamps() == [t]
    assert loop.refused == [("duplicate_step", t)] and loop.gate.stats.duplicate_steps == 1
    loop.tick(t + DT)                 # the refused tick did not consume the queue: action 1 is next
    assert loop.published[-1] == (t + DT, 1.0)


def test_timer_firing_twice_at_one_clock_value_serves_one_action():
    loop = Loop()
    loop.tick(0)
    loop.arrive(0)
    for k in range(1, 3):
        loop.tick(k * DT)
    jump = 11 * DT                    # episode start: the sim ran 10 wait steps without /clock
    loop.tick(jump)
    loop.tick(jump)                   # a second timer call reading the same clock
    assert loop.stamps() == [0, DT, 2 * DT, jump]
    assert [v for _, v in loop.published] == [0.0, 1.0, 2.0, 3.0]  # no action skipped or eaten
    assert loop.gate.stats.duplicate_steps == 1


def test_clock_going_backwards_is_refused_until_rebase():
    loop = Loop(n=8)
    loop.tick(sec(1.0))
    loop.arrive(sec(1.0))
    loop.tick(sec(1.05))
    loop.tick(sec(0.5))                    # a restarted sim: older than the last served step
    loop.tick(sec(0.55))
    assert loop.stamps() == [sec(1.0), sec(1.05)]
    assert [k for k, _ in loop.refused] == ["old_step", "old_step"] and loop.gate.stats.old_steps == 2
    loop.gate.rebase(sec(1.1))             # ~/reset while the clock is still ahead: history kept
    loop.tick(sec(0.6))
    assert loop.stamps() == [sec(1.0), sec(1.05)]
    loop.gate.rebase(sec(0.6))             # ~/reset after the clock went back: steps start over
    loop.tick(sec(0.65))
    assert loop.stamps() == [sec(1.0), sec(1.05), sec(0.65)]


def test_arrival_serves_only_the_newest_step_and_never_a_passed_one():
    loop = Loop()
    loop.tick(0)                    # empty: waits
    loop.tick(DT)                     # still empty: the newer step waits, 0.0 is abandoned
    loop.arrive(DT)
    assert loop.stamps() == [DT]
    loop2 = Loop()
    loop2.tick(0)
    loop2.arrive(DT)                  # the chunk lands when the next step is due: 0.0 has passed
    assert loop2.published == []
    loop2.tick(DT)                    # the timer serves the due step
    assert loop2.published == [(DT, 0.0)]


def test_a_hold_serves_its_step_so_the_arrival_does_not_serve_it_again():
    loop = Loop()
    hold = np.zeros(D, dtype=np.float32)
    t = sec(2.0)
    assert loop.gate.serve(t, lambda: hold) is hold   # stall: one hold action for the step
    loop.arrive(t)                                      # observations resume, a chunk lands at once
    assert loop.published == [] and loop.gate.pending is None


def test_drop_pending_step_is_never_served_later():
    loop = Loop()
    loop.tick(0)
    loop.gate.drop_pending()          # reset / new instruction while waiting
    loop.arrive(0)
    loop.tick(0)                    # the same step again: refused
    assert loop.published == []
    loop.tick(DT)
    assert loop.published == [(DT, 0.0)]


def test_random_interleavings_keep_stamps_unique_increasing_and_current():
    rng = random.Random(0)
    for trial in range(200):
        loop = Loop(n=rng.choice([1, 2, 4]))
        t, served_at = sec(10.0), []
        for _ in range(60):
            r = rng.random()
            if r < 0.45:
                t += DT * rng.choice([1, 1, 1, 2, 11])       # normal steps and /clock jumps
                loop.tick(t)
            elif r < 0.55:
                loop.tick(t)                                 # the timer again at the same time
            elif r < 0.6:
                t -= DT * rng.choice([1, 3])                  # the clock goes back
                loop.tick(t)
            else:
                n = len(loop.published)
                loop.arrive(t)
                if len(loop.published) > n:
                    served_at.append((loop.published[-1][0], t))
        stamps = loop.stamps()
        assert strictly_increasing(stamps), (trial, stamps)
        assert all(0 <= now - s < DT for s, now in served_at), (trial, served_at)  # never a passed step
        assert loop.gate.stats.served == len(stamps)


def test_two_threads_timer_and_arrivals_never_serve_a_step_twice():
    """The timer on one thread (with double fires), chunks landing on another; both paths pop one
    thread-safe queue, so each step's outcome depends on the interleaving, never its uniqueness."""
    gate = StepGate()
    queue: deque = deque()
    served: list[float] = []        # in the order the gate decided (recorded inside pop, under its lock)
    clock = {"t": 0}
    by_arrival = []
    stop = threading.Event()

    def pop_for(step):
        def pop():
            if not queue:
                return None
            served.append(step)
            return queue.popleft()
        return pop

    def timer():
        for k in range(1, 300):
            clock["t"] = k * DT
            gate.serve(clock["t"], pop_for(clock["t"]))
            if k % 7 == 0:
                gate.serve(clock["t"], pop_for(clock["t"]))  # a double fire
            time.sleep(0.0005)
        stop.set()

    def arrivals():
        while not stop.is_set():
            if not queue:
                queue.extend(range(2))
            got = gate.serve_pending(clock["t"], DT, lambda: pop_for(gate.pending)())
            if got is not None:
                by_arrival.append(got[0])
            time.sleep(0.0003)

    threads = [threading.Thread(target=timer), threading.Thread(target=arrivals)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads)
    assert len(served) > 100 and by_arrival          # both paths served steps
    assert strictly_increasing(served), served
    assert gate.stats.duplicate_steps == 299 // 7 and gate.stats.served == len(served)
