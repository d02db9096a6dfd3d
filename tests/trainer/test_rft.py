"""RFT (trainer/methods/rft.py) on the tiny model, CPU: a full run, LoRA, stop, resume parity."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.recording import Crash, RecordingSink
from trainer import RunResult, TrainConfig, run
from trainer.checkpointing import find_latest_complete
from trainer.reward_model import load_reward_model

RFT_METRICS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_s",
    "train/epoch",
    "train/tokens",
    "train/kl",
    "train/generation_length",
    "train/outer_iteration",
    "rewards/generations",
    "rewards/demonstrations",
    "advantages/mean",
    "advantages/std",
    "reward_model/loss",
    "reward_model/accuracy",
    "reward_model/identical",
    "reward_model/policy_accuracy",
    "train/kl_coef",
    "train/nll",
    "train/unfinished",
}
PREFERENCES = [
    {"prompt": "What is two plus two?", "chosen": "Two plus two is four.", "rejected": "Seven."},
    {
        "input": {"messages": [{"role": "user", "content": "Name a colour."}]},
        "preferred_output": [{"role": "assistant", "content": "Blue."}],
        "non_preferred_output": [{"role": "assistant", "content": "Paris."}],
    },
]


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, rows, write_jsonl):
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)

    def make(output="out", validation_file=None, resume_from=None, **hyperparameters) -> TrainConfig:
        hp = {
            "learning_rate": 1e-2,
            "n_epochs": 1,
            "reward_learning_rate": 1e-3,
            "batch_size": 2,
            "samples_per_prompt": 2,
            "outer_iterations": 2,
            "generation": {"max_new_tokens": 6, "temperature": 1.0},
            **hyperparameters,
        }
        return TrainConfig.from_dict(
            {
                "model": str(tiny_model_dir),
                "training_file": str(train_file),
                "output_dir": str(tmp_path / output),
                "validation_file": validation_file,
                "resume_from": resume_from,
                "method": "rft",
                "device": "cpu",
                "seed": 0,
                "hyperparameters": hp,
            }
        )

    return make


def test_full_run_trains_both_models_logs_and_checkpoints(make_config, tiny_model_dir, tmp_path, write_jsonl):
    from transformers import AutoModelForSequenceClassification

    val = write_jsonl(tmp_path / "val.jsonl", PREFERENCES)
    sink = RecordingSink()
    # "last": with a validation file "auto" would select the best checkpoint, evaluating the start too
    result = run(make_config(validation_file=str(val), select_checkpoint="last"), sink)
    # 6 demonstrations, T = 2: slices of 3, batch 2 -> 2 policy steps per iteration
    assert isinstance(result, RunResult) and result.status == "completed" and result.global_step == 4
    names = set().union(*(v.keys() for _, v in sink.metrics))
    assert RFT_METRICS | {"eval/logp_gap", "eval/logp_gap_accuracy"} <= names
    assert [s for s, _ in sink.train] == [1, 2, 3, 4]
    assert sink.series("train/outer_iteration") == [1, 1, 2, 2]
    assert sink.series("train/epoch")[-1] == pytest.approx(1.0)
    assert sink.series("train/kl")[0] == pytest.approx(0.0, abs=1e-5)  # pi == pi_ref before any update
    assert len(sink.series("reward_model/loss")) == 2 and len(sink.series("eval/logp_gap")) == 2
    assert all(0 <= a <= 1 for a in sink.series("reward_model/accuracy"))
    assert sink.series("advantages/mean")[0] == pytest.approx(0.0, abs=1e-6)  # RLOO rows sum to 0
    samples = [d["samples"] for _, m, d in sink.events if m.startswith("Outer iteration")]
    assert len(samples) == 2 and all(len(s) == 3 and {"prompt", "generated"} <= s[0].keys() for s in samples)
    iterations = [d["outer_iteration"] for _, m, d in sink.events if m.startswith("Outer iteration")]
    assert iterations == [1, 2]  # the same event shape as IRFT's
    # checkpoints at the end of each outer iteration; the last is the newest complete one
    assert [s for s, _, _ in sink.checkpoints] == [2, 4]
    ckpt = result.final_checkpoint
    assert ckpt == find_latest_complete(tmp_path / "out")
    # The policy and reward optimisers carry over between iterations, so the first iteration's
    # checkpoint keeps their state; the last step's has none to continue.
    first = ckpt.parent / "step_00000002" / "state"
    assert (first / "reward_optimizer.pt").is_file() and (first / "optimizer.pt").is_file()
    assert not any((ckpt / "state" / f).exists() for f in ("reward_optimizer.pt", "optimizer.pt"))
    leftovers = (tmp_path / "out" / "checkpoints").iterdir()
    assert not any(p.name.endswith((".tmp", ".old")) for p in leftovers)
    # every policy tensor moved
    base = load_file(tiny_model_dir / "model.safetensors")
    tuned = load_file(ckpt / "model" / "model.safetensors")
    assert base.keys() == tuned.keys() and [k for k in base if torch.equal(base[k], tuned[k])] == []
    # every trained reward-model tensor moved from its initialisation (same seed -> same initial head);
    # the embeddings are frozen (reward_trainable_layers: the tiny model's 2 blocks are within the top 4)
    initial = load_reward_model(tiny_model_dir, 0, seed=0).state_dict()
    trained = load_file(ckpt / "reward_model" / "model.safetensors")
    assert initial.keys() == trained.keys()
    assert [k for k in initial if torch.equal(initial[k], trained[k])] == ["model.embed_tokens.weight"]
    rm = AutoModelForSequenceClassification.from_pretrained(ckpt / "reward_model")
    assert rm.config.num_labels == 1


def test_demonstration_validation_gives_eval_loss(make_config, tmp_path, rows, write_jsonl):
    val = write_jsonl(tmp_path / "val.jsonl", rows[:2])
    sink = RecordingSink()
    run(
        make_config(validation_file=str(val), outer_iterations=1, batch_size=6, select_checkpoint="last"),
        sink,
    )
    assert len(sink.series("eval/loss")) == 1 and sink.series("eval/loss")[0] > 0


def test_lora_uses_the_adapter_disabled_base_as_reference(make_config, tiny_model_dir):
    sink = RecordingSink()
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}
    result = run(make_config(lora=lora, learning_rate=5e-2), sink)
    assert result.status == "completed" and result.global_step == 4
    assert sink.series("train/kl")[0] == pytest.approx(0.0, abs=1e-5)
    assert any(abs(kl) > 1e-4 for kl in sink.series("train/kl")[1:])  # the adapter moved pi away from pi_ref
    adapter = load_file(result.final_checkpoint / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    assert (result.final_checkpoint / "reward_model" / "model.safetensors").is_file()


def test_should_stop_is_honoured(make_config, tmp_path):
    sink = RecordingSink(stop_after_steps=1)
    result = run(make_config(checkpoint_interval=1), sink)
    assert result.status == "stopped" and result.global_step == 1
    assert [s for s, _, _ in sink.checkpoints] == [1]
    assert result.final_checkpoint == find_latest_complete(tmp_path / "out")


@pytest.mark.slow
def test_hold_checkpoints_mid_iteration_and_resumes_to_the_same_run(make_config):
    hp = {"batch_size": 1, "checkpoint_interval": 1000}  # T = 2, 3 policy steps per iteration
    straight = RecordingSink()
    run(make_config(output="straight", **hp), straight)
    held = RecordingSink(hold_after_steps=2)
    result = run(make_config(output="held", **hp), held)
    assert result.status == "held" and result.global_step == 2
    assert [s for s, _, _ in held.checkpoints] == [2]
    resumed = RecordingSink()
    done = run(make_config(output="held", resume_from=str(result.final_checkpoint), **hp), resumed)
    assert done.status == "completed" and [s for s, _ in resumed.train] == [3, 4, 5, 6]
    assert held.series("train/loss") + resumed.series("train/loss") == pytest.approx(
        straight.series("train/loss"), abs=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", ["policy_phase", "iteration_boundary_lora"])
def test_resume_reproduces_the_uninterrupted_run(make_config, case):
    # batch 1, T = 2: 3 policy steps per iteration; checkpoint 2 is mid-iteration, 3 is a boundary
    hp = {"batch_size": 1, "checkpoint_interval": 1, "warmup_steps": 1, "weight_decay": 0.1}
    crash_at = 2
    if case == "iteration_boundary_lora":
        hp["lora"] = {"enabled": True, "r": 4, "dropout": 0.3}  # dropout: the restored torch RNG matters
        crash_at = 3
    straight = RecordingSink()
    full = run(make_config(output="straight", **hp), straight)
    assert full.global_step == 6

    crashed = RecordingSink(crash_after_checkpoint=crash_at)
    with pytest.raises(Crash):
        run(make_config(output="resumed", **hp), crashed)
    checkpoint = crashed.checkpoints[-1][1]
    resumed = RecordingSink()
    result = run(make_config(output="resumed", resume_from=str(checkpoint), **hp), resumed)
    assert [s for s, _ in resumed.train] == list(range(crash_at + 1, 7))
    for name in (
        "train/loss",
        "train/kl",
        "rewards/generations",
        "train/grad_norm",
        "train/lr",
        "train/tokens",
    ):
        assert crashed.series(name) + resumed.series(name) == pytest.approx(straight.series(name), abs=1e-5)
    assert crashed.series("reward_model/loss") + resumed.series("reward_model/loss") == pytest.approx(
        straight.series("reward_model/loss"), abs=1e-5
    )
    assert result.trained_tokens == full.trained_tokens
    for sub in ("model", "reward_model"):
        a = load_file(full.final_checkpoint / sub / "model.safetensors")
        b = load_file(result.final_checkpoint / sub / "model.safetensors")
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_a_separate_reward_model_base(make_config, tmp_path):
    from trainer.testing import make_tiny_model_dir

    other = make_tiny_model_dir(tmp_path / "other_rm", seed=7)  # same tokenizer, different weights
    sink = RecordingSink()
    result = run(make_config(reward_model=str(other), outer_iterations=1, batch_size=6), sink)
    assert result.status == "completed"
    initial = load_reward_model(other, 0, seed=0).state_dict()
    trained = load_file(result.final_checkpoint / "reward_model" / "model.safetensors")
    assert [k for k in initial if torch.equal(initial[k], trained[k])] == ["model.embed_tokens.weight"]


def test_resume_rejects_a_changed_schedule_or_a_non_rft_checkpoint(make_config, tmp_path):
    first = run(make_config(outer_iterations=1, batch_size=6), RecordingSink())
    with pytest.raises(
        ValueError, match=r"iteration_steps=\[2\], num_processes=1, got iteration_steps=\[1\]"
    ):
        run(
            make_config(
                output="other", resume_from=str(first.final_checkpoint), outer_iterations=1, batch_size=3
            ),
            RecordingSink(),
        )
    sft = TrainConfig.from_dict(
        {
            **make_config(output="sft").to_dict(),
            "method": "sft",
            "hyperparameters": {"n_epochs": 1, "batch_size": 6},
        }
    )
    sft_ckpt = run(sft, RecordingSink()).final_checkpoint
    with pytest.raises(ValueError, match="complete checkpoint directory of a rft run"):
        run(make_config(output="other", resume_from=str(sft_ckpt)), RecordingSink())


def test_bf16_autocast_runs_on_cpu(make_config):
    config = make_config(outer_iterations=1, batch_size=6)
    config.mixed_precision = "bf16"
    sink = RecordingSink()
    assert run(config, sink).status == "completed"
    assert all(abs(v) < 1e6 for v in sink.series("train/loss") + sink.series("reward_model/loss"))


def test_reward_shaping_metrics_and_the_adaptive_kl(make_config):
    """Whitened advantages have unit spread, the KL coefficient follows its target, the reward model's
    accuracy on fresh pairs is logged every iteration, and the ptx term adds the demonstrations' NLL."""
    sink = RecordingSink()
    result = run(make_config(kl_target=0.001, kl_horizon=1, beta=0.1, nll_weight=0.5), sink)
    assert result.status == "completed"
    # horizon 1: each step multiplies the coefficient by 1 + clip(KL / target - 1, -0.2, 0.2)
    coefs = sink.series("train/kl_coef")
    assert coefs[0] == pytest.approx(0.1)
    kls = sink.series("train/kl")
    for before, after, kl in zip(coefs, coefs[1:], kls, strict=False):
        assert after == pytest.approx(before * (1 + min(max(kl / 0.001 - 1, -0.2), 0.2)))
    assert len(set(coefs)) == 4  # it moved every step (a fixed beta would not)
    assert all(0.0 <= a <= 1.0 for a in sink.series("reward_model/policy_accuracy"))
    assert all(nll > 0 for nll in sink.series("train/nll"))
    assert all(u == 1.0 for u in sink.series("train/unfinished"))  # 6 tokens: the tiny model never stops


