"""Upload validation throughput against its floor: bare `json.loads` of every line, in the same run.

    .venv/bin/python benchmarks/validator_throughput.py [--mb 50]

The validator does strictly more than parse each line (UTF-8 check, format detection, every field
rule), so the ratio says what the rules cost on top of parsing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.validation import JsonlValidator
from benchmarks.timing import best_of

CHUNK = 1 << 20
SHAPES = {
    "chat (3 messages)": {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France? " * 3},
            {"role": "assistant", "content": "The capital of France is Paris. " * 4},
        ]
    },
    "prompt/completion": {"prompt": "Translate to French: cat.", "completion": "Chat."},
    "preference": {
        "input": {"messages": [{"role": "user", "content": "Name a colour. " * 4}]},
        "preferred_output": [{"role": "assistant", "content": "Blue. " * 8}],
        "non_preferred_output": [{"role": "assistant", "content": "I don't know. " * 4}],
    },
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=float, default=50)
    args = p.parse_args()
    print(f"{'lines':<22}{'MB':>6}{'json.loads MB/s':>17}{'validator MB/s':>16}{'ratio':>8}")
    for name, row in SHAPES.items():
        line = (json.dumps(row) + "\n").encode()
        data = line * int(args.mb * 1e6 / len(line))
        mb = len(data) / 1e6

        def bare(data: bytes = data) -> None:
            for raw in data.splitlines():
                json.loads(raw)

        def validate(data: bytes = data) -> None:
            v = JsonlValidator()
            for i in range(0, len(data), CHUNK):
                v.feed(data[i : i + CHUNK])
            v.finish()

        t_bare, t_val = best_of(3, bare), best_of(3, validate)
        print(f"{name:<22}{mb:>6.0f}{mb / t_bare:>17.0f}{mb / t_val:>16.0f}{t_bare / t_val:>8.2f}")


if __name__ == "__main__":
    main()
