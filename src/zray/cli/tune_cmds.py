"""Search commands: tune, status."""

from __future__ import annotations

import click

from zray.cli.config_cmds import interrupted, run_options, set_option, with_skip
from zray.errors import ZrayError
from zray.paths import absolute, click_absolute, click_name


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@set_option
@click.option("--resume", is_flag=True, help="Continue the interrupted experiment of the same name.")
@click.option("--name", default=None, callback=click_name,
              help="Experiment name (default: the file's `name`); outputs go to STORAGE/NAME.")
@click.option(
    "--storage", "--runs", "storage", default="runs", show_default=True, callback=click_absolute,
    help="Where experiments live: a folder (on a multi-node cluster one every node shares, e.g. NFS) "
    "or an object-store URI such as s3://bucket/zray.",
)
@click.option("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
@click.option(
    "--warm-start", "warm_start", default=None, type=click.Path(file_okay=False), callback=click_absolute,
    metavar="RUNS/OLD",
    help="Build on an earlier search: its complete and pruned trials (configurations, values, epochs) seed "
    "this search's Optuna study, so the sampler starts knowing them; they are not run again, and "
    "tune.num_samples new trials run. Refused (one sentence) when its model, metric, bins, image size or "
    "other fixed values differ (another data path is only warned about); earlier trials outside this "
    "search space (a choice no longer offered, a value outside low..high) are skipped, with a count. "
    "With --resume it may only name the folder the experiment was warm-started from, and adds nothing.",
)
@run_options
def tune(file, overrides, resume, name, storage, address, warm_start, skip_corrupt, drop_out_of_range,
         dashboard_host) -> None:
    """Search hyperparameters: Ray Tune trials proposed by Optuna.

    Each trial is one Ray Train run of the file's model, reporting every
    epoch; the scheduler (tune.scheduler) stops poor trials early. Trials are
    checkpointed every epoch, so after Ctrl-C or a crash `--resume` finishes
    the experiment without rerunning completed trials. The Optuna study is
    kept in STORAGE/NAME/optuna.db for `optuna-dashboard sqlite:///STORAGE/NAME/optuna.db`
    (with a URI storage, in the local runs/NAME/).

    On a cluster (--address or RAY_ADDRESS), trials run on every node; a
    folder STORAGE must then be shared by all nodes, which is checked first.

    \b
    Examples:
      zray tune search_spaces/quickstart.yaml
      zray tune search_spaces/inception.yaml --set tune.num_samples=4
      zray tune search_spaces/inception.yaml --resume
      zray tune search_spaces/quickstart.yaml --name more --warm-start runs/quickstart
      RAY_ADDRESS=127.0.0.1:6379 zray tune search_spaces/inception.yaml --storage s3://my-bucket/zray
    """
    from zray import config, search

    space = config.load(file, with_skip(overrides, skip_corrupt, drop_out_of_range))
    click.echo(
        f"zray: {'resuming' if resume else 'starting'} search {name or space.name}: model {space.model}, "
        f"{space.tune.num_samples} trials, scheduler {space.tune.scheduler.type}, "
        f"searching {', '.join(space.search) or 'nothing'}"
        + (f", warm-started from {warm_start}" if warm_start and not resume else "")
    )
    for warning in space.warnings():
        click.echo(f"zray: warning: {file}: {warning}", err=True)
    summary = search.run(
        space, runs_dir=storage, name=name, resume=resume, address=address,
        on_check=lambda line: click.echo(f"zray: {line}"), dashboard_host=dashboard_host,
        warm_start=warm_start,
    )
    click.echo("")
    if summary.get("remote"):
        where = summary["experiment"]
        local = f"runs/{where.rstrip('/').rsplit('/', 1)[-1]}"
        click.echo(f"results in {where}")
        click.echo(f"fetch them with `aws s3 sync {where} {local}` (gs: `gsutil -m rsync -r`), "
                   f"then `zray status {local}`")
        click.echo(f"wall time   {summary['wall_time_s']:.0f} s")
    else:
        click.echo(search.format_summary(summary))
        click.echo(f"wall time   {summary['wall_time_s']:.0f} s")
    if summary.get("interrupted"):
        left = "" if summary.get("remote") else search.left_to_do(summary)
        flight = " (a trial continues from its last checkpoint)" if "unfinished" in left else ""
        interrupted(f"interrupted{', with ' + left if left else ''}{flight}; to finish the search",
                    ["tune", "--resume"], file=file, sets=with_skip(overrides, skip_corrupt, drop_out_of_range),
                    options={"--name": (name, None), "--storage": (storage, absolute("runs")),
                             "--address": (address, None), "--warm-start": (warm_start, None),
                             "--dashboard-host": (dashboard_host, "127.0.0.1")})
    if summary.get("remote"):
        return
    finished = [r for r in summary["trials"] if r["status"] in ("complete", "stopped")]
    if not finished:
        failed = [r for r in summary["trials"] if r["status"] == "error"]
        reason = f"; the first failed with: {failed[0]['error']}" if failed else ""
        raise ZrayError(f"no trial of {space.name} completed ({len(summary['trials'])} started){reason}")


@click.command()
@click.argument("experiment", type=click.Path(file_okay=False), callback=click_absolute)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many of the best trials to list.")
def status(experiment: str, top: int) -> None:
    """Show the trials of a running or finished experiment, best first.

    A running trial in an epoch of minutes (the Inception network on a CPU)
    also shows how far that epoch has come, as its worker last wrote it.

    A two-objective search (tune.metrics) shows its Pareto front: the trials
    no other beats on both metrics, each at its best epoch by the first
    metric. Its chosen trial is the front's best by the first metric (ties:
    the better second); `zray export --trial NAME` exports another.

    \b
    Example:
      zray status runs/quickstart
    """
    from zray import search

    click.echo(search.format_summary(search.summarize(experiment), top=top))


COMMANDS = [tune, status]
