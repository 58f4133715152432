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
process imports and starts TensorFlow (``zray evaluate``, ``zray predict``),
which its C++ core writes to file descriptor 2 directly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys

__all__ = ["LOG", "VERBOSE_ENV", "is_verbose", "set_verbose", "terminal"]

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


# Ray Data's documented log level variable, and the variables terminal() set.
RAY_DATA_LEVEL_ENV = "RAY_DATA_LOG_LEVEL"
_set_here: dict[str, str] = {}
# File descriptor 2 as it was before terminal() sent it to /dev/null (None: not sent).
_native_stderr: dict[str, int | None] = {"saved": None}


@contextlib.contextmanager
def terminal():
    """For the length of a command: the ``zray`` logger's lines on stdout (DEBUG
    too when verbose) and, unless verbose, neither the raylet's worker-pool
    warnings nor native libraries' lines on file descriptor 2 (TensorFlow's
    absl start-up lines, oneDNN, ``cuInit`` errors on machines without a GPU,
    written there whatever Python's logging or ``TF_CPP_MIN_LOG_LEVEL`` say).
    Python's own stderr (errors, warnings, tracebacks) still reaches the
    terminal. ``--verbose``, an option of the command parsed inside the block,
    calls :func:`set_verbose`, which gives file descriptor 2 back."""
    handler = _ZrayLines()
    saved_level, saved_propagate = LOG.level, LOG.propagate
    LOG.addHandler(handler)
    LOG.setLevel(logging.DEBUG)
    LOG.propagate = False  # shown once, here, not again by a root handler
    saved_streams = sys.stdout, sys.stderr
    if not is_verbose() and RAY_DATA_LEVEL_ENV not in os.environ:
        # Read once, when Ray Data is first imported (by whichever step of the command):
        # its per-dataset notes and "Progress bars disabled" (zray disables them) stay off.
        os.environ[RAY_DATA_LEVEL_ENV] = _set_here[RAY_DATA_LEVEL_ENV] = "ERROR"
    python_stderr = _quiet_native_stderr() if not is_verbose() else None
    sys.stdout = _WithoutLines(sys.stdout, (WORKER_POOL_WARNING,))
    sys.stderr = _WithoutLines(python_stderr or sys.stderr, (WORKER_POOL_WARNING,))
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved_streams
        _give_back_native_stderr()
        _unset_ours()
        if python_stderr is not None:
            with contextlib.suppress(Exception):
                python_stderr.close()
        LOG.removeHandler(handler)
        LOG.setLevel(saved_level)
        LOG.propagate = saved_propagate


def set_verbose() -> None:
    """Verbose from here on: Ray's and TensorFlow's own output reach the terminal."""
    os.environ[VERBOSE_ENV] = "1"
    _give_back_native_stderr()
    _unset_ours()


def _unset_ours() -> None:
    """Remove the variables terminal() set (a value the user set stays)."""
    for key, value in list(_set_here.items()):
        if os.environ.get(key) == value:
            del os.environ[key]
        del _set_here[key]


def _quiet_native_stderr():
    """Send file descriptor 2 to /dev/null; return a text stream on where it went
    before, for Python's own stderr (None when sys.stderr is not file descriptor 2,
    as under a test runner: then only the descriptor is quieted)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return None
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    _native_stderr["saved"] = saved
    try:
        is_fd2 = sys.stderr.fileno() == 2
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        is_fd2 = False
    if not is_fd2:
        return None
    return open(saved, "w", closefd=False, buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                errors="backslashreplace")


def _give_back_native_stderr() -> None:
    saved = _native_stderr["saved"]
    if saved is None:
        return
    _native_stderr["saved"] = None
    with contextlib.suppress(OSError):
        os.dup2(saved, 2)
    with contextlib.suppress(OSError):
        os.close(saved)
