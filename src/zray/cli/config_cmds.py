"""Configuration commands: validate."""

from __future__ import annotations

import sys

import click

from zray.errors import ZrayError

SET_HELP = "Override a key of the file, typed against the schema, e.g. --set fixed.epochs=2 (repeatable)."


def set_option(func):
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(func)


def _verbose(ctx, param, value):
    if value:
        from zray.console import set_verbose

        set_verbose()
    return value


def run_options(func):
    """Options shared by the commands that train: --skip-corrupt, --dashboard-host, --verbose."""
    func = click.option(
        "--verbose", is_flag=True, expose_value=False, callback=_verbose,
        help="Also show what Ray's processes print (TensorFlow start-up, Ray Data notes) and Tune's tables.",
    )(func)
    func = click.option(
        "--dashboard-host", default="127.0.0.1", show_default=True,
        help="Interface the Ray dashboard of a local Ray listens on (0.0.0.0 exposes it to the network).",
    )(func)
    func = click.option(
        "--drop-out-of-range", is_flag=True,
        help="Leave out galaxies whose z_spec lies outside the bins (data.z_min <= z < data.z_max), counting "
        "them (same as --set data.drop_out_of_range=true); by default such data is refused.",
    )(func)
    return click.option(
        "--skip-corrupt", is_flag=True,
        help="Train without shards found corrupt, reporting their rows as skipped "
        "(same as --set data.skip_corrupt=true); by default a corrupt shard stops the run.",
    )(func)


def interrupted(said: str, command: list[str], *, file: str, sets: tuple[str, ...], options: dict) -> None:
    """After Ctrl-C: ``zray: SAID: zray COMMAND FILE --set ... OPTIONS`` on stderr, the command that
    continues the work (the same file and --set values, and each of ``options``, ``{flag: (value,
    default)}``, that is not its default), then exit status 130."""
    import shlex

    line = ["zray", *command[:1], file, *(a for o in sets for a in ("--set", o))]
    for option, (value, default) in options.items():
        if value is not None and value != default:
            line += [option, str(value)]
    click.echo(f"zray: {said}: {shlex.join([*line, *command[1:]])}", err=True)
    sys.exit(130)


def with_skip(overrides: tuple[str, ...], skip_corrupt: bool, drop_out_of_range: bool = False) -> tuple[str, ...]:
    """``overrides`` plus the --set each data flag stands for."""
    return (*overrides, *(["data.skip_corrupt=true"] if skip_corrupt else []),
            *(["data.drop_out_of_range=true"] if drop_out_of_range else []))


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@set_option
def validate(files: tuple[str, ...], overrides: tuple[str, ...]) -> None:
    """Check search-space YAML files against the schema; no Ray is started.

    Each problem is reported as FILE: key.path: what was expected. Where
    data.path holds a dataset, its cutouts must be at least data.image_size
    pixels; where it holds none (and nothing simulates one), that is said.

    \b
    Example:
      zray validate search_spaces/*.yaml
      zray validate search_spaces/inception.yaml --set tune.num_samples=4
    """
    from zray import config
    from zray.data.source import data_note

    failed = 0
    for path in files:
        try:
            space = config.load(path, overrides)
            note = data_note(space)  # the dataset's cutouts against the network's size, where there is one
        except ZrayError as exc:
            click.echo(f"zray: error: {exc}" if str(exc).startswith(str(path)) else f"zray: error: {path}: {exc}",
                       err=True)
            failed += 1
            continue
        searched = ", ".join(space.search) or "nothing"
        click.echo(
            f"ok  {path}: model {space.model}, {space.tune.num_samples} trials, "
            f"searching {searched}"
        )
        for warning in [*space.warnings(), *([note] if note else [])]:
            click.echo(f"zray: warning: {path}: {warning}", err=True)
    if failed:
        click.echo(f"{failed} of {len(files)} files failed validation", err=True)
        sys.exit(1)


COMMANDS = [validate]