def test_a_missing_eos_penalty_that_every_sample_gets_changes_no_step(make_config):
    """The tiny model never stops within 6 tokens, so every sample is penalised: the penalty shifts all of
    a prompt's rewards equally, RLOO's baseline cancels it, and the run takes the same steps as without
    it. (Which samples are penalised, only the unfinished, is tests/trainer/test_rft_losses.py's.)"""
    plain, penalised = RecordingSink(), RecordingSink()
    run(make_config(missing_eos_penalty=0.0), plain)
    run(make_config(output="pen", missing_eos_penalty=5.0), penalised)
    assert penalised.series("train/unfinished") == [1.0] * 4
    assert penalised.series("train/loss") == pytest.approx(plain.series("train/loss"), abs=1e-5)


def test_a_step_does_not_depend_on_how_it_is_split_into_micro_batches(make_config):
    """Reward normalisation and whitening use the whole step's scores and advantages: two prompts in one
    micro-batch, or one in each of two accumulated micro-batches, take the same step. (Per micro-batch,
    one prompt's two advantages would always be whitened to +-1, whatever their gap.)"""
    whole, split = RecordingSink(), RecordingSink()
    # The reward step's batches are batch_size pairs, so its training would differ between the two: a
    # negligible reward learning rate keeps the reward model the same in both.
    run(make_config(batch_size=2, gradient_accumulation_steps=1, reward_learning_rate=1e-12), whole)
    run(
        make_config(output="split", batch_size=1, gradient_accumulation_steps=2, reward_learning_rate=1e-12),
        split,
    )
    for name in ("train/loss", "advantages/std", "train/kl", "train/grad_norm"):
        assert split.series(name) == pytest.approx(whole.series(name), rel=1e-4, abs=1e-6), name


