"""Where a run's tasks execute: one dask client per stage, shared by every stage that distributes work.

``ClusterSpec`` says where (a LocalCluster of worker processes, an existing scheduler by address as
dask-jobqueue/SLURM or the Kubernetes operator hand it out, or in-process for debugging);
:func:`open_client` connects; :func:`run_bounded` keeps a few tasks per worker in flight, so that the
client's and the scheduler's memory do not grow with the number of tasks, and stops at the first
task error with that error (the others are cancelled).

Errors are the client's business too. The worker processes of a LocalCluster share the terminal,
so a worker plugin keeps them from printing what the client reports itself: the "Compute Failed"
dump of a task that raised (the client raises that error, once) and the heartbeat errors of workers
whose scheduler was closed first. They ignore SIGINT and are closed by the client instead of each
printing a KeyboardInterrupt traceback; from the interrupt on, neither they nor the client print the
connection errors of a cluster being closed under them (the interrupt is one line).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

from distributed import WorkerPlugin

from .errors import SprayError

log = logging.getLogger("spray.cluster")
WORKER_WAIT_S = 120  # how long a run waits for the first worker of an existing scheduler


class _WorkerLogs(logging.Filter):
    """In a LocalCluster's worker: drops what the client reports better, dask's "Compute Failed" dump
    of a task error (the client raises that error) and its heartbeat failing when the scheduler,
    which lives in the client's process, is closed first (the run ended or failed); after Ctrl-C,
    every record."""

    ECHOES = ("Compute Failed", "Failed to communicate with scheduler during heartbeat")
    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.interrupted or str(record.msg).startswith(self.ECHOES))


class QuietWorker(WorkerPlugin):
    """Worker plugin: the worker's dask logs go through :class:`_WorkerLogs`, and SIGINT does not stop
    the worker process (the client handles Ctrl-C and closes it)."""

    name = "spray-quiet-worker"

    def setup(self, worker) -> None:
        import signal
        import threading
        if threading.current_thread() is not threading.main_thread():
            return
        quiet = _WorkerLogs()
        for handler in logging.getLogger("distributed").handlers + logging.getLogger().handlers:
            handler.addFilter(quiet)

        def interrupted(signum, frame) -> None:  # a flag only
            quiet.interrupted = True
        signal.signal(signal.SIGINT, interrupted)


@contextmanager
def _quiet_while_closing_after_interrupt() -> Iterator[None]:
    """Ctrl-C: the cluster closed under its own connections logs their errors in this process; the
    interrupt is reported by the CLI instead."""
    try:
        yield
    except KeyboardInterrupt:
        for name in ("distributed", "tornado"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        raise


def _connect(address: Optional[str]):
    from distributed import Client
    where = "DASK_SCHEDULER_ADDRESS / dask's scheduler-address" if address in (None, "env") else address
    try:
        client = Client(None if address in (None, "env") else address, timeout="30s")
    except (OSError, TimeoutError, ValueError) as err:
        raise SprayError(f"cannot reach the dask scheduler at {where} ({err}); start it (`dask scheduler`) or fix "
                         f"cluster.address") from None
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except (OSError, TimeoutError) as err:
        client.close()
        raise SprayError(f"the dask scheduler at {where} has no workers after {WORKER_WAIT_S} s ({err}); start some "
                         f"with `dask worker {client.scheduler.address}`") from None
    return client


@dataclass
class ClusterSpec:
    """Where tasks run: ``mode`` "local" (LocalCluster of ``n_workers`` processes), "address"
    (connect to ``address``; "env" takes DASK_SCHEDULER_ADDRESS / dask's config), or "synchronous"."""

    mode: str = "local"
    n_workers: int = 2
    threads_per_worker: int = 1
    address: Optional[str] = None
    dashboard: bool = True


@contextmanager
def open_client(cluster: ClusterSpec, client=None) -> Iterator:
    """A distributed ``Client`` for ``cluster`` (``client`` itself when given; None in synchronous mode).

    A LocalCluster started here is closed on exit; an existing scheduler is only disconnected from.
    """
    if client is not None or cluster.mode == "synchronous":
        yield client
        return
    from distributed import Client, LocalCluster
    local = None
    if cluster.mode == "address":
        own = _connect(cluster.address)
    else:
        local = LocalCluster(n_workers=cluster.n_workers, threads_per_worker=cluster.threads_per_worker,
                             processes=True, dashboard_address=":0" if cluster.dashboard else None,
                             silence_logs=logging.ERROR)
        own = Client(local)
        own.register_plugin(QuietWorker())
    try:
        if own.dashboard_link and cluster.dashboard:
            log.warning("dask dashboard: %s", own.dashboard_link)
        with _quiet_while_closing_after_interrupt():
            yield own
    finally:
        own.close()
        if local is not None:
            local.close()


def n_workers(client) -> int:
    """Workers the scheduler knows now (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def run_bounded(client, fn: Callable, items: Iterable, *, key: Callable[[object], str],
                on_result: Callable[[object, object], None], args: tuple = (), window: Optional[int] = None) -> None:
    """``fn(item, *args)`` for every item on ``client``, at most ``window`` tasks in flight (default two
    per worker plus two); ``on_result(item, result)`` in completion order, in this process.

    On the first task that fails, the tasks still in flight are cancelled and its exception is raised
    here, as the worker raised it; a task that kept killing its workers is named.
    """
    from distributed import KilledWorker, as_completed
    queue = list(items)
    window = window or 2 * n_workers(client) + 2
    of_future = {}

    def submit(item):
        future = client.submit(fn, item, *args, key=key(item), pure=False)
        of_future[future.key] = item
        return future

    running = as_completed([submit(queue.pop(0)) for _ in range(min(window, len(queue)))])
    for future in running:
        try:
            result = future.result()
        except BaseException as err:
            for other in list(running.futures):
                other.cancel()
            if isinstance(err, KilledWorker):
                raise SprayError(f"task {future.key} killed every worker that ran it ({err}): out of memory, or a "
                                 f"crash in native code; lower explain.batch_size, or give workers more memory") from None
            raise
        on_result(of_future.pop(future.key), result)
        future.release()
        if queue:
            running.add(submit(queue.pop(0)))
