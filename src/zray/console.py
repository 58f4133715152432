"""What the terminal shows: zray's own lines, not the chatter of every process Ray starts.

Every Ray worker's stdout and stderr is forwarded to the driver, where Ray
prints it with a ``(Actor pid=...)`` prefix: TensorFlow's start-up lines from
each process, CUDA probing on machines without a GPU, deprecation warnings
from Ray's own internals, Ray Data's progress notes. By default zray prints
only the lines its own code writes (they start with ``zray:``), without the
prefix. ``--verbose`` (or ``ZRAY_VERBOSE=1``) restores Ray's printer and
Tune's trial tables.

The raylet's warning that many Python worker processes have started is
dropped too: every trial starts a few (Ray Train's controller, its workers
and helpers, each a process) and the fractional CPUs it blames are zray's
design on small machines, so there is nothing for the user to do about it.

Lines starting with ``zray: progress`` are a training epoch's progress; on a
terminal they update one line in place, elsewhere (a CI log, a file) they
are dropped, and the epoch's own line says what happened.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["PROGRESS", "is_verbose", "quiet_worker_output", "show"]

PREFIX = "zray:"
PROGRESS = "zray: progress "
VERBOSE_ENV = "ZRAY_VERBOSE"

_lock = threading.Lock()
_open_progress = False


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_worker_output() -> None:
    """Print only zray's lines of what Ray's workers write (unless verbose)."""
    if is_verbose():
        return
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # another Ray layout: leave Ray's printer in place
        return
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("zray_lines")
    dispatcher.add_handler("zray_lines", _on_worker_output)
    _drop_worker_pool_warning()


# The raylet's warning (Ray 2.60): "N PYTHON worker processes have been started on node ...".
WORKER_POOL_WARNING = "worker processes have been started on node"


def _drop_worker_pool_warning() -> None:
    """Ray prints the raylet's messages itself (not through the printer replaced
    above): wrap that printer to leave out its worker-pool size warning."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "zray_filtered", False):
        return

    def print_to_stdstream(data, ignore_prefix):
        if data.get("pid") == "raylet" and any(WORKER_POOL_WARNING in line for line in data.get("lines", ())):
            return
        original(data, ignore_prefix)

    print_to_stdstream.zray_filtered = True
    ray_worker.print_to_stdstream = print_to_stdstream


def _on_worker_output(data: dict) -> None:
    for line in data.get("lines", ()):
        text = line.strip()
        if text.startswith(PREFIX):
            show(text)


def show(text: str, stream=None) -> None:
    """Print one zray line; progress lines replace each other on a terminal."""
    global _open_progress
    stream = stream or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    with _lock:
        if text.startswith(PROGRESS):
            if tty:
                stream.write("\r\033[K" + PREFIX + " " + text[len(PROGRESS):])
                stream.flush()
                _open_progress = True
            return
        if _open_progress:
            stream.write("\r\033[K")
            _open_progress = False
        stream.write(text + "\n")
        stream.flush()
