"""Small file helpers: atomic writes and streamed checksums.

Used by the data module (downloads into the cache) and by checkpointing, so
that an interrupted write never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import secrets
import warnings

__all__ = ["atomic_path", "sha256_file", "remove_stale_temps", "run_lock", "FolderLockedError"]

_CHUNK = 1 << 20  # 1 MiB: large enough to hash at full speed, small enough to stream


def _temp_name(target: pathlib.Path) -> pathlib.Path:
    """A hidden, random sibling of `target` that keeps its last suffix.

    The suffix is kept because some writers add their own when it is missing
    (np.savez appends '.npz'), which would make the file land under another name.
    """
    token = secrets.token_hex(6)
    return target.with_name(f".{target.name}.{token}.tmp{target.suffix}")


def _create_temp(target: pathlib.Path) -> pathlib.Path:
    """Create an empty temp file next to `target`, exclusively, and return its path.

    O_EXCL guarantees we never reuse (and later delete) somebody else's file; mode
    0o666 is filtered by the umask, so the final file gets the usual permissions
    (unlike tempfile.mkstemp, which always gives 0o600).
    """
    for _ in range(100):
        tmp = _temp_name(target)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a unique temporary file next to {target}")


def _fsync_file(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: pathlib.Path) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: pathlib.Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same directory as `path`; publish it on success.

    Usage::

        with atomic_path("ckpt.npz") as tmp:
            np.savez(tmp, **arrays)

    The temp file is created empty (so the name is reserved) in the target's
    directory, which must exist; same directory = same file system, so the final
    os.replace is atomic. When the block exits normally the temp file is fsynced
    and os.replace(tmp, path) puts it in place (replacing any old file). When the
    block raises (any exception, KeyboardInterrupt included), the temp file is
    deleted and the exception re-raised: `path` is left exactly as it was.
    If the block deleted or moved the temp file itself, FileNotFoundError is raised
    and `path` is left untouched.
    """
    target = pathlib.Path(path)
    tmp = _create_temp(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic_path: the temporary file {tmp} no longer exists, "
                f"so nothing was written to {target}"
            )
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent)


def sha256_file(path) -> str:
    """Hex SHA-256 digest of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# _temp_name's pattern: ".<name>.<12 hex digits>.tmp<suffix>"
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9]+)?$")


def remove_stale_temps(directory) -> list:
    """Delete the hidden temp files that killed ``atomic_path`` writes left in `directory`
    (a killed checkpoint write leaves one of checkpoint size).  Call it only while holding the
    folder's ``run_lock``, so that no live write of the same run is removed.  Returns the names."""
    removed = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if _TEMP_RE.match(name) and os.path.isfile(path):
            _remove_quietly(pathlib.Path(path))
            removed.append(name)
    return removed


@contextlib.contextmanager
def waiting_lock(path):
    """Hold an exclusive ``flock`` on the file at `path` for the block, waiting for any other holder:
    for a short read-modify-write of a file that two processes may update (two sweeps into one
    folder).  Where ``fcntl`` is missing (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:                                  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:                              # another user's lock file: flock works read-only
        fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:                             # a file system without locks (some NFS): unlocked,
            warnings.warn(f"{path}: cannot lock ({e.strerror}); going on unlocked")   # as on Windows
        yield
    finally:
        os.close(fd)            # closing the descriptor releases the lock


class FolderLockedError(RuntimeError):
    """Another process holds the folder's run lock."""


@contextlib.contextmanager
def run_lock(directory):
    """Hold an exclusive lock on `directory` (a ``.lock`` file in it, ``flock``) for the block:
    two processes never train into one run folder.  The lock dies with the process, so a killed
    run leaves no stale lock.  Where ``fcntl`` is missing (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:                                  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FolderLockedError(f"another process is training in {directory}; wait for it, or stop it "
                                    f"with Ctrl-C (it writes a checkpoint)") from None
        yield
    finally:
        os.close(fd)
