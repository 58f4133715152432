"""zray's redshift PDFs in qp, the photo-z field's format, and the field's PDF metrics through qp.

qp (the ``qp-prob`` package) stores ensembles of PDFs; LSST DESC's RAIL reads
and writes its HDF5 files, so a file written here sits beside FlexZBoost's
or BPZ's output in RAIL's evaluation. A zray PDF is a histogram over the
bundle's redshift bins, so it becomes a qp ``hist`` ensemble on the same
edges, exactly (qp keeps densities; zray keeps probabilities per bin:
``density * bin width`` gives zray's row back).

The point estimates go into the ensemble's ancillary table under RAIL's
names (:data:`ANCIL_NAMES`). qp needs Python 3.11 or newer and numpy 2, so it
is an optional extra: ``pip install "zray[rail]"``.

    >>> import zray
    >>> ens = zray.to_qp("pz.parquet")                # a zray predictions file   # doctest: +SKIP
    >>> ens.ancil["zmedian"][:3]                                                 # doctest: +SKIP
    >>> ens.write_to("pz.hdf5")                                                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zray.bins import RedshiftBins
from zray.errors import ZrayError

__all__ = ["ANCIL_NAMES", "QP_SUFFIXES", "QpWriter", "ensemble", "qp_metrics", "require_qp", "to_qp"]

INSTALL = 'pip install "zray[rail]" (qp-prob; Python 3.11 or newer)'
#: File names qp writes as HDF5, the format RAIL reads and writes.
QP_SUFFIXES = (".hdf5", ".h5")
#: RAIL's ancillary column name -> zray's predictions column. z_q16/z_q84 bound the central
#: 68.27% interval (the 15.87% and 84.13% quantiles), z_q2p5/z_q97p5 the central 95%.
ANCIL_NAMES = {
    "id": "id",
    "zmode": "z_mode",
    "zmean": "z_mean",
    "zmedian": "z_median",
    "z_std": "z_std",
    "z_q2p5": "z_lo95",
    "z_q16": "z_lo68",
    "z_q84": "z_hi68",
    "z_q97p5": "z_hi95",
    "odds": "odds",
    "z_draw": "z_draw",
    "redshift": "z_spec",
}


def require_qp(what: str):
    """qp, or one sentence saying that ``what`` needs it and how to install it."""
    try:
        import qp
    except ImportError:
        raise ZrayError(f"{what} needs qp, which is not installed; {INSTALL}") from None
    return qp


def ensemble(columns: dict[str, np.ndarray], bins: RedshiftBins):
    """A qp ``hist`` ensemble from zray prediction columns (``pdf`` plus any of ANCIL_NAMES' values)."""
    qp = require_qp("a qp ensemble")
    pdf = _checked(columns["pdf"], bins)
    density = pdf / pdf.sum(axis=1, keepdims=True) / bins.width
    ens = qp.Ensemble(qp.hist, data={"bins": bins.edges, "pdfs": density})
    ancil = {}
    for rail_name, name in ANCIL_NAMES.items():
        if name in columns:
            values = np.asarray(columns[name])
            if values.dtype.kind == "f":
                values = values.astype(np.float64)
            ancil[rail_name] = values
    if ancil:
        ens.set_ancil(ancil)
    return ens


def _checked(pdf, bins: RedshiftBins) -> np.ndarray:
    """PDF rows as float64 (galaxies, n_bins), or one sentence saying what is wrong with them."""
    pdf = np.atleast_2d(np.asarray(pdf, dtype=np.float64))
    if pdf.ndim != 2 or pdf.shape[1] != bins.n_bins:
        raise ZrayError(f"pdf has shape {pdf.shape}; expected (galaxies, {bins.n_bins}) for these bins")
    bad = ~np.isfinite(pdf).all(axis=1) | (pdf < 0).any(axis=1) | (pdf.sum(axis=1) <= 0)
    if bad.any():
        raise ZrayError(f"PDF row {int(np.argmax(bad))} is empty, negative or not a number; expected "
                        "probabilities per bin")
    return pdf


def to_qp(source, bins: RedshiftBins | Any = None, *, ids=None, z_spec=None, seed: int = 0):
    """zray PDFs as a qp ensemble, point estimates included under RAIL's names.

    ``source`` is either a predictions file of ``zray predict`` (Parquet,
    with its ``pdf`` column; the bins come from its metadata) or an array
    ``(galaxies, n_bins)`` of probabilities per bin, as ``zray.load(...).predict``
    returns, with ``bins`` (a :class:`zray.bins.RedshiftBins`, or a bundle).
    ``ids`` (default 0..N-1) name the galaxies and seed each one's random
    draw; ``z_spec``, when given, is kept as ``redshift``.

        >>> bundle = zray.load("best/")                                    # doctest: +SKIP
        >>> ens = zray.to_qp(bundle.predict(images, ebv), bundle, ids=ids)  # doctest: +SKIP
    """

    if isinstance(source, (str, os.PathLike)):
        if bins is not None or ids is not None or z_spec is not None:
            raise ZrayError("to_qp: a predictions file carries its own bins, ids and z_spec; pass only the file")
        columns, bins = _read_predictions(Path(source))
        return ensemble(columns, bins)
    if bins is None:
        raise ZrayError("to_qp: an array of PDFs needs bins= (a RedshiftBins or a bundle)")
    bins = getattr(bins, "bins", bins)
    pdf = _checked(source, bins)
    ids = np.arange(len(pdf), dtype=np.int64) if ids is None else np.asarray(ids)
    if len(ids) != len(pdf):
        raise ZrayError(f"to_qp: {len(ids)} ids for {len(pdf)} PDFs; expected one id per PDF")
    columns = {"pdf": pdf, "id": ids, **estimate_columns(pdf, bins, ids, seed)}
    if z_spec is not None:
        columns["z_spec"] = np.asarray(z_spec, dtype=np.float64)
    return ensemble(columns, bins)


def estimate_columns(pdf, bins: RedshiftBins, ids, seed: int = 0) -> dict[str, np.ndarray]:
    """zray's point-estimate columns (``z_mean`` ... ``odds``, ``z_draw``) of PDF rows."""
    from zray import metrics as m

    est = m.point_estimates(pdf, bins)
    columns = {f"z_{k}" if k != "odds" else k: v for k, v in est.items()}
    columns["z_draw"] = m.random_draws(pdf, bins, ids, seed)
    return columns


def _read_predictions(path: Path) -> tuple[dict[str, np.ndarray], RedshiftBins]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"zray", b"{}"))
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ZrayError(f"{path}: not a readable predictions file ({str(exc).splitlines()[0]}); expected the "
                        "Parquet file of zray predict") from None
    if "bins" not in meta or "pdf" not in table.column_names:
        raise ZrayError(f"{path}: no PDFs or no bins in it; expected a file of zray predict written without "
                        "--no-pdf")
    bins = RedshiftBins(**{k: meta["bins"][k] for k in ("z_min", "z_max", "n_bins")})
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "pdf":
            columns[name] = np.stack(column.to_numpy(zero_copy_only=False)) if len(column) else np.zeros(
                (0, bins.n_bins))
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
            if name == "z_spec":
                columns[name] = np.asarray(column.fill_null(np.nan).to_numpy(zero_copy_only=False), np.float64)
    return columns, bins


