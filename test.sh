#!/usr/bin/env bash
# One command: make sure the environment is installed (fast when it is), lint, then run the whole suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
bash scripts/install.sh
export MUJOCO_GL="${MUJOCO_GL:-egl}"
.venv/bin/ruff check .   # lint first (ruff.toml): a style error fails before 15 minutes of tests
exec .venv/bin/python -m pytest test -q -p no:cacheprovider "$@"
