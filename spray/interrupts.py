"""Ctrl-C on the command line: it always stops the command, and it reads as one line.

Python raises KeyboardInterrupt wherever the main thread happens to be when the signal arrives. If
that is a finaliser (a dask future or an h5py object being freed: ``__del__``, a weakref callback,
the garbage collector), Python cannot raise it and hands it to ``sys.unraisablehook`` instead, so
the command would go on to its end as if Ctrl-C had never been pressed.
:class:`CtrlC` sends such a lost interrupt to the main thread again until the command has caught it.

The same context quiets what is noise once the user has interrupted: errors raised in finalisers
after a failed write (the error that stopped the command is the message) and the traceback
distributed's ``sync()`` logs when Ctrl-C lands before it started waiting.
"""
from __future__ import annotations

import _thread
import logging
import os
import sys
import threading

log = logging.getLogger("spray")
REDELIVER_S = 0.05  # how often a lost Ctrl-C is sent again, until the command has caught it


def interrupted_sync(record: logging.LogRecord) -> bool:
    """Drop the traceback distributed's ``sync()`` logs when Ctrl-C lands before it started waiting
    (its ``cancel`` callback reads a variable not yet set: NameError). Every other record passes."""
    error = record.exc_info[1] if record.exc_info else None
    return not (isinstance(error, NameError) and "sync.<locals>.cancel" in record.getMessage())


class CtrlC:
    """Context for a command's main thread; call :meth:`caught` where it catches KeyboardInterrupt."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lost = False
        self._default_hook = sys.unraisablehook

    def __enter__(self) -> "CtrlC":
        self._default_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        logging.getLogger("tornado.application").addFilter(interrupted_sync)
        return self

    def __exit__(self, *exc) -> bool:
        self._done.set()
        sys.unraisablehook = self._default_hook
        logging.getLogger("tornado.application").removeFilter(interrupted_sync)
        return False

    def caught(self) -> None:
        """The command has caught KeyboardInterrupt: no more redelivery."""
        self._done.set()

    def _unraisable(self, unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            self._redeliver()
        elif os.environ.get("SPRAY_TRACEBACK"):
            self._default_hook(unraisable)
        else:
            log.debug("ignored while cleaning up: %s", unraisable.exc_value)

    def _redeliver(self) -> None:
        """From another thread: sending it from here would raise it in this hook, where it is lost again."""
        if self._lost:
            return
        self._lost = True

        def again() -> None:
            while not self._done.wait(REDELIVER_S):
                _thread.interrupt_main()
        threading.Thread(target=again, name="spray-ctrl-c", daemon=True).start()
