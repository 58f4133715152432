"""Where experiments live: a local (or NFS) folder, or an object-store URI.

Ray Tune and Ray Train take either as ``storage_path``. zray's own small files
(the search space, a run's divergence note) go through these helpers so the
same code writes to ``runs/`` or to ``s3://bucket/zray``. URIs are opened with
``pyarrow.fs`` (s3://, gs://, and file:// for tests); credentials come from
the environment, as for Ray itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def is_uri(path) -> bool:
    """True for ``scheme://...`` (s3, gs, file, ...), False for a plain path."""
    return "://" in str(path)


def join(base, *parts: str) -> str:
    """``base/part/...`` for a URI or a path (a path is made absolute)."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(base).resolve().joinpath(*parts))


@dataclass(frozen=True)
class Place:
    """Where one experiment lives: built once (:meth:`of`) by the command and passed down.

    - :attr:`path`: ``STORAGE/NAME``, a folder or an object-store URI: what Ray
      Tune and Ray Train write (trials, checkpoints, Tune's experiment state);
    - :attr:`local`: the driver's own folder for the experiment (the Optuna
      study, results, a copy of the search space): the same folder when the
      storage is local, ``LOCAL_RUNS/NAME`` when it is an object store;
    - :meth:`filesystem`: ``pyarrow.fs``' view of :attr:`path`, the same calls for both.
    """

    storage: str
    name: str
    local: Path

    @classmethod
    def of(cls, storage, name: str, local_runs="runs") -> Place:
        if is_uri(storage):
            return cls(str(storage).rstrip("/"), name, (Path(local_runs) / name).resolve())
        root = Path(storage).resolve()
        return cls(str(root), name, root / name)

    @property
    def remote(self) -> bool:
        return is_uri(self.storage)

    @property
    def path(self) -> str:
        return join(self.storage, self.name)

    def file(self, *parts: str) -> str:
        """A path or URI under :attr:`path`."""
        return join(self.path, *parts)

    def filesystem(self):
        """``(pyarrow FileSystem, path inside it)`` of :attr:`path`."""
        from pyarrow import fs

        if self.remote:
            return fs.FileSystem.from_uri(self.path)
        return fs.LocalFileSystem(), self.path


def _fs(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def write_text(path, text: str) -> None:
    if is_uri(path):
        filesystem, inner = _fs(str(path))
        filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(inner) as out:
            out.write(text.encode())
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def read_text(path) -> str | None:
    """The file's text, or None when it does not exist."""
    if is_uri(path):
        from pyarrow import fs

        filesystem, inner = _fs(str(path))
        if filesystem.get_file_info(inner).type != fs.FileType.File:
            return None
        with filesystem.open_input_stream(inner) as stream:
            return stream.read().decode()
    path = Path(path)
    return path.read_text() if path.is_file() else None


def exists(path) -> bool:
    if is_uri(path):
        from pyarrow import fs

        filesystem, inner = _fs(str(path))
        return filesystem.get_file_info(inner).type != fs.FileType.NotFound
    return Path(path).exists()


def remove(path) -> None:
    """Delete a file if it is there."""
    if is_uri(path):
        if exists(path):
            filesystem, inner = _fs(str(path))
            filesystem.delete_file(inner)
        return
    Path(path).unlink(missing_ok=True)


def check_local_folder(path, option: str = "--storage") -> None:
    """Refuse, before any work, a local folder that cannot be made or written:
    a file where the folder (or one above it) should be, or a read-only place."""
    import os

    from zray.errors import ZrayError

    if is_uri(path):
        return
    wanted = Path(path)
    for folder in (wanted, *wanted.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ZrayError(f"{option} {wanted}: {folder} is a file; expected a folder (or where to make one)")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ZrayError(f"{option} {wanted}: {folder} is not writable; expected a folder zray can write in")
            return
