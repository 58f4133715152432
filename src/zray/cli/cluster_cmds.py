"""Cluster commands: slurm (a batch script for a SLURM allocation)."""

from __future__ import annotations

from pathlib import Path

import click

from zray.paths import click_absolute


def _shared_folder(ctx, param, value):
    """--shared, made absolute; an empty one would quietly mean the folder zray runs in."""
    if not value.strip():
        raise click.BadParameter("expected a folder every node of the allocation sees, such as /scratch/$USER/zray")
    return click_absolute(ctx, param, value)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False), callback=click_absolute)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), callback=click_absolute, required=True,
              help="The batch script to write (submit it with sbatch).")
@click.option("--shared", required=True, callback=_shared_folder,
              help="A folder every node of the allocation sees: the results go to SHARED/runs.")
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(min=1), help="Nodes to allocate.")
@click.option("--venv", default=None, help="Virtual environment with zray on every node [default: this one].")
@click.option("--time", "time_limit", default="24:00:00", show_default=True,
              help="SLURM time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.")
@click.option("--partition", default=None, help="SLURM partition, or several separated by commas "
              "[default: the cluster's].")
@click.option("--port", default=6379, show_default=True, type=click.IntRange(1, 65535), help="Port of the Ray head.")
@click.option("--dashboard-port", default=8265, show_default=True, type=click.IntRange(1, 65535),
              help="Port of Ray's dashboard.")
@click.option("--ray-args", default="", help="Extra `ray start` flags for every node, e.g. port ranges "
              "(split like a shell command line).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of FILE (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def slurm(file, out, shared, nodes, venv, time_limit, partition, port, dashboard_port, ray_args, overrides,
          overwrite) -> None:
    """Write a SLURM batch script that runs the search FILE on an allocation.

    Ray's SLURM pattern: a Ray head on the first node, a Ray worker on each
    other node, then `zray tune FILE --address HEAD` on the head node with
    results in SHARED/runs. CPUs and GPUs per node come from FILE's
    resources (its share of the concurrent trials, tune.max_concurrent over
    --nodes, x their Train workers, plus one CPU for Ray Data); more nodes
    than concurrent trials is a warning. Run it from the repository root,
    which every node must see.

    Every value is checked (SLURM's time and partition syntax, ports) and
    quoted in the script; a --venv or --shared missing on this machine is
    a warning, as it may exist on the nodes only.

    \b
    Example:
      zray slurm search_spaces/inception.yaml --nodes 4 --set tune.max_concurrent=4 \\
          --set resources.gpus_per_worker=0.5 --shared /scratch/$USER/zray --out tune.sbatch
      sbatch tune.sbatch
    """
    import sys

    from zray import config
    from zray import slurm as batch

    space = config.load(file, list(overrides))
    venv = venv or str(Path(sys.prefix))
    text = batch.batch_script(space, file, nodes=nodes, shared=shared, venv=venv, workdir=str(Path.cwd()),
                              time_limit=time_limit, partition=partition, port=port,
                              dashboard_port=dashboard_port, ray_args=ray_args, overrides=tuple(overrides))
    # Both checked before anything is printed or written; a missing folder may exist on the nodes only.
    warnings = [w for w in (batch.check_venv(venv), batch.check_shared(shared), batch.idle_nodes(space, nodes)) if w]
    for warning in warnings:
        click.echo(f"zray: warning: {warning}", err=True)
    batch.write(out, text, overwrite=overwrite, inputs=(Path(file),))
    cpus, gpus = batch.node_resources(space, nodes)
    click.echo(f"zray: wrote {out}: {nodes} node(s), {cpus} CPUs" + (f" and {gpus} GPUs" if gpus else "")
               + f" each; results in {shared}/runs/{space.name}")
    click.echo(f"submit it with: sbatch {out}")


COMMANDS = [slurm]
