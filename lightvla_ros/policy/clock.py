"""Time in the core is integer nanoseconds: stamps, arrivals, `now`, tolerances, periods.

ROS stamps (sec, nanosec), bag timestamps and the node clock are integer nanoseconds already, so
nothing is rounded on the way in and a stamp goes back out exactly (no float-second side maps, no
epsilons). Seconds appear only at the edges: parameters, logs, reports.
"""
from __future__ import annotations

import math

NS_PER_S = 1_000_000_000


def to_ns(seconds: float) -> int:
    """Seconds (a parameter, a sim time) -> integer nanoseconds, rounded to the nearest."""
    seconds = float(seconds)
    if not math.isfinite(seconds):
        raise ValueError(f"a time must be finite, got {seconds}")
    return int(round(seconds * NS_PER_S))


def to_sec(ns: int) -> float:
    """Integer nanoseconds -> seconds, for logs and reports only."""
    return ns / NS_PER_S


NEVER = 10**18  # ns (~32 years): a tolerance or age limit that never trips ("off")
