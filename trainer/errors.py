"""Errors that say which input was at fault, so a service can report them as the user's, not its own.

`param` names the input: "model", "training_file", "validation_file" or "hyperparameters" (job fields).
"""

from __future__ import annotations


class InputError(Exception):
    """An input the run was given cannot be used; the message says why."""

    code = "invalid_input"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ModelLoadError(InputError):
    code = "model_not_found"


class DataError(InputError):
    code = "invalid_file_format"


class PolicyDidNotMoveError(InputError):
    """Every optimiser step of the run had a zero gradient (norm at most 1e-6, i.e. float noise):
    nothing was trained, so the run must not end as a success (the settings, not the service, are at fault: e.g. RFT sampling greedily)."""

    code = "policy_did_not_move"


class TrainingDivergedError(InputError):
    """A step's gradient norm was NaN or infinite: the step is not taken (it would overwrite every weight
    with NaN), and the run fails, since the settings (a learning rate far too high, a reward of inf) and
    not the service are at fault."""

    code = "training_diverged"


class GraderFailedError(InputError):
    """The grader could not score more than max_grader_error_share of a step's samples (a python grader
    that raises, a template naming a key the items lack): the rewards would be mostly the 0 a failed
    sample gets, so the run fails with the grader's first error instead of training on them."""

    code = "grader_failed"
