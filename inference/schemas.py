"""OpenAI's chat completions shapes (`POST /v1/chat/completions`), request and response.

One definition for both sides: the API validates a request with `ChatCompletionRequest` before it
forwards it, and the inference server (inference/server.py) parses the same model and answers with
the response models below.

What Juice's engine cannot honour is refused with a 400 naming the field, never silently ignored:
tools, JSON modes, log-probabilities, penalties, logit bias, audio and images. Fields that change
nothing about the reply (user, metadata, store, service_tier, ...) are accepted and ignored, as an
OpenAI user's code sends them routinely. Any field not listed here is refused (`extra="forbid"`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic.config import JsonDict

# Accepted so that unmodified OpenAI code runs; they do not change the reply.
IGNORED_FIELDS = (
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
)
MAX_CHOICES = 8
# Not supported: each is refused unless it is given one of the values that mean "off".
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
    "verbosity": (None,),
}


def _off(name: str, default: Any = None) -> Any:
    """A field Juice does not support: the document lists the values that mean "off" as its only ones
    (null included: OpenAI reads null as the default)."""
    values = list(UNSUPPORTED[name])
    return Field(default, json_schema_extra={"enum": values if None in values else [None, *values]})


# A signed 64-bit integer, documented by its format: FastAPI writes a schema's bounds as floats, and
# the float nearest 2**63 - 1 is 2**63 itself, so `maximum` cannot say where the range ends (a client
# generating up to it crosses it). `format: int64` says exactly [-2**63, 2**63 - 1], the bounds validated.
Seed = Annotated[int, Field(ge=-(2**63), lt=2**63), WithJsonSchema({"type": "integer", "format": "int64"})]

# `stop` as ChatCompletionRequest._stop validates it (whose message clients read): one sequence or a
# list of up to 4, each 1 to 256 characters.
_STOP_SEQUENCE: JsonDict = {"type": "string", "minLength": 1, "maxLength": 256}
_STOP_SCHEMA: JsonDict = {
    "anyOf": [_STOP_SEQUENCE, {"type": "array", "items": _STOP_SEQUENCE, "maxItems": 4}, {"type": "null"}]
}

# null means the default for these (ChatCompletionRequest._null_is_default)
_NULLABLE_NUMBER: JsonDict = {"type": ["number", "null"]}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # "developer" is OpenAI's newer name for "system"; tool turns need tool calls, which are refused.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = Field(
        None, description="The message text, or a list of text parts (images and audio are not supported)."
    )
    name: str | None = None
    refusal: str | None = None

    def plain(self) -> dict[str, str]:
        """{"role", "content"} as a chat template takes it: text parts joined, developer -> system."""
        parts = self.content or ""  # an assistant turn may carry no content (OpenAI allows null)
        text = parts if isinstance(parts, str) else "".join(p.text for p in parts)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None  # ignored: no obfuscation padding is sent


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=512)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float = Field(1.0, ge=0, le=2, json_schema_extra=_NULLABLE_NUMBER)
    top_p: float = Field(1.0, gt=0, le=1, json_schema_extra=_NULLABLE_NUMBER)
    n: int = Field(1, ge=1, le=MAX_CHOICES, json_schema_extra={"type": ["integer", "null"]})
    stop: str | list[str] | None = Field(None, json_schema_extra=_STOP_SCHEMA)
    seed: Seed | None = None
    stream: bool = Field(False, json_schema_extra={"type": ["boolean", "null"]})
    stream_options: StreamOptions | None = None
    # Unsupported (UNSUPPORTED): refused unless left at a value that means "off".
    presence_penalty: float | None = _off("presence_penalty", 0.0)
    frequency_penalty: float | None = _off("frequency_penalty", 0.0)
    logprobs: bool | None = _off("logprobs")
    top_logprobs: int | None = _off("top_logprobs")
    logit_bias: dict[str, float] | None = _off("logit_bias")
    response_format: dict[str, Any] | None = _off("response_format")
    tools: list[Any] | None = _off("tools")
    tool_choice: Any = _off("tool_choice")
    functions: list[Any] | None = _off("functions")
    function_call: Any = _off("function_call")
    modalities: list[str] | None = _off("modalities")
    audio: Any = _off("audio")
    prediction: Any = _off("prediction")
    reasoning_effort: str | None = _off("reasoning_effort")
    web_search_options: Any = _off("web_search_options")
    verbosity: str | None = _off("verbosity")
    # Accepted and ignored (IGNORED_FIELDS)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    @field_validator(
        "temperature", "top_p", "n", "stream", "presence_penalty", "frequency_penalty", mode="before"
    )
    @classmethod
    def _null_is_default(cls, v: Any, info: ValidationInfo) -> Any:
        """OpenAI takes null for these as "the default" (the SDK sends it for `temperature=None`)."""
        return cls.model_fields[str(info.field_name)].default if v is None else v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("up to 4 stop sequences, each 1 to 256 characters")
        return v

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _refuse_unsupported(cls, v: Any, info: ValidationInfo) -> Any:
        if v not in UNSUPPORTED[str(info.field_name)]:
            raise ValueError("not supported by Juice's chat completions (text replies only); leave it unset")
        return v

    @property
    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def token_budget(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
