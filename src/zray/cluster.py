"""Checks that stop a multi-node run early instead of at its first checkpoint.

On a cluster, every trial's Ray Train workers write checkpoints to the
experiment's storage, and Ray Data's read tasks open the data folder, on
whichever node they run (ray#37177: multi-node checkpointing needs shared
storage). An object-store URI is reachable from every node; a plain path must
be the same shared folder (NFS, EFS) on every node. :func:`check_storage`
proves that with one tiny task pinned to each alive node: the driver writes a
marker file with a random token into the folder, and each node must find the
folder, read that token back and write a file of its own there. A folder that
merely exists on every node (each node's own disk) fails the token test.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from zray import storage as st
from zray.errors import ZrayError

MARKER_PREFIX = ".zray-storage-check-"


def alive_nodes() -> list[dict]:
    """Ray's records of the cluster's alive nodes."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _node_name(node: dict) -> str:
    return f"{node.get('NodeManagerAddress', '?')} (node {node['NodeID'][:8]})"


def probe_folder(path: str, marker: str, token: str, data_path: str | None = None) -> dict:
    """Runs on one node: what that node sees of the storage folder (and the data folder)."""
    import ray

    folder = Path(path)
    seen = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "exists": folder.is_dir(),
        "sees_marker": False,
        "writable": False,
        "data": None,
    }
    if seen["exists"]:
        try:
            seen["sees_marker"] = (folder / marker).read_text() == token
        except OSError:
            pass
        probe = folder / f"{marker}.{uuid.uuid4().hex[:8]}"
        try:
            probe.write_text("zray")
            probe.unlink()
            seen["writable"] = True
        except OSError:
            pass
    if data_path is not None:
        seen["data"] = (Path(data_path) / "manifest.json").is_file()
    return seen


def _problems(seen: dict, path: str, data_path: str | None) -> list[str]:
    out = []
    if not seen["exists"]:
        out.append("it does not exist")
    elif not seen["sees_marker"]:
        out.append("it is a different folder (the driver's marker file is not in it)")
    elif not seen["writable"]:
        out.append("it is not writable")
    if data_path is not None and not seen["data"]:
        out.append(f"the data folder {data_path} has no manifest.json")
    return out


def check_storage(storage, *, data_path=None, timeout_s: float = 120.0) -> str | None:
    """Check that ``storage`` (and ``data_path``) are shared by every alive node.

    Returns a line saying what was checked, None on a one-node cluster (nothing
    to check), and raises ZrayError naming the folder and the nodes that do
    not share it. Call with Ray initialised, before any trial starts.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes()
    if len(nodes) <= 1:
        return None
    data = None if data_path is None or st.is_uri(data_path) else str(Path(data_path).resolve())
    if st.is_uri(storage) and data is None:
        return f"storage {storage} is an object-store URI, reachable from all {len(nodes)} nodes"
    folder = None if st.is_uri(storage) else Path(storage).resolve()
    token = uuid.uuid4().hex
    marker = f"{MARKER_PREFIX}{token[:12]}"
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / marker).write_text(token)
    # A URI is not probed (every node reaches it); the placeholder folder then
    # only carries the data-folder check.
    probe_path = str(folder) if folder is not None else "/nonexistent-zray-uri-storage"
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_folder)
    try:
        refs = {
            n["NodeID"]: probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(probe_path, marker, token, data)
            for n in nodes
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        names = {n["NodeID"]: _node_name(n) for n in nodes}
        problems, silent = [], []
        for node_id, ref in refs.items():
            if ref not in ready:
                silent.append(names[node_id])
                continue
            try:
                seen = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a node that cannot run the probe
                problems.append(f"on {names[node_id]} the check failed ({type(exc).__name__})")
                continue
            found = _problems(seen, str(folder), data) if folder is not None else (
                [f"the data folder {data} has no manifest.json"] if not seen["data"] else []
            )
            problems.extend(f"on {names[node_id]} {p}" for p in found)
        for ref in refs.values():
            if ref not in ready:
                ray.cancel(ref, force=True)
    finally:
        if folder is not None:
            (folder / marker).unlink(missing_ok=True)
    if silent:
        problems.append(f"{', '.join(silent)} did not answer the check within {timeout_s:.0f} s")
    if problems:
        what = f"storage {folder}" if folder is not None else f"data folder {data}"
        raise ZrayError(
            f"{what} is not shared by all {len(nodes)} nodes of the cluster: {'; '.join(problems)}; "
            "expected a folder every node sees at the same path (shared storage such as NFS) "
            "or, for --storage, an s3:// or gs:// URI"
        )
    if folder is None:
        return f"storage {storage} is an object-store URI; data {data} seen by all {len(nodes)} nodes"
    shared = f"storage {folder}" + (f" and data {data}" if data else "")
    return f"{shared} shared by all {len(nodes)} nodes (checked on each)"
