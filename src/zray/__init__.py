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


def to_qp(source, bins=None, *, ids=None, z_spec=None):
    """zray PDFs as a qp ensemble (RAIL's format), point estimates under RAIL's names.

    ``source``: a predictions file of ``zray predict``, or PDFs ``(N, n_bins)``
    with ``bins`` (a bundle or its ``bins``). Needs ``pip install "zray[rail]"``;
    see :func:`zray.qp_format.to_qp`.

        >>> ens = zray.to_qp("pz.parquet")          # doctest: +SKIP
        >>> ens.write_to("pz.hdf5")                 # doctest: +SKIP
    """
    from zray.qp_format import to_qp as _to_qp

    return _to_qp(source, bins, ids=ids, z_spec=z_spec)
