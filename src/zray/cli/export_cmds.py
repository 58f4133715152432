"""Inference commands: export, predict, evaluate."""

from __future__ import annotations

from pathlib import Path

import click

from zray.cli.data_cmds import column_option
from zray.paths import click_absolute


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path), callback=click_absolute)
@click.option("--top-k", "top_k", type=int, default=1, show_default=True,
              help="Export an ensemble of K networks averaging their PDFs (see --members).")
@click.option("--members", type=click.Choice(["seeds", "trials"]), default="seeds", show_default=True,
              help="How a search's ensemble is made: seeds trains the best trial's configuration K times "
                   "(the best trial, then seeds seed+1, ...), each for the search's full epochs, under "
                   "RUN_DIR/ensemble/; trials takes the K best trials as the search left them.")
@click.option("--keep-ensemble", is_flag=True,
              help="Ship the ensemble even when it does not beat its best member on the validation split.")
@click.option("--trial", default=None, metavar="NAME",
              help="Export this trial of a search (its folder name, as `zray status` lists it) instead of "
                   "the best: e.g. another point of a two-objective search's Pareto front. By default a "
                   "two-objective search exports the front's trial with the best first metric of "
                   "tune.metrics (ties: the better second).")
@click.option("--out", type=click.Path(path_type=Path), callback=click_absolute, required=True,
              help="Bundle folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle at --out.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Fit one PDF temperature on the training data's validation split (PIT closer to uniform).")
def export_cmd(run_dir, top_k, members, keep_ensemble, trial, out, overwrite, calibrate):
    """Export the best trial(s) of a search as a bundle for inference.

    RUN_DIR is an experiment folder of `zray tune` (runs/NAME; trials ranked
    by the search's metric), a `zray train` run folder (its best checkpoint)
    or one checkpoint folder. The bundle holds each model in a safe format
    (architecture from code, weights in HDF5; no pickle) and bundle.json with
    bins, band order, image size, preprocessing, validation metrics and
    versions.

    An ensemble (--top-k K) is worth shipping only when its members are
    fully trained and it beats the best of them: the members and their mean
    PDF are scored on the training data's validation split, and if the
    ensemble does not beat its best member, that member is shipped alone
    (bundle.json's `selection` records the figures and the decision). The
    verdict gives the range the ratio ensemble / best member takes over
    resamples of the validation galaxies: on a few thousand galaxies, a
    difference of a percent or two is within the noise. It also says how
    alike the members' errors are: networks that err by the same galaxies'
    photometric noise (correlation 0.96 or so) can gain only a percent or
    two by averaging, whatever K. The PDF temperature is then fitted on what
    is shipped.

    \b
    Examples:
      zray export runs/quickstart --out best/
      zray export runs/quickstart --top-k 3 --out ens/        # trains 2 more seeds of the best trial
      zray export runs/quickstart --top-k 3 --members trials --out ens/
      zray export runs/pareto --trial trial-47dce19109-00002 --out other/
    """
    from zray.ensemble import shared_sentence
    from zray.export import export

    info = export(run_dir, out, top_k=top_k, overwrite=overwrite, calibrate=calibrate, members=members,
                  keep_ensemble=keep_ensemble, trial=trial)
    selection = info.get("selection")
    if selection:
        click.echo(f"ensemble members: {selection['rule_text']}")
        for i, m in enumerate(selection.get("members", [])):
            click.echo(f"  member {i}: {selection['metric']} {m[selection['metric']]:.5f} on {selection['n']} "
                       "validation galaxies")
        if "ensemble" in selection:
            click.echo(f"  ensemble: {selection['metric']} {selection['ensemble'][selection['metric']]:.5f}")
        click.echo(f"{selection['reason']}")
        if selection.get("shared"):
            click.echo(shared_sentence(selection["shared"], len(selection["members"])))
    click.echo(f"exported {len(info['members'])} model(s) from {run_dir} ({info['source']['kind']}) to {out}")
    for member in info["members"]:
        val = member["validation"]
        figures = "  ".join(f"{k} {v:.5f}" for k, v in val.items() if k != "epoch" and isinstance(v, float))
        click.echo(f"  {member['path']}: {member['model']} {member['trial'] or ''} epoch {member['epoch']}  {figures}")
    cal = info.get("calibration")
    if cal and "note" in cal:
        click.echo(f"PDF temperature 1 ({cal['note']})")
    elif cal:
        click.echo(
            f"PDF temperature {cal['temperature']:.3f} fitted on {cal['n']} validation galaxies: "
            f"PIT KS {cal['pit_ks_before']:.3f} -> {cal['pit_ks_after']:.3f}"
        )
    b = info["bins"]
    click.echo(
        f"bins {b['n_bins']} over {b['z_min']} <= z < {b['z_max']}; image {info['image_size']}x{info['image_size']}, "
        f"bands {','.join(info['bands'])}; next: zray predict {out} DATA --out pz.parquet"
    )


