"""Publishing a finished output folder in one step, so no reader sees half of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def publish_dir(tmp: Path, out: Path) -> None:
    """Rename the complete folder ``tmp`` to ``out``, replacing any earlier ``out``.

    The earlier folder is moved aside first and removed only once the new one
    is in place, so a crash in between leaves one of the two whole.
    """
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
