"""`zray simulate --frames` and `zray cutouts`: survey frames (FITS written by astropy, each band
with its own WCS shifted by tens of pixels and turned) cut into aligned five-band cutouts, checked
against the same galaxies rendered directly as cutouts."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from conftest import SDSS_IDS
from zray.cli import main
from zray.data.frames import CATALOG_NAME, TRUTH_NAME, simulate_frames
from zray.data.render import render_galaxy
from zray.data.shards import BANDS, PIXEL_SCALE, read_manifest
from zray.data.survey import (
    BAD_PIXELS,
    MISSING_BAND,
    OFF_FRAMES,
    ON_EDGE,
    OUT_OF_RANGE,
    make_cutouts,
    partial_path,
    tan_to_sky,
)

SIZE = 32
CENTRE = (150.0, 2.2)
# Galaxies placed in pixels of the mosaic (x west, y north) around its centre. Fields of 200 pixels,
# 60 overlapping: field 0 spans x, y in [-170, 30] (+ each band's shift), field 1 x in [-30, 170], ...
PLACES = {
    101: (-70, -70),  # inside field 0
    102: (70, -70),  # inside field 1
    103: (0, -70),  # in the overlap of fields 0 and 1, whole in both
    104: (-70, 70),  # inside field 2
    105: (22, 70),  # 8 pixels from field 2's east edge: whole only in field 3's frames
    106: (95, 95),  # inside field 3 only
    107: (0, 0),  # where all four fields overlap
    108: (-163, -70),  # 7 pixels inside field 0's west edge, on no other field: skipped
    109: (600, 600),  # off every frame: skipped
}


def _run(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    assert "Traceback" not in result.output, result.output
    return result


def _sky(dx, dy):
    s = PIXEL_SCALE / 3600
    return tan_to_sky(CENTRE[0], CENTRE[1], -dx * s, dy * s)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Noise-free frames of 2x2 fields holding the galaxies of PLACES (the farthest of 200 from
    the simulator's population), and the catalogue `zray cutouts` takes."""
    from zray.data.population import draw_population

    root = tmp_path_factory.mktemp("frames")
    pop = draw_population(200, 3)
    pick = np.argsort(pop["z"])[-len(PLACES):]  # the farthest: small on the sky
    ra, dec = zip(*(_sky(*xy) for xy in PLACES.values()))
    cat = {"id": pa.array(list(PLACES), pa.int64()), "z": pop["z"][pick], "ra": list(map(float, ra)),
           "dec": list(map(float, dec)), "ebv": pop["ebv"][pick]}
    cat.update({f"mag_{b}": pop["mags"][pick, k] for k, b in enumerate(BANDS)})
    pcsv.write_csv(pa.table(cat), root / "input.csv")
    simulate_frames(root / "frames", catalog=root / "input.csv", fields="2x2", frame_size=200, overlap=60,
                    seed=3, workers=1, noise=False, centre=CENTRE, progress=False)
    return root / "frames"


def _frame(frames, band, field):
    with fits.open(frames / f"frame-{band}-{field:04d}.fits") as hdul:
        return WCS(hdul[0].header), hdul[0].data.shape


def _holds(frames, band, field, gid):
    w, (ny, nx) = _frame(frames, band, field)
    x, y = w.world_to_pixel_values(*_sky(*PLACES[gid]))
    return -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5


def _shards(out):
    ids, images, bad = [], [], []
    for path in sorted(out.glob("*-0*.parquet")):
        t = pq.read_table(path)
        ids.append(t.column("id").to_numpy())
        images.append(t.column("image").combine_chunks().to_numpy_ndarray())
        bad.append(t.column("bad_pixels").to_numpy())
    return np.concatenate(ids), np.concatenate(images), np.concatenate(bad)


def _direct(frames, gid):
    """The galaxy rendered directly as a noise-free cutout, from the same parameters."""
    truth = pq.read_table(frames / TRUTH_NAME).to_pylist()
    p = next(r for r in truth if r["id"] == gid)
    p["mags"] = np.array([p[f"mag_{b}"] for b in BANDS])
    p["dx_pix"] = p["dy_pix"] = 0.0
    return render_galaxy(p, SIZE, 0, noise=False)


def _centroids(image):
    y, x = np.indices(image.shape[1:])
    flux = image.sum(axis=(1, 2))
    return np.stack([(image * x).sum(axis=(1, 2)) / flux, (image * y).sum(axis=(1, 2)) / flux], axis=1)


