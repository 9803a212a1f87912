#!/usr/bin/env bash
# Set up (once) and run foveate:  bash run.sh quickstart | test | <any foveate subcommand>
# Creates ./.venv on first use with the pinned torch/torchvision and foveate installed editable.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${FOVEATE_VENV:-.venv}"
if [ ! -x "$VENV/bin/foveate" ] || [ ! -x "$VENV/bin/pytest" ]; then
  echo "[run.sh] creating $VENV (first run only: a few minutes)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/python" -m pip install -q -e ".[test,tensorboard]"
fi
cmd="${1:-quickstart}"
shift || true
case "$cmd" in
  test) exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *) exec "$VENV/bin/foveate" "$cmd" "$@" ;;
esac
