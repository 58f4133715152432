"""Model commands: models."""

from __future__ import annotations

import click


@click.command("models")
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(min=8), help="Cutout side in pixels.")
@click.option("--bands", default=5, show_default=True, type=click.IntRange(min=1),
              help="Bands to size the networks for, to count their parameters only: zray's datasets are always "
                   "u,g,r,i,z, five bands.")
@click.option("--n-bins", default=180, show_default=True, type=click.IntRange(min=2),
              help="Redshift bins over 0 <= z < 0.4.")
def models_cmd(image_size: int, bands: int, n_bins: int) -> None:
    """List the model types a search space can name, with their hyperparameters.

    Each type is built once at the given input size to count its trainable
    parameters, so this takes a few seconds.

    \b
    Example:
      zray models --image-size 32
    """
    from zray.bins import RedshiftBins
    from zray.models import (
        ModelSpec,
        available_models,
        build_model,
        count_parameters,
        describe,
        keras,
        model_hyperparameters,
    )

    spec = ModelSpec(image_size=image_size, n_bands=bands, bins=RedshiftBins(n_bins=n_bins))
    size = f"{image_size}x{image_size}x{bands}, {n_bins} bins"
    for name in available_models():
        n_params = count_parameters(build_model(name, None, spec))
        keras().backend.clear_session()
        click.echo(f"{name}: {describe(name)}")
        click.echo(f"  trainable parameters at {size}: {n_params:,}")
        hp = model_hyperparameters(name)
        width = max((len(k) for k in hp), default=0)
        for key, default in hp.items():
            click.echo(f"  {key:<{width}} = {default!r}")
        click.echo("")
    click.echo("Set them in a search space's `fixed:` or `search:` section.")


COMMANDS: list = [models_cmd]
