"""DPO (Rafailov et al. 2023), OpenAI's `dpo` fine-tuning method, on a preference training file.

The algorithm as shipped:

1. Read the training file's preference pairs (TRL's prompt/chosen/rejected or OpenAI's
   input/preferred_output/non_preferred_output) as (prompt, chosen, rejected) token ids, exactly as
   the evaluation reads them (`evaluation.preference_triples`: the prompt keeps its last
   max_prompt_len tokens, both responses are cut to the rest of max_seq_len).
2. pi_ref = the initial model: log pi_ref of both responses is computed ONCE, before the first step
   (with LoRA the fresh adapter is zero, so this is the base), and cached; no second model is kept.
3. n_epochs passes over the pairs, batch_size pairs per micro-batch, of `losses.irft_loss`
   (-log sigma(beta * margin), or its hinge) where margin = log pi/pi_ref(chosen) - log pi/pi_ref(rejected):
   IRFT's loss with the rejected side taken from the file instead of generated. The loop, metrics
   (rewards/chosen|rejected|margin|accuracy, logps/chosen|rejected), checkpoints and resume are
   `trainer/pair_training.py`'s, shared with IRFT; evaluation is every method's (`evaluation.py`).

The loss equals TRL's DPOTrainer sigmoid loss on the same per-sequence log-probs
(tests/trainer/test_dpo.py). Runs on several processes as IRFT does (`pair_training.py`); fp16 is refused
(the optimiser has no loss scaler).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer import demonstration_scores as scores
from trainer import loop
from trainer.callbacks import Sink
from trainer.config import TrainConfig
from trainer.errors import DataError
from trainer.evaluation import load_preference_pairs, load_validation
from trainer.pair_training import PairTask, train_pairs
from trainer.result import RunResult
from trainer.spec import plan

CACHE_FILE = "dpo_cache.pt"  # under state/ in mid-run checkpoints


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run DPO as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    run = loop.open_run(config, sink, fp16=False)
    hp, report, tokenizer = run.hp, run.report, run.tokenizer
    triples = load_preference_pairs(config.training_file, tokenizer, hp.max_seq_len, hp.max_prompt_len)
    if triples is None:
        raise DataError(
            "training_file",
            "training_file: DPO trains on preference pairs (prompt/chosen/rejected or "
            "input/preferred_output/non_preferred_output), got a file of demonstrations",
        )
    if not triples:
        raise DataError("training_file", "training_file: expected at least one preference pair, got none")
    report.log_event(
        f"Loaded {len(triples)} preference pairs",
        data={"split": "training", "examples": len(triples)},
    )
    validation = load_validation(config.validation_file, tokenizer, hp.max_seq_len, hp.max_prompt_len, report)
    rejected = [r for _, _, r in triples]

    def from_file(model: Any, t: int, indices: list[int]) -> list[list[int]]:
        return [rejected[i] for i in indices]

    task = PairTask(
        method="dpo",
        first="chosen",
        second_name="rejected",
        examples=[(p, c) for p, c, _ in triples],
        slices=[list(range(len(triples)))],
        second=from_file,
        generated=False,
        cache_file=CACHE_FILE,
        score=lambda run: score_lines(run, triples),
    )
    return train_pairs(
        run,
        sink,
        task,
        plan.iteration_steps("dpo", hp, len(triples), run.accelerator.num_processes),
        validation,
    )


def score_lines(run: loop.Run, triples: list[tuple[list[int], list[int], list[int]]]) -> Path:
    """Each line's implicit-reward margin under the final policy against the starting model
    (trainer/demonstration_scores.py): below 0 where the model now prefers the rejected response."""
    reference = scores.reference_logps(run)
    chosen = [(p, c) for p, c, _ in triples]
    rejected = [(p, r) for p, _, r in triples]
    chosen_logps, rejected_logps = (
        scores.response_logps(run.model, chosen),
        scores.response_logps(run.model, rejected),
    )
    margin = run.hp.beta * ((chosen_logps - reference(chosen)) - (rejected_logps - reference(rejected)))
    # the likelihood column is the chosen response's: what the line asks the model to learn
    return scores.save(run, margin, [len(c) + len(r) for _, c, r in triples], chosen_logps)
