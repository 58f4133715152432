"""FITS ingest (`zray prepare`) in both layouts, on FITS files made here with astropy."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet  # noqa: F401 (pa.parquet)
import pytest
from astropy.io import fits

from conftest import SDSS_IDS
from zray.data import load_arrays, prepare_dataset, validate_dataset
from zray.data.ingest import normalise_band
from zray.errors import ZrayError

BANDS = "ugriz"
SIZE = 16


def _truth(i: int, shape=(20, 20)) -> np.ndarray:
    """Five distinguishable planes: band k has values 1000*i + 100*k + pixel index."""
    base = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) / 1000
    return np.stack([1000 * i + 100 * k + base for k in range(5)]).astype(np.float32)


def _crop(a: np.ndarray) -> np.ndarray:
    y0, x0 = (a.shape[-2] - SIZE) // 2, (a.shape[-1] - SIZE) // 2
    return a[..., y0: y0 + SIZE, x0: x0 + SIZE]


def _write_cube(path, image, order="zruig", keywords=True, overwrite=False):
    planes = np.stack([image[BANDS.index(b)] for b in order])
    hdu = fits.PrimaryHDU(planes)
    if keywords:
        for k, b in enumerate(order):
            hdu.header[f"BAND{k + 1}"] = f"SDSS_{b}" if k % 2 else b
    hdu.writeto(path, overwrite=overwrite)


def _write_mef(path, image, order="gzuri", key="FILTER"):
    hdus = [fits.PrimaryHDU()]
    for b in order:
        h = fits.ImageHDU(image[BANDS.index(b)])
        if key:
            h.header[key] = b.upper()
        hdus.append(h)
    fits.HDUList(hdus).writeto(path)


def _write_catalog(path, rows: dict):
    pcsv.write_csv(pa.table(rows), path)


def _single_file_setup(tmp_path, n=6, writer=_write_cube):
    images = tmp_path / "img"
    images.mkdir()
    for i in range(n):
        writer(images / f"g{i}.fits", _truth(i))
    rows = {"id": list(range(100, 100 + n)), "z_spec": [0.02 + 0.05 * i for i in range(n)],
            "ebv": [0.03] * n, "file": [f"g{i}.fits" for i in range(n)]}
    _write_catalog(tmp_path / "cat.csv", rows)
    return rows


def _per_band_setup(tmp_path, n=5):
    images = tmp_path / "img"
    images.mkdir()
    rows = {"id": list(range(n)), "z_spec": [0.1] * n, "ebv": [0.02] * n}
    for k, b in enumerate(BANDS):
        rows[f"file_{b}"] = []
        for i in range(n):
            hdu = fits.PrimaryHDU(_truth(i)[k])
            if i % 2:
                hdu.header["FILTER"] = b
            hdu.writeto(images / f"g{i}_{b}.fits")
            rows[f"file_{b}"].append(f"g{i}_{b}.fits")
    rows["mag_r"] = [17.0] * n
    _write_catalog(tmp_path / "cat.csv", rows)
    return rows


def _check_roundtrip(out, ids):
    validate_dataset(out)
    seen = set()
    for split in ("train", "val", "test"):
        arrays = load_arrays(out, split)
        for ident, image in zip(arrays["id"], arrays["image"]):
            i = ids.index(int(ident))
            np.testing.assert_array_equal(image, _crop(_truth(i)))
            seen.add(int(ident))
    assert seen == set(ids)


@pytest.mark.parametrize("writer", [_write_cube, _write_mef], ids=["cube+BANDn", "mef+FILTER"])
def test_single_file_layouts(tmp_path, writer):
    rows = _single_file_setup(tmp_path, writer=writer)
    m = prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
    assert m.image_shape == (5, SIZE, SIZE) and m.total_rows == 6
    _check_roundtrip(tmp_path / "out", rows["id"])


def test_one_file_per_band_layout_and_parquet_catalogue(tmp_path):
    rows = _per_band_setup(tmp_path)
    import pyarrow.parquet as pq

    pq.write_table(pa.table(rows), tmp_path / "cat.parquet")
    m = prepare_dataset(tmp_path / "cat.parquet", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
    assert "mag_r" in m.columns
    _check_roundtrip(tmp_path / "out", rows["id"])


def test_a_hand_written_catalogue_with_spaces_and_text_ids_beside_its_fits(tmp_path):
    """A CSV as typed by hand ("id, z_spec, ..." under a comment line), ids a pipeline wrote as text
    ("00101"), and the dataset written into the FITS folder itself, twice (the second time
    replacing its own)."""
    _single_file_setup(tmp_path, n=3)
    (tmp_path / "cat.csv").write_text("# my three galaxies, 2026-12-06\nid, z_spec, ebv, file\n00100, 0.02, 0.03, g0.fits\n"
                                      "101 , 0.07, 0.03, g1.fits\n102, 0.12, 0.03, g2.fits\n")
    out = tmp_path / "img" / "ds"
    for overwrite in (False, True):
        m = prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", out, size=SIZE, progress=False,
                            overwrite=overwrite)
        assert m.total_rows == 3
    _check_roundtrip(out, [100, 101, 102])


def test_tab_separated_and_gzipped_text_catalogues_as_vizier_and_topcat_give_them(tmp_path):
    """VizieR writes tab-separated text (.tsv): a block of # lines with a blank line in it, the
    header, a line of units and a line of dashes; downloads come gzipped or bzip2'd, some with the
    name in capitals: read as they are. Names apart by another separator than the file's are one
    sentence saying which (a semicolon file with decimal commas too), and a compressed file cut
    short or damaged is unreadable, not a traceback."""
    import bz2
    import gzip

    rows = _single_file_setup(tmp_path, n=4)
    ids = rows["id"]
    text = "".join(f"{i}\t{z}\t{e}\t{f}\n" for i, z, e, f in zip(ids, rows["z_spec"], rows["ebv"], rows["file"]))
    tsv = ("#\n#   VizieR Astronomical Server vizier.cds.unistra.fr\n#\n#Coosys\tJ2000:\teq_FK5 J2000\n\n"
           "#RESOURCE=yCat_5154\n#Table\tV_154_sdss16:\n\nid\tz_spec\tebv\tfile\n\t\tmag\t\n---\t---\t---\t---\n"
           + text)
    (tmp_path / "cat.tsv").write_text(tsv)
    (tmp_path / "cat.tsv.gz").write_bytes(gzip.compress(tsv.encode()))
    csv_text = (tmp_path / "cat.csv").read_bytes()
    (tmp_path / "CAT.CSV.GZ").write_bytes(gzip.compress(csv_text))
    (tmp_path / "cat.csv.bz2").write_bytes(bz2.compress(csv_text))
    for name in ("cat.tsv", "cat.tsv.gz", "CAT.CSV.GZ", "cat.csv.bz2"):
        prepare_dataset(tmp_path / name, tmp_path / "img", tmp_path / name.replace(".", "_"), size=SIZE,
                        progress=False)
        _check_roundtrip(tmp_path / name.replace(".", "_"), ids)
    for name, header, by, wanted in (("sep.csv", "id;z_spec;ebv;file", "semicolons", "commas"),
                                     ("sep.csv", "id z_spec ebv file", "spaces", "commas"),
                                     ("sep.tsv", "id,z_spec,ebv,file", "commas", "tabs: name it .csv")):
        (tmp_path / name).write_text(f"{header}\n100;0,1;0,03;g0.fits\n")  # decimal commas
        _expect_error(tmp_path, f"{name}: its header's names stand apart by {by}, '{header}'; expected them apart "
                                f"by {wanted}", catalog=name)
    (tmp_path / "gap.csv").write_text("id,z_spec,ebv,file\n100,0.02,0.03,g0.fits\n\n\n101,0.07\n")
    _expect_error(tmp_path, r"gap.csv: line 5 has 2 values \('101,0.07'\) but the header has 4", catalog="gap.csv")
    (tmp_path / "cut.csv.gz").write_bytes(gzip.compress(csv_text * 50)[:60])
    _expect_error(tmp_path, r"cut.csv.gz: not a readable catalogue \(", catalog="cut.csv.gz")
    damaged = bytearray(gzip.compress(csv_text * 50))
    damaged[20:40] = bytes(b ^ 0xFF for b in damaged[20:40])
    (tmp_path / "bad.csv.gz").write_bytes(bytes(damaged))
    _expect_error(tmp_path, r"bad.csv.gz: not a readable catalogue \(", catalog="bad.csv.gz")
    (tmp_path / "cat.json.gz").write_bytes(gzip.compress(b"{}"))
    _expect_error(tmp_path, r"cat.json.gz: unknown catalogue format '.json.gz'", catalog="cat.json.gz")


def test_sdss_spec_obj_ids_beyond_the_signed_range_in_csv_and_fits_catalogues(tmp_path):
    """SDSS's specObjIDs from plate 8192 on are above 2**63 - 1: a catalogue of them, sorted by id
    as SDSS sorts it, as text in a CSV and as the unsigned column astropy writes in a FITS table
    (TZERO = 2**63), gives a dataset whose ids are the catalogue's, to the last bit."""
    from astropy.table import Table

    n = len(SDSS_IDS)
    rows = _single_file_setup(tmp_path, n=n)
    rows["id"] = SDSS_IDS
    (tmp_path / "cat.csv").write_text("id,z_spec,ebv,file\n" + "".join(
        f"{i},{z},{e},{f}\n" for i, z, e, f in zip(SDSS_IDS, rows["z_spec"], rows["ebv"], rows["file"])))
    Table({"SPECOBJID": np.array(SDSS_IDS, dtype=np.uint64), "Z": rows["z_spec"], "EBV": rows["ebv"],
           "FILE": rows["file"]}).write(tmp_path / "cat.fits")
    assert fits.getheader(tmp_path / "cat.fits", 1)["TZERO1"] == 2**63
    with pytest.raises(ZrayError, match="--column id=specobjid if 'specobjid' is a unique integer per galaxy"):
        prepare_dataset(tmp_path / "cat.fits", tmp_path / "img", tmp_path / "x", size=SIZE, progress=False)
    Table({"ID": np.array(SDSS_IDS, dtype=np.uint64), "Z_SPEC": rows["z_spec"], "EBV": rows["ebv"],
           "FILE": rows["file"]}).write(tmp_path / "cat.fits", overwrite=True)
    for name in ("cat.csv", "cat.fits"):
        m = prepare_dataset(tmp_path / name, tmp_path / "img", tmp_path / name.replace(".", "_"), size=SIZE,
                            progress=False)
        assert m.total_rows == n
        _check_roundtrip(tmp_path / name.replace(".", "_"), SDSS_IDS)