def _skipped(out):
    with open(out.parent / f"{out.name}.skipped.csv", newline="") as fh:
        return {int(r["id"]): r for r in csv.DictReader(fh)}


def test_frames_have_their_own_wcs_per_band(frames):
    """The frames are what the issue asks for: each band shifted by tens of pixels, turned a little."""
    ra, dec = _sky(-70, -70)
    pos = np.array([_frame(frames, b, 0)[0].world_to_pixel_values(ra, dec) for b in BANDS])
    shift = np.abs(pos - pos[BANDS.index("r")]).max(axis=1)
    assert sorted(shift)[1] >= 15 and shift.max() <= 45, shift  # every band but r is tens of pixels away
    cd = [_frame(frames, b, 0)[0].pixel_scale_matrix for b in BANDS]
    turns = [np.degrees(np.arctan2(m[1, 0], m[1, 1])) for m in cd]
    assert 0 < np.ptp(turns) <= 1.0
    header = fits.getheader(frames / "frame-g-0001.fits")
    assert header["FILTER"] == "g" and header["BUNIT"] == "nanomaggy"
    names = pcsv.read_csv(frames / CATALOG_NAME).column_names
    assert names[:5] == ["id", "ra", "dec", "z_spec", "ebv"]


def test_cutouts_aligned_flux_kept_edges_handled(frames, tmp_path):
    out = tmp_path / "data" / "mine"
    result = _run("cutouts", frames / CATALOG_NAME, "--frames", frames, "--out", out, "--size", SIZE,
                  "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "wrote 7 of 9 galaxies" in result.output, result.output
    assert "skipped 2:" in result.output and "1 off every frame" in result.output
    ids, images, bad = _shards(out)
    assert sorted(ids) == [101, 102, 103, 104, 105, 106, 107]
    assert not bad.any()
    spread, offset, flux = [], [], []
    for gid, image in zip(ids, images):
        direct = _direct(frames, int(gid))
        c = _centroids(image)
        spread.append(np.ptp(c, axis=0).max())  # between the five bands
        offset.append(np.abs(c - _centroids(direct)).max())  # against the direct cutout
        flux.append(np.abs(image.sum(axis=(1, 2)) / direct.sum(axis=(1, 2)) - 1).max())
    print(f"\nbands' centroid spread at most {max(spread):.4f} px, offset from the direct cutouts at most "
          f"{max(offset):.4f} px, flux within {100 * max(flux):.3f}%")
    assert max(spread) <= 0.05 and max(offset) <= 0.05, (spread, offset)
    assert max(flux) <= 0.01, flux
    # 105 sits in field 2's r frame, too near its edge: its r band came from field 3's frame
    assert _holds(frames, "r", 2, 105) and _holds(frames, "r", 3, 105)
    skipped = _skipped(out)
    assert sorted(skipped) == [108, 109]
    assert skipped[109]["reason"] == OFF_FRAMES
    in_every_band = all(_holds(frames, b, 0, 108) for b in BANDS)
    assert skipped[108]["reason"] == (ON_EDGE if in_every_band else MISSING_BAND), skipped[108]
    assert skipped[108]["row"] == "8"
    assert not partial_path(out).exists()
    assert _run("inspect", out).exit_code == 0


def test_missing_band_is_skipped_with_its_reason(frames, tmp_path):
    """The catalogue here is a FITS table kept among the frames, its column names in capitals:
    read as a catalogue, and not taken for a frame."""
    from astropy.table import Table

    copy = tmp_path / "frames"
    shutil.copytree(frames, copy)
    (copy / "frame-g-0003.fits").unlink()
    rows = [r for r in pcsv.read_csv(frames / CATALOG_NAME).to_pylist() if r["id"] in (101, 106)]
    Table(rows=[[r[k] for k in rows[0]] for r in rows], names=[k.upper() for k in rows[0]]).write(copy / "two.fits")
    out = tmp_path / "two"
    result = _run("cutouts", copy / "two.fits", "--frames", copy, "--out", out, "--size", SIZE, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "wrote 1 of 2 galaxies" in result.output and "1 band missing" in result.output
    skipped = _skipped(out)
    assert skipped[106]["reason"] == MISSING_BAND and skipped[106]["detail"] == "no g frame holds its position"


def test_a_redshift_outside_the_bins_stops_the_cut_or_is_skipped_and_listed(frames, tmp_path):
    """A star (z below 0) in the catalogue: `zray cutouts` stops before cutting anything, naming
    it and the two ways on; with --drop-out-of-range it is skipped with its reason and listed,
    and the others are cut as ever; --z-max widens the dataset's range instead."""
    rows = sorted((r for r in pcsv.read_csv(frames / CATALOG_NAME).to_pylist() if r["id"] in (101, 102, 103)),
                  key=lambda r: r["id"])
    rows[1]["z_spec"] = -0.0003
    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "three.csv")
    out = tmp_path / "three"
    argv = ["cutouts", tmp_path / "three.csv", "--frames", frames, "--out", out, "--size", SIZE, "--workers", 1]
    refused = _run(*argv)
    assert refused.exit_code == 1 and not out.exists() and not list(tmp_path.glob("*.skipped.csv"))
    assert ("row 2 (id 102): z_spec -0.0003 is outside the binning range; expected 0.0 <= z < 0.4: "
            "--drop-out-of-range leaves them out") in " ".join(refused.output.split()), refused.output
    done = _run(*argv, "--drop-out-of-range")
    assert done.exit_code == 0, done.output
    assert "wrote 2 of 3 galaxies" in done.output and f"1 {OUT_OF_RANGE}" in done.output
    skipped = _skipped(out)
    assert list(skipped) == [102] and skipped[102]["reason"] == OUT_OF_RANGE
    assert skipped[102]["detail"] == "z_spec -0.0003 lies outside 0.0 <= z < 0.4"
    assert sorted(_shards(out)[0]) == [101, 103]
    rows[1]["z_spec"] = 0.61  # a luminous red galaxy
    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "three.csv")
    wide = _run(*argv[:5], tmp_path / "wide", *argv[6:], "--z-max", 0.8)
    assert wide.exit_code == 0 and "wrote 3 of 3 galaxies" in wide.output, wide.output
    assert read_manifest(tmp_path / "wide").z_range == (0.0, 0.8)


