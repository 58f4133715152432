"""Test instruments of the worker loop: fault injection and id recording.

Used by the test suite and ``scripts/chaos.py`` through two fields of the
:class:`~zray.train.job.TrainJob`; a production job sets neither, and then
:meth:`Instruments.step` and :meth:`Instruments.epoch_done` do nothing.

- ``record_ids_dir``: each worker writes the ids it trained on per epoch
  (``ids-e{epoch}-r{rank}.npy``), its step count, and at start-up a checksum
  of the weights it resumed with: evidence that shards are disjoint and that
  a restart resumed the right state.
- ``extra={"fail_after_epoch": N}``: raise after epoch N's (0-based) checkpoint.
- ``extra={"kill_at": {"epoch": E, "step": S, "rank": R}}``: SIGKILL rank R's
  process before step S of epoch E (both 1-based), once per run (a marker in
  the run folder stops the retry from dying again).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["Instruments"]


class Instruments:
    """The instruments of one worker; called at every step and after every epoch."""

    def __init__(self, job, rank: int, world: int, start_epoch: int, model) -> None:
        self.job, self.rank, self.world = job, rank, world
        self.record_dir = Path(job.record_ids_dir) if job.record_ids_dir else None
        self.kill_at = job.extra.get("kill_at")
        self.fail_after = job.extra.get("fail_after_epoch")
        self.seen: list[np.ndarray] = []
        if self.record_dir:
            from zray.train.steps import weights_checksum

            self.record_dir.mkdir(parents=True, exist_ok=True)
            record = {"start_epoch": start_epoch, "weights_checksum": weights_checksum(model)}
            (self.record_dir / f"start-r{rank}-e{start_epoch}.json").write_text(json.dumps(record))

    def step(self, epoch: int, step: int, batch: dict) -> None:
        """Before step ``step`` (0-based) of ``epoch`` (0-based) on ``batch``."""
        if self.kill_at:
            self._maybe_kill(epoch, step)
        if self.record_dir:
            self.seen.append(np.asarray(batch["id"]))

    def epoch_done(self, epoch: int, steps: int) -> None:
        """After ``epoch``'s checkpoint and report."""
        if self.record_dir:
            ids = np.concatenate(self.seen) if self.seen else np.zeros(0, dtype=np.int64)
            np.save(self.record_dir / f"ids-e{epoch}-r{self.rank}.npy", ids)
            (self.record_dir / f"steps-e{epoch}-r{self.rank}.txt").write_text(str(steps))
            self.seen = []
        if self.fail_after == epoch:
            raise RuntimeError(f"injected failure after epoch {epoch + 1}")

    def _maybe_kill(self, epoch: int, step: int) -> None:
        from zray import storage as st

        target = int(self.kill_at.get("rank", self.world - 1))
        if (self.rank, epoch + 1, step + 1) != (target, int(self.kill_at["epoch"]), int(self.kill_at["step"])):
            return
        folder = self.job.run_dir or tempfile.gettempdir()
        marker = st.join(folder, f"killed-e{epoch + 1}-s{step + 1}-r{self.rank}")
        if st.exists(marker):
            return
        st.write_text(marker, str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
