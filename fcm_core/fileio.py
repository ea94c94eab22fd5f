"""Writing outputs so that a failure leaves nothing half-written.

In: a target folder (a set of files written together) or a file path, and what to write. Out: the
files in place, with the user's umask, or, on any failure, the folder as it was before.

- :func:`check_writable`: before the work, whether a folder can be written (created if missing)
  and that no directory stands where an output file goes;
- :func:`staged_directory`: a scratch folder inside the target; on success its files move into
  the target (renames within one filesystem), the ``last`` one last; if a rename fails, the files
  moved so far are taken back and the ones they replaced restored. SIGINT and SIGTERM wait until
  the renames are done (they arrive right after);
- :func:`atomic_write_bytes`, :func:`atomic_write_text`: one file through a temporary file beside
  it and one rename.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path

from .errors import FcmError

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask (read without changing it for longer than the read)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def describe_os_error(exc: OSError) -> str:
    """An OSError as the user's problem: ``cannot write (Permission denied)``."""
    reason = exc.strerror or type(exc).__name__
    return {errno.ENOTDIR: "a file is in the way of a folder", errno.EISDIR: "a folder is in the way of a file",
            errno.EEXIST: "a file is in the way of a folder"}.get(exc.errno, f"cannot write ({reason})")


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: str | os.PathLike, names: tuple[str, ...] = ()) -> None:
    """Raise an FcmError unless files named ``names`` can be written into ``folder`` (a missing
    folder must be creatable): a file in the way of the folder or one of its parents, a folder in
    the way of one of the files, no permission to write, a read-only filesystem. Writes nothing
    that stays (a probe file is created and removed)."""
    folder = Path(folder) if str(folder) else Path(".")
    existing = _nearest_existing(folder.absolute())
    if not existing.is_dir():
        raise FcmError("a file is in the way of the output folder", existing)
    for name in names:
        if (folder / name).is_dir():
            raise FcmError("a folder is in the way of an output file", folder / name)
    try:
        fd, probe = tempfile.mkstemp(prefix=".fcm-probe.", dir=existing)
    except OSError as exc:
        raise FcmError(describe_os_error(exc), existing) from None
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM that arrive inside the block are raised again when it ends (their Python
    handlers, which run in the main thread whichever thread the signal reached, are swapped for a
    recorder meanwhile; elsewhere than in the main thread nothing is held)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: a handler not installed from Python, which cannot be put back
            previous[signum] = signal.signal(signum, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in pending:
            signal.raise_signal(signum)


def _commit(scratch: Path, target: Path, last: str | None) -> None:
    """Move every entry of ``scratch`` into ``target`` (``last`` last); all of them, or none: on a
    failure the entries already moved are taken back and those they replaced put back."""
    items = sorted((p for p in scratch.iterdir() if p.name != ".previous"), key=lambda p: (p.name == last, p.name))
    previous = scratch / ".previous"
    previous.mkdir()
    done: list[tuple[Path, Path, bool]] = []  # (new entry's place, its staged place, replaced an entry)
    try:
        for item in items:
            destination = target / item.name
            if destination.is_dir() and not item.is_dir():
                raise FcmError("a folder is in the way of an output file", destination)
            replaced = os.path.lexists(destination)
            if replaced:
                os.rename(destination, previous / item.name)
            done.append((destination, item, replaced))
            os.rename(item, destination)
    except BaseException:
        for destination, item, replaced in reversed(done):
            with contextlib.suppress(OSError):
                if not os.path.lexists(item):  # it was moved in: take it back
                    os.rename(destination, item)
                if replaced:
                    os.rename(previous / item.name, destination)
        raise


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, last: str | None = None):
    """Yield a scratch folder inside ``target``; when the ``with`` block ends without an exception,
    move its files into ``target``, the one named ``last`` last, all or none.

    The scratch folder (hidden, ``.<name>.*.partial``) lives inside ``target``, so the moves are
    renames within one filesystem wherever ``target`` is (a mount point, its own filesystem, a
    folder whose parent is not writable). On failure, or on SIGINT/SIGTERM (which the command line
    turns into exceptions), the scratch folder is removed and ``target`` is as it was: a folder
    this call created is removed again.
    """
    target = Path(target) if str(target) else Path(".")
    created = []
    for folder in reversed((target, *target.parents)):
        if not os.path.lexists(folder):
            created.append(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.absolute().name}.", suffix=".partial", dir=target))
    except OSError as exc:
        _remove_created(created)
        raise FcmError(describe_os_error(exc), exc.filename or target) from None
    try:
        yield scratch
        with _signals_held():  # a signal arriving meanwhile is raised once the set is complete
            try:
                _commit(scratch, target, last)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    except OSError as exc:
        _cleanup(scratch, created)
        where = exc.filename if exc.filename and scratch.name not in str(exc.filename) else target
        raise FcmError(describe_os_error(exc), where) from None
    except BaseException:
        _cleanup(scratch, created)
        raise


def _cleanup(scratch: Path, created: list[Path]) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    _remove_created(created)


def _remove_created(created: list[Path]) -> None:
    for folder in reversed(created):  # innermost first; only if nothing else was put there meanwhile
        with contextlib.suppress(OSError):
            folder.rmdir()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename; the file gets the
    permissions a plain ``open`` would give it (0666 less the umask)."""
    path = Path(path)
    if path.is_dir():
        raise FcmError("a folder is in the way of an output file", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise FcmError(describe_os_error(exc), exc.filename or path) from None
    try:
        os.fchmod(fd, (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH) & ~umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise FcmError(describe_os_error(exc), path) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