def test_masked_pixels_count_against_the_limit(frames, tmp_path):
    copy = tmp_path / "frames"
    shutil.copytree(frames, copy)
    with fits.open(copy / "frame-i-0000.fits", mode="update") as hdul:
        w = WCS(hdul[0].header)
        x, y = (int(round(float(v))) for v in w.world_to_pixel_values(*_sky(*PLACES[101])))
        hdul[0].data[y - 3: y + 3, x - 3: x + 3] = np.nan  # 36 masked frame pixels on the galaxy
    rows = [r for r in pcsv.read_csv(frames / CATALOG_NAME).to_pylist() if r["id"] in (101, 102)]
    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "two.csv")
    out = tmp_path / "strict"
    result = _run("cutouts", tmp_path / "two.csv", "--frames", copy, "--out", out, "--size", SIZE, "--workers", 1)
    assert result.exit_code == 0 and "1 bad pixels" in result.output, result.output
    assert "i pixels are NaN or masked in the frame (limit 0.01: 10)" in _skipped(out)[101]["detail"]
    out = tmp_path / "lenient"
    result = _run("cutouts", tmp_path / "two.csv", "--frames", copy, "--out", out, "--size", SIZE,
                  "--workers", 1, "--max-bad", 0.1)
    assert result.exit_code == 0 and "wrote 2 of 2" in result.output, result.output
    ids, images, bad = _shards(out)
    assert 36 <= bad[list(ids).index(101)] <= 64 and np.isfinite(images).all()
    assert _skipped(out) == {} and BAD_PIXELS == "bad pixels"


