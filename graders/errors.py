"""What goes wrong in a grader, said to its user."""

from __future__ import annotations


class GraderError(ValueError):
    """A grader that cannot be built or cannot score a sample. `param` names the field at fault
    (`calculate_output`, `input`, ...), as the API's 400s do."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
