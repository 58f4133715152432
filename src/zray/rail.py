"""zray inside RAIL: an informer that takes a zray bundle and an estimator that runs it on cutouts.

RAIL (LSST DESC's Redshift Assessment Infrastructure Layers) chains stages:
an *informer* prepares a model, an *estimator* turns a table of galaxies,
chunk by chunk, into a qp ensemble of PDFs, and an *evaluator* scores it.
These two stages put a zray bundle into that chain, beside FlexZBoost or
BPZ, with RAIL's own interfaces (``make_stage``, ``inform``, ``estimate``,
pipelines):

- :class:`ZrayInformer` takes a bundle made by ``zray export`` (``bundle=``
  in its configuration); it checks the training table's cutouts fit it and
  writes RAIL's model file, which names the bundle. Training itself stays
  with ``zray tune`` (Ray), which RAIL's one-process stages cannot host.
- :class:`ZrayEstimator` reads the input table chunk by chunk
  (``chunk_size`` galaxies), predicts each chunk with the bundle and writes
  a qp ``hist`` ensemble on the bundle's bin edges, with zray's point
  estimates under RAIL's names (``zmode``, ``zmean``, ``zmedian``,
  ``z_q16``...; see :data:`zray.qp_format.ANCIL_NAMES`).

The input table holds one row per galaxy: ``image`` (the raw cutouts in
nanomaggies, ``(N, bands, H, W)``, or flattened to ``(N, bands * H * W)``),
``ebv``, and optionally ``object_id`` (RAIL's ``id_col``) and ``redshift``.
:func:`cutout_table` makes one from a zray shard folder. The ensemble's
``id`` column is the input's ``object_id`` (or the row number without one).

Needs ``pip install "zray[rail]"`` (RAIL and qp need Python 3.11 or newer).

    >>> from rail.core.data import DataStore                                          # doctest: +SKIP
    >>> from zray.rail import ZrayEstimator, ZrayInformer, cutout_table                # doctest: +SKIP
    >>> DataStore.allow_overwrite = True                                              # doctest: +SKIP
    >>> table = cutout_table("data/quickstart", splits=("test",))                     # doctest: +SKIP
    >>> model = ZrayInformer.make_stage(name="inform_zray", bundle="best/").inform(table)   # doctest: +SKIP
    >>> pz = ZrayEstimator.make_stage(name="zray", model=model).estimate(table)       # doctest: +SKIP
    >>> pz.data.ancil["zmedian"][:3]                                                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zray.errors import ZrayError

try:
    from ceci.config import StageParameter as Param
    from rail.core.common_params import SharedParams
    from rail.estimation.estimator import CatEstimator
    from rail.estimation.informer import CatInformer
except ImportError as exc:  # the extra is not installed: say how to get it, in one sentence
    raise ImportError(
        f"zray.rail needs RAIL ({exc.name} is missing); pip install \"zray[rail]\" (Python 3.11 or newer)"
    ) from None

__all__ = ["ZrayEstimator", "ZrayInformer", "cutout_table"]


def cutout_table(folder, splits: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The galaxies of a zray shard folder as a RAIL input table (a dict of numpy arrays).

    Columns under RAIL's names: ``object_id`` (the shards' ``id``), ``image``
    ``(N, bands, H, W)`` float32, ``ebv`` and ``redshift`` (the shards' ``z_spec``).
    """
    from zray.data import load_arrays, read_manifest

    manifest = read_manifest(folder)
    splits = tuple(splits or [s for s in manifest.splits if manifest.rows[s]])
    parts = [load_arrays(folder, s) for s in splits if manifest.rows[s]]
    if not parts:
        raise ZrayError(f"{folder}: split(s) {', '.join(splits)} hold no rows; expected galaxies for RAIL")
    table = {k: np.concatenate([p[k] for p in parts]) for k in ("id", "image", "ebv", "z_spec")}
    table["redshift"] = table.pop("z_spec").astype(np.float64)
    table["object_id"] = table.pop("id")
    return table


