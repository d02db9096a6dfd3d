"""The 400s a schema-valid request may still get, by operation: schemathesis hooks for the run in
test_openapi_contract.py (its CLI imports this module, named by SCHEMATHESIS_HOOKS).

positive_data_acceptance holds that a request the document allows is not refused. On three operations a
few rules depend on what no JSON schema of the request can see: another resource (the training file's
format and purpose), the operator's settings (installed models, token and process caps), the model (its
context and chat template), or a file part's bytes. Each is listed here as a refusal: the error's
`param` and `code` (and its message, where the code is the generic `invalid_value`), and why. There
the run's built-in check takes any 400, and the check below takes exactly these.

A 400 matches a refusal by its error body, so a rule the schema could state but does not (a bound left
out) still fails the run, even on these operations, unless it is listed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

from api.validation.codes import ERROR_CODES


@dataclass(frozen=True)
class Refusal:
    param: str  # a regular expression the error's whole `param` matches
    codes: frozenset[str]
    why: str
    message: str = ""  # a regular expression its message contains, where the code is a generic one


# positive_data_acceptance's default expectation besides 2xx, 3xx and 5xx (a made-up id, a conflict, a
# limit): none of them says the request was malformed.
EXPECTED_4XX = frozenset({401, 403, 404, 409, 429})
INVALID = frozenset({"invalid_value"})
MODEL_CODES = frozenset({"model_not_found", "model_not_allowed"})
# what the server offers: a judge model for score_model/label_model, embeddings for cosine, the sandbox
UNSUPPORTED_GRADER = "judge and embedding models, and the python sandbox, are the server's to offer"

# A grader's rules that a JSON schema cannot state: they relate its fields to each other (graders/schemas.py)
GRADER_REFUSALS = (
    Refusal("grader", frozenset({"unsupported_grader"}), UNSUPPORTED_GRADER),
    Refusal(
        r"grader(\.graders\.\w+)?(\.\w+)?",
        INVALID,
        "a formula over the multi grader's own keys",
        message="calculate_output: ",
    ),
    Refusal(
        r"grader(\.graders\.\w+)?(\.\w+)?",
        INVALID,
        "templates read sample.* or item.*",
        message="must start with sample. or item.",
    ),
    Refusal(
        r"grader(\.graders\.\w+)?(\.\w+)?",
        INVALID,
        "passing_labels among labels",
        message="passing_labels: ",
    ),
    Refusal(r"grader(\.graders\.\w+)?(\.\w+)?", INVALID, "a range from low to high", message="low < high"),
    Refusal(
        r"grader(\.graders\.\w+)?(\.\w+)?",
        INVALID,
        "a source of at most 256 kB (bytes, not characters)",
        message="source: expected at most",
    ),
)

REFUSALS: dict[str, tuple[Refusal, ...]] = {
    "POST /v1/files": (
        Refusal("file", ERROR_CODES, "the bytes must be training JSONL, every line checked (api/validation)"),
    ),
    "POST /v1/fine_tuning/jobs": (
        Refusal("training_file", frozenset({"invalid_training_file"}), "its format must suit the method"),
        Refusal(
            "validation_file",
            frozenset({"invalid_validation_file"}),
            "a reinforcement job's holds prompts too",
        ),
        Refusal(r"method\.\w+\.grader", frozenset({"unsupported_grader"}), UNSUPPORTED_GRADER),
        Refusal(
            r"method\.\w+\.grader",
            INVALID,
            "another method's grader scores the validation file's prompts: it needs one",
            message="this job has no validation_file",
        ),
        # the grader's own cross-field rules, under the method block
        *(
            Refusal(rf"method\.\w+\.{r.param}", r.codes, r.why, r.message)
            for r in GRADER_REFUSALS
            if r.codes == INVALID
        ),
        Refusal(
            r"method\.reinforcement\.hyperparameters\.reasoning_effort",
            INVALID,
            "the model has a reasoning mode to set (none Juice trains has)",
            message="has no reasoning mode",
        ),
        Refusal(
            "method",
            INVALID,
            "a reinforcement method gives its block, with the grader",
            message=r"^method: Value error, method\.reinforcement is required",
        ),
        Refusal("(training|validation)_file", frozenset({"invalid_file_purpose"}), "an upload, not a result"),
        Refusal(
            r"model|method\.rft\.hyperparameters\.reward_model",
            MODEL_CODES,
            "a model the operator installed or allows (JUICE_MODEL_ROOTS, JUICE_ALLOW_HUB_MODELS)",
        ),
        Refusal(
            r"resources\.processes",
            INVALID,
            "the operator's cap, JUICE_MAX_PROCESSES_PER_JOB",
            message=r"^resources\.processes: expected at most \d+ \(",
        ),
        # Not yet in the document: rules a schema can state, of models that are not this test's to
        # change (MethodIn, the hyperparameter models). Each goes from this list
        # once its model documents it, as IntegrationIn's discriminated union did.
        Refusal(
            "method",
            INVALID,
            "the one block given is the one method.type names",
            message=r"^method: Value error, (method\.\w+ given, but method\.type is|give the hyperparameters"
            r" block once)",
        ),
        Refusal(
            r"method\.\w+\.hyperparameters",
            INVALID,
            "learning_rate or its multiplier, not both",
            message="give learning_rate or learning_rate_multiplier, not both",
        ),
        Refusal(
            "hyperparameters",
            INVALID,
            "the deprecated top-level block, or method, not both",
            message=r"^Give hyperparameters inside method, not also at the top level\.$",
        ),
        Refusal(
            r"hyperparameters\.(n_epochs|batch_size|learning_rate_multiplier)",
            INVALID,
            "the deprecated top-level block's values, bounded as the SFT block's are",
            message=r"^hyperparameters\.\w+: expected 'auto' or ",
        ),
        Refusal(
            r"method\.rft\.hyperparameters\.reward_model",
            INVALID,
            "a model name (not empty) or null",
            message=r": Value error, a model name, or null$",
        ),
        Refusal(
            r"(method\.\w+\.)?hyperparameters\.select_checkpoint",
            INVALID,
            "best_eval_loss needs a validation_file (api/services/jobs.py)",
            message=r"'best_eval_loss' chooses the checkpoint",
        ),
    ),
    "POST /v1/fine_tuning/alpha/graders/run": GRADER_REFUSALS,
    "POST /v1/fine_tuning/alpha/graders/validate": GRADER_REFUSALS,
    "POST /v1/chat/completions": (
        Refusal(
            "max_tokens|max_completion_tokens",
            INVALID,
            "the operator's cap, JUICE_INFERENCE_MAX_TOKENS",
            message=r": \d+ is more than this server allows \(\d+\)\.$",
        ),
        Refusal("messages", frozenset({"context_length_exceeded"}), "the model's context"),
        Refusal("messages", frozenset({"invalid_messages"}), "the model's chat template"),
    ),
}


def documented(operation: str, error: dict[str, object]) -> Refusal | None:
    """The refusal of `operation` that an error body names, if any."""
    param, code, message = error.get("param"), error.get("code"), error.get("message")
    if not isinstance(param, str) or not isinstance(message, str):
        return None
    for refusal in REFUSALS.get(operation, ()):
        if (
            re.fullmatch(refusal.param, param)
            and code in refusal.codes
            and re.search(refusal.message, message)
        ):
            return refusal
    return None


@schemathesis.check
def positive_data_acceptance_but_documented(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """positive_data_acceptance (a schema-valid request gets none of its unexpected statuses) on the
    operations of REFUSALS, where the built-in check takes any 400: a 400 passes only as a refusal of
    the operation's list."""
    operation = f"{case.method.upper()} {case.path}"
    meta = case.meta
    if operation not in REFUSALS or meta is None or not meta.generation.mode.is_positive:
        return None
    if is_unexpected_http_status_case(case):  # a probe of the request's shape, as the built-in check skips
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in EXPECTED_4XX:
        return None
    if status == 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = None
        if isinstance(error, dict) and documented(operation, error):
            return None
    raise AssertionError(
        f"Valid data should have been accepted, or refused for one of {operation}'s documented reasons"
        f" (tests/api/documented_refusals.py); got {status}: {response.text[:500]}"
    )
