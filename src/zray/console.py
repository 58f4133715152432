"""What the terminal shows: zray's own lines, not the chatter of every process Ray starts.

zray's library code never prints: it logs to the ``zray`` logger (``LOG``),
as any Python library does, and the program using it decides what to show.
The command line (:func:`terminal`) shows that logger's lines on stdout as
``zray: MESSAGE``; a notebook or script sees them through its own logging
set-up (``logging.basicConfig(level=logging.INFO)``).

The processes Ray starts (Tune trials, Ray Train's controller and workers)
print TensorFlow's start-up lines, CUDA probing on machines without a GPU and
deprecation notes from Ray's internals. zray starts or joins Ray with
``log_to_driver=False`` (:func:`zray.runtime.init_ray`), so all of that stays
in Ray's log files; a run's epoch figures reach the driver as the metrics it
reports, and a Tune callback (:class:`zray.search.progress.TrialLines`)
writes the epoch and trial lines from them. ``--verbose`` (or
``ZRAY_VERBOSE=1``) shows the processes' output and Tune's trial tables again.

Two things reach the terminal by other roads, and :func:`terminal` keeps them
off it unless verbose: the raylet's warning that many Python worker
processes have started (every trial starts a few, and the fractional CPUs it
blames are zray's design on small machines), which Ray prints to this
process's stdout itself; and TensorFlow's native start-up lines when this
process imports TensorFlow (``zray evaluate``, ``zray predict``), which go to
file descriptor 2 before Python can say anything (:func:`quiet_native_stderr`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

__all__ = ["LOG", "VERBOSE_ENV", "is_verbose", "quiet_native_stderr", "terminal"]

LOG = logging.getLogger("zray")
PREFIX = "zray:"
VERBOSE_ENV = "ZRAY_VERBOSE"
# The raylet's warning (Ray 2.60): "N PYTHON worker processes have been started on node ...".
WORKER_POOL_WARNING = "worker processes have been started on node"


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class _ZrayLines(logging.Handler):
    """The ``zray`` logger's records as ``zray: MESSAGE`` lines on the current stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.INFO and not is_verbose():
            return
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING and not text.startswith("warning"):
                text = "warning: " + text
            sys.stdout.write(f"{PREFIX} {text}\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


class _WithoutLines:
    """A text stream that leaves out the lines holding any of ``drop``."""

    def __init__(self, stream, drop: tuple[str, ...]) -> None:
        self._stream, self._drop, self._dropped = stream, drop, False

    def write(self, text: str) -> int:
        if is_verbose():
            return self._stream.write(text)
        if self._dropped and text == "\n":  # the end of a dropped print()
            self._dropped = False
            return len(text)
        self._dropped = any(d in text for d in self._drop)
        if self._dropped:
            self._dropped = not text.endswith("\n")
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def terminal():
    """For the length of a command: the ``zray`` logger's lines on stdout (DEBUG
    too when verbose), and (unless verbose) none of the raylet's worker-pool
    warnings. Verbosity is read as each line comes (``--verbose`` is an option
    of the command, parsed inside the block)."""
    handler = _ZrayLines()
    saved_level, saved_propagate = LOG.level, LOG.propagate
    LOG.addHandler(handler)
    LOG.setLevel(logging.DEBUG)
    LOG.propagate = False  # shown once, here, not again by a root handler
    saved_streams = sys.stdout, sys.stderr
    sys.stdout = _WithoutLines(sys.stdout, (WORKER_POOL_WARNING,))
    sys.stderr = _WithoutLines(sys.stderr, (WORKER_POOL_WARNING,))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_streams
        LOG.removeHandler(handler)
        LOG.setLevel(saved_level)
        LOG.propagate = saved_propagate


@contextlib.contextmanager
def quiet_native_stderr():
    """File descriptor 2 to /dev/null for the block (unless verbose): TensorFlow's
    C++ start-up lines (absl's "I0000 ...", oneDNN, ``cuInit`` errors on machines
    without a GPU) are written there while it is imported, whatever Python's
    logging or ``TF_CPP_MIN_LOG_LEVEL`` say. Python's own errors are raised as
    usual and printed after the block."""
    if is_verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (an embedding host): nothing to quiet
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
