"""A lock file so that two runs never write one store at once (owner pid, host, start time)."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import SprayError


class StoreLocked(SprayError):
    """Another live run holds the store."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """``with StoreLock(folder):`` holds ``folder/.lock``; a lock left by a dead process on this host
    is taken over (the log says so); one held by a live process, or by another host, is refused."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.took_over_from = None

    def acquire(self) -> "StoreLock":
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    owner = {}
                if owner.get("host") == me["host"] and owner.get("pid") and not _alive(int(owner["pid"])):
                    self.took_over_from = owner
                    self.path.unlink(missing_ok=True)
                    continue
                raise StoreLocked(
                    f"store {self.path.parent} is being written by pid {owner.get('pid')} on host "
                    f"{owner.get('host')} since {owner.get('started')}; wait for that run to finish, or delete "
                    f"{self.path} if it is gone") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            return self
        raise StoreLocked(f"could not take the lock {self.path}")

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