@click.command("predict")
@click.argument("bundle", type=click.Path(path_type=Path), callback=click_absolute)
@click.argument("source", metavar="INPUT", type=click.Path(path_type=Path), callback=click_absolute)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), callback=click_absolute, required=True,
              help="File to write: .parquet, or .hdf5 with --format qp.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "qp"]), default="parquet", show_default=True,
              help="parquet: one row per galaxy; qp: a qp ensemble in HDF5, which RAIL's stages read "
                   '(needs pip install "zray[rail]").')
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), callback=click_absolute, default=None,
              help="FITS folder, when INPUT is a catalogue (as for `zray prepare`).")
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "val", "test"]),
              help="Only these splits of a shard folder (repeatable; default: all).")
@click.option("--no-pdf", is_flag=True, help="Write point estimates only, not the PDFs.")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Galaxies per model call [default: 256 in this process, 2048 through Ray Data].")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Ray actors holding the model, at most one per CPU of the Ray (1 CPU each, less where that "
                   "would leave Ray no CPU to read the shards).")
@click.option("--skip-bad", is_flag=True,
              help="With a catalogue: leave out the galaxies whose cutouts cannot be used (file missing or "
                   "unreadable, bands not as expected, smaller than the bundle's cutouts, NaN pixels), listed with "
                   "the reason in OUT.skipped.csv; without it the run stops at the first one it meets (missing "
                   "files are all counted first).")
@column_option
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file (and its list of skipped galaxies).")
def predict_cmd(bundle, source, out, images, splits, fmt, no_pdf, batch_size, workers, skip_bad, columns, overwrite):
    """Photometric redshifts for every galaxy of INPUT with a bundle.

    INPUT is a shard folder (from `zray simulate` or `zray prepare`) or a
    catalogue (CSV, Parquet, FITS table, VOTable or ECSV with id, ebv (else 0) and FITS
    file columns, as `zray prepare` takes, --column naming them) with --images. Writes per galaxy: id, z_spec when
    known, z_mean, z_median, z_mode, z_std, the central 68.27% and 95%
    intervals (z_lo68, z_hi68, z_lo95, z_hi95), odds (the probability within
    z_mode +- 0.03 (1 + z_mode)), z_draw (one random draw from the PDF, the
    same for the same id on every run: stack them for n(z)) and pdf (n_bins
    probabilities). Streams through Ray Data, so memory stays bounded.

    With --format qp the file is a qp ensemble (a histogram on the bundle's
    bin edges) that RAIL's evaluation reads, the figures above as its
    ancillary columns under RAIL's names: id, zmode, zmean, zmedian, z_std,
    z_q2p5, z_q16, z_q84, z_q97p5, odds, z_draw, and redshift when known.

    \b
    Examples:
      zray predict best/ data/new --out pz.parquet
      zray predict best/ data/new --format qp --out pz.hdf5
      zray predict best/ galaxies.csv --images cutouts/ --out pz.parquet --no-pdf
    """
    from zray.predict import predict

    if workers < 1:
        raise click.BadParameter(f"must be a positive integer, but got {workers!r}", param_hint="--workers")
    summary = predict(bundle, source, out, images=images, splits=splits or None, batch_size=batch_size,
                      with_pdf=not no_pdf, workers=workers, overwrite=overwrite, fmt=fmt, skip_bad=skip_bad,
                      columns=columns)
    click.echo(
        f"predicted {summary['rows']} galaxies with {summary['members']} model(s) in {summary['seconds']:.1f} s "
        f"({summary['galaxies_per_s']:.0f} galaxies/s) -> {summary['out']}"
        + (" (qp ensemble: qp.read(...) or RAIL's stages read it)" if fmt == "qp" else "")
        + (f"; {summary['skipped']} left out, listed in {summary['skipped_list']}" if summary["skipped"] else "")
    )


