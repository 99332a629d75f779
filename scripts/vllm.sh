#!/usr/bin/env bash
# vLLM (the CPU build) in its own virtual environment, .vllm, with distillguard's plug-in
# installed beside it: ~3.5 GB that the gateway and hub never need. Installs exactly
# requirements/vllm-lock.txt (--no-deps: the lock already is the whole set). Idempotent;
# instant when the venv is newer than the lock.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.vllm
LOCK=requirements/vllm-lock.txt
STAMP=$VENV/.distillguard-vllm
if [ -f "$STAMP" ] && [ "$STAMP" -nt "$LOCK" ]; then
    exit 0
fi
echo "vllm.sh: installing vLLM into $VENV (a few minutes, ~3.5 GB)" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-deps -r "$LOCK"
# The plug-in: this checkout, importable by vLLM's workers (its dependencies are in the lock).
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
touch "$STAMP"
