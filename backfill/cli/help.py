"""How `--help` reads: options in panels (``params``), no type names, a BACKFILL_* variable per option.

Typer prints a type beside every option (``<bool>``, ``<list[str]>``): a flag takes no value,
so it shows none, nor does ``--help``; options that take one name it in ``params`` (``metavar``).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def _no_type(option: Any) -> Any:
    if isinstance(option, TyperOption) and option.is_flag and option.metavar is None:
        option.metavar = ""
    return option


def _help_option(command: Any, option: Any) -> Any:
    """--help without a type, in the command's first panel (not alone in one of its own)."""
    if option is not None:
        _no_type(option)
        panels = (getattr(p, "rich_help_panel", None) for p in command.params)
        option.rich_help_panel = next((panel for panel in panels if panel), None)
    return option


class _Argument(TyperArgument):
    """An argument: its name (ROLE, REVISION) says what it is, no type beside it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class Command(TyperCommand):
    """A command whose flags, arguments (and --help) show no type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _no_type(param)
            if type(param) is TyperArgument:
                # typer builds the argument; only how its help is shown changes (no new state)
                param.__class__ = _Argument

    def get_help_option(self, ctx: Any) -> Any:  # typer's vendored click.Context (typer._click is private)
        return _help_option(self, super().get_help_option(ctx))


class Group(TyperGroup):
    """A group whose flags (and --help) show no type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _no_type(param)

    def get_help_option(self, ctx: Any) -> Any:
        return _help_option(self, super().get_help_option(ctx))
