"""The PixMix mixing set as one uint8 tensor, with one-gather random crops.

Several sources (e.g. fractals + feature visualisations) make one bank: `from_sources`, or a
comma-separated `pixmix.mixing_set`.

Conventions: `images` is uint8 `[N, S, S, 3]` (RGB, HWC per picture), each picture prepared like the
reference code's `Resize(S)` (shorter side to S) followed by a centre crop to S x S. `sample()`
then takes a random `crop x crop` window per picture, the equivalent of the reference's
`RandomCrop(224)`. The bank lives on one device: CUDA, pinned host memory (for small GPUs; crops
are gathered on the host and copied without blocking) or plain CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from dali_pixmix.oserrors import names_file

PathLike = Union[str, Path]
BANK_SUFFIX = ".npy"


class MixingBank:
    """A tensor of mixing pictures, uint8 `[N, S, S, 3]`, on one device."""

    def __init__(self, images: torch.Tensor, source: str = "tensor"):
        check_bank_shape(images, source)
        self.images = images
        self.source = source

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"MixingBank(n={len(self)}, size={self.size}, device={self.device}, "
                f"pinned={self.is_pinned}, source={self.source!r})")

    @property
    def size(self) -> int:
        """Side S of the stored square pictures."""
        return int(self.images.shape[1])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def is_pinned(self) -> bool:
        return self.images.device.type == "cpu" and self.images.is_pinned()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_files(cls, files: Sequence[PathLike], size: int = 256, device="cpu",
                   pin_memory: bool = False, batch_size: int = 64, num_threads: int = 2,
                   source: str = "files") -> "MixingBank":
        """Decode `files` with DALI (nvJPEG when `device` is CUDA) into a bank."""
        files = [str(f) for f in files]
        if not files:
            raise ValueError(f"no mixing pictures given for {source}")
        if size < 1:
            raise ValueError(f"mixing bank picture size must be at least 1 px, got {size}")
        from dali_pixmix.data.checks import screen_images

        screen_images(files, "mixing picture")  # a bad header could crash DALI's decoder
        device = torch.device(device)
        images = decode_square_pictures(files, size, device, batch_size, num_threads)
        return cls(place_tensor(images, device, pin_memory), source=source)

    @classmethod
    def from_folder(cls, root: PathLike, size: int = 256, device="cpu", pin_memory: bool = False,
                    batch_size: int = 64, num_threads: int = 2) -> "MixingBank":
        """Every picture under `root`, at any depth, in sorted path order."""
        from dali_pixmix.data.images import scan_images

        files = scan_images(root)  # names the folder when it is missing or holds no picture
        return cls.from_files(files, size, device, pin_memory, batch_size, num_threads,
                              source=str(root))

    @classmethod
    def from_file_list(cls, path: PathLike, root: Optional[PathLike] = None, size: int = 256,
                       device="cpu", pin_memory: bool = False, batch_size: int = 64,
                       num_threads: int = 2) -> "MixingBank":
        """The pictures named in a DALI-style file list (`relative/path label` per line)."""
        from dali_pixmix.data.file_lists import read_file_list

        files, _labels = read_file_list(path, root=root)  # names a missing file's line
        return cls.from_files(files, size, device, pin_memory, batch_size, num_threads,
                              source=str(path))

    @classmethod
    def from_sources(cls, sources: Sequence[PathLike], size: int = 256, device="cpu",
                     pin_memory: bool = False, batch_size: int = 64, num_threads: int = 2,
                     root: Optional[PathLike] = None,
                     root_name: Optional[str] = "root=") -> "MixingBank":
        """One bank from several folders and/or file lists (e.g. fractals + feature
        visualisations); the picture order is `mixing_files(sources, root)`. `root_name`: how
        the user sets `root`, for error messages (None: they cannot)."""
        files = mixing_files(sources, root, root_name)
        return cls.from_files(files, size, device, pin_memory, batch_size, num_threads,
                              source=sources_label(sources))

    @classmethod
    def load(cls, npy_path: PathLike, device="cpu", pin_memory: bool = False) -> "MixingBank":
        """Open a saved bank as a memory map (zero copy on CPU; copied once to CUDA/pinned)."""
        npy_path = Path(npy_path)
        if not npy_path.is_file():
            raise FileNotFoundError(f"mixing bank {npy_path} does not exist; build it with "
                                    "tools/build_mixing_bank.py")
        # Copy-on-write map: pages are read lazily and torch gets a writable array without a copy.
        try:
            array = np.load(npy_path, mmap_mode="c", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"cannot read mixing bank {npy_path} ({err}); it may be truncated: "
                             "delete it and rebuild it with tools/build_mixing_bank.py") from None
        check_bank_shape(array, str(npy_path), "delete it and rebuild it")
        images = place_tensor(torch.from_numpy(array), torch.device(device), pin_memory)
        return cls(images, source=str(npy_path))

    def save(self, npy_path: PathLike) -> Path:
        """Write the bank as a plain `.npy` (uint8 [N, S, S, 3]) through a temporary file that
        a failure (a full disk: an OSError naming the file) removes; returns the path."""
        npy_path = Path(npy_path)
        if npy_path.suffix != BANK_SUFFIX:
            raise ValueError(f"mixing bank path {npy_path} must end with {BANK_SUFFIX}")
        npy_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy_path.with_name(npy_path.name + ".partial.npy")
        array = np.ascontiguousarray(self.images.cpu().numpy())
        try:
            # Python's own writes: a full disk is ENOSPC naming the file (numpy's tofile says
            # only "N requested and M written")
            with names_file(tmp), open(tmp, "wb") as handle:
                np.lib.format.write_array_header_1_0(
                    handle, np.lib.format.header_data_from_array_1_0(array))
                handle.write(memoryview(array).cast("B"))
            tmp.replace(npy_path)  # never leave a truncated bank behind
        finally:
            tmp.unlink(missing_ok=True)
        return npy_path

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, crop: int = 224, generator: Optional[torch.Generator] = None,
               device=None) -> torch.Tensor:
        """`n` pictures drawn uniformly with replacement, each cut at its own random crop.

        Returns uint8 `[n, crop, crop, 3]` on `device` (default: the bank's device). The random
        draws use `generator`, which must live on the bank's device. A host bank may serve CUDA
        batches (gathered on the host, then copied without blocking); any other device mismatch
        is an error.
        """
        out_device = self._check_target(device)
        if not 0 < crop <= self.size:
            raise ValueError(f"crop {crop} does not fit the bank's {self.size} px pictures; "
                             f"rebuild the bank with --size >= {crop}")
        index, rows, cols = random_crop_index(n, len(self), self.size, crop, generator,
                                              self.device)
        crops = crop_windows(self.images, index, rows, cols)  # [n, crop, crop, 3]
        if out_device == self.device:
            return crops
        if self.is_pinned:
            crops = crops.pin_memory()  # an async host-to-device copy needs a pinned source
        return crops.to(out_device, non_blocking=True)

    def _check_target(self, device) -> torch.device:
        target = self.device if device is None else torch.device(device)
        if target == self.device or (self.device.type == "cpu" and target.type == "cuda"):
            return target
        raise ValueError(f"mixing bank is on {self.device} but the batch is on {target}; "
                         f"load the bank with device='{target}' (or a host bank for CUDA batches)")


def random_crop_index(n: int, count: int, size: int, crop: int,
                      generator: Optional[torch.Generator], device: torch.device):
    """Broadcastable index tensors (picture [n,1,1], rows [n,c,1], cols [n,1,c]) for one gather."""
    picks = torch.randint(count, (n,), generator=generator, device=device)
    top = torch.randint(size - crop + 1, (n,), generator=generator, device=device)
    left = torch.randint(size - crop + 1, (n,), generator=generator, device=device)
    offsets = torch.arange(crop, device=device)
    rows = top[:, None, None] + offsets[None, :, None]
    cols = left[:, None, None] + offsets[None, None, :]
    return picks[:, None, None], rows, cols


def crop_windows(images: torch.Tensor, picks, rows, cols) -> torch.Tensor:
    """``images[picks, rows, cols]`` for the index tensors of `random_crop_index`, as one gather
    of whole crop rows (each a contiguous run of a picture row): on CPU ~30x faster than the
    element-wise gather, same values."""
    n, crop, size = rows.shape[0], rows.shape[1], images.shape[1]
    flat = images.contiguous().reshape(-1)
    # Row i of `windows` is the run of crop pixels starting at pixel i (an overlapping view).
    windows = flat.as_strided((flat.numel() // 3 - crop + 1, crop * 3), (3, 1))
    start = (picks.view(n, 1) * size + rows.view(n, crop)) * size + cols[:, :1, 0].view(n, 1)
    return windows.index_select(0, start.reshape(-1)).view(n, crop, crop, 3)


def check_bank_shape(array, source: str, fix: str = "rebuild it") -> None:
    """A bank is a non-empty uint8 [N, S, S, 3] tensor or numpy array; else a clear error."""
    uint8 = array.dtype in (torch.uint8, np.uint8)
    shape = tuple(array.shape)
    if not uint8 or len(shape) != 4 or shape[-1] != 3 or shape[1] != shape[2] or shape[0] == 0:
        raise ValueError(f"mixing bank {source} must be a non-empty uint8 [N, S, S, 3] array, "
                         f"got {array.dtype} {shape}; {fix} with tools/build_mixing_bank.py")


def place_tensor(images: torch.Tensor, device: torch.device, pin_memory: bool) -> torch.Tensor:
    """Move the bank to its device; `pin_memory` keeps it on the host in page-locked memory.

    A CUDA bank is written here on the current stream and later read on other streams (DALI's,
    inside the PixMix stage), which do not wait for this one: the copy is complete when this
    returns (`ready_on_all_streams`).
    """
    if pin_memory:
        if device.type != "cpu":
            raise ValueError("pin_memory=True keeps the bank on the host: pass device='cpu'")
        return images.pin_memory()
    return ready_on_all_streams(images.to(device))


def ready_on_all_streams(images: torch.Tensor) -> torch.Tensor:
    """Wait (once, at load time) until the work that wrote a CUDA tensor has finished, so that
    any stream may read it without an event; no-op for host tensors."""
    if images.is_cuda:
        torch.cuda.current_stream(images.device).synchronize()
    return images


# --------------------------------------------------------------------- decoding with DALI
def decode_square_pictures(files: List[str], size: int, device: torch.device,
                           batch_size: int, num_threads: int) -> torch.Tensor:
    """uint8 [N, size, size, 3]: decode, shorter side to `size`, centre crop, in file order."""
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
    from tqdm import tqdm

    from dali_pixmix.distributed import is_main_process
    from dali_pixmix.progress import to_terminal

    device_id = (device.index or 0) if device.type == "cuda" else None
    batch_size = max(1, min(batch_size, len(files)))
    pipe = _bank_pipeline(files=files, size=size, batch_size=batch_size,
                          num_threads=num_threads, device_id=device_id)
    pipe.build()
    out = torch.empty((len(files), size, size, 3), dtype=torch.uint8, device=device)
    done = 0
    try:
        batches = DALIGenericIterator(pipe, ["images"], reader_name="Reader",
                                      last_batch_policy=LastBatchPolicy.PARTIAL)
        with tqdm(total=len(files), desc="mixing bank", unit="img", leave=False,
                  disable=not (to_terminal() and is_main_process())) as bar:  # one per job
            for batch in batches:
                images = batch[0]["images"]
                out[done:done + len(images)] = images.to(device)
                done += len(images)
                bar.update(len(images))
    except RuntimeError as err:  # the failing batch is the next one or one DALI prefetched
        from dali_pixmix.data.checks import decode_failure

        raise decode_failure(err, files[done:done + 3 * batch_size], "mixing picture") from None
    if done != len(files):
        raise RuntimeError(f"decoded {done} of {len(files)} mixing pictures")
    return out


def _bank_pipeline(*, files, size, batch_size, num_threads, device_id):
    from nvidia.dali import pipeline_def

    return pipeline_def(_bank_graph, batch_size=batch_size, num_threads=num_threads,
                        device_id=device_id, prefetch_queue_depth=2)(
        files=files, size=size, gpu=device_id is not None)


def _bank_graph(*, files, size, gpu):
    """Whole pictures decoded (with the CPU decoder's chroma on the GPU: `decoder_args`),
    shorter side to `size`, centre crop."""
    from nvidia.dali import fn, types

    from dali_pixmix.data.decoding import decoder_args

    encoded, _ = fn.readers.file(files=files, name="Reader", pad_last_batch=True,
                                 random_shuffle=False)
    images = fn.decoders.image(encoded, **decoder_args(gpu), output_type=types.RGB)
    images = fn.resize(images, resize_shorter=size, antialias=True)
    return fn.crop(images, crop=(size, size))


# --------------------------------------------------------------------- several sources
def split_sources(spec: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """A mixing-set setting as a list of sources: a list as is, or a string of comma-separated
    paths (a string naming an existing path is one source even if it holds a comma)."""
    if isinstance(spec, (list, tuple)):
        return [str(s) for s in spec]
    spec = str(spec)
    if Path(spec).exists() or "," not in spec:
        return [spec]
    return [part.strip() for part in spec.split(",") if part.strip()]


def mixing_files(sources: Sequence[PathLike], root: Optional[PathLike] = None,
                 root_name: Optional[str] = "root=") -> List[Path]:
    """Every picture of the sources: sources in the order given, each folder in sorted path
    order (`scan_images`), each file list in its line order; a file that an earlier source
    already holds (same real path) is left out. A missing or empty source is an error naming
    it."""
    from dali_pixmix.data.file_lists import read_file_list
    from dali_pixmix.data.images import scan_images

    if not sources:
        raise ValueError("no mixing sources given; pass folders of pictures or file lists")
    files, seen = [], set()
    for source in sources:
        source = Path(source)
        if source.suffix == BANK_SUFFIX:
            raise ValueError(f"mixing source {source} is a saved bank, which cannot be combined "
                             "with other sources; build one bank from all the picture folders")
        if source.is_dir():
            found = scan_images(source)  # names the folder when it holds no picture
        elif source.is_file():
            found, _labels = read_file_list(source, root, root_name)  # names an empty list
        else:
            raise FileNotFoundError(f"mixing source {source} does not exist; pass a folder of "
                                    "pictures or a file list (or, on its own, a .npy bank)")
        keys = [os.path.realpath(file) for file in found]
        files += [Path(f) for f, key in zip(found, keys) if key not in seen]
        seen.update(keys)
    return files


# --------------------------------------------------------------------- cache helper
RECORD_SUFFIX = ".json"  # `<cache>.npy.json`: what the cached bank was built from
PREPARATION = "shorter side to S, centre crop S x S (DALI, antialiased)"


def sources_label(sources: Sequence[PathLike]) -> str:
    """How a bank names the sources it was built from."""
    return ",".join(str(s) for s in sources)


def bank_record(sources: Sequence[PathLike], files: Sequence[Path], size: int) -> dict:
    """What a bank built from `files` (`mixing_files(sources)`) at `size` px holds: the
    resolved sources, every picture's path, byte size and modification time (as one sha256),
    their count, the picture size and how pictures are prepared. Training's crops and seeds
    are drawn from the bank later, so they are not part of it."""
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{os.path.realpath(file)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"sources": [os.path.realpath(s) for s in sources], "pictures": len(files),
            "listing_sha256": digest.hexdigest(), "size": size, "preparation": PREPARATION}


def record_path(cache: PathLike) -> Path:
    return Path(str(cache) + RECORD_SUFFIX)


def write_record(cache: PathLike, record: dict) -> Path:
    """The record next to a bank written from it (`bank_record`)."""
    path = record_path(cache)
    with names_file(path):
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def stale_because(cache: PathLike, record: dict) -> Optional[str]:
    """Why the bank cached at `cache` is not the bank of `record` (None when it is)."""
    try:
        held = json.loads(record_path(cache).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it does not record what it was built from"
    if not isinstance(held, dict):
        return "its record is unreadable"
    if held.get("sources") != record["sources"]:
        return f"it was built from {', '.join(held.get('sources') or ['?'])}"
    if held.get("size") != record["size"]:
        return f"it holds {held.get('size')} px pictures, {record['size']} px are asked for"
    if held.get("listing_sha256") != record["listing_sha256"]:
        return (f"the mixing set's files changed ({held.get('pictures')} pictures then, "
                f"{record['pictures']} now, or other sizes or times)")
    if held != record:
        return "it was prepared differently"
    return None


def load_or_build_bank(source: PathLike, cache: Optional[PathLike] = None, size: int = 256,
                       device="cpu", pin_memory: bool = False, num_threads: int = 2
                       ) -> MixingBank:
    """A bank from a folder, a file list or a saved `.npy`, or from several folders/file lists
    (comma-separated, see `split_sources`); built once and cached at `cache`.

    The cache is used only when its record (`<cache>.json`, `bank_record`) says it was built
    from the same sources, files and picture size; otherwise it is rebuilt, with a note
    saying why. A saved `.npy` given as the source is used as it is (its picture size must be
    `size`).
    """
    sources = split_sources(source)
    if len(sources) == 1 and Path(sources[0]).suffix == BANK_SUFFIX:
        return _checked_size(MixingBank.load(sources[0], device, pin_memory), size)
    files = mixing_files(sources, root_name=None)  # a config's lists hold paths from their folder
    if cache is None:
        return MixingBank.from_files(files, size, device, pin_memory, num_threads=num_threads,
                                     source=sources_label(sources))
    record = bank_record(sources, files, size)
    if Path(cache).is_file():
        why = stale_because(cache, record)
        if why is None:
            return _checked_size(MixingBank.load(cache, device, pin_memory), size)
        print(f"note: rebuilding the mixing bank cache {cache}: {why}", file=sys.stderr,
              flush=True)
    bank = MixingBank.from_files(files, size, device, pin_memory, num_threads=num_threads,
                                 source=sources_label(sources))
    record_path(cache).unlink(missing_ok=True)  # no record ever describes another bank
    bank.save(cache)
    write_record(cache, record)
    return bank


def _checked_size(bank: MixingBank, size: int) -> MixingBank:
    if bank.size != size:
        raise ValueError(f"mixing bank {bank.source} stores {bank.size} px pictures but {size} px "
                         "were requested; delete the cache or pass the matching size")
    return bank
