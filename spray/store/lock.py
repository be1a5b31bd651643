"""A lock file so that two runs never write one folder at once (owner pid, host, start time).

The run folder and the heatmap store each have one (``RUN/.lock``, ``STORE/.lock``). A lock left
by a dead process on this host is taken over; the owner's process start time is recorded too, so
a recycled pid is not mistaken for the owner.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from ..errors import SprayError, StorageError, os_errno, storage_error


class StoreLocked(SprayError):
    """Another live run holds the folder."""


class ReadOnlyFolder(StorageError):
    """The folder cannot be written (read-only file system or no permission), so it cannot be locked."""


def _started(pid: int) -> Optional[str]:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict) -> bool:
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    recorded, now = owner.get("process_started"), _started(pid)
    return recorded is None or now is None or recorded == now


class StoreLock:
    """``with StoreLock(folder):`` holds ``folder/.lock``; a lock left by a dead process on this host
    is taken over (the log says so); one held by a live process, or by another host, is refused.
    ``what`` names the folder in messages ("store", "run folder")."""

    def __init__(self, folder: Path, what: str = "store"):
        self.path = Path(folder) / ".lock"
        self.what = what
        self.took_over_from = None
        self.held = False

    def acquire(self) -> "StoreLock":
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "process_started": _started(os.getpid())}
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    owner = {}
                if owner.get("host") == me["host"] and owner.get("pid") and not _alive(owner):
                    self.took_over_from = owner
                    try:
                        self.path.unlink(missing_ok=True)
                    except OSError as err:
                        raise self._cannot_write(err) from None
                    continue
                raise StoreLocked(
                    f"{self.what} {self.path.parent} is being written by pid {owner.get('pid')} on host "
                    f"{owner.get('host')} since {owner.get('started')}; wait for that run to finish, or delete "
                    f"{self.path} if it is gone") from None
            except OSError as err:
                raise self._cannot_write(err) from None
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(me, fh)
            except OSError as err:
                self.path.unlink(missing_ok=True)
                raise self._cannot_write(err) from None
            self.held = True
            return self
        raise StoreLocked(f"could not take the lock {self.path}")

    def _cannot_write(self, err: OSError) -> StorageError:
        if os_errno(err) in (errno.EROFS, errno.EACCES, errno.EPERM):
            return ReadOnlyFolder(str(storage_error(err, self.path.parent)))
        return storage_error(err, self.path)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
