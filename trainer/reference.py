"""pi_ref, the starting model, for a KL penalty (RFT, reinforcement): how it is kept and how it scores.

With LoRA, pi_ref is the policy with its adapter disabled (`disable_adapter()`), exactly the initial
model, at no extra memory. Without LoRA a frozen copy of the initial weights stays resident on the
device: in bf16 when the run autocasts to bf16 (its matmuls see bf16 weights either way), 2 bytes a
parameter beside the policy's 16 (fp32 weights, gradients, two AdamW moments), about 12% more memory and
no transfer. (Until 2026-12 RFT kept it on the CPU and moved it to the GPU for every micro-batch: ~14 GB
each way per micro-batch for a 7B model.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from trainer.errors import ModelLoadError
from trainer.modeling import load_model_and_tokenizer


def load_reference(config: Any, accelerator: Any) -> Any | None:
    """The frozen starting model on the device, or None with LoRA (the adapter-disabled policy is it)."""
    if config.hyperparameters.lora.enabled:
        return None
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    try:
        reference, _ = load_model_and_tokenizer(config.model, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError("model", f"cannot load model {config.model!r}: {exc}") from exc
    return reference.requires_grad_(False).eval().to(accelerator.device)


@torch.no_grad()
def reference_logps(policy: Any, reference: Any | None, logps: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """`logps(net)` under pi_ref: the frozen copy, or `policy` (unwrapped) with its adapter disabled,
    in eval mode, its training mode restored after."""
    if reference is not None:
        return logps(reference)
    was_training = policy.training
    policy.eval()
    try:
        with policy.disable_adapter():
            return logps(policy)
    finally:
        policy.train(was_training)


@torch.no_grad()
def policy_logps(policy: Any, logps: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """`logps(net)` under the current policy (unwrapped), eval mode, no grad: a KL estimate's first term."""
    was_training = policy.training
    policy.eval()
    try:
        return logps(policy)
    finally:
        policy.train(was_training)
