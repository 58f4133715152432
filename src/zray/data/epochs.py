"""The training split, read in a fresh uniform order every epoch.

Catalogues arrive sorted (by redshift, plate, sky position), and a network
trained in the order its rows sit learns that order. So in every epoch each
worker trains on a uniformly random, disjoint, equal part of the training
split, drawn again for the next epoch from the run's seed and the epoch
number: a run resumed at epoch ``e`` reads epoch ``e`` exactly as it would
have. Equal parts keep the gradient all-reduce in step (a worker that runs
out of batches first would leave the others waiting forever); the remainder
of rows / workers sits out that epoch, a different few each time.

Two sources, one interface (``epoch_batches``):

- :class:`InMemorySplit`: the split's arrays in Ray's object store, read by
  every worker on the node without a copy. The epoch is a permutation of all
  rows (taken in id order, so it does not depend on how Ray Data laid out the
  blocks), cut into one contiguous run per worker; a batch is gathered by index.
- :class:`StreamedSplit`: the split's Parquet row groups (256 rows each in a
  zray dataset), for a split too large to keep. The epoch is a permutation
  of the row groups, cut into equal runs of rows per worker; a worker reads
  its row groups with pyarrow in one background thread, and a second draws
  each batch at random from a buffer of ``buffer_rows`` rows
  (:data:`SHUFFLE_BUFFER_ROWS` by default), refilled a row group at a time.

Why not Ray Data's streaming split for the streamed case: its shard order
and shuffles are seeded per execution, not per epoch, so a resumed run would
read its epochs in another order, and on 2 cores its reader delivered 0.36x
of what pyarrow reads from the same files (``scripts/bench_data.py``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from zray.errors import ZrayError, first_line

__all__ = [
    "SHUFFLE_BUFFER_ROWS",
    "InMemorySplit",
    "StreamedSplit",
    "epoch_rng",
    "worker_part",
]

# Rows a streamed worker mixes at a time. A zray row group holds 256 rows, so
# the buffer draws its rows from 32 row groups taken from random places in the
# split: on a file set sorted by redshift, every batch then mixes 32 redshift
# slices (tests/test_epochs.py: the first two batches of 32 come from >= 25
# places, and over epochs follow the split's redshifts). A two-sample KS test
# of one epoch's first 64 rows against the split still fails at p < 0.01 in
# a quarter of epochs with this buffer (0.4 with 16 row groups, 0.075 with 64):
# 32 slices are not a uniform sample, only an unbiased one. The buffer holds
# 8192 x 20 kB = 160 MB per worker at 32x32, 660 MB at 64x64;
# ``data.shuffle_buffer`` changes it.
SHUFFLE_BUFFER_ROWS = 8192
_SALT = 0x0E90C4  # keeps the epoch draws apart from any other use of the run's seed
_COLUMNS = ("id", "image", "z_spec", "ebv")


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    """The generator of one epoch's order: a function of the run's seed and the epoch only."""
    mask = 0xFFFFFFFFFFFFFFFF
    return np.random.default_rng(np.random.SeedSequence([int(seed) & mask, int(epoch), _SALT, *more]))


def worker_part(n_rows: int, world: int, rank: int) -> tuple[int, int]:
    """Rows [start, stop) of an epoch's order that worker ``rank`` of ``world`` trains on."""
    per = n_rows // world
    return rank * per, (rank + 1) * per


# ---------------------------------------------------------------------------
# In memory