class ZrayInformer(CatInformer):
    """Take a zray bundle as this RAIL chain's model (RAIL's model file names the bundle)."""

    name = "ZrayInformer"
    config_options = CatInformer.config_options.copy()
    config_options.update(
        bundle=Param(str, None, required=True, msg="folder of a bundle made by zray export"),
        image_col=Param(str, "image", msg="column of the raw cutouts in the training table"),
    )

    def run(self) -> None:
        from zray.bundle import read_bundle

        bundle = Path(self.config.bundle).expanduser().resolve()
        info = read_bundle(bundle)
        data = self.get_data("input", allow_missing=True)
        if data is not None:
            if self.config.hdf5_groupname and self.config.hdf5_groupname in data:
                data = data[self.config.hdf5_groupname]
            if self.config.image_col in data:
                _images(data[self.config.image_col], info, f"{self.name}: column {self.config.image_col}")
        model = {"zray_bundle": str(bundle), "bins": info.data["bins"], "bands": list(info.bands),
                 "image_size": info.image_size}
        self.add_data("model", model)


class ZrayEstimator(CatEstimator):
    """Photo-z PDFs from cutouts with a zray bundle, chunk by chunk, as a qp ``hist`` ensemble."""

    name = "ZrayEstimator"
    config_options = CatEstimator.config_options.copy()
    config_options.update(
        image_col=Param(str, "image", msg="column of the raw cutouts (N, bands, H, W), or flattened"),
        ebv_col=Param(str, "ebv", msg="column of the galaxies' E(B-V)"),
        id_col=SharedParams.copy_param("id_col"),
        batch_size=Param(int, 256, msg="galaxies per model call within a chunk"),
    )

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, **kwargs)
        self._bundle = None

    def open_model(self, **kwargs: Any):
        model = super().open_model(**kwargs)
        if not isinstance(model, dict) or "zray_bundle" not in model:
            raise ZrayError(f"{self.name}: the model is not a zray one; expected the output of ZrayInformer")
        from zray.bundle import load

        self._bundle = load(model["zray_bundle"])
        return model

    def _process_chunk(self, start: int, end: int, data, first: bool) -> None:
        from zray.qp_format import ensemble, estimate_columns

        bundle = self._bundle
        for column in (self.config.image_col, self.config.ebv_col):
            if column not in data:
                raise ZrayError(f"{self.name}: the input has no {column!r} column; expected the raw cutouts "
                                f"and E(B-V) (set image_col / ebv_col)")
        images = _images(data[self.config.image_col], bundle, f"{self.name}: column {self.config.image_col}")
        ebv = np.asarray(data[self.config.ebv_col], dtype=np.float32)
        ids = np.asarray(data[self.config.id_col]) if self.config.id_col in data else np.arange(start, end)
        pdf = bundle.predict(images, ebv, batch_size=self.config.batch_size)
        columns = {"pdf": pdf, "id": ids, **estimate_columns(pdf, bundle.bins, ids)}
        self._do_chunk_output(ensemble(columns, bundle.bins), start, end, first, data=data)


def _images(values, bundle, where: str) -> np.ndarray:
    """Raw cutouts (N, bands, H, W) from a column holding them as such or flattened per galaxy."""
    images = np.asarray(values, dtype=np.float32)
    bands = len(bundle.bands)
    if images.ndim == 2:
        side = int(round(np.sqrt(images.shape[1] / bands)))
        if bands * side * side != images.shape[1]:
            raise ZrayError(f"{where}: rows of {images.shape[1]} values; expected {bands} bands of square "
                            "cutouts, flattened")
        images = images.reshape(len(images), bands, side, side)
    if images.ndim != 4 or images.shape[1] != bands or min(images.shape[2:]) < bundle.image_size:
        raise ZrayError(f"{where}: cutouts of shape {images.shape[1:]}; expected ({bands}, H, W) with H and W at "
                        f"least the bundle's {bundle.image_size}")
    return images
