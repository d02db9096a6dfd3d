"""The step arithmetic of every method, in one place: the trainers loop over exactly these numbers.
The worker shows `total_steps` of the uploaded row count as the job's progress total before training
starts; the trainer's own report of it, counted on the examples it kept, replaces that once the data
is loaded (rows left with no trained token are dropped by SFT's tokeniser).

An epoch is one pass over an outer iteration's examples; a micro-batch is `batch_size` examples per
process; `gradient_accumulation_steps` micro-batches make one optimiser step (a short last
micro-batch or window still counts). Per method:

- sft: one iteration over all n examples, n_epochs passes; dpo the same over n preference pairs.
- irft, schedule "stagewise": T = outer_iterations disjoint slices of a shuffled order, sizes
  differing by at most one (slice t holds positions [t*n//T, (t+1)*n//T)); n_epochs passes over each.
- irft, schedule "full": T iterations over all n examples (multi-iteration SPIN), n_epochs each.
- rft: stagewise slices as IRFT's; n_epochs passes of the policy step over each slice's prompts,
  every policy step sampling fresh continuations.
- reinforcement: one iteration over all n prompts, n_epochs passes, as SFT's over examples; every
  step samples fresh answers.

K_t, the optimiser steps of iteration t, is steps_per_epoch(|slice_t|) * n_epochs.
"""

from __future__ import annotations

import math
from typing import Any


def steps_per_epoch(
    n_examples: int, batch_size: int, gradient_accumulation_steps: int, num_processes: int = 1
) -> int:
    """Optimiser steps in one pass over n_examples. A short last micro-batch or window still counts."""
    micro_batches = math.ceil(n_examples / (batch_size * num_processes))
    return math.ceil(micro_batches / gradient_accumulation_steps)


def slice_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of `parts` contiguous slices of n positions, sizes differing by at most one."""
    return [(t * n // parts, (t + 1) * n // parts) for t in range(parts)]


def is_stagewise(method: str, hp: Any) -> bool:
    """Whether outer iterations train on disjoint slices of the data (IRFT "stagewise", RFT)."""
    return method == "rft" or (method == "irft" and hp.schedule == "stagewise")


def iteration_sizes(method: str, hp: Any, n_examples: int) -> list[int]:
    """Examples each outer iteration trains on (SFT is one iteration)."""
    if is_stagewise(method, hp):
        return [end - start for start, end in slice_bounds(n_examples, hp.outer_iterations)]
    return [n_examples] * getattr(hp, "outer_iterations", 1)  # SFT and DPO: one iteration


def iteration_steps(method: str, hp: Any, n_examples: int, num_processes: int = 1) -> list[int]:
    """K_t: optimiser steps of each outer iteration (0 for an empty slice)."""
    return [
        steps_per_epoch(n, hp.batch_size, hp.gradient_accumulation_steps, num_processes) * hp.n_epochs
        for n in iteration_sizes(method, hp, n_examples)
    ]


def total_steps(method: str, hp: Any, n_examples: int, num_processes: int = 1) -> int:
    """Optimiser steps of the whole run."""
    return sum(iteration_steps(method, hp, n_examples, num_processes))