def _values(out, column: str) -> dict[int, float]:
    """``{id: value}`` of one column over every split of a dataset."""
    values = {}
    for split in ("train", "val", "test"):
        arrays = load_arrays(out, split, columns=("id", column))
        values.update(zip(arrays["id"].tolist(), arrays[column].tolist()))
    return values


def test_a_casjobs_catalogue_goes_in_with_the_column_options_its_error_suggests(tmp_path):
    """A catalogue as SDSS's CasJobs writes it (specObjID, z, extinction_r: SDSS's names; sorted by
    z, high first; specObjIDs above 2**63 - 1), through the command line: the first `zray prepare`
    refuses it naming the --column options it needs; those options, copied from the sentence,
    give the catalogue's ids to the last bit, its redshifts, and E(B-V) = A_r / 2.751."""
    import re

    from click.testing import CliRunner

    from zray.cli import main
    from zray.data.shards import read_manifest

    n = len(SDSS_IDS)
    rows = _single_file_setup(tmp_path, n=n)
    order = np.argsort(rows["z_spec"])[::-1]
    a_r = [0.05 + 0.01 * i for i in range(n)]
    (tmp_path / "casjobs.csv").write_text("specObjID,z,extinction_r,file\n" + "".join(
        f"{SDSS_IDS[i]},{rows['z_spec'][i]},{a_r[i]},{rows['file'][i]}\n" for i in order))
    argv = ["prepare", str(tmp_path / "casjobs.csv"), "--images", str(tmp_path / "img"),
            "--out", str(tmp_path / "out"), "--size", str(SIZE)]
    refused = CliRunner().invoke(main, argv)
    assert refused.exit_code == 1 and not (tmp_path / "out").exists()
    suggested = re.findall(r"--column (\S+)", refused.output)
    assert suggested == ["id=specObjID", "z_spec=z", "ebv=extinction_r/2.751"], refused.output
    done = CliRunner().invoke(main, [*argv, *(f"--column={c}" for c in suggested)])
    assert done.exit_code == 0, done.output
    _check_roundtrip(tmp_path / "out", SDSS_IDS)
    ebv, z = _values(tmp_path / "out", "ebv"), _values(tmp_path / "out", "z_spec")
    assert ebv == pytest.approx({SDSS_IDS[i]: a_r[i] / 2.751 for i in range(n)}, rel=1e-6)
    assert z == pytest.approx({SDSS_IDS[i]: rows["z_spec"][i] for i in range(n)}, rel=1e-6)
    assert read_manifest(tmp_path / "out").source["columns"] == {
        "id": "specObjID", "z_spec": "z", "ebv": "extinction_r/2.751"}
    inspect = CliRunner().invoke(main, ["inspect", str(tmp_path / "out")])
    assert "source: prepare, its columns read as id=specObjID, z_spec=z, ebv=extinction_r/2.751;" in inspect.output


