#!/usr/bin/env bash
# One command on a fresh machine: install everything into .venv/, then run the main job,
# a closed-loop LIBERO episode over ROS 2 with the default generated tiny checkpoint (CPU).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
bash scripts/install.sh
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec .venv/bin/lightvla-sim-eval \
  --checkpoint data/checkpoints/lightvla-tiny \
  --suite libero_object --tasks 0 --init-states 0 --max-steps 40 \
  --report out/main_job_report.json "$@"
