"""What a process does when it is told to stop, or when the process that started it is gone.

* SIGTERM during training: Lightning's handler (installed for the fit) stops the loop at the end of
  the step; ``LastCheckpoint`` saves that step and the run records ``interrupted`` and exits 143
  (``stop``). Outside training (``terminate``) the process stops at once with exit code 143.
* A sweep's driver (``in_driver``) stopped by SIGTERM writes the partial report (src/run.py).
* A launcher's worker (``in_worker``: joblib/loky, submitit) watches its parent: when the driver
  dies (kill -9 included) a job in progress gets SIGTERM and the worker exits after the job has
  checkpointed, an idle worker exits at once — no orphan keeps training and races a relaunch.
* Under submitit, its preemption signal first stops the run like SIGTERM (a checkpoint of the
  step), then submitit requeues the job, which continues in the same job dir.

A module of its own so that the state is per process: a launcher pickles ``src.run``'s functions
into its workers by value, and would copy a driver's globals with them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("src.run")

_driver_pid: int | None = None  # the process that ran src.run's main(); workers did not
_watched_pid: int | None = None  # a worker whose parent is watched (its jobs run one after another)
_orphan = threading.Event()  # set in a worker whose driver is gone
_in_job = threading.Event()
_requeue: list = []  # submitit's preemption handler and signal, called once the job has checkpointed


class Interrupted(SystemExit):
    """SIGTERM stopped the run (its checkpoint and record are saved) or the sweep: exit code 143."""

    def __init__(self) -> None:
        super().__init__(143)


def terminate(signum: int, frame) -> None:
    """SIGTERM outside a training loop: stop with Interrupted. While Lightning trains, its own
    handler is installed and calls this one too; then Lightning stops at the end of the step."""
    if signal.getsignal(signal.SIGTERM) is terminate:
        stop()


def _take_over_submitit_preemption() -> None:
    """Under submitit, its preemption/timeout signal (USR2 by default) requeues the job from inside
    the signal handler, mid-step. Turn it into SIGTERM first, so the run stops at the end of the
    step with a checkpoint, and let submitit requeue after that (``stop``)."""
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        handler = signal.getsignal(sig)
        if type(getattr(handler, "__self__", None)).__module__.startswith("submitit"):
            def preempted(signum: int, frame, requeue=handler) -> None:
                _requeue[:] = [(requeue, signum)]
                os.kill(os.getpid(), signal.SIGTERM)

            signal.signal(sig, preempted)


def in_driver() -> None:
    global _driver_pid
    _driver_pid = os.getpid()
    signal.signal(signal.SIGTERM, terminate)


def in_worker(interval: float = 1.0) -> None:
    """In a process that did not run main() (a launcher's worker), once: watch the parent."""
    global _watched_pid
    if os.getpid() in (_driver_pid, _watched_pid) or threading.current_thread() is not threading.main_thread():
        return
    _watched_pid, parent = os.getpid(), os.getppid()
    signal.signal(signal.SIGTERM, terminate)
    _take_over_submitit_preemption()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        _orphan.set()
        if not _in_job.is_set():
            os._exit(143)
        log.warning("the sweep's driver (pid %d) is gone; stopping this job", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


@contextmanager
def job() -> Iterator[None]:
    """Marks a job in progress (a worker whose driver dies then waits for its checkpoint)."""
    _in_job.set()
    try:
        yield
    finally:
        _in_job.clear()


def stop() -> None:
    """End an interrupted run: submitit's requeue when it was preempted there, else exit 143 (at once
    in an orphaned worker: nobody takes its result)."""
    if _requeue:
        requeue, signum = _requeue.pop()
        requeue(signum, None)  # submitit checkpoints its submission, requeues the job and exits
    if _orphan.is_set():
        logging.shutdown()
        os._exit(143)
    raise Interrupted
