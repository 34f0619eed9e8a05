"""The command line's flags, built from the Settings model: one declaration per setting.

A setting with a `Flag` in its annotation gets `--its-name` (or the Flag's own name); argparse's
type, choices and store action come from the field's type, the help's default from its default,
so nothing about a setting is written twice. Values argparse leaves at None were not given, and
the environment or the configuration's .env decide them (config.load_settings).
"""

from __future__ import annotations

import argparse
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from autonomous_pipeline.config import Flag, Settings


def flagged() -> list[tuple[str, FieldInfo, Flag]]:
    """(name, field, flag) of every setting the command line takes, in declaration order."""
    found = []
    for name, field in Settings.model_fields.items():
        flag = next((m for m in field.metadata if isinstance(m, Flag)), None)
        if flag is not None:
            found.append((name, field, flag))
    return found


def add_settings(parser: argparse.ArgumentParser, common_only: bool = False) -> None:
    """Add the flags of the settings (with `common_only`, those every subcommand takes)."""
    for name, field, flag in flagged():
        if common_only and not flag.common:
            continue
        option = flag.name or "--" + name.replace("_", "-")
        kind = _plain(field.annotation)
        help_text = flag.help + _default_text(field, kind, flag)
        if kind is bool:
            # A flag says the opposite of its default: --dry-run sets True, --no-confine False.
            action = "store_false" if field.default is True else "store_true"
            parser.add_argument(option, dest=name, action=action, default=None, help=help_text)
        elif typing.get_origin(kind) is list:  # repeatable: each use adds one
            parser.add_argument(
                option, dest=name, action="append", metavar=flag.metavar, help=help_text
            )
        elif isinstance(kind, type) and issubclass(kind, Enum):
            parser.add_argument(option, dest=name, choices=[m.value for m in kind], help=help_text)
        else:
            convert = kind if kind in (int, float) else str
            parser.add_argument(
                option, dest=name, type=convert, metavar=flag.metavar, help=help_text
            )


def _plain(annotation: Any) -> Any:
    """`X | None` -> X; a Path is given as text."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    return str if annotation is Path else annotation


def _default_text(field: FieldInfo, kind: Any, flag: Flag) -> str:
    """` (default X)`, from the field, where the help does not already say what it is."""
    default = field.default
    if kind is bool or default is None or field.default_factory is not None:
        return ""
    if "default" in flag.help:
        return ""
    shown = default.value if isinstance(default, Enum) else default
    return f" (default {shown})"
