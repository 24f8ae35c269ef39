"""When a progress bar is drawn: only to a terminal."""
import sys


def to_terminal(wanted: bool = True) -> bool:
    """`wanted`, and stderr (where tqdm draws) is a terminal: in a log file a bar's carriage-return
    updates and its erasure end up as fragments between the log lines, not as progress."""
    return wanted and sys.stderr.isatty()
