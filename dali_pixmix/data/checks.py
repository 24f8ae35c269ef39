"""Image files DALI cannot decode: caught before a pipeline reads them, named when DALI fails.

Why this exists: DALI 2.4's image decoders (`fn.decoders.image`, `image_random_crop`) parse the
headers of a large batch on several threads of the pipeline's pool. When a header cannot be
parsed (random bytes, a file cut inside its header, an HTML page saved as `.JPEG`) the error
can leave that parsing step while other threads still use its state, and the process dies with
a segmentation fault and no message. Batches small enough to be parsed on one thread (about 32
samples on DALI 2.4) raise an error instead, which is why the crash depends on the batch size.
A file whose header parses but whose data is broken (a truncated download) fails later, in the
decoding step, with an error that DALI attaches to the file's path.

Hence two guards:
- `header_errors` reads every header with PIL (no pixel decoding; under 0.1 ms a file) before a
  pipeline sees the files, and `screen_images` does it once per file list, spread over ranks:
  a bad header stops the job with the file's name instead of a crash.
- `decode_failure` turns DALI's error into an `UnreadableImageError` that names the file: the
  path in DALI's message when there is one, else the file that fails when the suspect batch is
  decoded one picture at a time.
`python tools/make_file_list.py FOLDER --verify` decodes every picture of a folder fully and
lists every broken file at once.
"""
from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from PIL import Image

Problem = Tuple[Path, str]  # (file, why it cannot be decoded)
HEADER_THREADS = 8          # header reads wait on storage more than on the CPU
PROGRESS_FROM = 20000       # files: smaller lists are checked without a progress bar
# DALI errors that carry the path of the file at fault, and what they mean.
_DALI_NAMED = ((re.compile(r"Failed to decode sample #\d+ : (.+?)\s*$", re.M),
                "DALI's decoder rejected its data"),
               (re.compile(r"File mapping failed: (.+?)\s*$", re.M), "empty or unreadable file"))


class PipelineError(RuntimeError):
    """DALI failed while reading images and no file is at fault; the message has its reason."""


class UnreadableImageError(ValueError):
    """Image files that cannot be decoded; the message names them and says how to fix it."""

    def __init__(self, problems: Sequence[Problem], what: str = "image",
                 root: Optional[str | Path] = None, context: str = ""):
        self.problems = [(Path(f), reason) for f, reason in problems]
        self.what, self.root, self.context = what, root, context
        super().__init__(unreadable_message(self.problems, what, root, context))

    @property
    def files(self) -> List[Path]:
        return [f for f, _ in self.problems]


def verify_command(root: str | Path) -> str:
    return f"python tools/make_file_list.py {root} --verify"


def unreadable_message(problems: Sequence[Problem], what: str, root=None, context="") -> str:
    """'cannot decode <what> <file> (<reason>)[; N more: ...]; <fix>' in one line."""
    first, reason = problems[0]
    more = ""
    if len(problems) > 1:
        names = ", ".join(str(f) for f, _ in problems[1:4])
        more = f"; {len(problems) - 1} more: {names}" + (", ..." if len(problems) > 4 else "")
    root = root if root is not None else common_folder([f for f, _ in problems])
    where = f" {context}" if context else ""
    return (f"cannot decode {what} {first} ({reason}){where}{more}; delete or replace the "
            f"file (`{verify_command(root)}` lists every broken file of the folder)")


