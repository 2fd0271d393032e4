"""Reading text inputs, and atomic writes.

Every text file a user hands in (captions, annotations, question files, data files) is read through
`read_text` or, a line at a time, `decode_utf8`: bytes that are not UTF-8 are a one-line `InputError` naming
the file, the byte offset and the line, never a `UnicodeDecodeError` traceback.

Atomic writes: a file or a whole directory appears complete or not at all. Both go through a hidden temporary sibling (same folder, so the final rename stays on one file system)
that is removed on any exception, KeyboardInterrupt and SystemExit included. Modes are what an ordinary
`open(path, "w")` or `mkdir` would give: 0o666 / 0o777 minus the umask for a new path, the old mode
when an existing one is replaced.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

STDIN = "-"


def decode_utf8(data: bytes, source, offset: int = 0, line: int = 1) -> str:
    """`data` as text. It was read from `source` starting at byte `offset`, which is on line `line`: a byte that
    is not UTF-8 is a one-line InputError giving its offset and line in the whole file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        at = line + data.count(b"\n", 0, err.start)
        raise InputError(f"{source}: not UTF-8 text: byte 0x{data[err.start]:02x} at byte offset "
                         f"{offset + err.start} (line {at}); save the file as UTF-8") from None


def read_text(path) -> str:
    """A UTF-8 text file whole; `-` reads standard input. Any readable file will do: a pipe, a FIFO or
    `/dev/fd/N` as well as a regular file."""
    if str(path) == STDIN:
        return decode_utf8(sys.stdin.buffer.read(), "<stdin>")
    return decode_utf8(Path(path).read_bytes(), path)


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{tag}")


def _old_mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return None


def _fresh_sibling(path: Path, create: Callable[[Path], None]) -> Path:
    """A new hidden sibling of `path` made by `create` (which applies the umask); if `path` exists,
    the sibling takes its mode, as `open(path, "w")` keeps the mode of the file it truncates."""
    while True:
        tmp = _sibling(path, "tmp")
        try:
            create(tmp)
        except FileExistsError:
            continue
        break
    mode = _old_mode(path)
    if mode is not None:
        os.chmod(tmp, mode)
    return tmp


def _create_file(tmp: Path) -> None:
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _create_dir(tmp: Path) -> None:
    os.mkdir(tmp, 0o777)


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, then rename onto `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(path, _create_file)
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2))


@contextmanager
def atomic_dir(path) -> Iterator[Path]:
    """Yield an empty hidden sibling directory; on success it replaces `path` whole.

    An existing directory at `path` is moved aside, the new one renamed in, the old one deleted; if
    the body or the swap fails (any exception, KeyboardInterrupt and SystemExit too) the temporary
    directory is removed and the old one is left as it was."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(path, _create_dir)
    try:
        yield tmp
        swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in(new: Path, path: Path) -> None:
    """Rename `new` onto `path`, moving an existing directory aside first and deleting it after."""
    if not path.exists():
        os.rename(new, path)
        return
    old = _sibling(path, "old")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def unwritable(path) -> str | None:
    """Why `path` could not be created or replaced (its nearest existing ancestor is no writable folder),
    or None when it could."""
    parent = Path(path).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot write in {parent}"


def describe_machine() -> str:
    """CPU model, core count and torch version, for benchmark records."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{model}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"
