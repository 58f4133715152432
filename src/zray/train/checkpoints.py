"""Checkpoints on disk: what a whole one is, reading it back, and writing it safely.

A checkpoint folder holds ``tf/ckpt.*`` (weights and optimizer state, written
by ``tf.train.Checkpoint``) and ``state.json`` (epoch, history, the job, the
epoch's metrics and the size of every file). The file list lets anyone tell a
whole copy from one cut short (:func:`checkpoint_complete`); zray never
resumes, reports or exports from an incomplete one.

Imported by the search, export and scripts without TensorFlow or Ray (the
functions that need them import them inside).

    >>> from zray.train import checkpoints
    >>> checkpoints.complete_checkpoints("runs/demo/trials/trial-x")  # doctest: +SKIP
    [PosixPath('runs/demo/trials/trial-x/checkpoint_000001')]
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

from zray.errors import ZrayError, first_line
from zray.train.job import DIVERGED_FILE, TrainJob, model_hp

__all__ = [
    "STATE_FILE",
    "WEIGHTS_PREFIX",
    "check_resumable",
    "checkpoint_complete",
    "complete_checkpoints",
    "read_state",
    "load_checkpoint_model",
    "latest_checkpoint",
    "upload_checkpoint",
    "divergence",
]

STATE_FILE = "state.json"
WEIGHTS_PREFIX = "tf/ckpt"


def checkpoint_complete(checkpoint_dir: str | Path) -> bool:
    """True when ``checkpoint_dir`` holds a whole checkpoint: ``state.json``
    parses and every file it lists is there with its recorded size.

    A checkpoint copy cut short (a full disk, a killed process) fails this.
    """
    directory = Path(checkpoint_dir)
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        # Checkpoints from before the file list was recorded: the index suffices.
        index = WEIGHTS_PREFIX + ".index"
        files = state.get("files") or {index: (directory / index).stat().st_size}
    except (OSError, ValueError, AttributeError):
        return False
    if not any(name.startswith(WEIGHTS_PREFIX + ".index") for name in files):
        return False
    for name, size in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's whole checkpoints (see :func:`checkpoint_complete`), oldest epoch first."""
    found = [d for d in Path(run_dir).glob("checkpoint_*") if d.is_dir() and checkpoint_complete(d)]
    return sorted(found, key=lambda d: read_state(d)["epoch"])