def common_folder(files: Sequence[str | Path]) -> Path:
    """The deepest folder holding every file of `files` (a dataset's root, for a hint)."""
    if not files:
        return Path(".")
    try:
        common = Path(os.path.commonpath([str(f) for f in files]))
    except ValueError:  # different drives, or relative and absolute paths mixed
        return Path(files[0]).parent
    return common.parent if len(files) == 1 or Path(common) == Path(files[0]) else common


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# --------------------------------------------------------------------------- before DALI
def header_error(path: str | Path) -> Optional[str]:
    """Why the header of `path` cannot be parsed (None when it can); pixels are not decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.size  # noqa: B018 - parsing the header is the check
    except Image.DecompressionBombError:
        return None  # a huge but well-formed picture: DALI decodes it
    except Image.UnidentifiedImageError:
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        return "empty file" if empty else "not an image: unknown format or corrupt header"
    except Exception as err:  # noqa: BLE001 - any parser failure means "cannot decode"
        return _short(err).replace(f" '{path}'", "")
    return None


def header_errors(files: Sequence[str | Path], progress: bool = False,
                  threads: int = HEADER_THREADS) -> List[Problem]:
    """(file, reason) for every file whose image header cannot be parsed, in file order.

    Files are checked in chunks on `threads` threads: parsing holds the GIL, but opening and
    reading wait on storage, which on a network file system is most of the time."""
    from tqdm import tqdm

    from dali_pixmix.progress import to_terminal

    files = list(files)
    size = max(1, min(4096, -(-len(files) // max(1, threads))))
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    problems = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            tqdm(total=len(files), desc="image headers", unit="img", leave=False,
                 disable=not to_terminal(progress)) as bar:
        for chunk, reasons in zip(chunks, pool.map(_header_reasons, chunks)):
            problems += [(Path(f), r) for f, r in zip(chunk, reasons) if r is not None]
            bar.update(len(chunk))
    return problems


def _header_reasons(files: Sequence[str | Path]) -> List[Optional[str]]:
    return [header_error(f) for f in files]


def screen_images(files: Sequence[str | Path], what: str, root=None, dist=None,
                  progress: bool = False) -> None:
    """Raise `UnreadableImageError` on every rank when a header of `files` cannot be parsed.

    Each rank reads the headers of its contiguous share of `files` and the findings are
    gathered, so every rank raises the same error (none is left waiting in a collective).
    """
    from dali_pixmix.distributed import all_gather_objects

    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    count = len(files)
    mine = files[count * rank // world:count * (rank + 1) // world]
    found = header_errors(mine, progress=progress and rank == 0 and count >= PROGRESS_FROM)
    problems = [item for part in all_gather_objects(found) for item in part]
    if problems:
        raise UnreadableImageError(problems, what, common_folder(files) if root is None else root)


# --------------------------------------------------------------------------- after DALI
def dali_reason(err: BaseException) -> str:
    """What went wrong, from a DALI pipeline error (whose last lines repeat boilerplate)."""
    for pattern, reason in _DALI_NAMED:
        if pattern.search(str(err)):
            return reason
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    skip = ("File ", "C++ context", "Error in", "which was used", "encountered", "Critical error")
    useful = [ln for ln in lines if "no longer valid" not in ln and not ln.startswith(skip)
              and "fn." not in ln]
    return useful[-1] if useful else (lines[-1] if lines else type(err).__name__)


def dali_named_file(err: BaseException) -> Optional[Path]:
    """The file a DALI error names as the one at fault, if it names one."""
    for pattern, _ in _DALI_NAMED:
        found = pattern.findall(str(err))
        if found:
            return Path(found[0])
    return None


def dali_decode_error(path: str | Path) -> Optional[str]:
    """Why DALI's CPU decoder rejects `path` (None when it decodes), one picture per batch:
    a single sample is parsed on the calling thread, so a bad header raises, never crashes."""
    from nvidia.dali import fn, pipeline_def, types

    from dali_pixmix.data.decoding import decoder_args

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def single():
        encoded, _ = fn.readers.file(files=[str(path)])
        return fn.decoders.image(encoded, **decoder_args(gpu=False), output_type=types.RGB)

    try:
        pipe = single()
        pipe.build()
        pipe.run()
    except RuntimeError as err:
        return dali_reason(err)
    return None


def locate_unreadable(files: Sequence[str | Path]) -> List[Problem]:
    """The files among `files` that cannot be decoded: bad headers (PIL), then one-by-one
    DALI decoding of the rest."""
    problems = header_errors(files)
    bad = {f for f, _ in problems}
    for file in files:
        if Path(file) not in bad:
            reason = dali_decode_error(file)
            if reason is not None:
                problems.append((Path(file), reason))
    return problems


def decode_failure(err: BaseException, suspects: Sequence[str | Path], what: str = "image",
                   root=None, context: str = "") -> Exception:
    """The error to raise for a DALI pipeline failure while reading `suspects`.

    An `UnreadableImageError` naming the file (from DALI's message, else found among
    `suspects`), or, when no file is at fault (or none was read: pictures from memory), a
    `PipelineError` with DALI's reason.
    """
    if "KeyboardInterrupt" in str(err):  # Ctrl-C inside a python callback DALI called
        return KeyboardInterrupt()
    if not suspects:
        where = f" {context}" if context else ""
        return PipelineError(f"the {what} pipeline failed{where}: {dali_reason(err)}")
    named = dali_named_file(err)
    if named is not None:
        if root is not None and not named.exists() and (Path(root) / named).exists():
            named = Path(root) / named  # a file list's entry, relative to the reader's root
        return UnreadableImageError([(named, dali_reason(err))], what, root, context)
    problems = locate_unreadable(suspects)
    if problems:
        return UnreadableImageError(problems, what, root, context)
    first = suspects[0] if suspects else "-"
    where = f" {context}" if context else ""
    return PipelineError(f"DALI failed while reading {len(suspects)} {what}s ({first} ...)"
                         f"{where}: {dali_reason(err)}")
