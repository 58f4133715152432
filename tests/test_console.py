"""The terminal: the zray logger's lines on stdout, Ray's chatter kept off, the library silent."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from zray import console


def test_the_library_logs_and_the_command_line_shows_its_lines(capsys):
    console.LOG.info("train split: 3 rows")  # no handler of zray's own outside a command: nothing printed
    assert capsys.readouterr().out == ""
    with console.terminal():
        console.LOG.info("train split: 3 rows")
        console.LOG.debug("a detail")  # shown only when verbose
        console.LOG.warning("row order follows redshift")
    assert capsys.readouterr().out == "zray: train split: 3 rows\nzray: warning: row order follows redshift\n"
    console.LOG.info("after the command")
    assert capsys.readouterr().out == ""
    assert console.LOG.handlers == [] and console.LOG.propagate


def test_a_library_user_sees_the_lines_through_their_own_logging(caplog):
    with caplog.at_level(logging.INFO, logger="zray"):
        console.LOG.info("simulating 20 galaxies")
    assert [r.getMessage() for r in caplog.records] == ["simulating 20 galaxies"]


def test_the_raylets_worker_pool_warning_is_left_out_and_other_lines_kept(capsys, monkeypatch):
    warning = ("(raylet) WARNING: 12 PYTHON worker processes have been started on node: 4a79 with address: "
               "192.0.2.2, which is 6x the maximum expected startup concurrency (2).")
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    with console.terminal():
        print(warning)  # as Ray's printer writes it: the line, then its end
        print("(raylet) WARNING: the node is out of memory")
        print(warning, file=sys.stderr)
    captured = capsys.readouterr()
    assert captured.out == "(raylet) WARNING: the node is out of memory\n"
    assert captured.err == ""
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    with console.terminal():
        print(warning)
    assert "worker processes have been started" in capsys.readouterr().out


def test_a_commands_native_stderr_is_quiet_and_pythons_is_not():
    """Inside a command, what native code writes to file descriptor 2 (TensorFlow's
    C++ start-up lines) is dropped; Python's own stderr and everything after it stay."""
    code = (
        "import os, sys\n"
        "from zray import console\n"
        "with console.terminal():\n"
        "    os.write(2, b'I0000 oneDNN custom operations are on\\n')\n"
        "    print('zray: error: a sentence', file=sys.stderr)\n"
        "os.write(2, b'after\\n')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "zray: error: a sentence\nafter\n"
    verbose = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**env, console.VERBOSE_ENV: "1"})
    assert "oneDNN" in verbose.stderr


def test_no_zray_module_prints():
    """Library modules log; only the command line (zray/cli) writes to the terminal."""
    import ast
    from pathlib import Path

    root = Path(console.__file__).parent
    printing = []
    for path in root.rglob("*.py"):
        if "cli" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not printing, printing




def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """`zray validate A B | head -0`: the reader has gone before zray writes; zray stops as
    Unix tools do (the status of a SIGPIPE), not with an error about a path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spaces = [os.path.join(root, "search_spaces", name) for name in ("quickstart.yaml", "cnn.yaml")]
    proc = subprocess.Popen([sys.executable, "-m", "zray", "validate", *spaces], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before zray has written a line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == ""
