"""The one place that imports Keras, so every model speaks legacy Keras 2.

Ray's TensorFlow workers set ``TF_USE_LEGACY_KERAS=1`` because Keras 3 breaks
``model.fit`` under ``MultiWorkerMirroredStrategy`` (docs/architecture.md, section 2).
Building, saving and loading with the same flavour everywhere (workers,
export, predict) keeps one weights format throughout.
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