def test_a_spectroscopic_catalogue_with_stars_and_quasars_goes_in_with_its_redshift_options(tmp_path):
    """A real spectroscopic sample holds stars (z about 0, some just below), luminous red
    galaxies past 0.4 and quasars far beyond, sorted by z as the survey gave it: `zray
    prepare` stops naming the first, how many, and both ways on; --drop-out-of-range leaves
    them out and counts them; --z-max widens the dataset's range to hold those above, and
    the training side then counts them against its own bins."""
    import re

    from click.testing import CliRunner

    from zray.cli import main
    from zray.data.pipeline import check_shards
    from zray.data.shards import DEFAULT_BINS, read_manifest

    rows = _single_file_setup(tmp_path, n=8)
    rows["z_spec"] = [0.1, 0.25, -0.0004, 0.55, 0.3, 1.93, 0.05, 0.0]  # a star, an LRG, a quasar
    order = np.argsort(rows["z_spec"])[::-1]
    _write_catalog(tmp_path / "cat.csv", {k: [v[i] for i in order] for k, v in rows.items()})
    argv = ["prepare", str(tmp_path / "cat.csv"), "--images", str(tmp_path / "img"), "--size", str(SIZE)]
    refused = CliRunner().invoke(main, [*argv, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 1 and not (tmp_path / "a").exists()
    assert ("cat.csv: row 1 (id 105): z_spec 1.93 is outside the binning range (and 2 more of its 8 galaxies); "
            "expected 0.0 <= z < 0.4: --z-max 1.94 widens the bins to hold the 2 above 0.4, or --drop-out-of-range "
            "leaves them out") in " ".join(refused.output.split()), refused.output

    (tmp_path / "img" / "g2.fits").unlink()  # the star's cutout: never looked for once it is left out
    dropped = CliRunner().invoke(main, [*argv, "--out", str(tmp_path / "a"), "--drop-out-of-range"])
    assert dropped.exit_code == 0, dropped.output
    assert re.search(r"left out 3 of its 8 galaxies whose z_spec lies outside 0.0 <= z < 0.4", dropped.output)
    assert "wrote 5 of 8 galaxies" in dropped.output and "no file" not in dropped.output
    assert _values(tmp_path / "a", "z_spec") == pytest.approx({100: 0.1, 101: 0.25, 104: 0.3, 106: 0.05, 107: 0.0})
    assert read_manifest(tmp_path / "a").source["out_of_range"] == 3

    wide = CliRunner().invoke(main, [*argv, "--out", str(tmp_path / "b"), "--z-max", "2", "--drop-out-of-range"])
    assert wide.exit_code == 0, wide.output
    manifest = read_manifest(tmp_path / "b")
    assert manifest.z_range == (0.0, 2.0) and manifest.source["out_of_range"] == 1  # the star alone
    assert sorted(_values(tmp_path / "b", "z_spec")) == [100, 101, 103, 104, 105, 106, 107]
    validate_dataset(tmp_path / "b")
    # Training on the reference bins counts the galaxies the wider dataset holds beyond them.
    shards = check_shards(tmp_path / "b", skip_corrupt=False)
    with pytest.raises(ZrayError, match=r"2 galaxies \(.*\) have z_spec outside the bins 0 <= z < 0.4; .*"
                                        r"--set data.z_max=1.93"):  # 1.93 held as float32, just below
        shards.check_labels(DEFAULT_BINS, drop=False)
    # Nothing but stars: left out, nothing is left, and a wider --z-max would not help (not offered).
    _write_catalog(tmp_path / "stars.csv", {**rows, "z_spec": [-0.001] * 8})
    with pytest.raises(ZrayError, match=r"stars.csv: every one of its 8 galaxies has z_spec outside 0.0 <= z < 0.4; "
                                        r"expected some inside the bins$"):
        prepare_dataset(tmp_path / "stars.csv", tmp_path / "img", tmp_path / "c", size=SIZE, progress=False,
                        drop_out_of_range=True)
    for bad, said in (("nan", "nan"), ("0", "0.0"), ("-1", "-1.0"), ("20", "20.0")):
        out = CliRunner().invoke(main, [*argv, "--out", str(tmp_path / "c"), "--z-max", bad])
        assert out.exit_code == 1 and f"--z-max must be a redshift above 0 and at most 15, but got {said}" in out.output
    assert not (tmp_path / "c").exists()


def test_cutouts_in_other_units_or_at_another_pixel_scale_are_warned_about(tmp_path, caplog):
    """Cutouts in counts (BUNIT DN) at DECam's 0.262" pixels: written, and both said; SDSS's
    own (nanomaggies, 0.396") and cutouts with no such cards are not remarked on."""
    rows = _single_file_setup(tmp_path, n=3)
    for i in range(3):
        with fits.open(tmp_path / "img" / f"g{i}.fits", mode="update") as hdul:
            header = hdul[0].header
            header["BUNIT"] = "DN" if i == 0 else "nanomaggy"
            header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
            header["CRVAL1"], header["CRVAL2"], header["CRPIX1"], header["CRPIX2"] = 150.0, 2.0, 10.0, 10.0
            scale = (0.262 if i == 0 else 0.396) / 3600
            header["CDELT1"], header["CDELT2"] = -scale, scale
    _write_catalog(tmp_path / "cat.csv", rows)  # g0 first: the one galaxy whose files the check reads
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "dn", size=SIZE, progress=False)
    assert "g0.fits: BUNIT is 'DN', not nanomaggies" in caplog.text
    assert "g0.fits: its WCS gives pixels of 0.262\", not SDSS's 0.396\"" in caplog.text
    caplog.clear()
    _write_catalog(tmp_path / "cat.csv", {k: v[1:] for k, v in rows.items()})
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "sdss", size=SIZE, progress=False)
    assert "BUNIT" not in caplog.text and "pixels of" not in caplog.text
    shutil.rmtree(tmp_path / "img")
    _single_file_setup(tmp_path, n=3)  # no BUNIT, no WCS: nothing to say
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "plain", size=SIZE, progress=False)
    assert "BUNIT" not in caplog.text and "pixels of" not in caplog.text


