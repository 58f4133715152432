"""Training commands: train."""

from __future__ import annotations

import click

from zray.cli.config_cmds import interrupted, run_options, set_option, with_skip
from zray.paths import absolute, click_absolute, click_name


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@set_option
@click.option("--runs", "runs_dir", default="runs", show_default=True, callback=click_absolute,
              help="Folder for run outputs.")
@click.option("--name", default=None, callback=click_name,
              help="Run name (default: SPACE-train-IDENTITY; the same name resumes).")
@run_options
def train(
    file: str, overrides: tuple[str, ...], runs_dir: str, name: str | None, skip_corrupt: bool,
    drop_out_of_range: bool, dashboard_host: str,
) -> None:
    """Train one model at the search space's fixed values and search defaults.

    Ray Data streams the shards into Ray Train TensorFlow workers (the
    file's `resources`); each worker reads a disjoint part of every epoch.
    A checkpoint is written every epoch; running the same command again
    resumes from the last one.

    \b
    Example:
      zray train search_spaces/quickstart.yaml --set fixed.epochs=2
    """
    from zray import baselines, config
    from zray import train as training

    space = config.load(file, with_skip(overrides, skip_corrupt, drop_out_of_range))
    click.echo(f"zray: training {space.model} from {space.data.path} ({space.resources.num_workers} worker(s))")
    summary = training.run(space, runs_dir=runs_dir, name=name, dashboard_host=dashboard_host)
    m = summary["metrics"]
    click.echo("")
    click.echo(f"run         {summary['name']}  (identity {summary['identity']})")
    click.echo(f"epochs      {m.get('epoch', 0)}  in {summary['wall_time_s']:.0f} s")
    for key in ("loss", "val_loss", "val_sigma_mad", "val_bias", "val_outlier_fraction", "val_crps"):
        if key in m:
            click.echo(f"{key:<22}{m[key]:.5f}")
    if summary["skipped"]:
        files = ", ".join(path for path, _, _ in summary["skipped"])
        click.echo(f"rows skipped  {summary['rows_skipped']} in {len(summary['skipped'])} corrupt shard(s): {files}")
    if summary.get("rows_out_of_range"):
        click.echo(f"left out    {summary['rows_out_of_range']} galaxies with z_spec outside the bins "
                   "(--drop-out-of-range)")
    click.echo(f"checkpoint  {summary['checkpoint']}")
    table = summary.get("baselines")
    if table:
        click.echo("")
        for line in baselines.format_table(table, "val"):
            click.echo(line)
        click.echo(f"this run's val_sigma_mad: {baselines.compare(m.get('val_sigma_mad'), table, 'val')}")
    if summary.get("interrupted"):  # Tune ends the run on Ctrl-C and returns as if it were done
        planned = int(summary["hyperparameters"]["epochs"])
        how = (f"after epoch {m.get('epoch', 0)} of {planned}; to continue from its last checkpoint"
               if summary["checkpoint"] else f"before its first epoch ended (of {planned}); to start it again")
        interrupted(f"interrupted {how}", ["train"], file=file,
                    sets=with_skip(overrides, skip_corrupt, drop_out_of_range),
                    options={"--name": (name, None), "--runs": (runs_dir, absolute("runs")),
                             "--dashboard-host": (dashboard_host, "127.0.0.1")})

COMMANDS = [train]