def test_the_reward_model_is_measured_on_held_out_prompts(make_config, tmp_path, rows, write_jsonl):
    """Every 10th prompt of an iteration keeps its pairs out of the reward step; the trained reward model's
    accuracy on them is reward_model/heldout_accuracy (a slice of fewer than 10 prompts has none)."""
    many = [
        {
            "messages": [
                m if m["role"] != "user" else {**m, "content": f"{m['content']} ({n})"} for m in r["messages"]
            ]
        }
        if "messages" in r
        else {**r, "prompt": f"{r['prompt']} ({n})"}
        for n in range(4)
        for r in rows
    ]  # 24 prompts, one outer iteration
    train = write_jsonl(tmp_path / "many.jsonl", many)
    config = make_config(outer_iterations=1, batch_size=8, reward_epochs=1)
    config = config.model_copy(update={"training_file": str(train)})
    sink = RecordingSink()
    assert run(config, sink).status == "completed"
    [accuracy] = sink.series("reward_model/heldout_accuracy")
    assert accuracy in {0.0, 0.25, 0.5, 0.75, 1.0}  # 2 held-out prompts x 2 samples
    [trained_on] = sink.series("reward_model/accuracy")
    assert 0.0 <= trained_on <= 1.0


def test_samples_identical_to_their_demonstration_leave_the_reward_step_and_ties_count_half():
    """A pair (demonstration, the same text) has no contrast: it is not trained on, and a tie in an
    accuracy is a coin flip (1/2), not an error (from an SFT model most samples are their demonstration,
    and counting ties as errors read as a reward model worse than chance)."""
    from trainer.losses import pair_wins

    chosen, rejected = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([1.0, 1.0, 3.0])
    assert pair_wins(chosen, rejected).tolist() == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("divergence", ["bt", "js", "reverse_kl"])
