"""Using the tuned model: the official `openai` SDK's chat completions against Juice (API process ->
`juice inference` process), for the base model, the fine-tuned model and one of its checkpoints.

The replies are checked against the weights themselves: the same greedy decoding run in this process
on the base model folder and on the stored checkpoint must give the served text exactly."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import openai
import pytest

from inference.decoding import ChatModel, Sampling
from tests.conftest import Deployment, JuiceProcess
from tests.helpers import chat_jsonl, sdk_wait_finished

pytestmark = pytest.mark.integration

ASK = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name a colour."},
]


@pytest.fixture(scope="module")
def tuned(prod: Deployment, prod_inference: JuiceProcess) -> tuple[openai.OpenAI, object]:
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("chat-user"), max_retries=0)
    train = client.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl(12))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=train.id,
        suffix="chat",
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 200}
            },
        },
    )
    job = sdk_wait_finished(client, job.id)
    assert job.status == "succeeded", job.error
    return client, job


def _greedy(folder: Path | str, max_tokens: int = 12) -> str:
    model = ChatModel(folder, device="cpu")
    pieces = model.complete(model.prompt_ids(ASK), Sampling(max_tokens=max_tokens, temperature=0.0))
    return "".join(p.text for p in pieces)


def _stored_model(prod: Deployment, job_id: str, step: int | None = None) -> Path:
    """The model/ folder of the job's checkpoint at `step` (its newest if None), read from the store."""
    folders = Path(prod.env["JUICE_STORAGE_URL"].removeprefix("file://")) / "jobs" / job_id / "checkpoints"
    steps = sorted(folders.glob("step_*/manifest.json"))
    chosen = steps[-1].parent if step is None else folders / f"step_{step:08d}"
    return chosen / "model"


def test_base_and_fine_tuned_models_answer_with_their_own_weights(
    prod: Deployment, tuned: tuple[openai.OpenAI, object], tiny_model_dir: Path
) -> None:
    client, job = tuned
    served = {m.id for m in client.models.list()}
    assert {"tiny-llama", job.fine_tuned_model} <= served  # GET /v1/models lists what chat can serve

    base = client.chat.completions.create(model="tiny-llama", messages=ASK, max_tokens=12, temperature=0)
    tuned_reply = client.chat.completions.create(
        model=job.fine_tuned_model, messages=ASK, max_completion_tokens=12, temperature=0
    )
    assert base.object == "chat.completion" and base.id.startswith("chatcmpl-")
    assert tuned_reply.model == job.fine_tuned_model
    assert base.choices[0].message.role == "assistant"
    assert base.choices[0].message.content == _greedy(tiny_model_dir / "tiny-llama")
    assert tuned_reply.choices[0].message.content == _greedy(_stored_model(prod, job.id))
    assert tuned_reply.choices[0].message.content != base.choices[0].message.content  # training moved it
    assert tuned_reply.choices[0].finish_reason in ("stop", "length")
    usage = tuned_reply.usage
    assert (
        usage
        and usage.prompt_tokens > 0
        and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    )


def test_streaming_sends_the_same_reply_in_chunks(tuned: tuple[openai.OpenAI, object]) -> None:
    client, job = tuned
    whole = client.chat.completions.create(
        model=job.fine_tuned_model, messages=ASK, max_tokens=12, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=ASK,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_checkpoint_is_a_model_and_sampling_is_seeded(
    prod: Deployment, tuned: tuple[openai.OpenAI, object]
) -> None:
    client, job = tuned
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    first = min(checkpoints, key=lambda c: c.step_number)
    reply = client.chat.completions.create(
        model=first.fine_tuned_model_checkpoint, messages=ASK, max_tokens=12, temperature=0
    )
    assert reply.choices[0].message.content == _greedy(_stored_model(prod, job.id, first.step_number))
    sampled = [
        client.chat.completions.create(
            model=job.fine_tuned_model, messages=ASK, max_tokens=12, temperature=1.2, seed=5, n=2
        )
        for _ in range(2)
    ]
    assert [c.message.content for c in sampled[0].choices] == [c.message.content for c in sampled[1].choices]
    assert len(sampled[0].choices) == 2 and [c.index for c in sampled[0].choices] == [0, 1]
    single = client.chat.completions.create(
        model=job.fine_tuned_model, messages=ASK, max_tokens=12, temperature=None
    )
    assert sampled[0].usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once for n=2


def test_other_tenants_models_and_unsupported_fields_are_refused(
    prod: Deployment, tuned: tuple[openai.OpenAI, object]
) -> None:
    _, job = tuned
    rival = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("chat-rival"), max_retries=0)
    for name in (job.fine_tuned_model, f"{job.fine_tuned_model}:ckpt-step-1", "no-such-model"):
        with pytest.raises(openai.NotFoundError) as missing:
            rival.chat.completions.create(model=name, messages=ASK)
        assert missing.value.code == "model_not_found" and missing.value.param == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        rival.chat.completions.create(
            model="tiny-llama", messages=ASK, tools=[{"type": "function", "function": {"name": "f"}}]
        )
    assert bad.value.param == "tools" and "not supported" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        rival.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "x"}], temperature=3
        )
    assert bad.value.param == "temperature"


def test_without_an_inference_server_the_api_says_503(prod: Deployment, prod_inference: JuiceProcess) -> None:
    key = prod.new_key("chat-later")
    prod_inference.stop()
    try:
        r = httpx.post(
            f"{prod.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "tiny-llama", "messages": ASK},
            timeout=30,
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "inference_unavailable"
        assert r.headers["Retry-After"] == "5"
    finally:
        restarted = prod.start_inference()
        prod_inference.proc, prod_inference._log = restarted.proc, restarted._log


def test_a_deleted_fine_tuned_model_is_no_model_any_more(
    prod: Deployment, tuned: tuple[openai.OpenAI, object], prod_inference: JuiceProcess
) -> None:
    """OpenAI's models.delete (last in this module: it retires the module's model)."""
    client, job = tuned
    rival = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=prod.new_key("chat-rival-2"), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        rival.models.delete(job.fine_tuned_model)  # not theirs: it does not exist for them
    with pytest.raises(openai.PermissionDeniedError) as base:
        client.models.delete("tiny-llama")
    assert base.value.code == "model_not_deletable"

    deleted = client.models.delete(job.fine_tuned_model)
    assert deleted.deleted is True and deleted.id == job.fine_tuned_model
    assert job.fine_tuned_model not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=ASK)
    last = max(client.fine_tuning.jobs.checkpoints.list(job.id).data, key=lambda c: c.step_number)
    with pytest.raises(openai.NotFoundError):  # its checkpoints are retired with it
        client.chat.completions.create(model=last.fine_tuned_model_checkpoint, messages=ASK)
    with pytest.raises(openai.BadRequestError) as again:
        client.fine_tuning.jobs.create(model=job.fine_tuned_model, training_file=job.training_file)
    assert again.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.delete(job.fine_tuned_model)  # once
    # the job keeps its record and checkpoints
    assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == job.fine_tuned_model
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data