def test_integer_frames_scaled_by_bzero_and_bscale_cut_as_their_floats(frames, tmp_path):
    """Frames as many pipelines write them: unsigned 16-bit integers with BZERO = 32768 and a
    BSCALE (astropy cannot memory-map those). They give the cutouts of the float frames, to
    the integers' step."""
    copy = tmp_path / "frames"
    shutil.copytree(frames, copy)
    step = 0.0
    for path in copy.glob("frame-*.fits"):
        with fits.open(path) as hdul:
            header, data = hdul[0].header.copy(), hdul[0].data.astype(np.float64)
        hdu = fits.PrimaryHDU(data, header)
        bscale = (data.max() - data.min()) / 60000.0  # stored integers from -32768 up, as uint16 would
        hdu.scale("int16", bzero=data.min() + 32768 * bscale, bscale=bscale)
        hdu.writeto(path, overwrite=True)
        step = max(step, bscale)
    with fits.open(next(copy.glob("frame-*.fits"))) as hdul:
        assert hdul[0].header["BITPIX"] == 16 and "BZERO" in hdul[0].header
    rows = [r for r in pcsv.read_csv(frames / CATALOG_NAME).to_pylist() if r["id"] in (101, 102)]
    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "two.csv")
    for name, folder in (("ints", copy), ("floats", frames)):
        result = _run("cutouts", tmp_path / "two.csv", "--frames", folder, "--out", tmp_path / name, "--size", SIZE,
                      "--workers", 1)
        assert result.exit_code == 0 and "wrote 2 of 2" in result.output, result.output
    (ids, ints, _), (ids_f, floats, _) = _shards(tmp_path / "ints"), _shards(tmp_path / "floats")
    assert list(ids) == list(ids_f)
    np.testing.assert_allclose(ints, floats, atol=step)  # each frame pixel within half a step
    assert np.abs(floats).max() > 100 * step  # the galaxies are there, far above the step


def test_a_compressed_frame_is_read_and_a_damaged_one_leaves_nothing(frames, tmp_path):
    """A tile-compressed frame named .fits (as surveys ship them) is cut like the plain one; damaged
    inside its pixels, whole to the byte, it is one sentence, and with nothing cut before it no
    hidden folder of partial results stays behind."""
    copy = tmp_path / "frames"
    shutil.copytree(frames, copy)
    frame = copy / "frame-u-0000.fits"  # where galaxy 101 lies
    with fits.open(frame) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header)]).writeto(frame, overwrite=True)
    rows = [r for r in pcsv.read_csv(frames / CATALOG_NAME).to_pylist() if r["id"] == 101]
    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "one.csv")
    for name, folder in (("packed", copy), ("plain", frames)):
        result = _run("cutouts", tmp_path / "one.csv", "--frames", folder, "--out", tmp_path / name, "--size", SIZE,
                      "--workers", 1)
        assert result.exit_code == 0 and "wrote 1 of 1" in result.output, result.output
    np.testing.assert_allclose(_shards(tmp_path / "packed")[1], _shards(tmp_path / "plain")[1], rtol=1e-3, atol=1e-3)
    shutil.rmtree(tmp_path / "packed")
    shutil.rmtree(tmp_path / "plain")
    (tmp_path / "plain.skipped.csv").unlink(missing_ok=True)
    (tmp_path / "packed.skipped.csv").unlink(missing_ok=True)
    raw = bytearray(frame.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 2000] = bytes(2000)
    frame.write_bytes(bytes(raw))
    result = _run("cutouts", tmp_path / "one.csv", "--frames", copy, "--out", tmp_path / "mine", "--size", SIZE,
                  "--workers", 1)
    assert result.exit_code == 1
    assert result.output.count("zray: error:") == 1
    assert "frame-u-0000.fits: its pixels cannot be read" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "one.csv"]  # no hidden partial folder


def test_two_ids_at_one_position_are_warned_about(frames, tmp_path):
    rows = [r for r in pcsv.read_csv(frames / CATALOG_NAME).to_pylist() if r["id"] == 101]
    pcsv.write_csv(pa.Table.from_pylist(rows + [{**rows[0], "id": 999}]), tmp_path / "twice.csv")
    result = _run("cutouts", tmp_path / "twice.csv", "--frames", frames, "--out", tmp_path / "mine", "--size", SIZE,
                  "--workers", 1)
    assert result.exit_code == 0, result.output
    assert ("twice.csv: 1 row(s) share their ra and dec with an earlier row (first row 1 (id 101) and row 2 "
            "(id 999)): the same cutout under two ids") in result.output


