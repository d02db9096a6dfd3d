"""Errors that say which input was at fault, so a service can report them as the user's, not its own.

`param` names the input: "model", "training_file" or "validation_file" (the names of the job fields).
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
