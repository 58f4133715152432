"""Configuration commands: validate."""

from __future__ import annotations

import sys

import click

from zray.errors import ZrayError

SET_HELP = "Override a key of the file, typed against the schema, e.g. --set fixed.epochs=2 (repeatable)."


def set_option(func):
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(func)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
def validate(files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check search-space YAML files against the schema; no Ray is started.

    Each problem is reported as FILE: key.path: what was expected.

    \b
    Example:
      zray validate search_spaces/*.yaml
      zray validate search_spaces/inception.yaml --set tune.num_samples=4
    """
    from zray import config

    failed = 0
    for path in files:
        try:
            space = config.load(path, overrides)
        except ZrayError as exc:
            click.echo(f"zray: error: {exc}", err=True)
            failed += 1
            continue
        searched = ", ".join(space.search) or "nothing"
        click.echo(
            f"ok  {path}: model {space.model}, {space.tune.num_samples} trials, "
            f"searching {searched}"
        )
    if failed:
        click.echo(f"{failed} of {len(files)} files failed validation", err=True)
        sys.exit(1)


COMMANDS = [validate]