def test_interrupted_run_resumes_with_the_same_result(frames, tmp_path):
    out = tmp_path / "mine"
    with pytest.raises(KeyboardInterrupt):
        make_cutouts(frames / CATALOG_NAME, frames, out, size=SIZE, workers=1, progress=False, stop_after_tasks=2)
    assert not out.exists() and len(list(partial_path(out).glob("*.json"))) == 3  # the key and two tasks
    report = make_cutouts(frames / CATALOG_NAME, frames, out, size=SIZE, workers=1, progress=False)
    assert report.resumed == 2 and report.written == 7 and report.tasks > 2
    assert not partial_path(out).exists()
    again = make_cutouts(frames / CATALOG_NAME, frames, tmp_path / "clean", size=SIZE, workers=1, progress=False)
    assert again.resumed == 0 and again.manifest.hash == report.manifest.hash
    # Started again reading other positions from the same file (--column ra=RA2 --column dec=DEC2),
    # it cuts every galaxy anew: the interrupted run's cutouts are of other places.
    from zray.data.catalog import parse_columns

    table = pcsv.read_csv(frames / CATALOG_NAME)
    shifted = table.append_column("RA2", pa.compute.add(table["ra"], 0.2 / 3600)).append_column("DEC2", table["dec"])
    pcsv.write_csv(shifted, tmp_path / "both.csv")
    out = tmp_path / "moved"
    with pytest.raises(KeyboardInterrupt):
        make_cutouts(tmp_path / "both.csv", frames, out, size=SIZE, workers=1, progress=False, stop_after_tasks=2)
    moved = make_cutouts(tmp_path / "both.csv", frames, out, size=SIZE, workers=1, progress=False,
                         columns=parse_columns(["ra=RA2", "dec=DEC2"]))
    assert moved.resumed == 0 and moved.manifest.hash != report.manifest.hash
    clean = make_cutouts(tmp_path / "both.csv", frames, tmp_path / "clean-moved", size=SIZE, workers=1,
                         progress=False, columns=parse_columns(["ra=RA2", "dec=DEC2"]))
    assert moved.manifest.hash == clean.manifest.hash
    assert moved.manifest.source["columns"] == {"ra": "RA2", "dec": "DEC2"}


def test_bad_catalogue_row_or_frame_without_wcs_is_one_sentence_and_nothing_written(frames, tmp_path):
    rows = pcsv.read_csv(frames / CATALOG_NAME).to_pylist()
    rows[1]["dec"] = 95.0
    pcsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "bad.csv")
    out = tmp_path / "mine"
    result = _run("cutouts", tmp_path / "bad.csv", "--frames", frames, "--out", out)
    assert result.exit_code == 1
    assert f"bad.csv: row 2 (id {rows[1]['id']}): dec 95 is outside [-90, 90]; expected Dec in degrees" in result.output
    assert result.output.count("zray: error:") == 1
    copy = tmp_path / "frames"
    shutil.copytree(frames, copy)
    with fits.open(copy / "frame-z-0002.fits", mode="update") as hdul:
        for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            hdul[0].header.remove(key, ignore_missing=True)
    result = _run("cutouts", frames / CATALOG_NAME, "--frames", copy, "--out", out)
    assert result.exit_code == 1
    assert "frame-z-0002.fits: has no celestial WCS; expected each frame to carry its own" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "frames"]  # nothing written


def test_frames_and_cutouts_keep_sdss_spec_obj_ids_above_the_signed_range(tmp_path):
    """Frames drawn from a catalogue of SDSS specObjIDs above 2**63 - 1 list them, to the last bit,
    in the catalogue they write, and `zray cutouts` cuts them into shards under the same ids."""
    from zray.data.population import draw_population

    pop = draw_population(50, 3)
    pick = np.argsort(pop["z"])[-2:]
    ra, dec = zip(*(_sky(*xy) for xy in ((-6, -6), (6, 6))))
    ids = SDSS_IDS[-2:]
    cat = {"id": pa.array(ids, pa.uint64()), "z": pop["z"][pick], "ra": list(map(float, ra)),
           "dec": list(map(float, dec)), "ebv": pop["ebv"][pick]}
    cat.update({f"mag_{b}": pop["mags"][pick, k] for k, b in enumerate(BANDS)})
    pq.write_table(pa.table(cat), tmp_path / "input.parquet")
    frames = tmp_path / "frames"
    simulate_frames(frames, catalog=tmp_path / "input.parquet", fields="1x1", frame_size=128, overlap=16, seed=3,
                    workers=1, noise=False, centre=CENTRE, progress=False)
    with open(frames / CATALOG_NAME, newline="") as fh:
        assert sorted(int(row["id"]) for row in csv.DictReader(fh)) == ids
    report = make_cutouts(frames / CATALOG_NAME, frames, tmp_path / "cut", size=SIZE, workers=1, progress=False)
    assert report.written == 2
    written, _, _ = _shards(tmp_path / "cut")
    assert written.dtype == np.uint64 and sorted(int(i) for i in written) == ids


