"""A portable lock file: ``O_EXCL`` creation, no ``fcntl``/``msvcrt``, stale locks taken over.

Used where several processes (two napari windows, a CLI run beside the GUI)
write the same files, e.g. a layer of an annotation store. The lock is a small
file created with ``os.O_CREAT | os.O_EXCL`` (atomic on every local file
system and on NFSv3+), holding the owner's process id, host name and a random
token. A lock whose process has died on this host, or that is older than
``stale`` seconds, is taken over. Importing this module is cheap.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_dlcb.errors import DlcbError

__all__ = ["lock_file", "pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (unknown counts as alive).

    Examples
    --------
    >>> pid_alive(os.getpid())
    True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or cannot be asked
        return True
    return True


@contextmanager
def lock_file(
    path: str | os.PathLike, *, what: str = "the file", wait: float = 30.0, stale: float = 600.0
) -> Iterator[None]:
    """Hold the lock file ``path`` for the duration of the block.

    Parameters
    ----------
    path : str or path-like
        The lock file (its folder must exist).
    what : str
        What is being protected, for the message when the lock stays busy.
    wait : float
        Seconds to wait for another holder before giving up.
    stale : float
        A lock older than this is taken over even when its owner cannot be
        checked (another host).

    Raises
    ------
    DlcbError
        The lock stayed busy for ``wait`` seconds.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / ".lock"
    >>> with lock_file(lock):
    ...     lock.exists()
    True
    >>> lock.exists()
    False
    """
    path = Path(path)
    mine = f"{os.getpid()} {socket.gethostname()} {uuid.uuid4().hex}"
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _break_if_stale(path, stale):
                continue
            if time.monotonic() > deadline:
                raise DlcbError(
                    f"{what} is being written by another process (lock {path}); try again, "
                    "or delete the lock file if no napari-dlcb is running"
                ) from None
            time.sleep(0.02)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(mine)
        break
    try:
        yield
    finally:
        try:
            if path.read_text() == mine:
                path.unlink()
        except OSError:
            pass


def _break_if_stale(path: Path, stale: float) -> bool:
    """Remove a lock whose process has died (this host) or that is very old; True if removed."""
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    parts = text.split()
    if len(parts) < 3:  # being written this instant, or garbage: judge by age only
        dead = age > 5.0
    elif parts[1] == socket.gethostname() and parts[0].isdigit():
        dead = not pid_alive(int(parts[0])) or age > stale
    else:
        dead = age > stale
    if not dead:
        return False
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, aside)  # of two processes breaking the lock, one wins the rename
    except OSError:
        return False
    try:
        taken = aside.read_text()
    except OSError:
        return False
    if taken != text:  # a fresh lock replaced the stale one meanwhile: put it back
        if not path.exists():
            os.replace(aside, path)
        else:
            aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True