def test_a_dataset_too_small_to_train_on_is_said_so_when_written(tmp_path):
    """One galaxy lands in one split: the summary notes the empty split(s) training needs."""
    from click.testing import CliRunner

    from zray.cli import main
    from zray.data.shards import read_manifest

    _single_file_setup(tmp_path, n=1)
    result = CliRunner().invoke(main, ["prepare", str(tmp_path / "cat.csv"), "--images", str(tmp_path / "img"),
                                       "--out", str(tmp_path / "out"), "--size", str(SIZE)])
    assert result.exit_code == 0, result.output
    rows = read_manifest(tmp_path / "out").rows
    empty = [s for s in ("train", "val") if rows[s] == 0]
    assert empty and (f"note: the {' and '.join(empty)} split" in result.output), result.output
    assert "zray train and tune need galaxies in both" in result.output


def test_votable_and_ecsv_catalogues_as_services_and_astropy_write_them(tmp_path):
    """A VOTable as a TAP service returns one (FIELDs with IDs other than their names, text of any
    length, ids above 2**63 - 1 as text, an empty cell in a column zray does not read, a column
    holding zray's name for something else that --column replaces, a second table after the
    results) and an ECSV table astropy writes (uint64 ids, names in capitals, a Time column), each
    read with --column."""
    from astropy.table import Table

    n = len(SDSS_IDS)
    rows = _single_file_setup(tmp_path, n=n)
    cells = "".join(f"<TR><TD>{SDSS_IDS[i]}</TD><TD>{rows['z_spec'][i]}</TD><TD>0.3</TD><TD>{0.08 * (i + 1)}</TD>"
                    f"<TD>{'' if i == 2 else 17.5}</TD><TD>{rows['file'][i]}</TD></TR>\n" for i in range(n))
    (tmp_path / "cat.xml").write_text(
        '<?xml version="1.0"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        '<RESOURCE type="results"><INFO name="QUERY_STATUS" value="OK"/><TABLE>\n'
        '<FIELD ID="c0" name="specObjID" datatype="char" arraysize="*"/><FIELD ID="c1" name="z" datatype="double"/>\n'
        '<FIELD name="ebv" datatype="float"/><FIELD ID="A_r_" name="A_r" datatype="double"/>\n'
        '<FIELD name="petroMag_r" datatype="float"/><FIELD name="file" datatype="char" arraysize="*"/>\n'
        f"<DATA><TABLEDATA>\n{cells}</TABLEDATA></DATA></TABLE></RESOURCE>\n"
        '<RESOURCE><TABLE><FIELD name="x" datatype="int"/><DATA><TABLEDATA><TR><TD>1</TD></TR></TABLEDATA></DATA>'
        "</TABLE></RESOURCE></VOTABLE>\n")
    columns = {"id": "specObjID", "z_spec": "z", "ebv": "A_r/2.751"}
    from zray.data.catalog import parse_columns

    m = prepare_dataset(tmp_path / "cat.xml", tmp_path / "img", tmp_path / "vot", size=SIZE, progress=False,
                        columns=parse_columns(f"{k}={v}" for k, v in columns.items()))
    assert m.source["columns"] == columns
    _check_roundtrip(tmp_path / "vot", SDSS_IDS)
    # the catalogue's own 'ebv' (0.3 for all) gave way to --column ebv's
    assert _values(tmp_path / "vot", "ebv") == pytest.approx({SDSS_IDS[i]: 0.08 * (i + 1) / 2.751 for i in range(n)})

    from astropy.time import Time

    Table({"SPECOBJID": np.array(SDSS_IDS, dtype=np.uint64), "Z": rows["z_spec"], "EBV": rows["ebv"],
           "FILE": rows["file"], "OBS": Time([59000.5 + i for i in range(n)], format="mjd")}).write(tmp_path / "cat.ecsv")
    with pytest.raises(ZrayError, match=r"cat.ecsv: --column z_spec=OBS: column 'OBS' is left out \(a Time, not "
                                        r"plain numbers or text\); expected one number or text per row"):
        prepare_dataset(tmp_path / "cat.ecsv", tmp_path / "img", tmp_path / "ecsv", size=SIZE, progress=False,
                        columns=parse_columns(["id=specobjid", "z_spec=OBS", "ebv=EBV", "file=FILE"]))
    m = prepare_dataset(tmp_path / "cat.ecsv", tmp_path / "img", tmp_path / "ecsv", size=SIZE, progress=False,
                        columns=parse_columns(["id=specobjid", "z_spec=Z", "ebv=EBV", "file=FILE"]))
    _check_roundtrip(tmp_path / "ecsv", SDSS_IDS)
    assert _values(tmp_path / "ecsv", "z_spec") == pytest.approx(dict(zip(SDSS_IDS, rows["z_spec"])))


def test_column_options_meet_a_savetxt_header_and_names_a_shell_would_read(tmp_path):
    """numpy.savetxt's commented header under the catalogue's own names is found with --column; a
    hint naming a column such as E(B-V) is quoted so that it can be pasted into a shell."""
    from zray.data.catalog import parse_columns

    rows = _single_file_setup(tmp_path, n=3)
    np.savetxt(tmp_path / "cat.txt", np.array([rows["id"], rows["z_spec"], rows["ebv"]]).T, fmt="%.6g",
               delimiter=",", header="objID,zsp,E(B-V)")
    text = (tmp_path / "cat.txt").read_text().splitlines()
    (tmp_path / "cat.txt").write_text("\n".join([text[0] + ",file", *(f"{t},{f}" for t, f in zip(text[1:], rows["file"]))])
                                      + "\n")
    with pytest.raises(ZrayError, match=r"--column ebv='E\(B-V\)' if 'E\(B-V\)' is the Galactic E\(B-V\)"):
        prepare_dataset(tmp_path / "cat.txt", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False,
                        columns=parse_columns(["id=objID", "z_spec=zsp"]))
    prepare_dataset(tmp_path / "cat.txt", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False,
                    columns=parse_columns(["id=objID", "z_spec=zsp", "ebv=E(B-V)"]))
    _check_roundtrip(tmp_path / "out", rows["id"])


