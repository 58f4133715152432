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


def test_the_raylets_worker_pool_warning_is_left_out_and_other_raylet_lines_kept(capsys):
    import ray._private.worker as ray_worker

    console.quiet_worker_output()
    console.quiet_worker_output()  # twice: wrapped once
    assert ray_worker.print_to_stdstream.zray_filtered
    warning = ("WARNING: 12 PYTHON worker processes have been started on node: 4a79 with address: 192.0.2.2, "
               "which is 6x the maximum expected startup concurrency (2).")
    ray_worker.print_to_stdstream({"lines": [warning], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    assert capsys.readouterr().out == ""
    ray_worker.print_to_stdstream({"lines": ["WARNING: the node is out of memory"], "pid": "raylet",
                                   "is_err": False}, ignore_prefix=False)
    assert "the node is out of memory" in capsys.readouterr().out
