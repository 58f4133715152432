"""The small CNN plus a photometry branch: images and colours, both from the cutout.

With a few thousand training galaxies a CNN alone learns colours slowly: the
redshift lives mostly in flux ratios between bands, which convolutions must
discover from pixels. This model measures them directly, inside the network,
from the same cutout: aperture fluxes, SDSS asinh magnitudes, dereddening
with the E(B-V) input, then the colours u-g, g-r, r-i, i-z and the r
magnitude (:mod:`zray.photometry`, the same measurement as the kNN reference
predictor), in one aperture or, with ``apertures: 2`` or ``3``, also in
half and twice that radius (colour gradients and concentration). A small
dense branch on these joins the convolutional features before the PDF head
(as in GaZNet, Li et al. 2022, which fed a network both images and photometry).
The branch sees each colour centred and divided by its spread in the SDSS
Main Galaxy Sample (``scaled_colours``): r-i and i-z, which carry much of the
redshift, spread over a tenth of a magnitude, and unscaled a dense layer
learns from them several times more slowly.

Because the measurement is a layer of the model, training, ``zray predict``
and ``zray evaluate`` compute it identically, for simulated and for ``zray
prepare``d cutouts, and nobody supplies catalogue magnitudes. It undoes the
input scaling ``sign(x)(sqrt(|x|+1)-1)`` of :func:`zray.data.scale_pixels`
to recover nanomaggies first.
"""

from __future__ import annotations

import numpy as np

from zray.data.population import EXTINCTION_R
from zray.data.shards import BANDS, PIXEL_SCALE
from zray.models._backend import keras
from zray.models._layers import check_dense, inputs, pdf_head
from zray.models._registry import invalid, register
from zray.models.cnn import check_conv, conv_blocks
from zray.photometry import SOFTENING, aperture_mask

# r magnitudes of the Main Galaxy Sample span about 14-17.8: centred and scaled to ~unit range.
R_CENTRE, R_SCALE = 17.0, 2.0
# Centre and spread of the colours u-g, g-r, r-i, i-z in the Main Galaxy Sample
# (0 < z < 0.4): what ``scaled_colours`` subtracts and divides by.
COLOUR_CENTRE = (1.3, 0.7, 0.35, 0.25)
COLOUR_SCALE = (0.4, 0.3, 0.1, 0.07)


# Aperture radii as multiples of the standard 3 arcsec: the first is the kNN
# reference's; more apertures add colour gradients and light concentration,
# which carry the galaxy's angular size.
APERTURE_SCALES = (1.0, 0.5, 2.0)


def photometry_features(image, ebv, apertures: int = 1):
    """(N, 5 * apertures) features of scaled cutouts (N, H, W, 5): per aperture
    [u-g, g-r, r-i, i-z, (r - 17) / 2], dereddened."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    ebv = tf.cast(ebv, tf.float32)
    flux_image = tf.sign(image) * (tf.square(tf.abs(image) + 1.0) - 1.0)  # undo scale_pixels
    b = np.array([SOFTENING[x] for x in BANDS], dtype=np.float32)
    extinction = np.array([EXTINCTION_R[x] for x in BANDS], dtype=np.float32)
    features = []
    for scale in APERTURE_SCALES[:apertures]:
        mask = aperture_mask(int(image.shape[1]), int(image.shape[2]),
                             pixel_scale=PIXEL_SCALE / scale).astype(np.float32)
        flux = tf.reduce_sum(flux_image * mask[None, :, :, None], axis=[1, 2])
        mags = 22.5 - 2.5 / np.log(10.0) * (tf.asinh(flux / (2.0 * b)) + np.log(b)) - ebv * extinction
        features += [mags[:, :-1] - mags[:, 1:], (mags[:, 2:3] - R_CENTRE) / R_SCALE]
    return tf.concat(features, axis=1)


def scale_colours(features, apertures: int = 1):
    """:func:`photometry_features` with every colour centred and divided by its
    spread (``COLOUR_CENTRE``, ``COLOUR_SCALE``); the r term is already scaled."""
    centre = np.tile(np.array([*COLOUR_CENTRE, 0.0], np.float32), apertures)
    scale = np.tile(np.array([*COLOUR_SCALE, 1.0], np.float32), apertures)
    return (features - centre) / scale


def aperture_photometry(apertures: int = 1, scaled: bool = True, name: str = "aperture_photometry"):
    """A weightless layer: inputs [image, ebv] -> :func:`photometry_features`
    (through :func:`scale_colours` when ``scaled``).

    The class is made on first use so that importing the registry does not
    import TensorFlow.
    """
    global _LAYER_CLASS
    if _LAYER_CLASS is None:

        class AperturePhotometry(keras().layers.Layer):
            def __init__(self, apertures: int = 1, scaled: bool = True, **kwargs):
                super().__init__(**kwargs)
                self.apertures = apertures
                self.scaled = scaled

            def call(self, inputs):
                image, ebv = inputs
                features = photometry_features(image, ebv, self.apertures)
                return scale_colours(features, self.apertures) if self.scaled else features

        _LAYER_CLASS = AperturePhotometry
    # float32 whatever the global policy: magnitudes under float16 lose a tenth of a magnitude.
    return _LAYER_CLASS(apertures=apertures, scaled=scaled, name=name, dtype="float32", trainable=False)


_LAYER_CLASS = None


@register(
    "cnn_phot",
    hyperparameters={"filters": 16, "blocks": 2, "dense_units": 128, "dropout": 0.0, "phot_units": 64,
                     "apertures": 1, "scaled_colours": True},
    description="small CNN plus a dense branch on aperture colours measured from the cutout",
    # cnn_phot models saved before scaled_colours existed saw the colours unscaled.
    introduced={"scaled_colours": False},
)
def build(hp: dict, spec):
    """Conv blocks on the image; two ``phot_units`` ReLU layers on its photometry; joined."""
    check_dense("cnn_phot", hp)
    check_conv("cnn_phot", hp)
    if hp["phot_units"] < 1:
        raise invalid("cnn_phot", "phot_units", "a positive integer", hp["phot_units"])
    if not 1 <= hp["apertures"] <= len(APERTURE_SCALES):
        raise invalid("cnn_phot", "apertures", f"1 to {len(APERTURE_SCALES)}", hp["apertures"])
    if spec.n_bands != len(BANDS):
        raise invalid("cnn_phot", "n_bands", f"{len(BANDS)} bands ({','.join(BANDS)})", spec.n_bands)
    layers = keras().layers
    image, ebv = inputs(spec)
    x = conv_blocks(image, hp["filters"], hp["blocks"])
    p = aperture_photometry(hp["apertures"], hp["scaled_colours"])([image, ebv])
    for i in (1, 2):
        p = layers.Dense(hp["phot_units"], activation="relu", name=f"phot_fc{i}")(p)
    pdf = pdf_head(x, ebv, spec, hp["dense_units"], n_dense=1, dropout=hp["dropout"], extra=[p])
    return keras().Model(inputs=[image, ebv], outputs=pdf, name="cnn_phot")
