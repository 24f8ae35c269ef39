"""The `--help` formatter of the command-line scripts (imports nothing heavy: `--help` answers
before torch or DALI are loaded)."""
import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: ...)" after each flag's help, except where the help already says
    what the default is (no second statement of it) and where the default says nothing (None,
    False of a switch, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, [], ()):
            return text
        return super()._get_help_string(action)
