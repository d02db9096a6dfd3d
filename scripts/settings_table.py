"""Print the Markdown table of Juice's settings, generated from `Settings` (api/core/config.py).

Every row is one field: its environment variable (named by pydantic-settings itself, so the `JUICE_`
prefix and any alias are spelled as the settings object reads them), its type with its bounds, its
default and its `Field(description=...)`. docs/deployment.md holds the same table between
`<!-- settings:start -->` and `<!-- settings:end -->`; tests/test_settings_table.py fails when the two
differ. After changing a setting, refresh the page with:

    .venv/bin/python scripts/settings_table.py --write
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from annotated_types import Ge, Gt, Le, Lt  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_settings import EnvSettingsSource  # noqa: E402

from api.core.config import Settings  # noqa: E402

DOC = REPO / "docs" / "deployment.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
HEADER = "| variable | type | default | meaning |\n|---|---|---|---|"


def env_name(name: str, field: FieldInfo) -> str:
    """The variable pydantic-settings reads for this field (it compares case-insensitively)."""
    names = [env for _key, env, _complex in EnvSettingsSource(Settings)._extract_field_info(field, name)]
    if len(names) != 1:
        raise SystemExit(f"settings_table: {name} is read from {names}; give the table one row per name")
    return names[0].upper()


def type_text(field: FieldInfo) -> str:
    kind = field.annotation
    if typing.get_origin(kind) is typing.Literal:
        text = " or ".join(f"`{v}`" if v != "" else "empty" for v in typing.get_args(kind))
    elif kind is SecretStr:
        text = "secret"
    elif kind is Path:
        text = "path"
    elif kind is str:
        text = "text"
    elif isinstance(kind, type):
        text = kind.__name__
    else:
        raise SystemExit(f"settings_table: no wording for the type {kind!r}")
    bounds = []
    for m in field.metadata:
        for cls, sign in ((Ge, "≥"), (Gt, ">"), (Le, "≤"), (Lt, "<")):
            if isinstance(m, cls):
                bounds.append(f"{sign} {_number(getattr(m, cls.__name__.lower()))}")
    return f"{text}, {', '.join(bounds)}" if bounds else text


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(field: FieldInfo) -> str:
    """The value when the variable is unset. A dash: empty or computed, and the description says what
    that means (a derived default such as `$JUICE_HOME/artifacts`, or a feature left off)."""
    if field.default_factory is not None:
        return "–"
    value = field.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value == "":
        return "–"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{_number(value)}`"


def table() -> str:
    rows = [HEADER]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise SystemExit(f"settings_table: Settings.{name} has no Field(description=...)")
        meaning = " ".join(field.description.split()).replace("|", "\\|")
        rows.append(f"| `{env_name(name, field)}` | {type_text(field)} | {default_text(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with what stands between the markers replaced by `block`."""
    head, sep, rest = text.partition(START)
    _old, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"settings_table: {DOC.relative_to(REPO)} lacks the markers {START} ... {END}")
    return f"{head}{START}\n{block}{END}{tail}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"update the table in {DOC.relative_to(REPO)}")
    args = p.parse_args()
    if args.write:
        DOC.write_text(replace_block(DOC.read_text(), table()))
        print(f"wrote the settings table into {DOC.relative_to(REPO)}")
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
