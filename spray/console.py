"""What a person sees while spray runs: log levels, log lines that do not break progress bars, bars
only on a terminal, and a sign of life during long silent steps.

Verbosity (``-q``/``-v``, repeatable) maps to log levels: ``-qq`` errors only, ``-q`` warnings (and
no bars), default INFO for spray's own loggers, ``-v`` DEBUG for spray, ``-vv`` also the libraries'
INFO (dask, numba, ...). Log records go through ``tqdm.write``, which lifts the bars, prints the
line and redraws them; output that is not a terminal (a log file, a pipe, CI) gets no bars at all,
so it holds lines, never ``\\r`` frames; a terminal that reports no width is given one.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

LIBRARIES = ("distributed", "bokeh", "tornado", "numba", "pynndescent", "matplotlib", "PIL", "h5py", "asyncio")
log = logging.getLogger("spray")


def level(verbosity: int) -> int:
    """-2 .. 2 (``-qq`` .. ``-vv``) -> the level of spray's loggers."""
    return {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(max(-2, verbosity), logging.DEBUG)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            head, _, message = text.partition(": ")
            text = f"{head}: {record.levelname.lower()}: {message}"
        return text


class BarSafeHandler(logging.StreamHandler):
    """A stream handler that writes through tqdm, so log lines land above the progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup(verbosity: int = 0, stream=None) -> None:
    """Configure logging for a command (safe to call again: the previous handler is replaced)."""
    # distributed applies its own logging config (INFO) when first imported, in this process and in
    # every worker it spawns: dask's config from the environment is the one setting that reaches both.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if verbosity >= 2 else "error")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, BarSafeHandler)]:
        root.removeHandler(handler)
    handler = BarSafeHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if verbosity >= 2 else logging.ERROR)
    log.setLevel(level(verbosity))


def bars_enabled(verbosity: int = 0, stream=None) -> bool:
    """Progress bars only at normal verbosity or above, and only on a terminal."""
    stream = stream or sys.stderr
    return verbosity >= 0 and hasattr(stream, "isatty") and stream.isatty()


def give_width(stream=None, columns: int = 100) -> Optional[int]:
    """A terminal that reports 0 columns (a pseudo-terminal nobody sized: ``script``, some CI
    runners and containers) gets ``$COLUMNS`` or ``columns``: tqdm trims every bar to the reported
    width, so there it drew nothing at all. Returns the width now set, or None."""
    try:
        import fcntl
        import struct
        import termios
        fd = (stream or sys.stderr).fileno()
        rows, cols = struct.unpack("hh", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)[:4])
        if cols > 0:
            return None
        cols = int(os.environ.get("COLUMNS") or 0) or columns
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows if rows > 0 else 24, cols, 0, 0))
        return cols
    except (ImportError, OSError, ValueError, AttributeError):
        return None


@contextmanager
def activity(what: str, progress: bool, logger: Optional[logging.Logger] = None, delay: float = 2.0,
             every: float = 30.0) -> Iterator[None]:
    """Show that ``what`` is still running when it takes longer than ``delay`` seconds: a line with
    the elapsed time, kept current on a terminal (``progress``), else a log line every ``every`` s."""
    logger = logger or log
    done = threading.Event()
    started = time.perf_counter()
    announced = threading.Event()

    def watch() -> None:
        if done.wait(delay):
            return
        announced.set()
        logger.info("%s ...", what)
        if progress:
            from tqdm import tqdm
            with tqdm(desc=what, bar_format="{desc}: {elapsed}", file=sys.stderr, leave=False) as bar:
                while not done.wait(1.0):
                    bar.refresh()
            return
        while not done.wait(every):
            logger.info("%s: still running after %.0f s", what, time.perf_counter() - started)

    thread = threading.Thread(target=watch, name="spray-activity", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if announced.is_set():
            logger.info("%s: done in %.0f s", what, time.perf_counter() - started)
