"""Samples graded per second, per grader type (graders/run.py's grade_batch), on arithmetic-style replies.

    .venv/bin/python benchmarks/grader_throughput.py [--samples 512] [--python .grader-venv/bin/python]

Each grader scores the same `--samples` replies against their items, in batches of 64 (a python grader's
batch is one sandboxed process: its start-up is paid per batch, which is what a reinforcement step pays).
Prints one line per grader: samples per second and the median milliseconds per batch of 3 repeats. No
peer is measured: no open trainer runs OpenAI's grader shapes, so there is no ratio to state; the figures
size the grading share of a reinforcement step.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from pydantic import TypeAdapter

from graders.run import grade_batch
from graders.sandbox import Limits
from graders.schemas import Grader

BATCH = 64
EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.reply}}",
    "operation": "like",
}
PYTHON = {
    "type": "python",
    "name": "answer",
    "source": (
        "import re\n"
        "def grade(sample, item):\n"
        "    found = re.findall(r'Answer: (-?\\d+)', sample['output_text'])\n"
        "    return float(bool(found) and int(found[0]) == item['answer'])\n"
    ),
}


def graders() -> dict[str, dict]:
    out = {"string_check": EXACT, "python": PYTHON}
    for metric in ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_l"):
        out[f"text_similarity/{metric}"] = {
            "type": "text_similarity",
            "name": metric,
            "input": "{{sample.output_text}}",
            "reference": "{{item.reply}}",
            "evaluation_metric": metric,
        }
    out["multi (string_check + rouge_l + python)"] = {
        "type": "multi",
        "name": "m",
        "calculate_output": "(a + b + c) / 3",
        "graders": {"a": EXACT, "b": out["text_similarity/rouge_l"], "c": PYTHON},
    }
    return out


def data(n: int) -> tuple[list[str], list[dict]]:
    rng = random.Random(0)
    samples, items = [], []
    for _ in range(n):
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 9)
        first, result = a + b, a + b - c
        reply = f"{a} + {b} = {first}. {first} - {c} = {result}. Answer: {result}"
        guess = result + rng.choice([0, 0, 1, -2])
        samples.append(f"{a} + {b} = {first}. {first} - {c} = {guess}. Answer: {guess}")
        items.append({"reply": reply, "answer": result})
    return samples, items


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=512)
    p.add_argument(
        "--python",
        default=str((Path(__file__).resolve().parents[1] / ".grader-venv").resolve() / "bin" / "python"),
    )
    args = p.parse_args()
    samples, items = data(args.samples)
    limits = Limits(python=args.python)
    adapter = TypeAdapter(Grader)
    print(f"{args.samples} samples, batches of {BATCH}, median of 3 repeats")
    for name, shape in graders().items():
        grader = adapter.validate_python(shape)
        grade_batch(grader, samples[:BATCH], items[:BATCH], limits)  # warm-up: imports, first sandbox start
        per_batch = []
        for _ in range(3):
            start = time.perf_counter()
            for i in range(0, args.samples, BATCH):
                outcomes = grade_batch(grader, samples[i : i + BATCH], items[i : i + BATCH], limits)
                assert not any(o.failed for o in outcomes), outcomes[0].errors
            per_batch.append((time.perf_counter() - start) / -(-args.samples // BATCH))
        batch_s = statistics.median(per_batch)
        print(
            f"{name:45s} {min(BATCH, args.samples) / batch_s:10.0f} samples/s   {batch_s * 1000:8.1f} ms per batch"
        )


if __name__ == "__main__":
    main()