def test_frames_and_cutouts_from_catalogues_under_a_surveys_own_names(tmp_path):
    """`zray simulate --frames --catalog` from an ECSV table and `zray cutouts` from a VOTable, each
    under a survey's column names read with --column (dereddened magnitudes as SDSS calls them, ids
    above 2**63 - 1 as the text a TAP service writes, RA and Dec in sexagesimal), give the same
    cutouts as the frames' own catalogue."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    from zray.data.population import draw_population
    from zray.data.shards import read_manifest

    pop = draw_population(50, 3)
    pick = np.argsort(pop["z"])[-2:]
    ra, dec = zip(*(_sky(*xy) for xy in ((-6, -6), (6, 6))))
    ids = SDSS_IDS[-2:]
    table = Table({"specObjID": np.array(ids, np.uint64), "zsp": pop["z"][pick], "ra": ra, "dec": dec,
                   **{f"dered_{b}": pop["mags"][pick, k] for k, b in enumerate(BANDS)}})
    table.write(tmp_path / "input.ecsv")
    mags = [f"--column=mag_{b}=dered_{b}" for b in BANDS]
    result = _run("simulate", "--frames", "--catalog", tmp_path / "input.ecsv", "--fields", "1x1", "--frame-size",
                  128, "--overlap", 16, "--out", tmp_path / "frames", "--column", "id=specObjID",
                  "--column", "z_spec=zsp", *mags)
    assert result.exit_code == 0, result.output
    frames = tmp_path / "frames"
    with open(frames / CATALOG_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["id"]) for r in rows) == ids
    # RA and Dec as VizieR gives them by default: sexagesimal text, RA in hours
    sky = SkyCoord([float(r["ra"]) for r in rows], [float(r["dec"]) for r in rows], unit="deg")
    Table({"specObjID": [r["id"] for r in rows], "RA": sky.ra.to_string(unit="hourangle", sep=" ", precision=9),
           "DEC": sky.dec.to_string(sep=" ", precision=8, alwayssign=True), "z": [float(r["z_spec"]) for r in rows],
           "E_BV": [float(r["ebv"]) for r in rows]}).write(tmp_path / "cat.vot", format="votable")
    result = _run("cutouts", tmp_path / "cat.vot", "--frames", frames, "--out", tmp_path / "named", "--size", SIZE,
                  "--workers", 1, "--column", "id=specObjID", "--column", "ra=RA", "--column", "dec=DEC",
                  "--column", "z_spec=z", "--column", "ebv=E_BV")
    assert result.exit_code == 0, result.output
    make_cutouts(frames / CATALOG_NAME, frames, tmp_path / "own", size=SIZE, workers=1, progress=False)
    named, own = _shards(tmp_path / "named"), _shards(tmp_path / "own")
    assert named[0].dtype == np.uint64 and sorted(int(i) for i in named[0]) == ids
    np.testing.assert_array_equal(named[0], own[0])
    np.testing.assert_allclose(named[1], own[1], rtol=1e-5, atol=1e-6 * np.abs(own[1]).max())  # to 1e-7"
    assert read_manifest(tmp_path / "named").source["columns"] == {
        "id": "specObjID", "ra": "RA", "dec": "DEC", "z_spec": "z", "ebv": "E_BV"}


def test_sky_positions_given_as_text_in_degrees_or_sexagesimal(tmp_path):
    """RA and Dec as catalogues give them in text: degrees ('150.1'), sexagesimal with spaces or
    colons (RA in hours), a typeset minus, and the time of day pyarrow reads a column of 12:30:00 as."""
    from zray.data.survey import read_survey_catalog

    (tmp_path / "a.csv").write_text("id,z_spec,ra,dec\n1,0.1,150.1,2.5\n2,0.1,12 30 00,\u221201 30 00\n"
                                    "3,0.1,01:00:00.0,+00:30:00\n", encoding="utf-8")
    cat = read_survey_catalog(tmp_path / "a.csv")
    np.testing.assert_allclose(cat.ra, [150.1, 187.5, 15.0])
    np.testing.assert_allclose(cat.dec, [2.5, -1.5, 0.5])
    (tmp_path / "b.csv").write_text("id,z_spec,ra,dec\n1,0.1,12:30:00,-10.5\n2,0.1,01:00:00,20\n")
    assert pa.types.is_time(pcsv.read_csv(tmp_path / "b.csv").schema.field("ra").type)
    np.testing.assert_allclose(read_survey_catalog(tmp_path / "b.csv").ra, [187.5, 15.0])


def test_simulate_frames_command(tmp_path):
    out = tmp_path / "frames"
    result = _run("simulate", "--frames", "--n", 4, "--fields", "1x2", "--frame-size", 96, "--overlap", 16,
                  "--workers", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert "wrote 10 frames (1x2 fields x 5 bands, 96x96 pixels, 16 overlapping)" in result.output
    assert f"next: zray cutouts {out / CATALOG_NAME} --frames {out}" in result.output
    data = fits.getdata(out / "frame-u-0001.fits")
    assert data.shape == (96, 96) and data.dtype.kind == "f" and np.std(data) > 0  # the sky's noise
    result = _run("simulate", "--frames", "--n", 4, "--fields", "2by2", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "--fields '2by2' is not COLSxROWS; expected e.g. 2x2" in result.output
    # The frames' options without --frames, and the cutouts' --size with it, would be ignored: refused.
    result = _run("simulate", "--n", 4, "--fields", "3x3", "--frame-size", 96, "--out", tmp_path / "y")
    assert result.exit_code == 1
    assert "--fields, --frame-size shape survey frames; expected --frames with them" in result.output
    result = _run("simulate", "--frames", "--n", 4, "--size", 16, "--out", tmp_path / "y")
    assert result.exit_code == 1 and "--size is the cutouts' size, and --frames draws whole frames" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    # The default overlap fits a small frame: a quarter of it.
    result = _run("simulate", "--frames", "--n", 2, "--fields", "1x1", "--frame-size", 80, "--workers", 1,
                  "--out", tmp_path / "small")
    assert result.exit_code == 0 and "80x80 pixels, 20 overlapping" in result.output, result.output


# --- careless inputs, on tiny frames written by astropy alone (no GalSim: fast) ------------------

TINY = 48


def _tiny_frame(path, band, scale=PIXEL_SCALE, ctype=("RA---TAN", "DEC--TAN"), header=None):
    w = WCS(naxis=2)
    w.wcs.ctype = list(ctype)
    w.wcs.crval = list(CENTRE)
    w.wcs.crpix = [(TINY + 1) / 2] * 2
    w.wcs.cd = np.diag([-scale, scale]) / 3600
    h = w.to_header()
    h["FILTER"] = band
    h.update(header or {})
    y, x = np.indices((TINY, TINY))
    fits.PrimaryHDU(np.exp(-((x - TINY / 2) ** 2 + (y - TINY / 2) ** 2) / 8).astype(np.float32),
                    header=h).writeto(path)


@pytest.fixture
def tiny(tmp_path):
    """Five aligned 48x48 frames at (150, 2.2) and a catalogue of one galaxy on them."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for b in BANDS:
        _tiny_frame(folder / f"f-{b}.fits", b)
    pcsv.write_csv(pa.table({"id": [7], "ra": [CENTRE[0]], "dec": [CENTRE[1]], "z_spec": [0.1], "ebv": [0.02]}),
                   tmp_path / "cat.csv")
    return tmp_path