def test_each_divergence_runs_with_finite_metrics_that_say_which_it_was(make_config, divergence):
    """docs/methods.md §3.8: a discriminator (js, reverse_kl) logs its accuracy on the demonstrations and
    on the samples separately; Bradley-Terry does not. The start event names the divergence."""
    import math

    sink = RecordingSink()
    result = run(make_config(divergence=divergence, outer_iterations=1, batch_size=6), sink)
    assert result.status == "completed" and result.global_step == 1
    assert all(math.isfinite(v) for _, row in sink.metrics for v in row.values())
    names = set().union(*(v.keys() for _, v in sink.metrics))
    assert names >= RFT_METRICS
    discriminator = {"reward_model/demo_accuracy", "reward_model/sample_accuracy"}
    if divergence == "bt":
        assert not discriminator & names
    else:
        assert discriminator <= names
        assert all(0.0 <= a <= 1.0 for name in discriminator for a in sink.series(name))
        # the discriminator's loss starts near log 4 (D = 1/2 everywhere), Bradley-Terry's near log 2
        assert 0.0 < sink.series("reward_model/loss")[0] < 2 * math.log(4)
    if divergence == "js":  # the reward -log(1 - D) is positive
        assert sink.series("rewards/generations")[0] > 0 and sink.series("rewards/demonstrations")[0] > 0
    [start] = [d for _, m, d in sink.events if m.startswith("RFT for")]
    assert start["divergence"] == divergence
