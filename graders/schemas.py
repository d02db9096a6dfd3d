"""The graders' request shapes, as OpenAI's API takes them (openai-python `types/graders/*`), with every
rule a grader must meet checked when it is given (its templates' paths, a multi grader's formula and
sub-grader names), so that a job or a `graders/validate` call refuses a broken grader before any sample
is scored. Pydantic only: the API validates requests with these same classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from graders import formula, templates

# JSON numbers only: pydantic would otherwise take true/false for 1/0
Number = Annotated[float, Field(strict=True)]
Integer = Annotated[int, Field(strict=True)]
MAX_SOURCE_BYTES = 256 * 1024  # OpenAI's cap on a python grader's source
SIMILARITY_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)


class _Grader(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        min_length=1, max_length=256, description="The grader's name, in metrics and sub_rewards."
    )


def _checked(template: str, param: str) -> str:
    try:
        templates.check(template, param)
    except ValueError as exc:  # GraderError: pydantic reports it as this field's error
        raise ValueError(str(exc)) from exc
    return template


class _Templated(_Grader):
    """A grader comparing a rendered `input` with a rendered `reference`."""

    input: str = Field(description="A template, e.g. {{sample.output_text}}.")
    reference: str = Field(description="A template, e.g. {{item.answer}}.")

    @model_validator(mode="after")
    def _templates(self) -> _Templated:
        _checked(self.input, "input")
        _checked(self.reference, "reference")
        return self


class StringCheckGrader(_Templated):
    """1.0 when the rendered input and reference compare as `operation` says, else 0.0."""

    type: Literal["string_check"]
    operation: Literal["eq", "ne", "like", "ilike"] = Field(
        description="eq / ne: equal / different; like: the reference occurs in the input; ilike: the same, ignoring case."
    )


class TextSimilarityGrader(_Templated):
    """How similar the rendered input is to the reference, by `evaluation_metric`, in [0, 1]."""

    type: Literal["text_similarity"]
    evaluation_metric: Literal[SIMILARITY_METRICS]  # type: ignore[valid-type]
    pass_threshold: Number | None = Field(None, ge=0.0, le=1.0, description="Optional: pass at or above it.")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    type: Literal["message"] | None = None


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: Number | None = Field(None, ge=0.0, le=2.0)
    top_p: Number | None = Field(None, gt=0.0, le=1.0)
    seed: Integer | None = Field(None, ge=0, le=2**31 - 1)  # as a job's seed
    max_completions_tokens: Integer | None = Field(None, ge=1, le=131072)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


class ScoreModelGrader(_Grader):
    """A judge model reads the rendered messages and answers a number in `range`."""

    type: Literal["score_model"]
    model: str = Field(min_length=1)
    input: list[Message] = Field(min_length=1)
    range: tuple[Number, Number] | None = None
    sampling_params: SamplingParams | None = None

    @model_validator(mode="after")
    def _range(self) -> ScoreModelGrader:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range: expected [low, high] with low < high, got {list(self.range)}")
        return self


class LabelModelGrader(_Grader):
    """A judge model picks one of `labels`; passing when it is one of `passing_labels`."""

    type: Literal["label_model"]
    model: str = Field(min_length=1)
    input: list[Message] = Field(min_length=1)
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _passing(self) -> LabelModelGrader:
        unknown = sorted(set(self.passing_labels) - set(self.labels))
        if unknown:
            raise ValueError(f"passing_labels: {unknown} are not among labels {self.labels}")
        return self


class PythonGrader(_Grader):
    """`def grade(sample, item) -> float` in `source`, run in the grader sandbox."""

    type: Literal["python"]
    source: str = Field(min_length=1)
    image_tag: str | None = None

    @model_validator(mode="after")
    def _size(self) -> PythonGrader:
        size = len(self.source.encode())
        if size > MAX_SOURCE_BYTES:
            raise ValueError(f"source: expected at most {MAX_SOURCE_BYTES} bytes, got {size}")
        return self


SubGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]


# a sub-grader's key is a name calculate_output can use
GraderKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class MultiGrader(_Grader):
    """Several graders of one sample, combined by `calculate_output` over their names."""

    type: Literal["multi"]
    # pydantic documents the key pattern as patternProperties, which lets other keys through: say not
    graders: dict[GraderKey, SubGrader] = Field(
        min_length=1, json_schema_extra={"additionalProperties": False}
    )
    calculate_output: str = Field(min_length=1)

    @model_validator(mode="after")
    def _formula(self) -> MultiGrader:
        bad = [key for key in self.graders if not key.isidentifier()]
        if bad:
            raise ValueError(
                f"graders: the keys {bad} cannot be named in calculate_output (letters, digits, _)"
            )
        formula.parse(self.calculate_output, set(self.graders))  # GraderError is a ValueError
        return self


Grader = Annotated[
    StringCheckGrader
    | TextSimilarityGrader
    | PythonGrader
    | ScoreModelGrader
    | LabelModelGrader
    | MultiGrader,
    Field(discriminator="type"),
]