@click.command("evaluate")
@click.argument("bundle", type=click.Path(path_type=Path), callback=click_absolute)
@click.argument("data", type=click.Path(path_type=Path), callback=click_absolute)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), callback=click_absolute, required=True,
              help="Report folder to write (metrics.json, PNGs, index.html).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test", "all"]),
              help="Labelled split to score; all: every galaxy of a dataset held out from training (its "
                   "reference predictors then fitted on the bundle's training data).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="Galaxies per model call [default: 256 in this process, 2048 through Ray Data].")
@click.option("--overwrite", is_flag=True, help="Replace an existing report at --out.")
def evaluate_cmd(bundle, data, out, split, batch_size, overwrite):
    """Score a bundle on labelled data: metrics, plots and an HTML report.

    Writes metrics.json (bias, sigma_MAD, outlier fractions, sigma_IQR, CRPS,
    PIT KS; overall, by redshift and by r magnitude), predictions.parquet,
    PNG figures and index.html, which opens offline in a browser. With qp
    installed (pip install "zray[rail]") it adds the field's PDF metrics as
    qp computes them: PIT Kolmogorov-Smirnov, Cramer-von Mises and
    Anderson-Darling with p-values, the PIT outlier rate, the CDE loss and
    the Brier score.

    A dataset of your own held out from training (`zray prepare` splits
    it too) is scored whole with --split all.

    \b
    Examples:
      zray evaluate best/ data/sim --out report/
      zray prepare held-out.csv --images cutouts/ --out data/held-out
      zray evaluate best/ data/held-out --split all --out report-held-out/
    """
    from zray.baselines import compare_with
    from zray.evaluate import evaluate, scored_label

    r = evaluate(bundle, data, out, split=split, batch_size=batch_size, overwrite=overwrite)
    o = r["overall"]
    scored = scored_label(split)
    click.echo(
        f"{o['n']} galaxies ({scored}): sigma_MAD {o['sigma_mad']:.5f}  bias {o['bias_mean']:+.5f} "
        f"(median {o['bias_median']:+.5f})  outliers {o['outlier_fraction']:.4f}  "
        f"CRPS {o['crps']:.5f}  PIT KS {o['pit_ks']:.3f}"
    )
    for name, b in r["baselines"].items():
        click.echo(
            f"  reference {r['baseline_names'][name]:<30} sigma_MAD {b['sigma_mad']:.5f}  "
            f"bias {b['bias']:+.5f}  outliers {b['outlier_fraction']:.4f}  "
            f"(zray: {o['sigma_mad'] / max(b['sigma_mad'], 1e-12):.2f}x its sigma_MAD)"
        )
    verdict = compare_with(o["sigma_mad"], r["baselines"])
    if verdict:
        click.echo(f"  sigma_MAD {o['sigma_mad']:.5f} = {verdict}")
    q = r.get("qp")
    if q:
        click.echo(
            f"  qp: PIT KS {q['pit_ks']:.3f} (p {q['pit_ks_pvalue']:.2g})  CvM {q['pit_cvm']:.3f} "
            f"(p {q['pit_cvm_pvalue']:.2g})  AD {q['pit_ad']:.2f} (p {q['pit_ad_pvalue']:.2g})  "
            f"PIT outliers {q['pit_outlier_rate']:.4f}  CDE loss {q['cde_loss']:.2f}  Brier {q['brier']:.4f}"
        )
    for note in r["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"report: {Path(r['out']) / 'index.html'}  ({r['seconds']:.1f} s)")


COMMANDS = [export_cmd, predict_cmd, evaluate_cmd]
