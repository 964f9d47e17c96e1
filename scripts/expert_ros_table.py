#!/usr/bin/env python3
"""The scripted expert through ROS 2 (sim bridge + expert node, real processes, lock-step):
LIBERO-Object tasks 0..9 (init state 0) and robosuite Lift seeds 0..4. Prints a success table.

    .venv/bin/python scripts/expert_ros_table.py [--workers 2] [--camera-size 128] [--out out/expert_ros]

Done-when of issue 5: at least 8/10 on LIBERO-Object and 5/5 on Lift.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNS = [
    ("libero_object", ",".join(str(i) for i in range(10)), "0"),
    ("robosuite", "Lift", "0,1,2,3,4"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--camera-size", type=int, default=128)
    ap.add_argument("--render-quality", default="fast")
    ap.add_argument("--out", default="out/expert_ros")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, totals = [], {}
    for suite, tasks, inits in RUNS:
        report = out / f"{suite}.json"
        cmd = [str(BIN / "lightvla-sim-eval"), "--policy", "expert", "--suite", suite, "--tasks", tasks,
               "--init-states", inits, "--workers", str(args.workers), "--camera-size", str(args.camera_size),
               "--render-quality", args.render_quality, "--report", str(report), "--log-dir", str(out / "logs" / suite)]
        t0 = time.monotonic()
        print("$ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=False, timeout=3 * 3600)
        data = json.loads(report.read_text())
        for e in data["episodes"]:
            rows.append((suite, e.get("task_name", e["task"]), e["init_state_index"], bool(e.get("success")),
                         e.get("policy_steps", 0), e.get("dropped_steps", 0), e.get("error", "")))
        o = data["overall"]
        totals[suite] = (o["successes"], o["episodes"], time.monotonic() - t0)
    print()
    print(f"{'suite':<14} {'task':<58} {'init':>4} {'ok':>3} {'steps':>5} {'drop':>4}")
    for suite, task, init, ok, steps, dropped, err in rows:
        print(f"{suite:<14} {str(task)[:58]:<58} {init:>4} {'yes' if ok else 'no':>3} {steps:>5} {dropped:>4}"
              + (f"  error: {err[:60]}" if err else ""))
    print()
    for suite, (ok, n, secs) in totals.items():
        print(f"{suite}: {ok}/{n} success ({secs:.0f} s wall)")
    lib_ok, lift_ok = totals["libero_object"][0], totals["robosuite"][0]
    passed = lib_ok >= 8 and lift_ok == 5
    print(f"done-when (>= 8/10 LIBERO-Object, 5/5 Lift): {'met' if passed else 'NOT met'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
