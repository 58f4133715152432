"""cnn_phot measures the same photometry inside the network as the kNN reference does in numpy."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from zray.bins import RedshiftBins
from zray.data.pipeline import preprocess_batch
from zray.errors import ZrayError
from zray.models import ModelSpec, build_model, keras, load_model, read_info, save_model
from zray.models.cnn_phot import (
    COLOUR_CENTRE,
    COLOUR_SCALE,
    R_CENTRE,
    R_SCALE,
    photometry_features,
    scale_colours,
)
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


def test_the_dense_branch_sees_colours_centred_and_of_unit_spread(sim_data):
    from zray.data import load_arrays

    raw = load_arrays(sim_data, "val")
    scaled = preprocess_batch(raw)["image"]
    ebv = raw["ebv"][:, None].astype("float32")
    features = photometry_features(scaled, ebv, apertures=2).numpy()
    out = np.asarray(scale_colours(features, apertures=2))
    for a in (0, 5):  # each aperture's four colours; the r term passes unchanged
        np.testing.assert_allclose(out[:, a:a + 4], (features[:, a:a + 4] - COLOUR_CENTRE) / COLOUR_SCALE,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out[:, a + 4], features[:, a + 4])
    # On the simulated Main Galaxy Sample every colour lands near 0 with a spread near 1
    # (unscaled, r-i and i-z spread over ~0.1 mag: what made the branch learn slowly).
    colours_only = out[:, :4]
    assert np.all(np.abs(np.median(colours_only, axis=0)) < 0.75), np.median(colours_only, axis=0)
    assert np.all((colours_only.std(axis=0) > 0.5) & (colours_only.std(axis=0) < 2.0)), colours_only.std(axis=0)
    # The model's layer applies it by default, and not when told not to.
    x = [scaled[:8], ebv[:8]]
    for flag, expected in ((True, out[:8, :5]), (False, features[:8, :5])):
        model = build_model("cnn_phot", {"filters": 2, "blocks": 1, "phot_units": 4, "scaled_colours": flag},
                            ModelSpec(image_size=32))
        np.testing.assert_allclose(model.get_layer("aperture_photometry")(x).numpy(), expected, atol=1e-5)


def test_a_cnn_phot_saved_before_scaled_colours_existed_loads_as_it_was_trained(tmp_path):
    spec = ModelSpec(image_size=16)
    rng = np.random.default_rng(1)
    x = [rng.normal(2.0, 1.0, size=(6, 16, 16, 5)).astype("float32"), np.full((6, 1), 0.02, "float32")]
    old = build_model("cnn_phot", {"filters": 2, "blocks": 1, "phot_units": 4, "scaled_colours": False}, spec)
    save_model(old, tmp_path / "old", "cnn_phot", {"filters": 2, "blocks": 1, "phot_units": 4,
                                                     "scaled_colours": False}, spec)
    # What an earlier zray wrote: every hyperparameter it knew, this one not among them.
    info_file = tmp_path / "old" / "model.json"
    info = json.loads(info_file.read_text())
    del info["hyperparameters"]["scaled_colours"]
    info_file.write_text(json.dumps(info))
    assert read_info(tmp_path / "old").hyperparameters["scaled_colours"] is False
    loaded, _ = load_model(tmp_path / "old")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), old.predict(x, verbose=0), atol=1e-6)
    # A model saved now records the value it was built with.
    save_model(build_model("cnn_phot", {"filters": 2, "blocks": 1, "phot_units": 4}, spec), tmp_path / "new",
               "cnn_phot", {"filters": 2, "blocks": 1, "phot_units": 4}, spec)
    assert json.loads((tmp_path / "new" / "model.json").read_text())["hyperparameters"]["scaled_colours"] is True


def test_jobs_record_every_model_hyperparameter_and_resume_only_the_same_model(tmp_path):
    from zray import config
    from zray.train import job_for, model_hp
    from zray.train.checkpoints import check_resumable

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "model": "cnn_phot", "data": {"path": str(tmp_path), "image_size": 32},
                                    "fixed": {"filters": 8}}))
    space = config.load(path)
    job = job_for(space, space.default_hyperparameters(), "0" * 16)
    assert job.hyperparameters["scaled_colours"] is True and job.hyperparameters["phot_units"] == 64
    assert job.hyperparameters["filters"] == 8
    # A checkpoint of this job resumes it.
    check_resumable(tmp_path, {"job": dataclasses.asdict(job)}, job)
    # A job recorded before scaled_colours existed was trained without it: it neither
    # rebuilds with today's default nor resumes into a run that would use it.
    before = {**dataclasses.asdict(job), "hyperparameters": {k: v for k, v in job.hyperparameters.items()
                                                             if k != "scaled_colours"}}
    assert model_hp(type(job)(**before))["scaled_colours"] is False
    with pytest.raises(ZrayError, match=r"checkpoint is of a cnn_phot with .*'scaled_colours': False.*expected "
                                        r"the same model to resume"):
        check_resumable(tmp_path / "ckpt", {"job": before}, job)
    with pytest.raises(ZrayError, match="expected the same data to resume"):
        check_resumable(tmp_path / "ckpt", {"job": {**dataclasses.asdict(job), "manifest_hash": "1" * 16}}, job)
    # A state.json whose job is cut short or of another shape: one sentence naming the file.
    for broken in ({"job": {"model": "cnn_phot"}}, {"job": ["cnn_phot"]}, {}):
        with pytest.raises(ZrayError, match=r"state.json: missing or malformed job"):
            check_resumable(tmp_path / "ckpt", broken, job)