def _spoil(kind, frames):
    """Make the frames folder careless in one way; returns (--out, the expected message's end)."""
    g = frames / "f-g.fits"
    if kind == "galactic":
        g.unlink()
        _tiny_frame(g, "g", ctype=("GLON-TAN", "GLAT-TAN"))
        return None, "f-g.fits: its WCS is in GLON-TAN/GLAT-TAN coordinates; expected RA/Dec in ICRS or FK5"
    if kind == "fk4":
        g.unlink()
        _tiny_frame(g, "g", header={"RADESYS": "FK4", "EQUINOX": 1950.0})
        return None, "f-g.fits: its WCS is in RA---TAN/DEC--TAN (FK4) coordinates; expected RA/Dec in ICRS or FK5"
    if kind == "scales":
        g.unlink()
        _tiny_frame(g, "g", scale=2 * PIXEL_SCALE)
        return None, "f-g.fits: has pixels of 0.792\" but"
    if kind == "truncated":
        g.write_bytes(g.read_bytes()[:4000])
        return None, "f-g.fits: is 4000 bytes, shorter than its header says"
    if kind == "out inside frames":
        return frames / "mine", f"mine: lies inside the --frames folder {frames}; expected the dataset outside it"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["galactic", "fk4", "scales", "truncated", "out inside frames"])
