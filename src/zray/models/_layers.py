"""Pieces every model type shares: the two inputs and the PDF head.

Sharing them is what lets training, export and predict treat every model the
same: inputs named ``image`` (H, W, bands; channels last) and ``ebv`` (1,),
and one output ``pdf``, a softmax over the redshift bins computed in float32.
The ``logits`` layer before it stays reachable by name for anyone who wants a
numerically safer loss.
"""

from __future__ import annotations

from zray.models._backend import keras


def inputs(spec):
    """The ``image`` and ``ebv`` inputs for data described by ``spec``."""
    k = keras()
    image = k.Input(shape=(spec.image_size, spec.image_size, spec.n_bands), name="image")
    ebv = k.Input(shape=(1,), name="ebv")
    return image, ebv


def pdf_head(features, ebv, spec, dense_units: int, n_dense: int, dropout: float, extra=()):
    """Flatten, join E(B-V) (and any ``extra`` feature vectors), ``n_dense`` ReLU
    layers, then logits and softmax over the bins.

    E(B-V) joins after the convolutions, as in Pasquet et al. 2019: it is a
    property of the line of sight, not of any pixel.
    """
    layers = keras().layers
    x = layers.Flatten(name="flatten")(features)
    x = layers.Concatenate(name="join_ebv")([x, ebv, *extra])
    for i in range(1, n_dense + 1):
        x = layers.Dense(dense_units, activation="relu", name=f"fc{i}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    logits = layers.Dense(spec.bins.n_bins, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="pdf")(logits)


def check_dense(model: str, hp: dict) -> None:
    """Shared range checks for the head's hyperparameters."""
    from zray.models._registry import invalid

    if hp["dense_units"] < 1:
        raise invalid(model, "dense_units", "a positive integer", hp["dense_units"])
    if not 0.0 <= hp["dropout"] < 1.0:
        raise invalid(model, "dropout", "in [0, 1)", hp["dropout"])
