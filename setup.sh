#!/usr/bin/env bash
# One command on a fresh machine: install everything into .venv/, then run the main job: the
# shipped LightVLA trained here (checkpoints/lightvla-lift, pruning on) in closed loop over ROS 2
# on robosuite Lift, 3 held-out seeds, on CPU; the success rate is printed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
bash scripts/install.sh
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec .venv/bin/lightvla-sim-eval \
  --checkpoint checkpoints/lightvla-lift \
  --suite robosuite --tasks Lift --init-states 0-2 --camera-size 128 \
  --report out/main_job_report.json "$@"
