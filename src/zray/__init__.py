"""zray: photometric redshifts from galaxy cutouts, trained and tuned on Ray."""

__version__ = "0.1.0"


def load(path):
    """Load an export bundle: ``zray.load("best/").predict(images, ebv)`` -> PDFs.

    ``images`` are raw cutouts ``(N, 5, H, W)`` in nanomaggies as in the
    shards (the bundle scales and crops them); see :class:`zray.bundle.Bundle`.
    TensorFlow is imported here, not by ``import zray``.
    """
    from zray.bundle import load as _load

    return _load(path)