def test_careless_frames_are_one_sentence_and_nothing_written(tiny, kind):
    out, message = _spoil(kind, tiny / "frames")
    before = sorted(p.relative_to(tiny) for p in tiny.rglob("*"))
    result = _run("cutouts", tiny / "cat.csv", "--frames", tiny / "frames", "--out", out or tiny / "mine",
                  "--size", 16, "--workers", 1)
    assert result.exit_code == 1 and message in result.output, result.output
    assert result.output.count("zray: error:") == 1 and "WARNING" not in result.output, result.output
    assert sorted(p.relative_to(tiny) for p in tiny.rglob("*")) == before  # nothing written


def test_the_files_sdss_keeps_beside_its_frames_are_left_out_and_counted(tiny):
    """An SDSS download folder holds psField and fpM tables beside the frames, and other tools leave
    images that name no band (a weight map): left out, counted in a warning, and the galaxy cut
    as from the frames alone; a folder of nothing but such files is one sentence."""
    from astropy.table import Table

    frames = tiny / "frames"
    alone = _run("cutouts", tiny / "cat.csv", "--frames", frames, "--out", tiny / "alone", "--size", 16)
    assert alone.exit_code == 0 and "left out" not in alone.output, alone.output
    run = frames / "301" / "3704"
    run.mkdir(parents=True)
    Table({"psp_status": [0], "psf_width": [1.2]}).write(run / "psField-003704-3-0091.fit")
    Table({"mask": [1]}).write(run / "fpM-003704-r3-0091.fit")
    fits.PrimaryHDU(np.ones((48, 48), np.float32)).writeto(frames / "weight.fits")
    result = _run("cutouts", tiny / "cat.csv", "--frames", frames, "--out", tiny / "mine", "--size", 16,
                  "--workers", 1)
    assert result.exit_code == 0 and "wrote 1 of 1 galaxies" in result.output, result.output
    said = " ".join(result.output.split())
    assert (f"{frames}: left out 3 FITS files that are not frames: 2 hold no 2-D image (tables) (such as "
            "301/3704/fpM-003704-r3-0091.fit), 1 name no band in FILTER or BAND (such as weight.fits)") in said, said
    assert np.array_equal(_shards(tiny / "mine")[1], _shards(tiny / "alone")[1])
    for b in BANDS:
        (frames / f"f-{b}.fits").unlink()
    result = _run("cutouts", tiny / "cat.csv", "--frames", frames, "--out", tiny / "none", "--size", 16)
    assert result.exit_code == 1 and result.output.count("zray: error:") == 1, result.output
    assert f"{frames}: holds no frames among its 3 FITS files (2 hold no 2-D image" in " ".join(result.output.split())
    assert not (tiny / "none").exists()


def test_tiny_frames_bz2_and_nothing_left_when_none_is_cut(tiny):
    """SDSS's frames come as .fits.bz2; a run that cuts no galaxy leaves only its list of reasons."""
    import bz2

    r = tiny / "frames" / "f-r.fits"
    r.with_name("f-r.fits.bz2").write_bytes(bz2.compress(r.read_bytes()))
    r.unlink()
    result = _run("cutouts", tiny / "cat.csv", "--frames", tiny / "frames", "--out", tiny / "mine", "--size", 16,
                  "--workers", 1)
    assert result.exit_code == 0 and "wrote 1 of 1 galaxies" in result.output, result.output
    pcsv.write_csv(pa.table({"id": [8], "ra": [10.0], "dec": [0.0], "z_spec": [0.1]}), tiny / "off.csv")
    result = _run("cutouts", tiny / "off.csv", "--frames", tiny / "frames", "--out", tiny / "none", "--size", 16)
    assert result.exit_code == 1 and "none of its 1 galaxies could be cut" in result.output, result.output
    assert not (tiny / "none").exists() and not partial_path(tiny / "none").exists()
    assert _skipped(tiny / "none")[8]["reason"] == OFF_FRAMES
