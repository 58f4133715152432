"""The one place that imports Keras, so every model speaks legacy Keras 2.

Ray Train's ``TensorflowConfig`` sets ``TF_USE_LEGACY_KERAS=1`` in every
worker of a run of several workers, so those build their models with
``tf_keras``; a lone worker gets it from :func:`keras` (and ``WORKER_ENV``).
Building, saving and loading with the same flavour everywhere else too
(export, predict, evaluate, tests) keeps one weights format throughout.
"""

from __future__ import annotations

import os


def keras():
    """Return the ``tf_keras`` module, making ``tf.keras`` point at it too.

    The environment variable must be set before TensorFlow is first imported;
    doing it here, lazily, keeps ``import zray`` and ``zray --help`` free of
    TensorFlow's multi-second import.
    """
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tf_keras

    return tf_keras