class QpWriter:
    """Write prediction batches into one qp HDF5 file chunk by chunk (memory stays one batch).

    qp's own chunked writer (the one RAIL's estimators use) allocates the
    file for ``total`` PDFs from the first batch; each batch is written at
    its offset; ``close`` writes qp's metadata and then ``meta`` (zray's
    provenance: bundle, bins, source) as the HDF5 file's ``zray`` attribute.
    """

    def __init__(self, path: Path, bins: RedshiftBins, total: int, meta: dict) -> None:
        require_qp("--format qp")
        self.path, self.bins, self.total, self.meta = Path(path), bins, total, meta
        self._file = None
        self._last = None
        self.done = 0

    def write(self, columns: dict[str, np.ndarray]) -> int:
        ens = ensemble(columns, self.bins)
        n = ens.npdf
        if self.done + n > self.total:
            raise ZrayError(f"{self.path}: more galaxies than the {self.total} announced")
        if self._file is None:
            _, self._file = ens.initializeHdf5Write(str(self.path), npdf=self.total)
        ens.writeHdf5Chunk(self._file, self.done, self.done + n)
        self.done += n
        self._last = ens
        return n

    def close(self) -> None:
        import h5py

        if self._file is None:
            return
        if self.done != self.total:
            raise ZrayError(f"{self.path}: {self.done} galaxies predicted, but the dataset's manifest counts "
                            f"{self.total}; expected shards that hold what their manifest says")
        self._last.finalizeHdf5Write(self._file)  # closes the file
        self._file = None
        with h5py.File(self.path, "a") as f:
            f.attrs["zray"] = json.dumps(self.meta)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def written_by_zray(path: Path) -> bool:
    """Whether ``path`` is a qp file of ``zray predict`` (its ``zray`` attribute names a bundle)."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return "bundle" in json.loads(f.attrs.get("zray", "{}"))
    except (ImportError, OSError, ValueError, TypeError):
        return False


def qp_metrics(pdf, bins: RedshiftBins, z_spec) -> dict[str, Any]:
    """The field's PDF metrics, computed by qp on zray's PDFs: PIT KS, Cramer-von Mises and
    Anderson-Darling (statistics and p-values), the PIT outlier rate (PIT below 0.0001 or
    above 0.9999), the CDE loss (Izbicki & Lee 2017; lower is better, can be negative) and the
    Brier score over the bins (0 is perfect, 2 the worst). ``z_spec`` must lie within the
    bins (``zray evaluate`` scores those)."""
    qp = require_qp("the qp metrics")
    import logging
    import warnings

    z = np.asarray(z_spec, dtype=np.float64).reshape(-1)
    ens = ensemble({"pdf": pdf}, bins)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # qp logs a warning when there are fewer PITs than its grid
        try:
            pit = qp.metrics.PIT(ens, z)
            ks = pit.evaluate_PIT_KS()
            cvm = pit.evaluate_PIT_CvM()
            ad = pit.evaluate_PIT_anderson_ksamp()
            outlier = pit.evaluate_PIT_outlier_rate()
        finally:
            logging.disable(previous)
        grid = np.linspace(bins.z_min, bins.z_max, 4 * bins.n_bins + 1)
        cde = qp.metrics.create_metric("cdeloss", eval_grid=grid).evaluate(ens, z)
        # The Brier score on zray's own bins: qp's Brier takes each galaxy's probability per bin and
        # a one-hot row of the bin holding its z_spec (qp.metrics.calculate_brier would grid the
        # densities instead, whose rows sum to 1 / dx, not 1).
        probabilities = ens.objdata["pdfs"] * bins.width
        truth = np.zeros_like(probabilities)
        truth[np.arange(len(z)), bins.index(z)] = 1.0
        brier = qp.metrics.Brier(probabilities, truth).evaluate()
    return {
        "pit_ks": float(ks.statistic), "pit_ks_pvalue": float(ks.pvalue),
        "pit_cvm": float(cvm.statistic), "pit_cvm_pvalue": float(cvm.pvalue),
        "pit_ad": float(ad.statistic), "pit_ad_pvalue": float(ad.pvalue),
        "pit_outlier_rate": float(outlier),
        "cde_loss": float(cde),
        "brier": float(brier),
    }
