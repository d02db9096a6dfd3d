"""DPO (trainer/methods/dpo.py) on the tiny model, CPU: a run, metrics, TRL parity of a step's loss on
independently computed log-probs, resume parity, and refusing a file of demonstrations."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.trainer.recording import Crash, RecordingSink
from tests.trainer.test_irft_losses import _trl_dpo_sigmoid_loss
from trainer import TrainConfig, run
from trainer.errors import DataError
from trainer.evaluation import load_preference_pairs
from trainer.modeling import load_model_and_tokenizer
from trainer.pair_training import PairTask, _train_step, score_reference
from trainer.spec import plan

DPO_METRICS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_s",
    "train/epoch",
    "train/tokens",
    "train/pair_loss",
    "train/nll",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margin",
    "rewards/accuracy",
    "logps/chosen",
    "logps/rejected",
}


@pytest.fixture
def pairs(rows) -> list[dict]:
    """Preference rows from the tiny corpus: each row's own answer is chosen over one unhelpful reply,
    in both of the accepted shapes."""
    prompts = [r["messages"][-2]["content"] if "messages" in r else r["prompt"] for r in rows]
    answers = [r["messages"][-1]["content"] if "messages" in r else r["completion"] for r in rows]
    out: list[dict] = []
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        wrong = "No idea, sorry."
        if i % 2:
            out.append({"prompt": prompt, "chosen": answer, "rejected": wrong})
        else:
            out.append(
                {
                    "input": {"messages": [{"role": "user", "content": prompt}]},
                    "preferred_output": [{"role": "assistant", "content": answer}],
                    "non_preferred_output": [{"role": "assistant", "content": wrong}],
                }
            )
    return out


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, pairs, write_jsonl):
    train_file = write_jsonl(tmp_path / "pairs.jsonl", pairs)

    def make(output="out", resume_from=None, training_file=None, **hp) -> TrainConfig:
        return TrainConfig.from_dict(
            {
                "model": str(tiny_model_dir),
                "training_file": str(training_file or train_file),
                "validation_file": str(train_file),
                "output_dir": str(tmp_path / output),
                "resume_from": resume_from,
                "device": "cpu",
                "method": "dpo",
                "hyperparameters": {"learning_rate": 1e-2, "batch_size": 2, "n_epochs": 2, **hp},
            }
        )

    return make


def test_dpo_learns_the_preference_and_logs_its_metrics(make_config, pairs):
    sink = RecordingSink()
    config = make_config(eval_interval=1)
    result = run(config, sink)
    assert result.status == "completed"
    assert result.global_step == plan.total_steps("dpo", config.hyperparameters, len(pairs)) == 6
    assert set(sink.train[0][1]) == DPO_METRICS  # no IRFT-only series (generation length, kl)
    assert sink.losses[0] == pytest.approx(0.6931472, abs=1e-5)  # step 1: policy == pi_ref, margin 0
    assert sink.series("rewards/margin")[-1] > 0 and sink.series("rewards/accuracy")[-1] > 0.5
    gaps = sink.series("eval/logp_gap")  # on the training pairs: the preferred side gains step by step
    assert len(gaps) == 6 and gaps[-1] > gaps[0] + 5


@pytest.mark.slow
def test_a_step_matches_trl_on_independently_computed_logprobs(tiny_model_dir, tmp_path, pairs, write_jsonl):
    """Our loss of a step (collator, masking, summed log-probs, cached pi_ref) equals TRL's DPO loss on
    per-sequence log-probs computed here one sequence at a time, without our batching."""
    pytest.importorskip("trl")
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    triples = load_preference_pairs(str(path), tokenizer, 128, 64)
    assert triples is not None
    hp = TrainConfig.from_dict(
        {
            "model": "m",
            "training_file": "t",
            "output_dir": "o",
            "method": "dpo",
            "hyperparameters": {"beta": 0.5},
        }
    ).hyperparameters
    examples, rejected = [(p, c) for p, c, _ in triples], [r for _, _, r in triples]
    indices = list(range(len(triples)))
    reference = copy.deepcopy(model).eval()
    cache = score_reference(model, examples, indices, rejected, hp, iteration=0)
    with torch.no_grad():  # move the policy away from pi_ref
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.eval()  # no dropout in the tiny model, but be explicit: both forwards deterministic

    task = PairTask("dpo", "chosen", "rejected", examples, [indices], lambda *_: rejected, False, "c.pt")
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    ours = _train_step(model, accelerator, [indices], task, cache, hp)["means"]["train/loss"]

    def logp(net, prompt, response):
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logits = net(input_ids=ids).logits[0, :-1].float()  # (T-1, V): position t predicts t + 1
        picked = torch.log_softmax(logits, -1)[torch.arange(len(ids[0]) - 1), ids[0, 1:]]
        return picked[len(prompt) - 1 :].sum()  # the response tokens only

    def side(net, k):
        return torch.stack([logp(net, t[0], t[k]) for t in triples])

    theirs = _trl_dpo_sigmoid_loss(
        side(model, 1), side(model, 2), side(reference, 1), side(reference, 2), 0.5
    )
    assert ours == pytest.approx(float(theirs), abs=1e-5)


def test_resume_mid_run_matches_the_uninterrupted_run(make_config):
    full = RecordingSink()
    run(make_config(output="full", checkpoint_interval=2), full)
    crashed = RecordingSink(crash_after_checkpoint=4)
    with pytest.raises(Crash):
        run(make_config(output="part", checkpoint_interval=2), crashed)
    checkpoint = crashed.checkpoints[-1][1]
    assert (checkpoint / "state" / "dpo_cache.pt").is_file()  # pi_ref's log-probs travel with it
    resumed = RecordingSink()
    result = run(make_config(output="part", checkpoint_interval=2, resume_from=str(checkpoint)), resumed)
    assert result.global_step == 6
    assert crashed.losses[:4] + resumed.losses == pytest.approx(full.losses, abs=1e-5)


def test_a_file_of_demonstrations_is_refused(make_config, tmp_path, rows, write_jsonl):
    demos = write_jsonl(tmp_path / "demos.jsonl", rows)
    with pytest.raises(DataError, match=r"^training_file: DPO trains on preference pairs") as err:
        run(make_config(training_file=demos), RecordingSink())
    assert err.value.param == "training_file"
