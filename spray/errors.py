"""Error types that say what went wrong, where, and how to fix it.

Every error a user can cause derives from :class:`SprayError`, so the CLI can map it to a clean
message and a distinct exit code instead of a traceback.
"""
import errno
import re
from typing import Optional


class SprayError(Exception):
    """Base class of all errors caused by input, configuration or an unsupported model."""


class ConfigError(SprayError, ValueError):
    """A configuration value or an argument is wrong; the message names it and the fix."""


class InputError(SprayError, ValueError):
    """Input data (a tensor, a sample, a file) is unusable; the message names which one."""


class UnsupportedModelError(SprayError, TypeError):
    """The model contains a layer or an operation that spray cannot explain faithfully."""


class StorageError(SprayError):
    """A file could not be written: the disk is full, the folder is read-only, or permission is denied."""


_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)|\[Errno (\d+)\]")


def os_errno(err: OSError) -> Optional[int]:
    """The errno of ``err``, also when h5py only names it in the message ("errno = 28")."""
    if err.errno:
        return err.errno
    match = _ERRNO_IN_TEXT.search(str(err))
    return int(match.group(1) or match.group(2)) if match else None


_NO_SPACE_TEXT = re.compile(r"No space left on device|errno = 28|Disk quota exceeded|errno = 122")


def write_failure(err: BaseException) -> Optional[OSError]:
    """The failed write behind ``err``, also when a library raised something else while cleaning
    up after it (h5py closing a half-written file raises RuntimeError over the OSError)."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and os_errno(err) in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                                          errno.EPERM):
            return err
        if _NO_SPACE_TEXT.search(str(err)):
            return OSError(errno.ENOSPC, "No space left on device")
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def storage_error(err: OSError, path=None) -> StorageError:
    """One sentence for a failed write: what, where, and how to fix it (nothing finished is lost)."""
    where = path or err.filename or "a file"
    code = os_errno(err)
    kept = "everything finished before is kept and re-running the same command resumes"
    if code in (errno.ENOSPC, errno.EDQUOT):
        text = f"no space left on the device holding {where}: free space there, or set `out:` to a folder on another disk; {kept}"
    elif code == errno.EROFS:
        text = f"{where} is on a read-only file system: set `out:` to a writable folder, or remount it read-write; {kept}"
    elif code in (errno.EACCES, errno.EPERM):
        text = f"permission denied writing {where}: make the folder writable (chmod u+w) or set `out:` elsewhere; {kept}"
    else:
        text = f"cannot write {where}: {err.strerror or err}; {kept}"
    return StorageError(text)