@dataclass
class InMemorySplit:
    """A split kept in Ray's object store as blocks of network-ready arrays.

    ``blocks`` are object refs of Arrow tables ``{id, image (N,H,W,5), z_spec,
    ebv}`` (or of dicts of arrays); the driver keeps them alive for as long as
    runs read them. A worker fetches them once (zero-copy on its node) and
    gathers each batch by index.
    """

    blocks: list
    n_rows: int

    @classmethod
    def from_dataset(cls, ds) -> InMemorySplit:
        """From a materialised Ray dataset of scaled, cropped rows: its own Arrow blocks
        (no copy; ``to_numpy_refs`` would convert each block into a second one)."""
        return cls(blocks=ds.to_arrow_refs(), n_rows=ds.count())

    def epoch_batches(self, *, epoch: int, rank: int, world: int, batch_size: int, seed: int,
                      shuffle: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Worker ``rank``'s batches of ``epoch`` (``shuffle=False``: in storage order, for benchmarks)."""
        table = self._table()
        start, stop = worker_part(self.n_rows, world, rank)
        if shuffle:
            rows = table.by_id[epoch_rng(seed, epoch).permutation(self.n_rows)[start:stop]]
        else:
            rows = np.arange(start, stop)
        for at in range(0, len(rows), batch_size):
            yield table.take(rows[at: at + batch_size])

    def _table(self) -> _Gather:
        if getattr(self, "_gather", None) is None:
            import ray

            self._gather = _Gather([_arrays(b) for b in ray.get(list(self.blocks))])
            if self._gather.n_rows != self.n_rows:
                raise RuntimeError(f"the in-memory split holds {self._gather.n_rows} rows, expected {self.n_rows}")
        return self._gather

    def __getstate__(self) -> dict:  # the fetched arrays stay in the process that fetched them
        return {"blocks": self.blocks, "n_rows": self.n_rows}


def _arrays(block) -> dict[str, np.ndarray]:
    """A block's columns as numpy arrays, without copying an Arrow table's buffers."""
    if isinstance(block, dict):
        return block
    out = {}
    for name in _COLUMNS:
        col = block.column(name)
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
        out[name] = arr.to_numpy_ndarray() if hasattr(arr, "to_numpy_ndarray") else arr.to_numpy()
    return out


class _Gather:
    """Rows by global index from a list of blocks of arrays; ``by_id`` lists the
    indices in increasing id."""

    def __init__(self, parts: list[dict]) -> None:
        self.parts = [p for p in parts if len(p["id"])]
        sizes = [len(p["id"]) for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_rows = int(self.starts[-1])
        ids = np.concatenate([p["id"] for p in self.parts]) if self.parts else np.zeros(0, np.int64)
        self.by_id = np.argsort(ids, kind="stable")

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        block = np.searchsorted(self.starts, rows, side="right") - 1
        first = self.parts[0]
        out = {k: np.empty((len(rows), *np.shape(v)[1:]), dtype=np.asarray(v).dtype) for k, v in first.items()
               if k in _COLUMNS}
        for b in np.unique(block):
            sel = block == b
            local = rows[sel] - self.starts[b]
            for k in out:
                out[k][sel] = self.parts[b][k][local]
        return out


# ---------------------------------------------------------------------------
# Streamed from Parquet


@dataclass
class StreamedSplit:
    """A split read from its Parquet row groups each epoch.

    ``groups`` lists ``(file index, row group index, rows)`` in file order;
    ``prepare`` turns raw rows into network input (scaling and cropping),
    applied in the reading thread.
    """

    files: list[str]
    groups: list[tuple[int, int, int]]
    image_size: int
    buffer_rows: int = SHUFFLE_BUFFER_ROWS
    # (file, row group) -> the rows kept of it, where some are left out (z_spec outside the
    # bins); a group's row count in ``groups`` is then its kept rows.
    keep: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_files(cls, files, image_size: int, buffer_rows: int = SHUFFLE_BUFFER_ROWS,
                   z_range: tuple[float, float] | None = None) -> StreamedSplit:
        """Every row group of ``files``, read from their Parquet footers; with ``z_range``,
        only the rows whose z_spec lies in it (the z_spec column read once, here)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        groups, keep = [], {}
        for k, path in enumerate(files):
            try:
                pf = pq.ParquetFile(path)
                meta = pf.metadata
                for g in range(meta.num_row_groups):
                    n = meta.row_group(g).num_rows
                    if z_range is not None:
                        z = pf.read_row_group(g, columns=["z_spec"]).column("z_spec").to_numpy()
                        rows = np.flatnonzero((z >= z_range[0]) & (z < z_range[1]))
                        if len(rows) < n:
                            keep[(k, g)], n = rows, len(rows)
                    groups.append((k, g, n))
            except (OSError, pa.ArrowException) as exc:
                raise ZrayError(f"{path}: shard is unreadable ({first_line(exc, 160)}); "
                                "expected a readable zray shard") from None
        return cls(files=[str(f) for f in files], groups=groups, image_size=int(image_size),
                   buffer_rows=int(buffer_rows), keep=keep)

    @property
    def n_rows(self) -> int:
        return int(sum(n for _, _, n in self.groups))

    def epoch_plan(self, *, epoch: int, rank: int, world: int, seed: int,
                   shuffle: bool = True) -> list[tuple[int, int, int, int]]:
        """What worker ``rank`` reads in ``epoch``: ``(file, row group, first row, stop row)`` in order.

        The row groups are permuted for the epoch and laid end to end; the
        worker takes its equal run of rows from that sequence, so a row group
        at a boundary is shared, each worker reading its own rows of it.
        """
        order = epoch_rng(seed, epoch).permutation(len(self.groups)) if shuffle else range(len(self.groups))
        start, stop = worker_part(self.n_rows, world, rank)
        plan, pos = [], 0
        for g in order:
            f, rg, n = self.groups[g]
            lo, hi = max(start - pos, 0), min(stop - pos, n)
            if lo < hi:
                plan.append((f, rg, lo, hi))
            pos += n
            if pos >= stop:
                break
        return plan

    def epoch_batches(self, *, epoch: int, rank: int, world: int, batch_size: int, seed: int,
                      shuffle: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Worker ``rank``'s batches of ``epoch`` (``shuffle=False``: in file order, for benchmarks).

        Two background threads, one reading and preparing row groups, one drawing
        batches from the buffer: the worker's own thread only trains.
        """
        plan = self.epoch_plan(epoch=epoch, rank=rank, world=world, seed=seed, shuffle=shuffle)
        rng = epoch_rng(seed, epoch, rank + 1) if shuffle else None
        groups = _prefetch(self._groups(plan), depth=4)
        return _prefetch(self._draw(groups, rng, batch_size), depth=4)

    def _draw(self, groups: Iterator[dict[str, np.ndarray]], rng, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        pool = _ShuffleBuffer(rng)
        more = True
        while True:
            while more and pool.rows < max(self.buffer_rows, batch_size):  # whole batches, equal on every worker
                group = next(groups, None)
                more = group is not None
                if more:
                    pool.add(group)
            if pool.rows == 0:
                return
            yield pool.draw(batch_size)

    def _groups(self, plan) -> Iterator[dict[str, np.ndarray]]:
        """The planned row groups, in order, each read and prepared for the network."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from zray.data.cutouts import crop_centre
        from zray.data.pipeline import preprocess_batch

        for f, rg, lo, hi in plan:
            path = self.files[f]
            try:
                # Opened for each group: a file kept open holds on to what it read (pre-buffering).
                table = pq.ParquetFile(path).read_row_group(rg, columns=list(_COLUMNS))
                kept = self.keep.get((f, rg))
                table = table.slice(lo, hi - lo) if kept is None else table.take(kept[lo:hi])
                image = table.column("image").combine_chunks().to_numpy_ndarray()
            except (OSError, pa.ArrowException) as exc:
                raise ZrayError(
                    f"{path}: shard is corrupt ({first_line(exc, 160)}); expected a readable zray shard "
                    "(rewrite the dataset, or set data.skip_corrupt: true to train without it)"
                ) from None
            # Crop first: the scaling is per pixel, so only the pixels kept are scaled.
            image = crop_centre(image, self.image_size, axes=(2, 3))
            yield {
                "id": table.column("id").to_numpy().astype(np.int64, copy=False),
                "image": preprocess_batch({"image": image})["image"],
                "ebv": table.column("ebv").to_numpy().astype(np.float32, copy=False),
                "z_spec": table.column("z_spec").to_numpy().astype(np.float32, copy=False),
            }


class _ShuffleBuffer:
    """Rows of a few row groups, drawn at random without replacement (in order
    when ``rng`` is None).

    A group is let go once all its rows are drawn; since the last rows of a
    group can wait long for their turn, whenever the groups held take more than
    twice the rows still waiting, the waiting rows of the groups that are at
    least half drawn are copied into one block (so memory stays at about twice
    the buffer, and few rows are copied).
    """

    def __init__(self, rng: np.random.Generator | None) -> None:
        self.rng = rng
        self.groups: dict[int, dict[str, np.ndarray]] = {}
        self.left: dict[int, int] = {}
        self.held = 0  # rows in the groups held, drawn or not
        self.where = np.zeros((0, 2), dtype=np.int64)  # (group, row) of every row not yet drawn
        self.next_key = 0

    @property
    def rows(self) -> int:
        return len(self.where)

    def add(self, group: dict[str, np.ndarray]) -> None:
        n = len(group["id"])
        if n == 0:
            return
        key, self.next_key = self.next_key, self.next_key + 1
        self.groups[key], self.left[key] = group, n
        self.held += n
        rows = np.stack([np.full(n, key, dtype=np.int64), np.arange(n, dtype=np.int64)], axis=1)
        self.where = np.concatenate([self.where, rows])
        if self.held > 2 * self.rows + 1024:
            self._compact()

    def draw(self, n: int) -> dict[str, np.ndarray]:
        n = min(n, self.rows)
        take = np.arange(n) if self.rng is None else self.rng.choice(self.rows, size=n, replace=False)
        picked = self.where[take]
        keep = np.ones(self.rows, dtype=bool)
        keep[take] = False
        self.where = self.where[keep]
        return self._gather(picked, release=True)

    def _gather(self, picked: np.ndarray, release: bool) -> dict[str, np.ndarray]:
        """The rows ``picked`` ((group, row) pairs), grouped by row group (the same set
        of rows), so each group's rows are copied once, straight into place."""
        n = len(picked)
        picked = picked[np.argsort(picked[:, 0], kind="stable")]
        keys, starts = np.unique(picked[:, 0], return_index=True)
        first = self.groups[int(keys[0])]
        out = {k: np.empty((n, *v.shape[1:]), dtype=v.dtype) for k, v in first.items()}
        for key, a, b in zip(keys.tolist(), starts.tolist(), [*starts[1:].tolist(), n]):
            group, rows = self.groups[key], picked[a:b, 1]
            for k in out:
                np.take(group[k], rows, axis=0, out=out[k][a:b])
            if release:
                self.left[key] -= b - a
                if self.left[key] == 0:
                    self.held -= len(group["id"])
                    del self.groups[key], self.left[key]
        return out

    def _compact(self) -> None:
        sparse = [key for key, left in self.left.items() if 2 * left <= len(self.groups[key]["id"])]
        if len(sparse) < 2:
            return
        moving = np.isin(self.where[:, 0], sparse)
        block = self._gather(self.where[moving], release=False)
        for key in sparse:
            self.held -= len(self.groups[key]["id"])
            del self.groups[key], self.left[key]
        n = len(block["id"])
        key, self.next_key = self.next_key, self.next_key + 1
        self.groups[key], self.left[key] = block, n
        self.held += n
        rows = np.stack([np.full(n, key, dtype=np.int64), np.arange(n, dtype=np.int64)], axis=1)
        self.where = np.concatenate([self.where[~moving], rows])


def _prefetch(chunks: Iterator, depth: int = 1) -> Iterator:
    """``chunks`` produced in a background thread, ``depth`` ahead of the consumer.

    pyarrow's reads and numpy's arithmetic release the GIL, so the next chunk
    is read while the model trains on this one.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        """Hand ``item`` over; False once the consumer has gone."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in chunks:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()  # a nested reader stops with this one

    thread = threading.Thread(target=produce, name="zray-epoch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the producer sees it within 0.1 s, or after the item it is making

