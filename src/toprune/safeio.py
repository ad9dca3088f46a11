"""Writing without losing work: outputs checked writable before training, atomic saves, one run per folder.

Every save goes to a temporary name beside its destination, is checked, then renamed over it, so a kill or a full
disk leaves the previous file (never half of a new one); a failed save is a one-line :class:`ToPruneError` and the
temporary file is removed. A run folder holds ``.lock`` with the owner's pid while a run writes into it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ToPruneError

LOCK_FILENAME = ".lock"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_writable(path: str | os.PathLike, what: str = "--output") -> Path:
    """Fail now, not after hours of training: ``path`` must be (or become) a folder we can write into.

    The nearest existing ancestor is probed with a real file (``os.access`` says yes to root on a read-only mount).
    Nothing is created at ``path`` itself."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ToPruneError(f"{what} {path} is a file, not a folder")
    probe_dir = path
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ToPruneError(f"{what} {path}: {probe_dir} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".toprune-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ToPruneError(f"{what} {path} is not writable ({probe_dir}: {_reason(exc)})") from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """``path`` gets ``data`` completely or keeps what it had; a failure is one line and leaves no temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if tmp.stat().st_size != len(data):  # verify before it replaces anything
            raise OSError(errno.EIO, f"wrote {tmp.stat().st_size} of {len(data)} bytes")
        os.replace(tmp, path)
    except OSError as exc:
        raise ToPruneError(f"cannot save {path}: {_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_file(path: str | os.PathLike, save) -> Path:
    """``save(tmp_path)`` writes the file (e.g. ``torch.save``); it replaces ``path`` only if it wrote something."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save(tmp)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise OSError(errno.EIO, "nothing was written")
        os.replace(tmp, path)
    except OSError as exc:
        raise ToPruneError(f"cannot save {path}: {_reason(exc)}") from None
    except RuntimeError as exc:  # torch.save reports a failed write (disk full) as RuntimeError
        raise ToPruneError(f"cannot save {path}: {str(exc).splitlines()[0]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_save_folder(folder: str | os.PathLike, save, verify=None, stale: tuple[str, ...] = ()) -> Path:
    """``save(tmp_folder)`` writes a folder's files; after ``verify(tmp_folder)`` they move into ``folder``.

    A new folder appears at once (one rename). Into an existing folder each file is renamed over its old copy, so
    files of the user's that ``save`` does not write are kept; names in ``stale`` are removed there if ``save``
    did not write them."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ToPruneError(f"cannot save to {folder}: it is a file, not a folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    except OSError as exc:
        raise ToPruneError(f"cannot save to {folder}: {_reason(exc)}") from None
    try:
        save(tmp)
        if verify is not None:
            verify(tmp)
        if not folder.exists():
            tmp.rename(folder)
            return folder
        written = list(tmp.iterdir())
        for item in written:
            target = folder / item.name
            if target.is_dir() and not item.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        for name in set(stale) - {item.name for item in written}:
            (folder / name).unlink(missing_ok=True)
    except OSError as exc:
        raise ToPruneError(f"cannot save to {folder}: {_reason(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, enabled: bool = True):
    """Hold ``folder/.lock`` (our pid) while a run writes there; a second run refuses, a dead owner's lock is taken
    over. ``enabled=False`` (the non-main processes of a multi-process run) does nothing."""
    if not enabled:
        yield
        return
    lock = Path(folder) / LOCK_FILENAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise ToPruneError(
                    f"{folder} is in use by another toprune run (pid {owner}); wait for it to end, give "
                    f"another --output, or delete {lock} if no run is active"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its owner died without cleaning up
            continue
        except OSError as exc:
            raise ToPruneError(f"cannot lock {folder}: {_reason(exc)}") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise ToPruneError(f"cannot lock {folder}: another run keeps taking {lock}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if int(lock.read_text().strip()) == os.getpid():
                lock.unlink()
