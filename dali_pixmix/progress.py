"""When a progress bar is drawn: only to a terminal, unless DALI_PIXMIX_PROGRESS says otherwise."""
import os
import sys

# "1": draw bars in log files too (e.g. a SLURM job whose log is watched with tail -f);
# "0": never draw them; unset or anything else: only when stderr is a terminal.
PROGRESS_ENV = "DALI_PIXMIX_PROGRESS"


def to_terminal(wanted: bool = True) -> bool:
    """`wanted`, and stderr (where tqdm draws) is a terminal: in a log file a bar's carriage-return
    updates and its erasure end up as fragments between the log lines, not as progress.
    `DALI_PIXMIX_PROGRESS=1` / `0` forces bars on / off."""
    forced = os.environ.get(PROGRESS_ENV, "")
    if forced in ("0", "1"):
        return wanted and forced == "1"
    return wanted and sys.stderr.isatty()
