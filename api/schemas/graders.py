"""`/v1/fine_tuning/alpha/graders/run` and `/validate`, in OpenAI's shapes (openai-python
`types/fine_tuning/alpha/grader_run_params.py`, `grader_run_response.py`, `grader_validate_*`). The
graders themselves are graders/schemas.py's, so a grader the API accepts is one the trainer runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from graders.schemas import Grader


class GraderRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: Grader
    model_sample: str = Field(
        description="The model's output to grade (sample.output_text; output_json when it is JSON)."
    )
    item: dict[str, Any] | None = Field(
        None, description="The dataset item the grader's {{item.*}} templates read."
    )


class GraderValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: Grader


class GraderValidateResponse(BaseModel):
    grader: Grader


class GraderRunErrors(BaseModel):
    formula_parse_error: bool
    invalid_variable_error: bool
    model_grader_parse_error: bool
    model_grader_refusal_error: bool
    model_grader_server_error: bool
    model_grader_server_error_details: str | None = None
    other_error: bool
    python_grader_runtime_error: bool
    python_grader_runtime_error_details: str | None = None
    python_grader_server_error: bool
    python_grader_server_error_type: str | None = None
    sample_parse_error: bool
    truncated_observation_error: bool
    unresponsive_reward_error: bool


class GraderRunMetadata(BaseModel):
    errors: GraderRunErrors
    execution_time: float
    name: str
    sampled_model_name: str | None = None
    scores: dict[str, Any]
    token_usage: int | None = None
    type: str


class GraderRunResponse(BaseModel):
    metadata: GraderRunMetadata
    model_grader_token_usage_per_model: dict[str, Any]
    reward: float
    sub_rewards: dict[str, Any]
