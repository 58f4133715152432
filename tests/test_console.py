"""The terminal: zray's lines only; progress in place on a terminal, dropped in a log."""

from __future__ import annotations

import io

from zray import console


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_update_in_place_on_a_terminal_and_vanish_from_logs():
    tty, log = _Terminal(), io.StringIO()
    for stream in (tty, log):
        console.show("zray: progress epoch 1/3  100/400 rows", stream)
        console.show("zray: progress epoch 1/3  200/400 rows", stream)
        console.show("zray: epoch 1/3  loss 4.1", stream)
    assert log.getvalue() == "zray: epoch 1/3  loss 4.1\n"
    text = tty.getvalue()
    assert text.count("\r\033[K") == 3  # two progress updates, then cleared for the epoch line
    assert text.endswith("\r\033[Kzray: epoch 1/3  loss 4.1\n")
    assert "zray: epoch 1/3  200/400 rows" in text


def test_only_zray_lines_of_worker_output_are_shown(capsys):
    console._on_worker_output({"lines": [
        "I0000 00:00:1795943528.346752 port.cc:153] oneDNN custom operations are on.",
        "E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)",
        "RayDeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated",
        "zray: epoch 2/3  loss 3.9",
    ], "is_err": False, "pid": 1})
    assert capsys.readouterr().out == "zray: epoch 2/3  loss 3.9\n"
