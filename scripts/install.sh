#!/usr/bin/env bash
# Installs everything into .venv/ (pinned), builds the message package, generates the default
# tiny checkpoint. Fast when nothing changed: a stamp records what was installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
log() { printf '[install] %s\n' "$*"; }
# pip, quiet; this machine's local-index config warns once per package about absent folders: drop that noise
pip_install() {
  "$PY" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

# 1. System libraries: MuJoCo renders offscreen through EGL (Mesa).
need_apt=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgl1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# 2. Python packages, skipped when the stamp matches.
stamp_inputs=(requirements/base.txt requirements/nodeps.txt requirements/ray.txt scripts/install.sh setup.py setup.cfg package.xml
              lightvla_interfaces/CMakeLists.txt lightvla_interfaces/package.xml lightvla_interfaces/pyproject.toml)
stamp_inputs+=(msg/*.msg srv/*.srv scripts/build_interfaces.sh)
want="$({ cat "${stamp_inputs[@]}" 2>/dev/null; echo "ray=${LIGHTVLA_RAY:-1}"; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$VENV/.lightvla-stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  [ -x "$PY" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
  log "installing torch (pinned; CPU and CUDA)"
  pip_install torch==2.14.1 torchvision==0.29.1
  log "installing pinned requirements (ROS 2 Kilted wheels, transformers, timm, MuJoCo, robosuite, ...)"
  pip_install -r requirements/base.txt
  log "installing LIBERO and its assets without their declared extras"
  pip_install --no-deps -r requirements/nodeps.txt
  if [ "${LIGHTVLA_RAY:-1}" != "0" ]; then
    log "installing the ray extra (lightvla-sim-eval --ray; LIGHTVLA_RAY=0 skips it)"
    pip_install -r requirements/ray.txt
  fi
  log "building lightvla_interfaces (ActionChunk, PruningStats, EpisodeResult, RunEpisode)"
  bash scripts/build_interfaces.sh
  log "installing lightvla_ros (editable)"
  pip_install --no-deps --no-build-isolation -e .
  echo "$want" > "$VENV/.lightvla-stamp"
else
  log "environment up to date ($VENV)"
fi

# 3. The ament index entries a colcon install would have (share/lightvla_ros, lib/lightvla_ros/<exe>),
#    as symlinks into this tree: the editable install has none. Cheap; keeps up with new files.
"$PY" scripts/register_ament.py "$VENV"

# 4. The default tiny checkpoint, generated locally (no hub access needed).
CKPT="$ROOT/data/checkpoints/lightvla-tiny"
if [ ! -f "$CKPT/config.json" ]; then
  log "generating the default tiny checkpoint at $CKPT"
  "$VENV/bin/lightvla-make-checkpoint" "$CKPT" --size tiny
fi
