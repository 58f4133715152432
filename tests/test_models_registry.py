"""Every registered model: shape of the PDF, save/load round trip, registry errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zray.bins import RedshiftBins
from zray.errors import ZrayError
from zray.models import (
    ModelSpec,
    available_models,
    build_model,
    describe,
    keras,
    load_model,
    model_hyperparameters,
    read_info,
    resolve_hyperparameters,
    save_model,
)

SPEC = ModelSpec(image_size=16, n_bands=5, bins=RedshiftBins(0.0, 0.4, 24))
TINY = {"filters": 2, "blocks": 1, "dense_units": 4}  # a cnn that builds in milliseconds


def _batch(n: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(size=(n, 16, 16, 5)).astype("float32"),
        "ebv": rng.uniform(0, 0.1, size=(n, 1)).astype("float32"),
    }


@pytest.fixture(autouse=True)
def _fresh_graph():
    yield
    keras().backend.clear_session()


def test_builtin_models_are_registered():
    assert {"inception", "cnn"} <= set(available_models())
    assert model_hyperparameters("inception") == {"dense_units": 1096, "dropout": 0.0}
    assert "Pasquet" in describe("inception")


@pytest.mark.parametrize("name", available_models())
def test_pdf_over_bins_and_save_load_round_trip(name, tmp_path):
    model = build_model(name, None, SPEC)
    batch = _batch()
    pdf = model.predict(batch, verbose=0)
    assert pdf.shape == (4, SPEC.bins.n_bins)
    np.testing.assert_allclose(pdf.sum(axis=1), 1.0, rtol=1e-5)
    assert (pdf >= 0).all()

    saved = save_model(model, tmp_path / "saved", name, None, SPEC)
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "weights.weights.h5"]
    loaded, info = load_model(saved)
    assert info.name == name and info.spec == SPEC
    assert info.hyperparameters == model_hyperparameters(name)
    np.testing.assert_array_equal(loaded.predict(batch, verbose=0), pdf)


def test_hyperparameters_are_saved_and_used(tmp_path):
    model = build_model("cnn", {"filters": 4, "blocks": 2, "dense_units": 8}, SPEC)
    save_model(model, tmp_path / "m", "cnn", {"filters": 4, "blocks": 2, "dense_units": 8}, SPEC)
    loaded, info = load_model(tmp_path / "m")
    assert info.hyperparameters["filters"] == 4
    save_model(loaded, tmp_path / "m", "cnn", info.hyperparameters, SPEC)  # replaces in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert loaded.get_layer("fc1").units == 8
    np.testing.assert_array_equal(
        loaded.predict(_batch(), verbose=0), model.predict(_batch(), verbose=0)
    )


def test_unknown_model_lists_known_ones():
    with pytest.raises(ZrayError, match=r"unknown model 'foo'; known models: .*cnn.*inception"):
        build_model("foo")


def test_unknown_hyperparameter_is_named_with_the_valid_ones():
    with pytest.raises(
        ZrayError, match=r"'inception' has no hyperparameter 'units'.*dense_units, dropout"
    ):
        build_model("inception", {"units": 10}, SPEC)


@pytest.mark.parametrize(
    ("hp", "message"),
    [
        ({"dense_units": 12.5}, r"'dense_units' must be of type int, got 12.5 \(float\)"),
        ({"dense_units": 0}, r"'dense_units' must be a positive integer, got 0"),
        ({"dropout": 1.0}, r"'dropout' must be in \[0, 1\), got 1.0"),
        ({"dropout": "0.1"}, r"'dropout' must be of type float, got '0.1' \(str\)"),
    ],
)
def test_bad_hyperparameter_values_say_what_was_expected(hp, message):
    with pytest.raises(ZrayError, match=message):
        build_model("inception", hp, SPEC)


def test_int_is_accepted_for_a_float_default():
    assert resolve_hyperparameters("inception", {"dropout": 0})["dropout"] == 0.0


def test_bad_spec_is_a_user_error():
    with pytest.raises(ZrayError, match="image_size must be a positive integer"):
        ModelSpec(image_size=0)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(ZrayError, match=r"model.json: not found"):
        load_model(tmp_path / "nowhere")
    model = build_model("cnn", TINY, SPEC)
    saved = save_model(model, tmp_path / "m", "cnn", TINY, SPEC)
    weights = saved / "weights.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ZrayError, match=r"weights.weights.h5: checksum differs"):
        load_model(saved)
    weights.unlink()
    with pytest.raises(ZrayError, match=r"weights.weights.h5: not found"):
        load_model(saved)
    (saved / "model.json").write_text("{not json")
    with pytest.raises(ZrayError, match=r"model.json: unreadable"):
        read_info(saved)
    (saved / "model.json").write_text(json.dumps({"format": 1, "model": "nope"}))
    with pytest.raises(ZrayError, match=r"model.json: missing or malformed field"):
        read_info(saved)


def test_a_model_without_its_checksum_is_refused(tmp_path):
    model = build_model("cnn", TINY, SPEC)
    saved = save_model(model, tmp_path / "m", "cnn", TINY, SPEC)
    info = json.loads((saved / "model.json").read_text())
    del info["weights_sha256"]
    (saved / "model.json").write_text(json.dumps(info))
    weights = saved / "weights.weights.h5"
    weights.write_bytes(bytes(len(weights.read_bytes())))  # zeroed: would load, and predict nonsense
    with pytest.raises(ZrayError, match=r"model.json: no weights_sha256; expected the checksum zray writes"):
        load_model(saved)


def test_save_refuses_to_replace_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    model = build_model("cnn", TINY, SPEC)
    with pytest.raises(ZrayError, match="is not a saved zray model"):
        save_model(model, tmp_path, "cnn", None, SPEC)
    assert (tmp_path / "precious.txt").exists()
