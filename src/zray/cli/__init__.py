"""The ``zray`` command line: parse, call the library, print.

Each command lives in a module of this package next to the library area it
drives; heavy libraries (Ray, TensorFlow) are imported inside the commands so
``zray --help`` stays instant.
"""

from __future__ import annotations

import sys

import click

from zray import __version__
from zray.errors import ZrayError, first_line


class _Group(click.Group):
    """The CLI's one error boundary: a :class:`ZrayError`, or an error reading a
    user's file that slipped past the readers' own checks, becomes one line on
    stderr and exit status 1 (with ``--debug``, the traceback behind it first)."""

    def invoke(self, ctx: click.Context):
        from zray.console import terminal

        try:
            with terminal():  # the zray logger's lines on stdout, Ray's chatter kept off
                return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("zray: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
                # Whoever read the output has gone (`zray evaluate ... | head`): stop quietly, as other
                # Unix tools do, with the status of a SIGPIPE; outputs are whole or absent (renamed into
                # place when complete). stdout goes to /dev/null so the exit's flush is silent. Another
                # broken pipe (a worker's) is an error like any other, below.
                import os

                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(128 + 13)
            sentence = exc_sentence(exc)
            if sentence is None:
                raise  # a bug in zray: the traceback is the report
            if ctx.params.get("debug"):
                import traceback

                traceback.print_exc()
            click.echo(f"zray: error: {' '.join(sentence.split())}", err=True)  # one line, whatever it quotes
            sys.exit(1)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end has closed (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stdout)
        return False


def exc_sentence(exc: BaseException) -> str | None:
    """The one sentence for an error a user's input caused, or ``None`` for a bug.

    zray's readers raise :class:`ZrayError` themselves; this is the net under
    them for what a file can still throw: the operating system's errors (a
    name too long, a read-only folder, a file where a folder was expected),
    text that is not UTF-8, malformed JSON or YAML, and Arrow's errors for a
    Parquet file that is not one.
    """
    import json

    if isinstance(exc, ZrayError):
        return str(exc)
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and exc.filename:
        return f"{exc.filename} (or a folder above it) is a file; expected a folder there"
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{(exc.strerror or str(exc)).lower()}; expected a path zray can read and write there"
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                "expected UTF-8 (run with --debug to see which)")
    if isinstance(exc, UnicodeEncodeError):
        return "a path or value is not valid text (it holds a lone surrogate); expected printable UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"a file is not valid JSON ({exc.msg} at line {exc.lineno}); expected JSON written by zray"
    if isinstance(exc, RecursionError):
        return "an input is nested too deeply to read; expected a file of ordinary structure"
    for module, name in (("yaml", "YAMLError"), ("pyarrow", "ArrowException")):
        if module in sys.modules and isinstance(exc, getattr(sys.modules[module], name)):
            return f"{first_line(exc)}; expected a readable {'YAML' if module == 'yaml' else 'Parquet'} file"
    return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="zray")
@click.option("--debug", is_flag=True, help="Show the traceback behind an error's one-sentence message.")
def main(debug: bool) -> None:
    """zray: photometric redshifts from galaxy image cutouts, on Ray.

    \b
    Typical session:
      zray simulate --n 5000 --out data/sim
      zray validate search_spaces/inception.yaml
      zray tune search_spaces/quickstart.yaml

    Run `zray COMMAND --help` for each command's options and an example;
    `zray --debug COMMAND ...` shows the traceback behind an error.
    """
    from zray.runtime import offer_token

    offer_token()  # before Ray loads: joining a cluster with token authentication needs it


def _register() -> None:
    from zray.cli import cluster_cmds, config_cmds, data_cmds, export_cmds, model_cmds, train_cmds, tune_cmds

    for module in (config_cmds, data_cmds, model_cmds, train_cmds, tune_cmds, export_cmds, cluster_cmds):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
