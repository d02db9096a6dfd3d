"""Fine-tuning method names: the trainer's (`sft`, `irft`, `rft`, `dpo`, `iql`, `reinforcement`) and the aliases a job may give,
and the file formats each method trains on.

OpenAI calls SFT `supervised`; a job keeps the name it was created with (the job object echoes it), and
everything that needs the trainer's name asks `canonical_method`. This is the only alias table.
"""

from __future__ import annotations

from trainer.spec.formats import Format
from trainer.spec.hyperparameters import HYPERPARAMETERS

METHODS = tuple(HYPERPARAMETERS)  # the trainer's names: one per hyperparameter class
ALIASES = {"supervised": "sft"}
METHOD_TYPES = (*METHODS, *ALIASES)  # every name method.type accepts

# The formats a method's training_file may have. SFT, IRFT, RFT and IQL learn from demonstrations; DPO from
# preference pairs; reinforcement from prompts its grader scores the answers to. A validation_file may be
# any format for those methods (trainer/evaluation.py); reinforcement's is prompts too.
DEMONSTRATIONS = (Format.CHAT.value, Format.PROMPT_COMPLETION.value)
PREFERENCES = (Format.PREFERENCE.value,)
PROMPTS = (Format.REINFORCEMENT.value,)  # OpenAI's RFT lines: a prompt and its grader's item
TRAINING_FORMATS: dict[str, tuple[str, ...]] = {
    "sft": DEMONSTRATIONS,
    "irft": DEMONSTRATIONS,
    "rft": DEMONSTRATIONS,
    "dpo": PREFERENCES,
    "iql": DEMONSTRATIONS,
    "reinforcement": PROMPTS,
}
assert TRAINING_FORMATS.keys() == set(METHODS), "every method says which files it trains on"


def canonical_method(method_type: str) -> str:
    """The trainer's name for a job's method type (`supervised` -> `sft`); other names unchanged."""
    return ALIASES.get(method_type, method_type)


def names_of(method: str) -> tuple[str, ...]:
    """Every name of the method that `method` names, its canonical name first."""
    canonical = canonical_method(method)
    return (canonical, *(alias for alias, target in ALIASES.items() if target == canonical))


def aliases_of(method: str) -> list[str]:
    """The other names of a canonical method (`sft` -> [`supervised`])."""
    return [alias for alias, target in ALIASES.items() if target == method]


def training_formats(method_type: str) -> tuple[str, ...]:
    """The formats a job of this method type (or alias) may train on."""
    return TRAINING_FORMATS[canonical_method(method_type)]
