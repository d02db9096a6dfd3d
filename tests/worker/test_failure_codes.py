"""The error code a failed job gets (worker.runner.classify_failure): out-of-memory however the
allocator words it, user faults with their field, anything else internal_error."""

from __future__ import annotations

import pytest
import torch

from trainer.errors import PolicyDidNotMoveError
from worker.runner import classify_failure


@pytest.mark.parametrize(
    "exc",
    [
        MemoryError(),  # Python's own: no message at all
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 107374182400 bytes. Error code 12 (Cannot allocate memory)"
        ),
        RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)"),
    ],
)
def test_out_of_memory_in_any_wording_is_oom(exc: BaseException) -> None:
    assert classify_failure(exc) == ("oom", None)


def test_a_real_cpu_allocation_failure_is_oom() -> None:
    """What torch really raises on this machine for an allocation no host can satisfy (1 PiB)."""
    with pytest.raises(BaseException) as caught:  # RuntimeError on Linux's allocator
        torch.empty(2**50, dtype=torch.uint8)
    assert classify_failure(caught.value) == ("oom", None)


def test_user_faults_keep_their_code_and_field_and_the_rest_is_internal() -> None:
    exc = PolicyDidNotMoveError("hyperparameters", "hyperparameters: the policy did not move")
    assert classify_failure(exc) == ("policy_did_not_move", "hyperparameters")
    assert classify_failure(ValueError("boom")) == ("internal_error", None)


def test_an_out_of_memory_message_says_what_to_lower_and_keeps_the_cause() -> None:
    from worker.runner import out_of_memory_advice

    cause = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 134217728 bytes")
    err = out_of_memory_advice(cause)
    assert "ran out of memory (DefaultCPUAllocator" in str(err) and "batch_size" in str(err)
    assert err.__cause__ is cause
    assert "MemoryError" in str(out_of_memory_advice(MemoryError()))  # Python's own has no message
