"""How the Ray Train workers of a run find each other, without TensorFlow in the driver.

``MultiWorkerMirroredStrategy`` reads the cluster from ``TF_CONFIG``: every
worker's ``host:port`` and its own index. :class:`TensorflowSetup` writes it
into each worker before the training loop starts. Ray's own
``TensorflowTrainer`` does the same, but its package imports TensorFlow, and
so would every process that unpickles its backend config: the Tune trial and
Ray Train's controller paid 3-4 s each for it, per trial, before any worker
started. Here only the workers import TensorFlow, and they start importing
it as soon as their ``TF_CONFIG`` is set (:func:`start_importing`), while
Ray Train still sets up the rest of the run.
"""

from __future__ import annotations

import json
import os
import socket
import threading

import ray
from ray.train.backend import Backend, BackendConfig

__all__ = ["TensorflowSetup", "start_importing"]


class TensorflowSetup(BackendConfig):
    """Ray Train backend config: ``TF_CONFIG`` per worker, TensorFlow imported early."""

    @property
    def backend_cls(self):
        return _TensorflowBackend

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TENSORFLOW


class _TensorflowBackend(Backend):
    def on_start(self, worker_group, backend_config: BackendConfig) -> None:
        endpoints = worker_group.execute(_endpoint)
        # Ordered by world rank: worker i is task i of the TensorFlow cluster.
        ray.get([
            worker_group.execute_single_async(rank, _set_tf_config, endpoints=endpoints, index=rank)
            for rank in range(len(worker_group))
        ])


def _endpoint() -> str:
    """``host:port`` where this worker's TensorFlow collectives will listen (a free port now)."""
    host = ray.util.get_node_ip_address()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _set_tf_config(endpoints: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": endpoints}, "task": {"type": "worker", "index": index}})
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    start_importing()


_importing = threading.Lock()
_started = False


def start_importing() -> None:
    """Import the training loop (and TensorFlow, 2-3 s) in the background, once.

    Called when the backend has set the worker up, while Ray Train goes on
    with the rest of the run's set-up (its data, callbacks). The loop's own
    import then finds the module loaded, or waits on Python's import lock for
    the rest of it: never a half-imported module.
    """
    global _started
    with _importing:
        if _started:
            return
        _started = True
    threading.Thread(target=_import_worker, name="zray-import-tensorflow", daemon=True).start()


def _import_worker() -> None:
    try:
        import zray.train.worker  # noqa: F401
    except Exception:  # noqa: BLE001 - the loop's own import raises it again, where Ray reports it
        pass
