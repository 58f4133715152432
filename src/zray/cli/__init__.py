"""The ``zray`` command line: parse, call the library, print.

Each command lives in a module of this package next to the library area it
drives; heavy libraries (Ray, TensorFlow) are imported inside the commands so
``zray --help`` stays instant.
"""

from __future__ import annotations

import sys

import click

from zray import __version__
from zray.errors import ZrayError


class _Group(click.Group):
    """Turns :class:`ZrayError` into one line on stderr and exit status 1
    (with ``--debug``, the traceback that sentence stands for first)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZrayError as exc:
            if ctx.params.get("debug"):
                import traceback

                traceback.print_exc()
            click.echo(f"zray: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("zray: interrupted", err=True)
            sys.exit(130)


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
