"""A small convolutional baseline that trains in minutes on a laptop CPU.

It exists for the quickstart and for checking a pipeline end to end before
paying for the Inception network: a few blocks of two 3x3 convolutions and a
2x2 average pooling, with the filters doubling at each block, then the same
E(B-V) join and PDF head as every zray model.
"""

from __future__ import annotations

from zray.models._backend import keras
from zray.models._layers import check_dense, inputs, pdf_head
from zray.models._registry import invalid, register


@register(
    "cnn",
    hyperparameters={"filters": 32, "blocks": 3, "dense_units": 256, "dropout": 0.0},
    description="small fast CNN baseline: blocks of two 3x3 convolutions and pooling",
)
def build(hp: dict, spec):
    """Build the baseline: ``blocks`` x (conv, conv, pool), filters doubling each block."""
    check_dense("cnn", hp)
    check_conv("cnn", hp)
    image, ebv = inputs(spec)
    x = conv_blocks(image, hp["filters"], hp["blocks"])
    pdf = pdf_head(x, ebv, spec, hp["dense_units"], n_dense=1, dropout=hp["dropout"])
    return keras().Model(inputs=[image, ebv], outputs=pdf, name="cnn")


def check_conv(model: str, hp: dict) -> None:
    """Range checks of the convolutional blocks' hyperparameters."""
    for key in ("filters", "blocks"):
        if hp[key] < 1:
            raise invalid(model, key, "a positive integer", hp[key])


def conv_blocks(x, filters: int, blocks: int):
    """``blocks`` x (3x3 conv, 3x3 conv, 2x2 average pooling), filters doubling each block."""
    layers = keras().layers
    for i in range(blocks):
        for j in (1, 2):
            x = layers.Conv2D(
                filters * 2**i, 3, padding="same", activation="relu", name=f"block{i}_conv{j}"
            )(x)
        x = layers.AveragePooling2D(2, padding="same", name=f"block{i}_pool")(x)
    return x
