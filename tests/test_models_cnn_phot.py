"""cnn_phot measures the same photometry inside the network as the kNN reference does in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from zray.bins import RedshiftBins
from zray.data.pipeline import preprocess_batch
from zray.models import ModelSpec, build_model, keras
from zray.models.cnn_phot import R_CENTRE, R_SCALE, photometry_features
from zray.photometry import aperture_magnitudes, colours


@pytest.fixture(autouse=True)
def _fresh_graph():
    yield
    keras().backend.clear_session()


def test_photometry_layer_equals_the_numpy_measurement(sim_data):
    from zray.data import load_arrays

    raw = load_arrays(sim_data, "val")
    scaled = preprocess_batch(raw)["image"]  # what the network receives
    features = photometry_features(scaled, raw["ebv"][:, None].astype("float32")).numpy()
    mags = aperture_magnitudes(raw["image"], raw["ebv"])
    np.testing.assert_allclose(features[:, :4], colours(mags), atol=2e-4)
    np.testing.assert_allclose(features[:, 4], (mags[:, 2] - R_CENTRE) / R_SCALE, atol=2e-4)
    # A centred circular aperture: the dihedral augmentation leaves the photometry unchanged.
    turned = np.ascontiguousarray(np.rot90(scaled, 1, axes=(1, 2))[:, :, ::-1])
    np.testing.assert_allclose(photometry_features(turned, raw["ebv"][:, None]).numpy(), features, atol=1e-4)
    # Three apertures: the standard one first, then half and twice its radius.
    three = photometry_features(scaled, raw["ebv"][:, None].astype("float32"), apertures=3).numpy()
    assert three.shape == (len(raw["id"]), 15)
    np.testing.assert_allclose(three[:, :5], features, atol=1e-6)
    wide = aperture_magnitudes(raw["image"], raw["ebv"], pixel_scale=0.396 / 2.0)
    np.testing.assert_allclose(three[:, 10:14], colours(wide), atol=2e-4)
    # Galaxies are extended: twice the radius collects more light, a brighter r magnitude.
    assert np.mean(three[:, 14] < three[:, 4]) > 0.95


def test_the_photometry_branch_joins_the_head():
    model = build_model("cnn_phot", {"filters": 2, "blocks": 1, "phot_units": 8},
                        ModelSpec(image_size=32, bins=RedshiftBins()))
    assert model.get_layer("aperture_photometry").trainable_weights == []
    joined = model.get_layer("join_ebv").input
    assert len(joined) == 3 and joined[2].shape[-1] == 8  # conv features, E(B-V), photometry
    # The photometry branch carries gradient to the PDF: its first layer's weights matter.
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 32, 32, 5)).astype("float32")
    ebv = np.full((4, 1), 0.03, "float32")
    base = model.predict([image, ebv], verbose=0)
    layer = model.get_layer("phot_fc1")
    layer.set_weights([w * 0 for w in layer.get_weights()])
    assert np.abs(model.predict([image, ebv], verbose=0) - base).max() > 1e-7
