"""File-system errors as one line that names the file: a full disk, a read-only or foreign folder.

`names_file(path)` makes an OSError raised while writing `path` carry that path (a failing
`write()` reports none), and `os_error_line(err)` is the text the command-line entry points print
after `error: `.
"""
from __future__ import annotations

import errno
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

HINTS = {
    errno.ENOSPC: "free space on that file system or write somewhere else",
    errno.EDQUOT: "free space (disk quota exceeded) or write somewhere else",
    errno.EACCES: "choose a folder you may write to, or fix its permissions",
    errno.EPERM: "choose a folder you may write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.EFBIG: "the file is larger than this process or file system may write (see ulimit "
                 "-f): write somewhere else",
}


@contextmanager
def names_file(path: str | Path):
    """Re-raise an OSError without a file name as the same error naming `path`."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise type(err)(err.errno, err.strerror, str(path)) from err
        raise


def error_behind(err: BaseException, kinds) -> Optional[BaseException]:
    """The first exception of type `kinds` behind `err`: itself, or one it was raised while
    handling; None if there is none."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kinds):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def os_error_line(err: OSError) -> str:
    """'<what failed>: <file> (<reason>); <fix>' for an OSError."""
    reason = err.strerror or str(err)
    where = f": {err.filename}" if err.filename else ""
    hint = HINTS.get(err.errno)
    return f"file system error{where} ({reason})" + (f"; {hint}" if hint else "")


def check_writable(folder: str | Path, name: str) -> None:
    """Create `folder` and write a probe file in it; a ValueError naming the setting `name`
    (a flag or config key) when that fails: checked before any long work, not after it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_probe_"):
            pass
    except OSError as err:
        raise ValueError(f"{name} {folder} is not writable ({err.strerror or err}); set {name} "
                         "to a folder you can write to") from None
