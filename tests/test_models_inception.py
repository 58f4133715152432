"""The Inception is Pasquet et al. 2019 exactly: parameter count and structure."""

from __future__ import annotations

import pytest

from zray.models import build_model, count_parameters, keras

BLOCKS = ("i0", "i1", "i2", "i3", "i4")


@pytest.fixture(scope="module")
def model():
    """Built once at the paper's size, 64x64x5 with 180 bins (the defaults)."""
    built = build_model("inception")
    yield built
    keras().backend.clear_session()


def _sources(layer) -> list[str]:
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    return [t._keras_history.layer.name for t in inputs]


def _count(model, layer_name: str) -> int:
    return sum(int(w.shape.num_elements()) for w in model.get_layer(layer_name).trainable_weights)


def test_exact_parameter_count(model):
    assert count_parameters(model) == 27_596_372
    dense = sum(_count(model, n) for n in ("fc1", "fc2", "logits"))
    assert dense == 25_812_076


def test_inputs_output_and_head(model):
    assert [t.name.split(":")[0] for t in model.inputs] == ["image", "ebv"]
    assert tuple(model.inputs[0].shape) == (None, 64, 64, 5)
    assert tuple(model.output.shape) == (None, 180)
    assert model.get_layer("flatten").output.shape[-1] == 22_272
    assert _sources(model.get_layer("join_ebv")) == ["flatten", "ebv"]
    for name in ("fc1", "fc2"):
        layer = model.get_layer(name)
        assert layer.units == 1096 and layer.activation.__name__ == "relu"
    assert model.get_layer("logits").activation.__name__ == "linear"
    assert model.get_layer("pdf").activation.__name__ == "softmax"


def test_every_conv_is_stride_1_same_glorot_bias_01_with_per_channel_prelu(model):
    k = keras()
    convs = [layer for layer in model.layers if isinstance(layer, k.layers.Conv2D)]
    assert len(convs) == 1 + 4 * 6 + 4  # conv0; I0-I3 six convolutions each; I4 four
    for conv in convs:
        assert conv.strides == (1, 1) and conv.padding == "same"
        assert isinstance(conv.kernel_initializer, k.initializers.GlorotUniform)
        assert float(conv.bias_initializer.value) == pytest.approx(0.1)
        prelu = model.get_layer(f"{conv.name}_prelu")
        assert _sources(prelu) == [conv.name]
        assert tuple(prelu.alpha.shape) == (1, 1, conv.filters)
        assert not prelu.get_weights()[0].any()  # alpha initialised to 0


def test_only_average_pooling_with_same_padding(model):
    k = keras()
    pools = [layer for layer in model.layers if "pool" in layer.name.lower()]
    assert pools and all(isinstance(p, k.layers.AveragePooling2D) for p in pools)
    assert all(p.padding == "same" for p in pools)
    assert not any(isinstance(layer, k.layers.MaxPooling2D) for layer in model.layers)
    assert model.get_layer("pool0").output.shape[1:3] == (32, 32)
    assert model.get_layer("pool1").output.shape[1:3] == (16, 16)
    assert model.get_layer("pool2").output.shape[1:3] == (8, 8)


@pytest.mark.parametrize("block", BLOCKS)
def test_branch_order_and_pooling_after_1x1(model, block):
    expected = [
        f"{block}_d_1x1_prelu",
        f"{block}_b_5x5_prelu",
        f"{block}_a_3x3_prelu",
        f"{block}_c_pool",
    ]
    if block == "i4":  # the last block has no 5x5 branch
        expected.remove("i4_b_5x5_prelu")
    assert _sources(model.get_layer(f"{block}_concat")) == expected
    pool = model.get_layer(f"{block}_c_pool")
    assert _sources(pool) == [f"{block}_c_1x1_prelu"]
    assert pool.pool_size == (2, 2) and pool.strides == (1, 1)
    assert _sources(model.get_layer(f"{block}_a_3x3")) == [f"{block}_a_1x1_prelu"]
    if block != "i4":
        assert _sources(model.get_layer(f"{block}_b_5x5")) == [f"{block}_b_1x1_prelu"]


def test_block_widths(model):
    widths = {b: model.get_layer(f"{b}_concat").output.shape[-1] for b in BLOCKS}
    assert widths == {"i0": 240, "i1": 340, "i2": 476, "i3": 476, "i4": 348}
    assert not any(layer.name.startswith("i4_b_") for layer in model.layers)
    assert model.get_layer("i4_a_3x3").kernel_size == (3, 3)
    assert model.get_layer("i0_b_5x5").kernel_size == (5, 5)
