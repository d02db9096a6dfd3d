"""IRFT on the tiny model, CPU: T=1 (SPIN) and T=3, metrics, eval, stop, LoRA, cache = live ref, resume."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.recording import Crash, RecordingSink
from trainer import NullSink, TrainConfig, loop, run
from trainer.config import IRFTHyperparameters
from trainer.demonstrations import load_demonstrations
from trainer.generation import generate_responses
from trainer.losses import irft_loss
from trainer.methods import irft
from trainer.modeling import load_model_and_tokenizer
from trainer.pair_training import SATURATED_LOSS, SaturationCheck, score_reference
from trainer.pairs import PairCollator
from trainer.spec import plan

IRFT_METRICS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_s",
    "train/epoch",
    "train/tokens",
    "train/pair_loss",
    "train/nll",
    "rewards/real",
    "rewards/generated",
    "rewards/margin",
    "rewards/accuracy",
    "logps/real",
    "logps/generated",
    "train/generation_length",
    "train/kl",
    "train/outer_iteration",
    "pairs/valid",
}


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, rows, write_jsonl):
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)

    def make(output="out", validation_file=None, resume_from=None, **hp) -> TrainConfig:
        # The paper's plain IRFT unless a test asks otherwise (greedy negatives, every one trained on,
        # no anchor): the tiny model's 6-token continuations never stop, and these tests pin the loop.
        generation = {"max_new_tokens": 6, "batch_size": 4, "temperature": 0.0, **hp.pop("generation", {})}
        hp = {"nll_weight": 0.0, "truncated_negatives": "keep", **hp}
        return TrainConfig.from_dict(
            {
                "model": str(tiny_model_dir),
                "training_file": str(train_file),
                "output_dir": str(tmp_path / output),
                "validation_file": validation_file,
                "resume_from": resume_from,
                "device": "cpu",
                "seed": 0,
                "method": "irft",
                "hyperparameters": {
                    "learning_rate": 1e-2,
                    "batch_size": 2,
                    "n_epochs": 1,
                    "generation": generation,
                    **hp,
                },
            }
        )

    return make


def _final_weights(result):
    return load_file(result.final_checkpoint / "model" / "model.safetensors")


def test_spin_t1_runs_changes_every_parameter_and_logs_all_metrics(
    make_config, tiny_model_dir, tmp_path, write_jsonl
):
    validation = write_jsonl(
        tmp_path / "val.jsonl",
        [
            {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
            {
                "input": {"messages": [{"role": "user", "content": "Hello there!"}]},
                "preferred_output": [{"role": "assistant", "content": "How are you today?"}],
                "non_preferred_output": [{"role": "assistant", "content": "Paris."}],
            },
        ],
    )
    sink = RecordingSink()
    # the cadence and metrics of the run alone ("auto" would add the starting model's evaluation)
    result = run(make_config(validation_file=str(validation), n_epochs=2, select_checkpoint="last"), sink)
    assert result.status == "completed"
    assert result.global_step == 6  # K = ceil(6 / 2) * 2 epochs
    for _, values in sink.train:
        assert set(values) >= IRFT_METRICS
        assert 0.0 <= values["rewards/accuracy"] <= 1.0
        assert all(torch.isfinite(torch.tensor(v)) for v in values.values())
    assert sink.train[0][1]["train/outer_iteration"] == 1.0
    evals = [v for _, v in sink.metrics if "eval/logp_gap" in v]
    assert len(evals) == 1 and 0.0 <= evals[0]["eval/logp_gap_accuracy"] <= 1.0
    assert evals[0]["eval/logp_gap"] == pytest.approx(result.last_metrics["eval/logp_gap"])
    generated = [d for _, m, d in sink.events if m.startswith("Outer iteration 1/1: generated 6")]
    assert len(generated) == 1 and len(generated[0]["samples"]) == 3
    before = load_file(tiny_model_dir / "model.safetensors")
    after = _final_weights(result)
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_first_step_loss_is_log_2(make_config):
    sink = RecordingSink(stop_after_steps=1)
    run(make_config(), sink)
    assert sink.losses[0] == pytest.approx(0.6931472, abs=1e-5)  # policy = pi_ref, no dropout


def test_t3_stagewise_covers_each_example_once_and_k_arithmetic(make_config, rows, tmp_path, write_jsonl):
    hp = IRFTHyperparameters(outer_iterations=3, batch_size=1, gradient_accumulation_steps=2, n_epochs=2)
    slices = loop.iteration_slices("irft", hp, 7, seed=0)
    assert sorted(i for s in slices for i in s) == list(range(7))
    assert [len(s) for s in slices] == plan.iteration_sizes("irft", hp, 7) == [2, 2, 3]
    assert plan.iteration_steps("irft", hp, 7) == [
        -(-len(s) // 2) * 2 for s in slices
    ]  # ceil(|slice| / (1 * 2)) * 2 epochs
    full = IRFTHyperparameters(outer_iterations=3, schedule="full")
    assert loop.iteration_slices("irft", full, 7, 0) == [list(range(7))] * 3

    demo_val = write_jsonl(tmp_path / "demo_val.jsonl", rows[:2])
    sink = RecordingSink()
    config = make_config(
        outer_iterations=3, validation_file=str(demo_val), eval_interval=2, select_checkpoint="last"
    )
    result = run(config, sink)
    assert result.status == "completed" and result.global_step == 3  # 3 x ceil(2 / 2)
    assert [v["train/outer_iteration"] for _, v in sink.train] == [1.0, 2.0, 3.0]
    assert [s for s, v in sink.metrics if "eval/loss" in v] == [2, 3]  # every 2 steps and at the end
    assert len([m for _, m, _ in sink.events if m.startswith("Outer iteration")]) == 3
    # each iteration builds a fresh optimiser, so its end's checkpoint keeps none
    assert [s for s, _, _ in sink.checkpoints] == [1, 2, 3]
    assert not any((path / "state" / "optimizer.pt").exists() for _, path, _ in sink.checkpoints)


def test_should_stop_is_honoured(make_config):
    sink = RecordingSink(stop_after_steps=2)
    result = run(make_config(), sink)
    assert result.status == "stopped" and result.global_step == 2


def test_lora_run(make_config):
    sink = RecordingSink()
    result = run(
        make_config(lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}, outer_iterations=2), sink
    )
    assert result.status == "completed" and result.global_step == 4
    assert (result.final_checkpoint / "adapter" / "adapter_model.safetensors").is_file()
    assert sink.losses[0] == pytest.approx(0.6931472, abs=1e-5)


def test_cached_reference_equals_live_frozen_copy(tiny_model_dir, rows, make_config):
    config = make_config()
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    hp = config.hyperparameters
    examples = load_demonstrations(
        config.training_file, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len, NullSink()
    )
    collate = PairCollator(tokenizer.pad_token_id)
    indices = list(range(len(examples)))
    generated = generate_responses(model, tokenizer, [examples[i][0] for i in indices], hp.generation, seed=0)
    cache = score_reference(model, examples, indices, generated, hp, iteration=0)
    frozen = copy.deepcopy(model).eval()
    with torch.no_grad():  # move the policy away from pi_ref
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    triples = [(*examples[i], cache["generated"][i]) for i in indices]
    batch = collate(triples)
    from trainer.logprobs import per_token_logps, sequence_logps

    def logps(net):
        out = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sequence_logps(*per_token_logps(out, batch["labels"])).chunk(2)

    policy_real, policy_gen = logps(model)
    with torch.no_grad():
        live_real, live_gen = logps(frozen)
    cached, _ = irft_loss(policy_real, policy_gen, cache["ref_real"], cache["ref_gen"], 0.1)
    live, _ = irft_loss(policy_real, policy_gen, live_real, live_gen, 0.1)
    assert cached.item() == pytest.approx(live.item(), abs=1e-6)
    assert cached.item() != pytest.approx(0.6931472, abs=1e-4)


def test_resume_mid_iteration_matches_uninterrupted_run(make_config):
    settings = {
        "outer_iterations": 2,
        "n_epochs": 2,
        "checkpoint_interval": 2,
        "batch_size": 1,
        "gradient_accumulation_steps": 2,
    }  # K = ceil(3 / 2) * 2 = 4 per iteration, 8 in all
    full = RecordingSink()
    run(make_config(output="full", **settings), full)
    assert len(full.losses) == 8

    crashed = RecordingSink(crash_after_checkpoint=6)  # mid-iteration 2: the cache is in the checkpoint
    with pytest.raises(Crash):
        run(make_config(output="part", **settings), crashed)
    checkpoint = crashed.checkpoints[-1][1]
    assert (checkpoint / "state" / irft.CACHE_FILE).is_file()
    resumed = RecordingSink()
    result = run(make_config(output="part", resume_from=str(checkpoint), **settings), resumed)
    assert result.status == "completed" and result.global_step == 8
    assert not [m for _, m, _ in resumed.events if m.startswith("Outer iteration")]  # no regeneration
    combined = crashed.losses[:6] + resumed.losses
    assert combined == pytest.approx(full.losses, abs=1e-5)


def test_logp_gap_matches_separate_forwards(tiny_model_dir):
    from trainer.evaluation import logp_gap, preference_triples
    from trainer.logprobs import per_token_logps, sequence_logps
    from trainer.pairs import prompt_and_response

    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
        {"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "The quick brown fox."},
    ]
    got = logp_gap(model, tokenizer, preference_triples(tokenizer, rows, 64, 32), batch_size=2)

    def single(prompt, response):
        ids = torch.tensor([prompt + response])
        labels = torch.tensor([[-100] * len(prompt) + response])
        with torch.no_grad():
            return sequence_logps(*per_token_logps(model(input_ids=ids).logits, labels)).item()

    gaps = []
    for row in rows:
        prompt, chosen = prompt_and_response(tokenizer, row)
        _, rejected = prompt_and_response(tokenizer, {**row, "chosen": row["rejected"]})
        gaps.append(single(prompt, chosen) - single(prompt, rejected))
    assert got["eval/logp_gap"] == pytest.approx(sum(gaps) / 2, abs=1e-5)
    assert got["eval/logp_gap_accuracy"] == sum(g > 0 for g in gaps) / 2


def test_hold_mid_iteration_checkpoints_with_the_cache_and_resumes_without_regenerating(make_config):
    settings = {"outer_iterations": 2, "n_epochs": 2, "checkpoint_interval": 1000, "batch_size": 1}
    full = RecordingSink()
    run(make_config(output="full", **settings), full)
    held = RecordingSink(hold_after_steps=len(full.losses) // 2 + 1)  # one step into iteration 2
    result = run(make_config(output="part", **settings), held)
    assert result.status == "held" and result.global_step == len(held.losses)
    assert [s for s, _, _ in held.checkpoints] == [result.global_step]
    assert (result.final_checkpoint / "state" / irft.CACHE_FILE).is_file()
    resumed = RecordingSink()
    done = run(make_config(output="part", resume_from=str(result.final_checkpoint), **settings), resumed)
    assert done.status == "completed"
    assert not [m for _, m, _ in resumed.events if m.startswith("Outer iteration")]  # no regeneration
    assert held.losses + resumed.losses == pytest.approx(full.losses, abs=1e-5)


def test_resume_at_iteration_boundary_regenerates_and_matches(make_config):
    settings = {"outer_iterations": 2, "n_epochs": 1, "batch_size": 1}  # K = 3 per iteration
    full = RecordingSink()
    run(make_config(output="full", **settings), full)
    crashed = RecordingSink(crash_after_checkpoint=3)  # end of iteration 1: no cache needed
    with pytest.raises(Crash):
        run(make_config(output="part", **settings), crashed)
    checkpoint = crashed.checkpoints[-1][1]
    assert not (checkpoint / "state" / irft.CACHE_FILE).exists()
    resumed = RecordingSink()
    run(make_config(output="part", resume_from=str(checkpoint), **settings), resumed)
    assert [m for _, m, _ in resumed.events if m.startswith("Outer iteration")] == [
        "Outer iteration 2/2: generated 3 continuations; 3 train as negatives, 0 left out (0 identical "
        "to their demonstration, 0 unfinished at max_new_tokens)"
    ]
    assert crashed.losses + resumed.losses == pytest.approx(full.losses, abs=1e-5)


def test_saturation_check_warns_only_when_the_trailing_half_is_saturated():
    check = SaturationCheck()
    for loss, acc, g in [(0.69, 0.0, 3.0), (0.3, 1.0, 1.0), (0.01, 1.0, 0.1), (0.005, 1.0, 0.05)]:
        check.add(loss, acc, g)
    message, data = check.end_period("The run", "real", "generated")
    assert data == {
        "saturated_from_step_in_period": 3,
        "saturated_steps": 2,
        "period_steps": 4,
        "grad_norm_first": 3.0,
        "grad_norm_last": 0.05,
    }
    assert "saturated from step 3 of 4" in message and "generated responses" in message
    # the next period starts afresh; a loss that saturates late, or one pair still mis-ordered, is fine
    for loss, acc in [(0.69, 0.0), (0.4, 0.5), (0.1, 1.0), (0.01, 1.0)]:
        check.add(loss, acc, 1.0)
    assert check.end_period("Outer iteration 2/3", "real", "generated") is None
    for loss, acc in [(0.69, 0.0), (0.01, 0.5), (0.01, 0.5), (0.01, 1.0)]:
        check.add(loss, acc, 1.0)
    assert check.end_period("Outer iteration 3/3", "real", "generated") is None


def test_a_run_whose_pair_loss_saturates_gets_a_warning_event(make_config):
    """beta 5 and a large learning rate separate the tiny model's generations from the demonstrations
    within a step or two; the run succeeds (it did train) but says that most of it was idle."""
    sink = RecordingSink()
    result = run(make_config(n_epochs=4, beta=5.0, learning_rate=5e-2), sink)
    assert result.status == "completed"
    losses = [v["train/loss"] for _, v in sink.train]
    warnings = [(m, d) for level, m, d in sink.events if level == "warning" and "saturated" in m]
    assert losses[-1] < SATURATED_LOSS, losses
    assert len(warnings) == 1, sink.events
    assert warnings[0][1]["saturated_steps"] * 2 >= warnings[0][1]["period_steps"]


def test_negatives_are_sampled_by_default():
    hp = IRFTHyperparameters()
    assert hp.generation.temperature == 1.0 and hp.generation.top_p == 1.0
    assert hp.generation.max_new_tokens == "auto" and hp.truncated_negatives == "drop"
    assert hp.nll_weight == 1.0 and hp.samples_per_prompt == 1


def test_screen_drops_identical_and_unfinished_negatives():
    eos = [2]
    demos = [[5, 6, 2], [7, 2]]
    negatives = [[5, 6, 2], [5, 9, 2], [5, 9, 9], [8, 2]]  # 2 per demonstration, prompt-major
    valid, fractions = irft.screen_negatives(demos, negatives, 2, eos, "drop")
    # identical to its demonstration (row 0), unfinished (row 2): both left out
    assert valid == [False, True, False, True]
    assert fractions == {
        "negatives/identical": 0.25,
        "negatives/truncated": 0.25,
        "negatives/dropped_identical": 0.25,
        "negatives/dropped_truncated": 0.25,
    }
    kept, fractions = irft.screen_negatives(demos, negatives, 2, eos, "keep")
    assert kept == [False, True, True, True]  # an identical negative is never trained on
    assert fractions["negatives/truncated"] == 0.25 and fractions["negatives/dropped_truncated"] == 0.0


def test_sampled_negatives_k_per_prompt_auto_length_and_the_anchor(make_config, rows, tiny_model_dir):
    """The defaults that issue 23 asked for, on the tiny model: k sampled negatives per prompt, a
    max_new_tokens derived from the demonstrations, every negative screened, and the window's loss the
    pair loss plus nll_weight times the demonstrations' token-mean NLL."""
    config = make_config(
        nll_weight=0.5,
        samples_per_prompt=2,
        truncated_negatives="keep",
        generation={"temperature": 1.0, "max_new_tokens": "auto"},
    )
    sink = RecordingSink()
    result = run(config, sink)
    assert result.status == "completed"
    _, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    demos = load_demonstrations(config.training_file, tokenizer, 1024, 256, NullSink())
    auto = 2 * max(len(r) for _, r in demos)
    [(_, data)] = [(m, d) for _, m, d in sink.events if m.startswith("generation.max_new_tokens auto")]
    assert data == {"max_new_tokens": auto}
    [event] = [d for _, m, d in sink.events if m.startswith("Outer iteration 1/1: generated")]
    assert event["negatives"] == 2 * len(rows)
    assert 0 < event["mean_generation_length"] <= auto
    screened = [v for s, v in sink.metrics if "negatives/truncated" in v]
    assert len(screened) == 1 and screened[0]["negatives/dropped_truncated"] == 0.0  # "keep"
    for _, values in sink.train:
        assert values["train/loss"] == pytest.approx(
            values["train/pair_loss"] + 0.5 * values["train/nll"], rel=1e-5
        )
        assert values["train/nll"] > 0 and 0.0 < values["pairs/valid"] <= 1.0
    # two samples of one prompt differ (sampling, not greedy copies)
    generation = IRFTHyperparameters(generation={"max_new_tokens": 6, "temperature": 1.0}).generation
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    a, b = generate_responses(model, tokenizer, [demos[0][0]], generation, num_return_sequences=2, seed=0)
    assert a != b


def test_truncated_negatives_dropped_leave_only_the_anchor_training(make_config):
    """The tiny model never stops within 3 tokens: with "drop" no pair trains, the pair term is 0 and the
    anchor alone moves the policy (and the run is not a silent no-op)."""
    sink = RecordingSink()
    result = run(
        make_config(nll_weight=1.0, truncated_negatives="drop", generation={"max_new_tokens": 3}), sink
    )
    assert result.status == "completed"
    [screened] = [v for _, v in sink.metrics if "negatives/truncated" in v]
    assert screened["negatives/truncated"] == 1.0 and screened["negatives/dropped_truncated"] == 1.0
    for _, values in sink.train:
        assert values["pairs/valid"] == 0.0
        assert "train/pair_loss" not in values and "rewards/accuracy" not in values  # no pair: no pair metric
        assert values["train/loss"] == pytest.approx(values["train/nll"]) and values["train/grad_norm"] > 0
    [event] = [m for _, m, _ in sink.events if m.startswith("Outer iteration 1/1: generated")]
    assert "0 train as negatives" in event and "unfinished at max_new_tokens" in event
    [warning] = [m for level, m, _ in sink.events if level == "warning" and "no pair trains" in m]
    assert "only the nll_weight anchor" in warning
