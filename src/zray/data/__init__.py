"""Data: the shard format, the simulator, FITS ingest and the Ray Data reader.

Import from here; the heavy pieces (GalSim, Ray, astropy) load only when the
functions that need them run.
"""

from zray.data.ingest import prepare_dataset
from zray.data.pipeline import (
    load_arrays,
    preprocess_batch,
    read_split,
    scale_pixels,
)
from zray.data.shards import (
    BANDS,
    PIXEL_SCALE,
    SPLITS,
    Manifest,
    ShardInfo,
    assign_split,
    read_manifest,
)
from zray.data.simulate import simulate, simulate_from_catalog
from zray.data.validate import DatasetReport, inspect_dataset, validate_dataset
from zray.data.writer import DatasetWriter, write_dataset

__all__ = [
    "BANDS",
    "PIXEL_SCALE",
    "SPLITS",
    "DatasetReport",
    "DatasetWriter",
    "Manifest",
    "ShardInfo",
    "assign_split",
    "inspect_dataset",
    "load_arrays",
    "prepare_dataset",
    "preprocess_batch",
    "read_manifest",
    "read_split",
    "scale_pixels",
    "simulate",
    "simulate_from_catalog",
    "validate_dataset",
    "write_dataset",
]
