"""The argument parser of the scripts (scripts/*.py) and `make bench`: the module docstring as the
description, kept as written, and every option's default in its --help line."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written, and "(default: ...)" after every option that has a default, with or
    without a help text, unless its help text already says what the default is."""

    def _format_action(self, action: argparse.Action) -> str:
        shown = action.option_strings and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if shown and "default" not in (action.help or ""):
            action.help = f"{action.help or ''} (default: %(default)s)".strip()
        return super()._format_action(action)


def script_parser(description: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
