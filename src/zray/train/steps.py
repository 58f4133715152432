"""The TensorFlow pieces of training, each testable without Ray.

The worker loop (:mod:`zray.train.worker`) wires these together inside a Ray
Train worker; a test or a notebook can build a model and call them directly:

    >>> import numpy as np
    >>> from zray.bins import RedshiftBins
    >>> from zray.models import ModelSpec, build_model, keras
    >>> from zray.train import steps
    >>> model = build_model("cnn", {"filters": 8, "blocks": 2, "dense_units": 16},
    ...                     ModelSpec(image_size=16))
    >>> optimizer = keras().optimizers.Adam(1e-3)
    >>> step = steps.make_train_step(model, optimizer, steps.make_loss(RedshiftBins(), 0.01))
    >>> loss = step(np.zeros((4, 16, 16, 5), np.float32), np.zeros((4, 1), np.float32),
    ...             np.full(4, 0.1, np.float32), np.array([0, 1]), np.int32(4))
    >>> float(loss) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from zray.models import keras

k = keras()  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
import tensorflow as tf  # noqa: E402

from zray import metrics  # noqa: E402
from zray.bins import RedshiftBins  # noqa: E402

__all__ = [
    "dihedral",
    "make_loss",
    "make_train_step",
    "make_predict_step",
    "validate",
    "set_precision",
    "weights_checksum",
]


def dihedral(image, seed):
    """Random 90-degree rotations and flips: the 8 symmetries of a square, per image.

    ``image`` is ``(N, H, W, C)`` with H == W; ``seed`` a pair of ints (a
    stateless seed: the same seed gives the same transforms).
    """
    n = tf.shape(image)[0]
    draws = tf.random.stateless_uniform([3, n], seed=seed) < 0.5
    transpose, flip_h, flip_w = draws[0], draws[1], draws[2]
    shape = tf.stack([n, 1, 1, 1])
    image = tf.where(tf.reshape(transpose, shape), tf.transpose(image, [0, 2, 1, 3]), image)
    image = tf.where(tf.reshape(flip_h, shape), tf.reverse(image, [1]), image)
    return tf.where(tf.reshape(flip_w, shape), tf.reverse(image, [2]), image)


def make_loss(bins: RedshiftBins, label_sigma: float) -> Callable:
    """``loss_per_row(z, probs)``: cross-entropy against the one-hot bin of z
    (``label_sigma`` 0), or against a Gaussian of width ``label_sigma`` over the bins."""
    n_bins, z_min, width = bins.n_bins, float(bins.z_min), float(bins.width)
    centres = tf.constant(bins.centres, dtype=tf.float32)
    label_sigma = float(label_sigma)

    def loss_per_row(z, probs):
        if label_sigma > 0:
            target = tf.exp(-0.5 * tf.square((centres[None, :] - z[:, None]) / label_sigma))
            target = target / tf.reduce_sum(target, axis=1, keepdims=True)
            return k.losses.categorical_crossentropy(target, probs)
        idx = tf.cast(tf.floor((z - z_min) / width), tf.int32)
        return k.losses.sparse_categorical_crossentropy(tf.clip_by_value(idx, 0, n_bins - 1), probs)

    return loss_per_row


def make_train_step(model, optimizer, loss_per_row: Callable, *, strategy=None, augment: bool = True,
                    mixed: bool = False) -> Callable:
    """A compiled ``train_step(image, ebv, z, seed, global_rows) -> loss``.

    The loss is the sum over this replica's rows divided by ``global_rows``
    (the global batch), so the all-reduced sum is the global mean whatever the
    number of workers. ``strategy`` defaults to TensorFlow's current one (a
    single device outside a ``MultiWorkerMirroredStrategy`` scope).
    """
    strategy = strategy or tf.distribute.get_strategy()

    def step(image, ebv, z, seed, global_rows):
        if augment:
            image = dihedral(image, seed)
        with tf.GradientTape() as tape:
            probs = model([image, ebv], training=True)
            per_row = loss_per_row(tf.cast(z, tf.float32), probs)
            loss = tf.reduce_sum(per_row) / tf.cast(global_rows, tf.float32)
            scaled = optimizer.get_scaled_loss(loss) if mixed else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        if mixed:
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def train_step(image, ebv, z, seed, global_rows):
        per_replica = strategy.run(step, args=(image, ebv, z, seed, global_rows))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def make_predict_step(model) -> Callable:
    """A compiled ``predict_step(image, ebv) -> PDFs``."""

    @tf.function(reduce_retracing=True)
    def predict_step(image, ebv):
        return model([image, ebv], training=False)

    return predict_step


def validate(batches: Iterable[dict[str, np.ndarray]], predict_step: Callable,
             bins: RedshiftBins) -> dict[str, Any]:
    """The validation metrics (``val_*``, see :data:`zray.metrics.VALIDATION_METRICS`)
    of ``predict_step`` on numpy batches with image, ebv and z_spec."""
    pdfs, zs = [], []
    for batch in batches:
        ebv = batch["ebv"].reshape(-1, 1).astype(np.float32)
        pdfs.append(np.asarray(predict_step(batch["image"], ebv)))
        zs.append(batch["z_spec"])
    pdf = np.concatenate(pdfs).astype(np.float64)
    z = np.concatenate(zs).astype(np.float64)
    return metrics.validation_metrics(pdf, bins, z)


def set_precision(job, k, tf) -> str:
    """Set tf_keras' global dtype policy for ``job``; return its name.

    ``mixed_float16`` only when the job asks for mixed precision and this
    worker has a GPU (on CPUs float16 is slower, not faster); the models'
    ``pdf`` softmax is float32 under either policy. Set before the model is
    built: layers take the policy in force when they are created.
    """
    name = "float32"
    if job.mixed_precision and job.gpus_per_worker > 0 and tf.config.list_physical_devices("GPU"):
        name = "mixed_float16"
    k.mixed_precision.set_global_policy(name)
    return name


def weights_checksum(model) -> float:
    """Sum of every weight, in float64: equal weights give equal sums."""
    return float(sum(np.asarray(w, dtype=np.float64).sum() for w in model.get_weights()))
