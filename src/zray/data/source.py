"""Finding an experiment's data, or simulating it on first use."""

from __future__ import annotations

from pathlib import Path

from zray.console import LOG
from zray.data.shards import MANIFEST_NAME, Manifest, read_manifest
from zray.errors import ZrayError


def check_image_size(manifest: Manifest, data) -> None:
    """Refuse a network (``data.image_size``) larger than the dataset's cutouts."""
    size = manifest.image_shape[-1]
    if size < data.image_size:
        raise ZrayError(
            f"{data.path}: images are {size}x{size} pixels but data.image_size is {data.image_size}; "
            f"expected data.image_size <= {size} (larger cutouts are centre-cropped)"
        )


def data_note(space) -> str | None:
    """For ``zray validate``, without simulating or reading a shard: None where the data is there
    and fits the network, else what a run would meet (a :class:`ZrayError` where it would stop)."""
    data = space.data
    if not (Path(data.path) / MANIFEST_NAME).exists():
        return (None if data.simulate is not None else
                f"{data.path}: no dataset there yet; zray simulate or zray prepare --out {data.path} writes one")
    check_image_size(read_manifest(data.path), data)
    return None


def ensure_data(space) -> Manifest:
    """The manifest of ``space.data.path``; simulated there first if the file asks for it.

    A search space with ``data.simulate: {n, seed}`` (the quickstart) gets its
    data generated once and cached at ``data.path``; later runs reuse it.
    """
    data = space.data
    root = Path(data.path)
    if not (root / MANIFEST_NAME).exists():
        if data.simulate is None:
            raise ZrayError(
                f"{root}: no dataset there ({MANIFEST_NAME} missing); expected shards from "
                f"`zray simulate --out {root}` or `zray prepare CATALOG --images DIR --out {root}` "
                "(a data.path given with --set is simulated into only with --set data.simulate.n=N too)"
            )
        from zray.data.simulate import simulate

        LOG.info(f"simulating {data.simulate.n} galaxies at {data.image_size}x{data.image_size} "
                 f"into {root} (first use; cached for later runs)")
        simulate(n=data.simulate.n, out=root, size=data.image_size, seed=data.simulate.seed)
    manifest = read_manifest(root)
    check_image_size(manifest, data)
    size = manifest.image_shape[-1]
    if size > data.image_size:
        LOG.info(f"{root}: its {size}x{size} cutouts are cropped to their central {data.image_size}x"
                 f"{data.image_size} pixels ({data.image_size * manifest.pixel_scale:.1f}\" across) for this "
                 "network (data.image_size)")
    return manifest
