"""Pasquet et al. 2019 (A&A 621, A26) Inception network, translated exactly.

The facts (docs/architecture.md, section 4) come from the authors' public code; an
earlier translation got them wrong, so tests check the parameter count
(27,596,372 at 64x64x5 with 180 bins) and the structure layer by layer.
Layer names say where each layer sits: ``i2_b_5x5`` is block I2's branch (b)
5x5 convolution, ``i2_b_5x5_prelu`` its activation.
"""

from __future__ import annotations

from zray.models._backend import keras
from zray.models._layers import check_dense, inputs, pdf_head
from zray.models._registry import register

# (name, s1, s2, has the 5x5 branch); None marks a 2x2/2 average pooling.
_BLOCKS = (
    ("i0", 48, 64, True),
    ("i1", 64, 92, True),
    None,
    ("i2", 92, 128, True),
    ("i3", 92, 128, True),
    None,
    ("i4", 92, 128, False),
)


def _conv(x, filters: int, size: int, name: str):
    """Stride-1 SAME convolution, Glorot init, bias 0.1, PReLU with one alpha per channel."""
    k = keras()
    x = k.layers.Conv2D(
        filters,
        size,
        strides=1,
        padding="same",
        kernel_initializer="glorot_uniform",
        bias_initializer=k.initializers.Constant(0.1),
        name=name,
    )(x)
    return k.layers.PReLU(alpha_initializer="zeros", shared_axes=[1, 2], name=f"{name}_prelu")(x)


def _block(x, name: str, s1: int, s2: int, with_5x5: bool):
    """Inception block; branches concatenated in the reference order (d), (b), (a), (c)."""
    layers = keras().layers
    branches = [_conv(x, s2, 1, f"{name}_d_1x1")]
    if with_5x5:
        b = _conv(x, s1, 1, f"{name}_b_1x1")
        branches.append(_conv(b, s2, 5, f"{name}_b_5x5"))
    a = _conv(x, s1, 1, f"{name}_a_1x1")
    branches.append(_conv(a, s2, 3, f"{name}_a_3x3"))
    c = _conv(x, s1, 1, f"{name}_c_1x1")  # (c) pools *after* its 1x1 convolution
    branches.append(layers.AveragePooling2D(2, strides=1, padding="same", name=f"{name}_c_pool")(c))
    return layers.Concatenate(name=f"{name}_concat")(branches)


@register(
    "inception",
    hyperparameters={"dense_units": 1096, "dropout": 0.0},
    description="Pasquet et al. 2019 Inception (27.6 M parameters at 64x64x5, 180 bins)",
)
def build(hp: dict, spec):
    """Build the Pasquet et al. 2019 network; the defaults are the paper's."""
    check_dense("inception", hp)
    k = keras()
    image, ebv = inputs(spec)
    x = _conv(image, 64, 5, "conv0")
    x = k.layers.AveragePooling2D(2, strides=2, padding="same", name="pool0")(x)
    n_pool = 0
    for block in _BLOCKS:
        if block is None:
            n_pool += 1
            x = k.layers.AveragePooling2D(2, strides=2, padding="same", name=f"pool{n_pool}")(x)
        else:
            x = _block(x, *block)
    pdf = pdf_head(x, ebv, spec, hp["dense_units"], n_dense=2, dropout=hp["dropout"])
    return k.Model(inputs=[image, ebv], outputs=pdf, name="inception")