def test_a_files_own_column_metadata_never_speaks_for_column_options(tmp_path):
    """A Parquet field carrying the metadata zray gives a column read with --column does not make a
    message claim the user gave one; a Source made in Python records its divisor."""
    from zray.data.catalog import FROM_KEY, Source, source_record

    rows = _single_file_setup(tmp_path, n=3)
    rows["ebv"] = [0.03, -0.1, 0.03]
    table = pa.table(rows)
    field = table.schema.field("ebv").with_metadata({FROM_KEY: b"extinction_r/2.751"})
    pa.parquet.write_table(table.cast(table.schema.set(table.schema.get_field_index("ebv"), field)),
                           tmp_path / "cat.parquet")
    assert pa.parquet.read_schema(tmp_path / "cat.parquet").field("ebv").metadata == {FROM_KEY: b"extinction_r/2.751"}
    _expect_error(tmp_path, r"cat.parquet: row 2 \(id 101\): ebv -0.1 is negative; expected E\(B-V\) >= 0",
                  catalog="cat.parquet")
    assert source_record({"ebv": Source("A_r", 2.751)}) == {"columns": {"ebv": "A_r/2.751"}}


def test_a_catalogue_pandas_wrote_with_id_as_its_index(tmp_path):
    """`df.set_index("id").to_parquet(...)` keeps consecutive ids only in the file's metadata."""
    import pandas as pd

    rows = _single_file_setup(tmp_path, n=3)
    pd.DataFrame(rows).set_index("id").to_parquet(tmp_path / "cat.parquet")
    assert "id" not in pa.parquet.read_schema(tmp_path / "cat.parquet").names
    prepare_dataset(tmp_path / "cat.parquet", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
    _check_roundtrip(tmp_path / "out", rows["id"])
    # What another tool wrote under pandas' key is read only when it is pandas' range of the table's length:
    # a range of 10**15 rows, a step of 0 or 1.5, text, ids past int64 or no JSON at all leave the id
    # missing, said in one sentence.
    import json

    table = pa.parquet.read_table(tmp_path / "cat.parquet")
    for bad in ({"start": 0, "stop": 10**15, "step": 1}, {"start": 0, "stop": 3, "step": 0},
                {"start": "a", "stop": 3, "step": 1}, {"start": 0, "stop": 3, "step": 1.5},
                {"start": 2**70, "stop": 2**70 + 3, "step": 1}, None):
        meta = b"{not json" if bad is None else json.dumps(
            {"index_columns": [{"kind": "range", "name": "id", **bad}]}).encode()
        pa.parquet.write_table(table.replace_schema_metadata({b"pandas": meta}), tmp_path / "odd.parquet")
        with pytest.raises(ZrayError, match=r"odd.parquet: missing column\(s\) id"):
            prepare_dataset(tmp_path / "odd.parquet", tmp_path / "img", tmp_path / "odd", size=SIZE, progress=False)


def _fits_catalogue(path, rows: dict, image_first=True):
    """``rows`` as a FITS table the way catalogue tools write one: column names in capitals,
    big-endian numbers, text padded to a fixed width, a unit astropy does not know, a column of
    five values per row, behind an empty primary HDU (and an image HDU, with ``image_first``)."""
    from astropy.table import Table

    table = Table({name.upper(): np.asarray(values) for name, values in rows.items()})
    table["FILE"] = np.array([f"{f:<20}" for f in rows["file"]])  # FITS pads text with spaces
    table["MAGS"] = np.full((len(table), 5), 17.0)
    hdu = fits.table_to_hdu(table)
    hdu.header[f"TUNIT{table.colnames.index('Z_SPEC') + 1}"] = "redshift"  # not a FITS unit
    hdus = [fits.PrimaryHDU()] + ([fits.ImageHDU(np.zeros((4, 4)))] if image_first else [])
    fits.HDUList([*hdus, hdu]).writeto(path)
    return path


def test_a_fits_table_catalogue_as_other_tools_write_it(tmp_path):
    rows = _single_file_setup(tmp_path)
    for name in ("cat.fits", "cat.fits.gz"):
        _fits_catalogue(tmp_path / name, rows)
        assert fits.getheader(tmp_path / name, 2)["TFORM1"] == "K"  # stored big-endian, as FITS is
        prepare_dataset(tmp_path / name, tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
        _check_roundtrip(tmp_path / "out", rows["id"])
        z = load_arrays(tmp_path / "out", "train", columns=("id", "z_spec"))
        truth = dict(zip(rows["id"], rows["z_spec"]))
        assert z["z_spec"].tolist() == pytest.approx([truth[i] for i in z["id"].tolist()], rel=1e-6)
        shutil.rmtree(tmp_path / "out")


def test_fits_catalogues_zray_cannot_use_are_one_sentence(tmp_path):
    from astropy.table import MaskedColumn, Table

    from zray.data.catalog import read_catalog

    rows = _single_file_setup(tmp_path)
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(tmp_path / "image.fits")
    _expect_error(tmp_path, r"image.fits: this FITS file holds no table \(only images or headers\); expected a table "
                  "with one row per galaxy", catalog="image.fits")
    # Cut short, in its table or in its compressed stream; a row count no file could hold.
    whole = _fits_catalogue(tmp_path / "cat.fits", rows).read_bytes()
    (tmp_path / "cut.fits").write_bytes(whole[: len(whole) - 2880 - 100])
    _expect_error(tmp_path, r"cut.fits: not a readable FITS table \(.*\); expected a whole FITS file", catalog="cut.fits")
    packed = _fits_catalogue(tmp_path / "cat.fits.gz", rows).read_bytes()
    (tmp_path / "cut.fits.gz").write_bytes(packed[: len(packed) // 2])
    _expect_error(tmp_path, r"cut.fits.gz: not a readable FITS table \(Compressed file ended", catalog="cut.fits.gz")
    (tmp_path / "huge.fits").write_bytes(whole.replace(b"NAXIS2  =                    6", b"NAXIS2  =          10000000000"))
    _expect_error(tmp_path, r"huge.fits: not a readable FITS table \(its header promises 10000000000 rows",
                  catalog="huge.fits")
    # An id left blank (TNULL) is a missing value, named by its row; so is a NaN redshift.
    ids = MaskedColumn(rows["id"], mask=[False, False, True, False, False, False])
    Table({"ID": ids, **{k.upper(): rows[k] for k in ("z_spec", "ebv", "file")}}).write(tmp_path / "null.fits")
    _expect_error(tmp_path, r"null.fits: row 3: id is missing; expected an integer", catalog="null.fits")
    Table({**rows, "z_spec": [0.1, np.nan, 0.1, 0.1, 0.1, 0.1]}).write(tmp_path / "nan.fits")
    _expect_error(tmp_path, r"nan.fits: row 2 \(id 101\): z_spec is missing or not finite", catalog="nan.fits")
    # A redshift column of several values per row is left out, and named as such; so is text that is
    # not ASCII (FITS text is ASCII).
    Table({**rows, "z_spec": np.full((6, 2), 0.1)}).write(tmp_path / "wide.fits")
    _expect_error(tmp_path, r"wide.fits: missing column\(s\) z_spec; .*'z_spec' \(several values per row\)",
                  catalog="wide.fits")
    Table({**rows, "file": np.array([b"g\xe9.fits"] * 6)}).write(tmp_path / "latin.fits")
    _expect_error(tmp_path, r"latin.fits: missing column\(s\) 'file' or .*", catalog="latin.fits")
    with pytest.raises(ZrayError, match=r"latin.fits: missing column\(s\) file; .*'file' \(text that is not ASCII\)"):
        read_catalog(tmp_path / "latin.fits", ("file",))
    # ID and id are one name in FITS.
    Table({**rows, "ID": rows["id"]}).write(tmp_path / "twice.fits")
    _expect_error(tmp_path, r"twice.fits: columns 'id' and 'ID' are one name in FITS", catalog="twice.fits")
    # A header whose row width disagrees with its columns: astropy would read every row's bytes at the
    # wrong places (ids of -7e18, redshifts of 1e-45), without a warning.
    (tmp_path / "shifted.fits").write_bytes(whole.replace(b"TFORM2  = 'D", b"TFORM2  = 'E"))
    _expect_error(tmp_path, r"shifted.fits: not a readable FITS table \(its columns take \d+ bytes of each row, and "
                  r"its header says a row is \d+ \(NAXIS1\)\)", catalog="shifted.fits")


def test_planes_written_as_one_by_h_by_w_and_a_folder_for_a_file(tmp_path):
    """Some tools write each band's HDU as (1, H, W): one plane each, not a 1-band cube. A file
    column naming a folder says so."""
    rows = _single_file_setup(tmp_path, n=2, writer=lambda path, image: _write_mef(path, image[:, None]))
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
    _check_roundtrip(tmp_path / "out", rows["id"])
    shutil.rmtree(tmp_path / "out")
    _write_catalog(tmp_path / "cat2.csv", {**rows, "file": [".", "g1.fits"]})
    _expect_error(tmp_path, r"cat2.csv: row 1 \(id 100\): file names the folder .*img; expected a FITS file name",
                  catalog="cat2.csv")


def test_two_ids_on_one_fits_file_are_warned_about(tmp_path, capsys):
    """A catalogue joined twice: the same cutout under two ids could be trained on and scored."""
    from zray.console import terminal

    rows = _single_file_setup(tmp_path, n=3)
    _write_catalog(tmp_path / "cat.csv", {**rows, "file": ["g0.fits", "g1.fits", "./g0.fits"]})
    with terminal():
        prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
    out = capsys.readouterr().out
    assert ("cat.csv: 1 row(s) share their FITS file(s) with an earlier row (first row 1 (id 100) and row 3 "
            "(id 102)): the same cutout under two ids") in out, out


def test_an_extinction_given_for_e_b_v_is_warned_about(tmp_path, capsys):
    from zray.console import terminal

    rows = _single_file_setup(tmp_path, n=3)
    _write_catalog(tmp_path / "cat.csv", {**rows, "ebv": [0.03, 2.5, 0.04]})
    with terminal():
        prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
    out = capsys.readouterr().out
    assert ("cat.csv: 1 galaxies have ebv above 1 (largest 2.5, row 2 (id 101)); ebv is E(B-V), not an extinction "
            "A_V or A_r") in out, out


def test_numpy_savetxts_commented_header_and_ids_python_would_read_but_are_not_integers(tmp_path):
    from zray.data.catalog import id_column, read_catalog

    np.savetxt(tmp_path / "sv.csv", np.array([[7, 0.1], [9, 0.2]]), delimiter=",", header="id,z_spec",
               fmt=["%d", "%.3f"])  # writes "# id,z_spec" above the rows
    table = read_catalog(tmp_path / "sv.csv", ("id", "z_spec"))
    assert table.to_pydict() == {"id": [7, 9], "z_spec": [0.1, 0.2]}
    (tmp_path / "u.csv").write_text("id,z_spec\n1_000,0.1\n2,0.2\n")
    with pytest.raises(ZrayError, match=r"u.csv: row 1: id '1_000' is not written as an integer"):
        id_column(read_catalog(tmp_path / "u.csv", ("id",)), tmp_path / "u.csv")


def test_band_names_are_normalised_not_guessed():
    assert [normalise_band(v) for v in ("g", "G", "sdss_g", "SDSS g", "sdss-r'")] == ["g", "g", "g", "g", "r"]
    assert normalise_band("V") is None and normalise_band("") is None and normalise_band("gr") is None


def _expect_error(tmp_path, message, catalog="cat.csv"):
    with pytest.raises(ZrayError, match=message):
        prepare_dataset(tmp_path / catalog, tmp_path / "img", tmp_path / "out", size=SIZE, progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_nan_pixels(tmp_path):
    _single_file_setup(tmp_path)
    bad = _truth(3)
    bad[1, 10, 10] = np.nan
    (tmp_path / "img" / "g3.fits").unlink()
    _write_cube(tmp_path / "img" / "g3.fits", bad)
    _expect_error(tmp_path, r"cat.csv: row 4 \(id 103\): .*g3.fits band g has NaN or infinite pixels")


def test_wrong_band_count(tmp_path):
    _single_file_setup(tmp_path)
    (tmp_path / "img" / "g2.fits").unlink()
    fits.PrimaryHDU(_truth(2)[:4]).writeto(tmp_path / "img" / "g2.fits")
    _expect_error(tmp_path, r"row 3 \(id 102\): .*g2.fits holds 4 bands; expected 5")


def test_mef_with_four_bands(tmp_path):
    _single_file_setup(tmp_path, writer=lambda p, im: _write_mef(p, im, order="gzur"))
    _expect_error(tmp_path, r"row 1 \(id 100\): .*g0.fits holds 4 bands \(g,z,u,r\); expected 5")


def test_cutout_smaller_than_size(tmp_path):
    _single_file_setup(tmp_path)
    (tmp_path / "img" / "g1.fits").unlink()
    _write_cube(tmp_path / "img" / "g1.fits", _truth(1, shape=(12, 30)))
    _expect_error(tmp_path, r"row 2 \(id 101\): .*g1.fits: cutout is 12x30 pixels; expected at least 16x16; "
                            r"--size 12 takes cutouts of 12x12 pixels \(the networks' input size\), or --skip-bad "
                            r"leaves out the galaxies whose cutouts cannot be used")
    # one too small for any --size: only --skip-bad is offered
    _write_cube(tmp_path / "img" / "g1.fits", _truth(1, shape=(6, 30)), overwrite=True)
    _expect_error(tmp_path, r"g1.fits: cutout is 6x30 pixels; expected at least 16x16; --skip-bad leaves out")
    # predicting, the size is the bundle's: no --size to offer either
    from zray.data.ingest import write_shards

    _write_cube(tmp_path / "img" / "g1.fits", _truth(1, shape=(12, 30)), overwrite=True)
    with pytest.raises(ZrayError, match=r"cutout is 12x30 pixels; expected at least 16x16; --skip-bad leaves out"):
        write_shards(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "p", size=SIZE, progress=False,
                     labelled=False, task="reading cutouts")


def test_cube_without_band_keywords(tmp_path):
    _single_file_setup(tmp_path, writer=lambda p, im: _write_cube(p, im, keywords=False))
    _expect_error(tmp_path, r"g0.fits header has no valid BAND1 keyword")


def test_mef_without_filter_keywords(tmp_path):
    _single_file_setup(tmp_path, writer=lambda p, im: _write_mef(p, im, key=None))
    _expect_error(tmp_path, r"g0.fits HDU 1 has no FILTER or BAND keyword")


def test_per_band_file_with_other_band_in_header(tmp_path):
    _per_band_setup(tmp_path)
    path = tmp_path / "img" / "g1_i.fits"
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["FILTER"] = "r"
    _expect_error(tmp_path, r"row 2 \(id 1\): .*g1_i.fits header says band r but it is listed as file_i")


def test_missing_fits_file(tmp_path):
    _single_file_setup(tmp_path)
    (tmp_path / "img" / "g4.fits").unlink()
    _expect_error(tmp_path, r"cat.csv: row 5 \(id 104\): FITS file .*g4.fits not found")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_fits_file(tmp_path, damage):
    _single_file_setup(tmp_path)
    path = tmp_path / "img" / "g2.fits"
    data = b"this is not a FITS file at all" if damage == "garbage" else path.read_bytes()[:3000]
    path.write_bytes(data)
    _expect_error(tmp_path, r"row 3 \(id 102\): .*g2.fits is not a readable FITS file")


def test_missing_catalogue_columns(tmp_path, caplog):
    rows = _single_file_setup(tmp_path)
    del rows["ebv"]
    _write_catalog(tmp_path / "cat.csv", rows)
    # No ebv, and nothing like it (an extinction under another name is asked for below): 0, said so.
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "noebv", size=SIZE, progress=False)
    assert set(_values(tmp_path / "noebv", "ebv").values()) == {0.0}
    assert "cat.csv has no ebv column: E(B-V) is 0 for every galaxy" in caplog.text
    del rows["file"]
    rows["ebv"] = [0.0] * 6
    _write_catalog(tmp_path / "cat.csv", rows)
    _expect_error(tmp_path, r"cat.csv: missing column\(s\) 'file' or file_u")
    # A column named in capitals: the error gives the name zray reads.
    _write_catalog(tmp_path / "cat.csv", {**{k: v for k, v in rows.items() if k != "z_spec"}, "Z_SPEC": rows["z_spec"]})
    _expect_error(tmp_path, r"cat.csv: missing column\(s\) z_spec; .*; zray's column names are lower case: "
                  "--column z_spec=Z_SPEC$")
    # A catalogue as SDSS's CasJobs gives one: the columns zray needs under the survey's names.
    sdss = {"objID": rows["id"], "z": rows["z_spec"], "file": [f"g{i}.fits" for i in range(6)],
            "extinction_r": [0.08] * 6}
    _write_catalog(tmp_path / "cat.csv", sdss)
    _expect_error(tmp_path, r"cat.csv: missing column\(s\) id, z_spec, ebv; .*\); --column id=objID if 'objID' is a "
                  r"unique integer per galaxy; --column z_spec=z if 'z' is the spectroscopic redshift; "
                  r"--column ebv=extinction_r/2.751 if 'extinction_r' is SDSS's A_r \(E\(B-V\) is A_r / 2.751\)$")
    _write_catalog(tmp_path / "cat.csv", {"objID": rows["id"], "Z_SPEC": rows["z_spec"], "EBV": [0.03] * 6,
                                          "file": sdss["file"]})
    _expect_error(tmp_path, r"\); zray's column names are lower case: --column z_spec=Z_SPEC --column ebv=EBV; "
                  r"--column id=objID if 'objID' is a unique integer per galaxy$")
    _write_catalog(tmp_path / "cat.csv", {"id": rows["id"], "z_spec": rows["z_spec"], "file": sdss["file"],
                                          "extinction_r": [0.08] * 6})
    _expect_error(tmp_path, r"cat.csv: missing column\(s\) ebv; expected columns id, z_spec, ebv \(found .*\); "
                  r"--column ebv=extinction_r/2.751 if 'extinction_r' is SDSS's A_r \(E\(B-V\) is A_r / 2.751\)$")


def test_duplicate_ids_and_bad_redshift(tmp_path):
    rows = _single_file_setup(tmp_path)
    rows["id"][4] = rows["id"][1]
    _write_catalog(tmp_path / "cat.csv", rows)
    _expect_error(tmp_path, r"cat.csv: rows 2 and 5 share id 101; expected unique ids")
    rows["id"][4] = 104
    rows["z_spec"][3] = 0.41
    _write_catalog(tmp_path / "cat.csv", rows)
    _expect_error(tmp_path, r"cat.csv: row 4 \(id 103\): z_spec 0.41 is outside the binning range")


def test_unknown_catalogue_format(tmp_path):
    _single_file_setup(tmp_path)
    (tmp_path / "cat.json").write_text("{}")
    _expect_error(tmp_path, r"cat.json: unknown catalogue format '.json'; expected .csv \(or tab-separated .tsv; "
                  r"either gzipped\), .parquet, a FITS table \(.fits\), a VOTable",
                  catalog="cat.json")


def test_skip_bad_leaves_out_the_cutouts_that_cannot_be_used_and_lists_them(tmp_path):
    """A survey's catalogue sorted by redshift, its cutouts downloaded by another tool: some files
    never arrived, one is an HTML error page, one lies on a frame's edge (NaN), one is too small,
    one has four bands, one row's file is empty. Without --skip-bad: one sentence naming the first
    missing file and counting the others, nothing written. With it: the rest is written pixel for
    pixel, and each left-out galaxy is listed with its catalogue row and reason."""
    from click.testing import CliRunner

    from zray.cli import main
    from zray.data.shards import read_manifest

    n = 12
    rows = {**_single_file_setup(tmp_path, n=n), "z_spec": [0.02 + 0.03 * i for i in range(n)]}
    img = tmp_path / "img"
    (img / "g2.fits").unlink()
    (img / "g9.fits").unlink()
    (img / "g4.fits").write_bytes(b"SIMPLE  = T" + b"\0" * 100)  # a download cut short
    edge = _truth(6)
    edge[:, :, :3] = np.nan
    (img / "g6.fits").unlink()
    _write_cube(img / "g6.fits", edge)
    (img / "g7.fits").unlink()
    _write_cube(img / "g7.fits", _truth(7, shape=(12, 12)))
    (img / "g8.fits").unlink()
    _write_cube(img / "g8.fits", _truth(8)[:4], order="ugri")
    files = [*rows["file"][:10], "", rows["file"][11]]
    order = np.argsort(rows["z_spec"])[::-1]  # sorted by redshift, the highest first
    _write_catalog(tmp_path / "cat.csv", {k: [v[i] for i in order] for k, v in {**rows, "file": files}.items()})
    row_of = {rows["id"][i]: r + 1 for r, i in enumerate(order)}

    def prepare(*extra):
        result = CliRunner().invoke(main, ["prepare", str(tmp_path / "cat.csv"), "--images", str(img),
                                           "--out", str(tmp_path / "out"), "--size", str(SIZE), *extra])
        assert "Traceback" not in result.output
        return result

    result = prepare()
    assert result.exit_code == 1
    assert row_of[110] == 2  # the first row without a file
    assert result.output.strip().splitlines()[-1] == (
        f"zray: error: {tmp_path / 'cat.csv'}: row 2 (id 110): column file is empty; expected a FITS file name "
        f"(3 of the {n} galaxies have no file); --skip-bad leaves out the galaxies whose cutouts cannot be "
        f"used and lists them in {tmp_path / 'out.skipped.csv'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.csv", "img"]

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prepare("--skip-bad")
    assert result.exit_code == 0, result.output
    # astropy's own warnings about the damaged file are not shown: zray lists it
    assert not [w for w in caught if "astropy" in w.filename], [str(w.message) for w in caught]
    assert (f"left out 7 of {n} galaxies whose cutouts cannot be used (3 file missing, 1 bands not as expected, "
            "1 NaN or infinite pixels, 1 smaller than the cutout size, 1 unreadable FITS); listed with their reasons in "
            f"{tmp_path / 'out.skipped.csv'}") in " ".join(result.output.split()), result.output
    assert f"wrote 5 of {n} galaxies" in result.output
    assert read_manifest(tmp_path / "out").source["skipped"] == 7
    inspected = CliRunner().invoke(main, ["inspect", str(tmp_path / "out")])
    assert (f"source: prepare (7 galaxies of the catalogue left out, listed in {tmp_path / 'out.skipped.csv'}); "
            in inspected.output), inspected.output
    listed = pcsv.read_csv(tmp_path / "out.skipped.csv").to_pydict()
    assert list(listed) == ["row", "id", "reason", "detail"]
    expected = {102: "file missing", 109: "file missing", 110: "file missing", 104: "unreadable FITS",
                106: "NaN or infinite pixels", 107: "smaller than the cutout size", 108: "bands not as expected"}
    assert dict(zip(listed["id"], listed["reason"])) == expected
    assert listed["row"] == sorted(row_of[i] for i in expected)
    assert all(row_of[i] == r for i, r in zip(listed["id"], listed["row"]))
    assert "g6.fits band u has NaN or infinite pixels" in listed["detail"][listed["id"].index(106)]
    written = {}
    for split in ("train", "val", "test"):
        arrays = load_arrays(tmp_path / "out", split)
        written.update(zip(arrays["id"].tolist(), arrays["image"]))
    assert sorted(written) == [100, 101, 103, 105, 111]
    for ident, image in written.items():
        np.testing.assert_array_equal(image, _crop(_truth(ident - 100)))

    # Mended and written again: the old list goes with the old dataset.
    _write_catalog(tmp_path / "ok.csv", {k: [v[i] for i in (0, 1, 3)] for k, v in rows.items()})
    result = CliRunner().invoke(main, ["prepare", str(tmp_path / "ok.csv"), "--images", str(img), "--out",
                                       str(tmp_path / "out"), "--size", str(SIZE), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out.skipped.csv").exists()


def test_skip_bad_with_no_usable_cutout_and_the_lists_it_never_touches(tmp_path):
    """Every file missing (a wrong --images folder, say): one sentence counting them, naming the
    first, and nothing written (an earlier dataset and its list stay as they were). A file of the
    user's where the list would go is never replaced, nor removed by --overwrite."""
    _single_file_setup(tmp_path, n=3)
    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    with pytest.raises(ZrayError, match=r"cat.csv: none of its 3 galaxies has a cutout that can be used "
                                        r"\(3 file missing; the first: row 1 \(id 100\): FITS file .*g0.fits not found\)$"):
        prepare_dataset(tmp_path / "cat.csv", wrong, tmp_path / "out", size=SIZE, progress=False, skip_bad=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.csv", "elsewhere", "img"]

    mine = tmp_path / "mine.skipped.csv"
    notes = "row,id,my_note,reason,detail\n3,102,download again,unreadable FITS,x\n"
    mine.write_text(notes)
    with pytest.raises(ZrayError, match=r"mine.skipped.csv: exists and was not written by zray"):
        prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "mine", size=SIZE, progress=False,
                        skip_bad=True, overwrite=True)
    assert mine.read_text() == notes and not (tmp_path / "mine").exists()
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "mine", size=SIZE, progress=False)
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "mine", size=SIZE, progress=False,
                    overwrite=True)
    assert mine.read_text() == notes


def test_a_header_card_astropy_cannot_parse_is_an_unreadable_cutout(tmp_path):
    """astropy parses a card only when it is read: a FILTER card cut short (no closing quote)
    is one sentence, and a galaxy --skip-bad leaves out, never a traceback."""
    _single_file_setup(tmp_path, n=4, writer=_write_mef)
    path = tmp_path / "img" / "g2.fits"
    data = path.read_bytes()
    card = data.index(b"FILTER  = 'R")
    end = data.index(b"'", card + 11)
    path.write_bytes(data[:end] + b" " + data[end + 1:])  # the closing quote gone: a malformed card
    _expect_error(tmp_path, r"row 3 \(id 102\): .*g2.fits header card FILTER cannot be parsed")
    prepare_dataset(tmp_path / "cat.csv", tmp_path / "img", tmp_path / "out", size=SIZE, progress=False,
                    skip_bad=True)
    listed = pcsv.read_csv(tmp_path / "out.skipped.csv").to_pydict()
    assert listed["id"] == [102] and listed["reason"] == ["unreadable FITS"]