def read_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint: epoch, history, job and manifest hash."""
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise ZrayError(f"{path}: unreadable checkpoint state ({first_line(exc)}); expected JSON written by "
                        "zray") from None
    if not isinstance(state, dict):
        raise ZrayError(f"{path}: holds {type(state).__name__}; expected a checkpoint state written by zray")
    return state


def file_sizes(directory: str | Path) -> dict[str, int]:
    """Every file under ``directory`` (relative POSIX path) with its size."""
    root = Path(directory)
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def load_checkpoint_model(checkpoint_dir: str | Path):
    """Rebuild the model of a checkpoint and load its weights (no optimizer)."""
    import tensorflow as tf

    from zray.models import ModelSpec, build_model

    if not checkpoint_complete(checkpoint_dir):
        raise ZrayError(
            f"{checkpoint_dir}: incomplete checkpoint (state.json or a weights file missing or cut "
            "short); expected a whole checkpoint written by zray"
        )
    state = read_state(checkpoint_dir)
    try:
        job = TrainJob(**state["job"])
        model = build_model(job.model, model_hp(job), ModelSpec(image_size=job.image_size, bins=job.bins))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ZrayError(f"{Path(checkpoint_dir) / STATE_FILE}: missing or malformed job ({first_line(exc)}); "
                        "expected a checkpoint state written by zray") from None
    try:
        tf.train.Checkpoint(model=model).read(str(Path(checkpoint_dir) / WEIGHTS_PREFIX)).expect_partial()
    except (tf.errors.OpError, ValueError, RuntimeError) as exc:  # TensorFlow's reader on a damaged file
        raise ZrayError(f"{checkpoint_dir}: weights cannot be read ({first_line(exc)}); expected a whole "
                        "checkpoint written by zray") from None
    return model, state


def check_resumable(directory, state: dict[str, Any], job: TrainJob) -> None:
    """Raise unless the checkpoint whose ``state.json`` is ``state`` can carry
    ``job`` on: trained on the same data, and of the same model (the weights of
    another architecture would not fit it, or would fit and mean something else)."""
    try:
        recorded = TrainJob(**state["job"])
        trained = model_hp(recorded)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ZrayError(f"{Path(directory) / STATE_FILE}: missing or malformed job ({first_line(exc)}); "
                        "expected a checkpoint state written by zray") from None
    if recorded.manifest_hash != job.manifest_hash:
        raise ZrayError(
            f"{directory}: checkpoint was trained on data {recorded.manifest_hash[:12]}, "
            f"but {job.data_path} is {job.manifest_hash[:12]}; expected the same data to resume"
        )
    wanted = model_hp(job)
    if recorded.model != job.model or trained != wanted:
        raise ZrayError(
            f"{directory}: checkpoint is of a {recorded.model} with {trained}, but this run builds a "
            f"{job.model} with {wanted}; expected the same model to resume (start a new search with --name)"
        )


def latest_checkpoint(registered, run_dir: str | None):
    """The checkpoint to resume from: Ray Train's latest registered one, or a
    later whole one in ``run_dir``.

    Ray registers a checkpoint when its controller collects the report, which
    it does on a poll; a worker killed between its upload and that poll leaves
    a whole checkpoint Ray does not know about, and Ray would restart a whole
    epoch (or the run) earlier. zray's checkpoints prove their own
    completeness, so the later one is safe to use. Only for a local or shared
    folder; on an object store Ray's choice stands.
    """
    import ray.train

    from zray import storage as st

    if not run_dir or st.is_uri(run_dir) or not Path(run_dir).is_dir():
        return registered
    found = complete_checkpoints(run_dir)
    if not found:
        return registered
    newest = found[-1]
    if registered is not None:
        with registered.as_directory() as directory:
            if int(read_state(directory)["epoch"]) >= int(read_state(newest)["epoch"]):
                return registered
    return ray.train.Checkpoint.from_directory(str(newest))


def upload_checkpoint(checkpoint, checkpoint_dir_name: str):
    """Copy a worker's checkpoint into the run's storage, whole or not at all.

    Ray Train's own upload copies file by file into the final folder, so a
    failed copy (a full disk) leaves a partial ``checkpoint_*`` behind. Here
    the copy goes to a hidden ``.checkpoint_*.partial`` sibling that is
    renamed when complete (a plain rename on a local or NFS folder; on an
    object store, where there is no rename, :func:`checkpoint_complete`
    still tells a whole copy from a cut one). A failed copy is removed and
    becomes one sentence naming the folder; the previous checkpoint is
    untouched.
    """
    import pyarrow.fs as pafs
    import ray.train

    # Ray Train's storage of this run (a developer API): its filesystem and where
    # the checkpoint goes. zray.cluster.check_storage proved before the search that
    # every node reaches it.
    storage = ray.train.get_context().get_storage()
    fs = storage.storage_filesystem
    dest = storage.build_checkpoint_path_from_name(checkpoint_dir_name)
    parent, base = dest.rsplit("/", 1)
    staging = f"{parent}/.{base}.partial"
    try:
        if fs.get_file_info(staging).type != pafs.FileType.NotFound:
            fs.delete_dir(staging)
        fs.create_dir(staging)
        pafs.copy_files(checkpoint.path, staging, source_filesystem=checkpoint.filesystem,
                        destination_filesystem=fs)
        _check_copy(fs, staging, file_sizes(checkpoint.path), parent)
        fs.move(staging, dest)
    except OSError as exc:
        try:
            fs.delete_dir(staging)
        except OSError:
            pass
        raise _upload_error(exc, dest) from None
    return ray.train.Checkpoint(path=dest, filesystem=fs)


def _check_copy(fs, staging: str, want: dict[str, int], parent: str) -> None:
    """Raise OSError unless ``staging`` holds exactly the files of ``want`` (a copy
    cut short without an error was seen on a full disk: never publish it)."""
    import pyarrow.fs as pafs

    got = {
        info.path[len(staging) + 1:]: info.size
        for info in fs.get_file_info(pafs.FileSelector(staging, recursive=True))
        if info.type == pafs.FileType.File
    }
    if got != want:
        short = sum(want.values()) - sum(v or 0 for v in got.values())
        raise OSError(errno.ENOSPC if _disk_full(parent, short) else errno.EIO,
                      f"copy incomplete ({len(got)} of {len(want)} files, {short} bytes short)")


def _upload_error(exc: OSError, dest: str) -> ZrayError:
    text = str(exc)
    if exc.errno == errno.ENOSPC or "errno 28" in text.lower() or "No space left" in text:
        return ZrayError(
            f"{dest}: no space left on device while writing the checkpoint; the previous "
            "checkpoint is kept; expected free space in the storage folder (free some, or "
            "give another --runs/--storage)"
        )
    return ZrayError(f"{dest}: cannot write the checkpoint ({first_line(exc, 200)}); "
                     "the previous checkpoint is kept")


def _disk_full(folder: str, needed: int) -> bool:
    try:
        return shutil.disk_usage(folder).free < max(needed, 1)
    except OSError:
        return False


def divergence(run_dir: str | Path) -> str | None:
    """Why the run at ``run_dir`` (a folder or a URI) diverged, or None."""
    from zray import storage as st

    return st.read_text(st.join(str(run_dir), DIVERGED_FILE))
