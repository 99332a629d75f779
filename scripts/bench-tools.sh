#!/usr/bin/env bash
# What benchmarks/gateway_bench.py needs besides the project: the `wrk` load generator
# and nginx (the no-work proxy floor), both Debian packages, and LiteLLM's proxy in its
# own virtual environment (.bench/litellm), so that its many dependencies never meet ours. Idempotent; instant when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "bench-tools.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

LITELLM_VENV=.bench/litellm
if [ ! -x "$LITELLM_VENV/bin/litellm" ]; then
    echo "bench-tools.sh: installing LiteLLM's proxy into $LITELLM_VENV" >&2
    python3 -m venv "$LITELLM_VENV"
    "$LITELLM_VENV/bin/python" -m pip install --quiet "litellm[proxy]==1.106.2"
fi
