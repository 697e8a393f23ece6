#!/usr/bin/env bash
# trainviz launcher.
#   ./launch.sh                   set up (first use), start visdom, train all four trainers live
#   ./launch.sh -j 4              the same, the four trainers in parallel
#   ./launch.sh --epochs 2 ...    the same, every trainer with these options (any shared option)
#   ./launch.sh TRAINER [OPTIONS] one trainer (scratch-softmax, nn-softmax, mlp-lowlevel, mlp)
#   ./launch.sh sweep TRAINER ... any other trainviz command (sweep, runs, compare, ...), with the server up
#   ./launch.sh test [PYTEST...]  set up, then run the test suite
#   ./launch.sh stop              stop the visdom server this script started
#   ./launch.sh setup             only set up
# Environment: VISDOM_PORT (default 8097), TRAINVIZ_VENV (default ./.venv),
#   TRAINVIZ_PYTHON (the interpreter the venv is made with; default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${TRAINVIZ_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
PORT="${VISDOM_PORT:-8097}"
TRAINERS=(scratch-softmax nn-softmax mlp-lowlevel mlp)

say() { printf '[launch] %s\n' "$*" >&2; }

# Debian packages, installed only when missing and only where apt-get can run.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    say "please install: ${missing[*]} (no apt-get here)"
    return 0
  fi
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  say "installing Debian packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

# "3.11" for an interpreter, or nothing when it does not run.
python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }

# The interpreter for a new venv: TRAINVIZ_PYTHON or python3, at least setup.cfg's python_requires.
check_python() {
  local python="${TRAINVIZ_PYTHON:-python3}" needed found
  needed="$(sed -n 's/^python_requires *= *>= *//p' "$ROOT/setup.cfg")"
  found="$(python_version "$python")"
  if [ -z "$found" ]; then
    say "error: no Python at '$python'; trainviz needs Python >= $needed (set TRAINVIZ_PYTHON to one)"
    exit 2
  fi
  if [ "$(printf '%s\n%s\n' "$needed" "$found" | sort -V | head -n1)" != "$needed" ]; then
    say "error: $python is Python $found; trainviz needs Python >= $needed (set TRAINVIZ_PYTHON to one)"
    exit 2
  fi
  # An existing venv of another Python is not silently reused when one was asked for.
  if [ -n "${TRAINVIZ_PYTHON:-}" ] && [ -x "$PY" ] && [ "$(python_version "$PY")" != "$found" ]; then
    say "error: $VENV holds Python $(python_version "$PY"), not $found; remove it or set TRAINVIZ_VENV to another folder"
    exit 2
  fi
  PYTHON="$python"
}

setup() {
  local extra="${1:-}"
  check_python
  # Fashion-MNIST offline, and npm for visdom's front-end files.
  local pkgs=(dataset-fashion-mnist)
  command -v npm >/dev/null || pkgs+=(npm)
  # The tests drive a real browser and a throwaway PostgreSQL cluster (sweeps across machines).
  [ "$extra" = test ] && pkgs+=(chromium postgresql)
  apt_install "${pkgs[@]}"

  if [ ! -x "$PY" ]; then
    say "creating $VENV with Python $(python_version "$PYTHON")"
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the dependency files change.
  local stamp="$VENV/.trainviz-deps"
  local want
  want="$(cat "$ROOT/setup.cfg" "$ROOT/.ci/constraints.txt" | sha1sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python packages (torch is large: a few minutes the first time)"
    PIP_CONSTRAINT="$ROOT/.ci/constraints.txt" "$PY" -m pip install -q --disable-pip-version-check -e "${ROOT}[test]"
    echo "$want" > "$stamp"
  fi
  "$PY" -m trainers server setup
}

start_server() {
  "$PY" -m trainers server start --port "$PORT"
}

dashboard_url() { printf 'http://localhost:%s' "$PORT"; }

train_all() {
  local jobs=1
  if [ "${1:-}" = "-j" ]; then jobs="${2:?-j needs a number}"; shift 2; fi
  # Parallel trainers share the cores: give each its slice, or their thread pools thrash.
  if [ "$jobs" -gt 1 ]; then
    local threads=$(( $(nproc) / jobs ))
    export OMP_NUM_THREADS=$(( threads > 0 ? threads : 1 ))
  fi
  say "dashboard: $(dashboard_url)  (each run is an environment; trainviz compare RUN_DIR... draws runs side by side)"
  local pids=() status=0
  for trainer in "${TRAINERS[@]}"; do
    "$PY" -m trainers "$trainer" --port "$PORT" "$@" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then
      wait "${pids[0]}" || status=$?
      pids=("${pids[@]:1}")
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  say "done; dashboard: $(dashboard_url)"
  return "$status"
}

main() {
  [ $# -gt 0 ] || set -- all
  local command="$1"
  case "$command" in
    setup) setup ;;
    test)
      shift
      setup test
      cd "$ROOT"
      exec "$PY" -m pytest "$@"
      ;;
    stop) "$PY" -m trainers server stop --port "$PORT" ;;
    all | -j)
      [ "$command" = all ] && shift
      setup
      start_server
      train_all "$@"
      ;;
    -h | --help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    -*)
      setup
      start_server
      train_all "$@"
      ;;
    *)
      setup
      start_server
      say "dashboard: $(dashboard_url)"
      exec "$PY" -m trainers "$@"
      ;;
  esac
}

main "$@"
