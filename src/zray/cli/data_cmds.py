"""Data commands: simulate, prepare, cutouts, inspect.

Thin wrappers over :mod:`zray.data`: parse, call the library, print a
summary. Progress goes to stderr, summaries to stdout.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from zray.errors import ZrayError
from zray.paths import click_absolute


def _parse_columns(ctx, param, values):
    from zray.data.catalog import parse_columns

    return parse_columns(values)


#: ``--column ZRAY=YOURS``, for each command that reads a catalogue: a catalogue keeps its own names.
column_option = click.option(
    "--column", "columns", multiple=True, metavar="ZRAY=YOURS", callback=_parse_columns,
    help="Read zray's column ZRAY from the catalogue's column YOURS (repeat for each): "
         "--column id=specObjID --column z_spec=z; YOURS/NUMBER divides it, as SDSS's A_r gives "
         "E(B-V): --column ebv=extinction_r/2.751. YOURS matches in any case.")


def _bins(ctx, param, value):
    import math

    from zray.bins import RedshiftBins
    from zray.data.catalog import MAX_Z

    if value is None:
        return RedshiftBins()
    if not (math.isfinite(value) and 0 < value <= MAX_Z):
        raise ZrayError(f"--z-max must be a redshift above 0 and at most {MAX_Z:g}, but got {value!r}")
    return RedshiftBins(z_max=float(value))


#: ``--z-max`` and ``--drop-out-of-range``, for the commands that write a catalogue's galaxies with their z_spec.
def z_range_options(command):
    command = click.option(
        "--drop-out-of-range", is_flag=True,
        help="Leave out (and count) the galaxies whose z_spec lies outside 0 <= z < --z-max: stars near 0 "
             "or below, quasars and distant galaxies above; without it such a galaxy stops the run.")(command)
    return click.option(
        "--z-max", "bins", type=float, default=None, callback=_bins, metavar="Z",
        help="Upper end of the dataset's redshifts [default: 0.4, the reference network's bins]. A wider "
             "dataset trains with --set data.z_max=Z (zray tune and train count what lies outside their bins)."
    )(command)


def _split_summary(manifest) -> str:
    return ", ".join(f"{s} {manifest.rows[s]}" for s in manifest.splits)


def _empty_splits(manifest) -> None:
    """A note where training would find no galaxies to learn from or to validate on."""
    empty = [s for s in ("train", "val") if manifest.rows.get(s, 0) == 0]
    if empty:
        click.echo(f"note: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
                   f"({manifest.total_rows} galaxies are too few for the split fractions): zray train and tune need "
                   "galaxies in both; zray predict and evaluate --split all take the dataset as it is", err=True)


def _percentiles(z) -> str:
    import numpy as np

    if len(z) == 0:
        return "-"
    p = np.percentile(z, [5, 25, 50, 75, 95])
    return " ".join(f"{v:6.3f}" for v in p)


@click.command("simulate")
@click.option("--n", "n", type=int, default=None,
              help="Number of galaxies (required unless --catalog; with it, that many of the catalogue's, "
                   "chosen by a hash of the id).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), callback=click_absolute, required=True,
              help="Output dataset directory (created; must not hold a dataset unless --overwrite).")
@click.option("--size", type=int, default=64, show_default=True, help="Cutout size in pixels (0.396\"/pixel).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed: same seed, same dataset.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all CPU cores).")
@click.option("--catalog", type=click.Path(dir_okay=False, path_type=Path), callback=click_absolute, default=None,
              help="CSV, Parquet, FITS table, VOTable or ECSV with id, z (or z_spec), dereddened mag_u..mag_z "
                   "[, ebv] (--column names them where it calls them otherwise): render these galaxies.")
@click.option("--frames", "frames", is_flag=True,
              help="Render survey frames instead of cutouts: one FITS per band and field, each band with its own "
                   "WCS (shifted by tens of pixels, turned by up to 0.5 degrees), overlapping at the edges, plus "
                   "catalog.csv for `zray cutouts`. --out is then a folder of frames.")
@click.option("--fields", default="2x2", show_default=True, help="With --frames: fields as COLSxROWS.")
@click.option("--frame-size", type=int, default=512, show_default=True,
              help="With --frames: each frame's width and height in pixels (SDSS's are 2048x1489).")
@click.option("--overlap", type=int, default=None,
              help="With --frames: pixels neighbouring fields share at their edges [default: 128, as SDSS's, or a "
                   "quarter of a smaller frame].")
@column_option
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset at --out.")
def simulate_cmd(n, out, size, seed, workers, catalog, frames, fields, frame_size, overlap, columns, overwrite):
    """Simulate SDSS-like u,g,r,i,z cutouts with known redshifts.

    A magnitude-limited sample like the SDSS Main Galaxy Sample (r < 17.77,
    z < 0.4) drawn with GalSim: bulge + disk galaxies, CWW template colours
    through the SDSS filters, band-dependent seeing, SDSS-depth noise and
    Galactic extinction. Writes Parquet shards, manifest.json and the true
    catalogue catalog.parquet.

    With --frames, the same galaxies are drawn into survey-like frames
    instead (sky-subtracted nanomaggies with noise, like SDSS's frame files),
    placed at random over the fields, or where --catalog's ra and dec columns
    say; `zray cutouts` turns them into a dataset.

    \b
    Example:
      zray simulate --n 5000 --out data/sim
      zray simulate --catalog my_survey.csv --out data/mysim --size 64
      zray simulate --frames --n 300 --fields 2x2 --out data/frames
    """
    from zray.data.simulate import catalog_path, simulate, simulate_from_catalog

    def given(name: str) -> bool:
        return click.get_current_context().get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    if frames and given("size"):
        raise ZrayError("--size is the cutouts' size, and --frames draws whole frames; expected it on the "
                        "`zray cutouts` that cuts them")
    frame_options = [f"--{name.replace('_', '-')}" for name in ("fields", "frame_size", "overlap") if given(name)]
    if frame_options and not frames:
        raise ZrayError(f"{', '.join(frame_options)} shape survey frames; expected --frames with them, or none of "
                        "them for cutouts")
    if columns and catalog is None:
        raise ZrayError("--column names the columns of --catalog's file; expected it with --catalog")
    start = time.perf_counter()
    if frames:
        if overlap is None:
            overlap = min(128, frame_size // 4)
        from zray.data.frames import CATALOG_NAME, simulate_frames

        if catalog is None and n is None:
            raise ZrayError("--n is required unless --catalog is given, e.g. "
                            "`zray simulate --frames --n 300 --out data/frames`")
        report = simulate_frames(out, n, catalog=catalog, fields=fields, frame_size=frame_size, overlap=overlap,
                                 seed=seed, workers=workers, overwrite=overwrite, columns=columns)
        lay = report.layout
        click.echo(f"wrote {report.frames} frames ({lay.cols}x{lay.rows} fields x 5 bands, {lay.frame_size}x"
                   f"{lay.frame_size} pixels, {lay.overlap} overlapping) holding {report.on_frames} of "
                   f"{report.galaxies} galaxies to {out} in {time.perf_counter() - start:.0f} s")
        click.echo(f"catalogue: {out / CATALOG_NAME}; next: zray cutouts {out / CATALOG_NAME} --frames {out} "
                   f"--out data/mine")
        return
    if catalog is not None:
        manifest = simulate_from_catalog(catalog, out, size=size, seed=seed, workers=workers,
                                         limit=n, overwrite=overwrite, columns=columns)
    else:
        if n is None:
            raise ZrayError("--n is required unless --catalog is given, e.g. `zray simulate --n 5000 --out data/sim`")
        manifest = simulate(out, n, size=size, seed=seed, workers=workers, overwrite=overwrite)
    elapsed = time.perf_counter() - start
    total = manifest.total_rows
    click.echo(
        f"wrote {total} simulated galaxies ({_split_summary(manifest)}) of "
        f"{size}x{size} pixels to {out} in {elapsed:.0f} s ({total / max(elapsed, 1e-9):.0f} galaxies/s)"
    )
    click.echo(f"true catalogue: {catalog_path(out)}; next: zray inspect {out}")


@click.command("prepare")
@click.argument("catalog", type=click.Path(dir_okay=False, path_type=Path), callback=click_absolute)
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), callback=click_absolute, required=True,
              help="Directory the catalogue's FITS paths are relative to.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), callback=click_absolute, required=True,
              help="Output dataset directory.")
@click.option("--size", type=int, default=64, show_default=True, help="Cutout size; larger cutouts are centre-cropped.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Split seed.")
@click.option("--skip-bad", is_flag=True,
              help="Leave out the galaxies whose cutouts cannot be used (file missing or unreadable, bands not as "
                   "expected, smaller than --size, NaN pixels) and list them with the reason in OUT.skipped.csv; "
                   "without it the run stops at the first one it meets (missing files are all counted first).")
@column_option
@z_range_options
@click.option("--overwrite", is_flag=True,
              help="Replace an existing dataset at --out (and its list of skipped galaxies).")
def prepare_cmd(catalog, images, out, size, seed, skip_bad, columns, bins, drop_out_of_range, overwrite):
    """Turn FITS cutouts listed in a catalogue into zray shards.

    CATALOG is CSV, Parquet, a FITS table (.fits, .fits.gz: its first
    table, column names in any case), a VOTable (.vot, .xml, as TAP services
    and TOPCAT write them) or ECSV, with columns id, z_spec, ebv (else 0, with a warning) and either
    `file` (one FITS with all five bands: a cube with header keywords
    BAND1..BAND5, or five image HDUs each with a FILTER keyword) or
    file_u..file_z (one FITS per band). Where the catalogue names them
    otherwise, --column says which of its columns is which. Band order
    always comes from headers or column names. Before reading any image,
    every listed file is looked for: the error counts those missing.

    \b
    Examples:
      zray prepare galaxies.csv --images cutouts/ --out data/mine --size 64
      zray prepare galaxies.fits --images cutouts/ --out data/mine --skip-bad
      zray prepare casjobs.csv --images cutouts/ --out data/sdss --column id=specObjID \\
          --column z_spec=z --column ebv=extinction_r/2.751
    """
    from zray.data.ingest import prepare_dataset

    start = time.perf_counter()
    manifest = prepare_dataset(catalog, images, out, size=size, seed=seed, overwrite=overwrite, skip_bad=skip_bad,
                               columns=columns, bins=bins, drop_out_of_range=drop_out_of_range)
    skipped = manifest.source.get("skipped", 0) + manifest.source.get("out_of_range", 0)
    of = f" of {manifest.total_rows + skipped}" if skipped else ""
    click.echo(
        f"wrote {manifest.total_rows}{of} galaxies ({_split_summary(manifest)}) of {size}x{size} "
        f"pixels to {out} in {time.perf_counter() - start:.0f} s; next: zray inspect {out}"
    )
    _empty_splits(manifest)


@click.command("cutouts")
@click.argument("catalog", type=click.Path(dir_okay=False, path_type=Path), callback=click_absolute)
@click.option("--frames", "frames_dir", type=click.Path(file_okay=False, path_type=Path), callback=click_absolute,
              required=True, help="Folder of survey frames (searched recursively): FITS images of one band each, "
                                  "naming it in FILTER or BAND, each with its own celestial WCS.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), callback=click_absolute, required=True,
              help="Output dataset directory; the galaxies not written are listed in OUT.skipped.csv beside it.")
@click.option("--size", type=int, default=64, show_default=True,
              help="Cutout size in pixels of 0.396\" (SDSS's scale), centred on each galaxy.")
@click.option("--max-bad", type=float, default=0.01, show_default=True,
              help="Largest fraction of a band's pixels that may be NaN or masked in the frame (they become 0, "
                   "the subtracted sky, counted in the bad_pixels column); more skips the galaxy.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Split seed.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all CPU cores).")
@column_option
@z_range_options
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset (and its list of skipped galaxies).")
def cutouts_cmd(catalog, frames_dir, out, size, max_bad, seed, workers, columns, bins, drop_out_of_range, overwrite):
    """Cut aligned five-band cutouts of a catalogue's galaxies from survey frames.

    CATALOG is CSV, Parquet, a FITS table, a VOTable or ECSV with id, ra,
    dec (degrees, or sexagesimal text: RA in hours), z_spec and, when known, ebv (else 0, with a warning) and
    mag_u..mag_z (carried into the shards); --column names them where the
    catalogue calls them otherwise. In each band the frame holding the galaxy's whole cutout
    is found from the frames' WCS (the one where it lies farthest from an
    edge, so a galaxy on one field's edge takes the neighbouring field's
    frame), and the band is resampled onto one grid centred on the galaxy,
    north up, east left, with reproject's flux-conserving reproject_exact.
    Galaxies off every frame, missing a band, on an edge of every frame
    holding them, or with too many NaN or masked pixels are skipped; the end
    says why, and OUT.skipped.csv lists them. Pixels stay as they are
    (nanomaggies for SDSS frames). An interrupted run, started again with the
    same inputs, keeps the frames it had finished.

    \b
    Example:
      zray simulate --frames --n 300 --out data/frames
      zray cutouts data/frames/catalog.csv --frames data/frames --out data/mine --size 64
    """
    from zray.data.skipped import count_line
    from zray.data.survey import make_cutouts

    start = time.perf_counter()
    report = make_cutouts(catalog, frames_dir, out, size=size, seed=seed, max_bad=max_bad, workers=workers,
                          overwrite=overwrite, columns=columns, bins=bins, drop_out_of_range=drop_out_of_range)
    m = report.manifest
    total = report.written + len(report.skipped)
    rate = report.cut / max(report.cut_seconds, 1e-9) / report.workers
    click.echo(f"wrote {report.written} of {total} galaxies ({_split_summary(m)}) of {size}x{size} pixels to {out} "
               f"in {time.perf_counter() - start:.0f} s ({rate:.1f} cutouts/s/core on {report.workers} "
               f"worker(s){f'; {report.resumed} frames kept from an interrupted run' if report.resumed else ''})")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)}: {count_line(report.counts)}")
    click.echo(f"not written, with reasons: {report.skipped_path}; next: zray inspect {out}")
    _empty_splits(m)


@click.command("inspect")
@click.argument("root", type=click.Path(path_type=Path), callback=click_absolute)
@click.option("--max-problems", type=click.IntRange(min=0), default=20, show_default=True,
              help="Problems to list at most (the rest are counted).")
def inspect_cmd(root, max_problems):
    """Summarise a dataset and check it: rows per split, image shape, z
    distribution, and anything odd (duplicate ids, out-of-range z, NaN
    pixels, shards that disagree with the manifest). Exits 1 if problems
    are found. Warns, without failing, when a split's rows sit in redshift
    order (files written by another tool).

    \b
    Example:
      zray inspect data/sim
    """
    import numpy as np

    from zray.data.validate import inspect_dataset

    report = inspect_dataset(root, max_problems=max_problems)
    m = report.manifest
    c, h, w = m.image_shape
    click.echo(f"{root}: {m.total_rows} rows, {c} bands ({','.join(m.bands)}), {h}x{w} pixels of {m.pixel_scale}\"")
    src = m.source.get("kind", "unknown")
    left_out = m.source.get("skipped")
    if isinstance(left_out, int) and left_out > 0:  # zray cutouts, zray prepare --skip-bad
        from zray.data.skipped import path_for

        listing = path_for(Path(root))
        src += f" ({left_out} galaxies of the catalogue left out" + (
            f", listed in {listing})" if listing.is_file() else ")")
    columns = m.source.get("columns")
    if isinstance(columns, dict) and columns:  # the manifest is the user's file: shown, never trusted
        src += f", its columns read as {', '.join(f'{k}={v}' for k, v in columns.items())}"
    click.echo(f"source: {src}; split seed {m.split_seed}; z range [{m.z_range[0]}, {m.z_range[1]}); "
               f"hash {m.hash[:19]}...")
    click.echo(f"{'split':<6} {'rows':>7} {'shards':>6}   z: {'p5':>6} {'p25':>6} {'p50':>6} {'p75':>6} {'p95':>6}")
    for s in m.splits:
        z = report.z_spec.get(s, [])
        click.echo(f"{s:<6} {m.rows[s]:>7} {len(m.shards[s]):>6}      {_percentiles(z)}")
    if report.ebv is not None and len(report.ebv):
        click.echo(f"ebv: median {np.median(report.ebv):.3f}, max {np.max(report.ebv):.3f}")
    for s in m.splits:
        if m.rows[s] == 0:
            click.echo(f"note: split {s!r} is empty (too few rows for the split fractions?)")
    for line in report.warnings:
        click.echo(f"warning: {line}")
    if report.ok:
        click.echo("problems: none")
        return
    click.echo("problems:")
    for p in report.problems:
        click.echo(f"  - {p}")
    if report.problems_dropped:
        click.echo(f"  ... and {report.problems_dropped} more")
    raise ZrayError(f"{root}: {len(report.problems) + report.problems_dropped} problem(s) found; see the list above")


COMMANDS: list = [simulate_cmd, prepare_cmd, cutouts_cmd, inspect_cmd]
