"""A catalogue of bad inputs, one per case, across every command.

Each case builds its bad input in a fresh folder, runs the command in-process
(click's CliRunner) and checks the contract every command keeps: a non-zero
exit, one sentence naming the file/field/value and what was expected, no
traceback, and nothing new written (no output, no temporary siblings). None of
these starts Ray: every input is refused before it would be.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet  # noqa: F401 (pa.parquet)
import pytest
import yaml
from astropy.io import fits
from click.testing import CliRunner

from zray.cli import main
from zray.data.shards import read_manifest

SPACE = {
    "name": "bad",
    "model": "cnn",
    "fixed": {"epochs": 1, "batch_size": 32, "blocks": 2, "dense_units": 32},
    "resources": {"num_workers": 1, "cpus_per_worker": 0.9},
}


# --- builders -----------------------------------------------------------------------


def space(tmp: Path, data_path: Path | str | None = None, text: str | None = None, **changes) -> str:
    path = tmp / "space.yaml"
    if text is None:
        raw = {**SPACE, "data": {"path": str(data_path or tmp / "nodata"), "image_size": 32}, **changes}
        text = yaml.safe_dump(raw)
    path.write_text(text)
    return str(path)


def dataset(tmp: Path, sim_data: Path) -> Path:
    return Path(shutil.copytree(sim_data, tmp / "data"))


def wrong_hash(data: Path) -> Path:
    """``data`` with a manifest whose content hash no longer matches its shards."""
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["hash"] = "sha256:" + "0" * 64
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


def fits_setup(tmp: Path, n: int = 3, *, image=None, rows=None, damage=None) -> list[str]:
    """A catalogue and one FITS cube per galaxy; ``damage(images_dir)`` breaks something."""
    images = tmp / "img"
    images.mkdir()
    for i in range(n):
        cube = np.full((5, 20, 20), 1.0 + i, np.float32) if image is None else image
        hdu = fits.PrimaryHDU(cube)
        for k, b in enumerate("ugriz"):
            hdu.header[f"BAND{k + 1}"] = b
        hdu.writeto(images / f"g{i}.fits")
    table = {"id": list(range(100, 100 + n)), "z_spec": [0.05 + 0.05 * i for i in range(n)],
             "ebv": [0.03] * n, "file": [f"g{i}.fits" for i in range(n)]}
    table.update(rows or {})
    pcsv.write_csv(pa.table(table), tmp / "cat.csv")
    if damage:
        damage(images)
    return ["prepare", str(tmp / "cat.csv"), "--images", str(images), "--out", str(tmp / "out"), "--size", "16"]


def votable(tmp: Path, fields: str, rows: str, status: str = "OK", after: str = "") -> list[str]:
    """``zray prepare`` of a VOTable as a TAP service returns one: its QUERY_STATUS, FIELDs and rows."""
    (tmp / "cat.vot").write_text(
        '<?xml version="1.0"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
        f'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="{status}"/>\n<TABLE>{fields}\n'
        f"<DATA><TABLEDATA>\n{rows}</TABLEDATA></DATA></TABLE>{after}</RESOURCE></VOTABLE>\n")
    return ["prepare", str(tmp / "cat.vot"), "--images", str(tmp), "--out", str(tmp / "out")]


def manifest_with(data: Path, **changes) -> Path:
    """``data`` whose manifest.json has ``changes`` applied (a shard path, say)."""
    manifest = json.loads((data / "manifest.json").read_text())
    for key, value in changes.items():
        if key == "first_train_file":
            manifest["splits"]["train"][0]["file"] = value
        else:
            manifest[key] = value
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


def zray_report(tmp: Path, user_file: str | None = "notes.txt") -> Path:
    """A folder zray recorded as a report of its own, plus (optionally) a file of the user's."""
    out = tmp / "report"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / ".zray-files.json").write_text(json.dumps({"kind": "report", "files": ["metrics.json"]}))
    if user_file:
        (out / user_file).write_text("my notes, not zray's")
    return out


def format2_bundle(tmp: Path, **member) -> Path:
    """A bundle.json that reads as format 2 up to its (single) member."""
    entry = {"path": "members/m0", "sha256": {"model.json": "0" * 64, "weights.weights.h5": "0" * 64}, **member}
    return bundle(tmp, json.dumps({"format": 2, "bins": {"z_min": 0.0, "z_max": 0.4, "n_bins": 180},
                                   "bands": list("ugriz"), "image_size": 32, "members": [entry]}))


def retyped_shard(data: Path) -> Path:
    """``data`` whose first train shard holds z_spec as text (a file another tool rewrote)."""
    import pyarrow.parquet as pq

    shard = first_train_shard(data)
    table = pq.read_table(shard)
    i = table.schema.get_field_index("z_spec")
    table = table.set_column(i, "z_spec", pa.array([f"{v:.3f}" for v in table["z_spec"].to_pylist()]))
    pq.write_table(table, shard)
    return data


ALIAS_BOMB = "name: x\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '1'] * 9)}]\n" for i in range(10))


def first_train_shard(data: Path) -> Path:
    return read_manifest(data).files("train")[0]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def bundle(tmp: Path, content: str | None) -> Path:
    path = tmp / "bundle"
    path.mkdir()
    if content is not None:
        (path / "bundle.json").write_text(content)
    return path


# --- the catalogue: id -> (setup(tmp, sim_data) -> argv, words of the error sentence) -----
# (a tuple: the sentence's words, then words expected elsewhere in the output)

DUPLICATED_KEY = """name: dup
model: cnn
data: {path: data}
search:
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
fixed: {epochs: 2}
search:
  filters: {type: int, low: 8, high: 16}
"""

CASES = {
    "space-duplicated-key": (lambda t, d: ["validate", space(t, text=DUPLICATED_KEY)],
                             "line 7, column 1: invalid YAML (key 'search' appears twice (lines 4 and 7); expected each key once)"),
    "space-one-bin": (lambda t, d: ["validate", space(t, data={"path": "x", "n_bins": 1})],
                      "data.n_bins: expected greater than or equal to 2, got 1"),
    "simulate-zero-workers": (lambda t, d: ["simulate", "--n", "5", "--out", str(t / "sim"), "--workers", "0"],
                              "Invalid value for '--workers': 0 is not in the range x>=1"),
    # search spaces (zray validate / train / tune)
    "space-missing-file": (lambda t, d: ["validate", str(t / "nope.yaml")], "nope.yaml: no such file; expected a search-space YAML"),
    "space-not-utf8": (lambda t, d: ((t / "latin1.yaml").write_bytes("name: café\n".encode("latin-1")),
                                     ["validate", str(t / "latin1.yaml")])[1],
                       "latin1.yaml: not UTF-8 text (byte 0xe9 at offset 9); expected a search-space YAML saved as UTF-8"),
    "space-alias-bomb": (lambda t, d: ["validate", space(t, text=ALIAS_BOMB)],
                         "invalid YAML (its aliases expand to more than 100,000 values"),
    "space-recursive-alias": (lambda t, d: ["validate", space(t, text="name: x\nloop: &a [*a]\n")],
                              "an alias refers to a node that contains it"),
    "space-nested-too-deep": (lambda t, d: ["validate", space(t, text="name: " + "[" * 3000 + "]" * 3000)],
                              "invalid YAML (nested too deeply to read)"),
    # Within libyaml's depth limit, too deep for Python's recursion when built (a RecursionError).
    "space-nested-990-deep": (lambda t, d: ["validate", space(t, text="name: " + "[" * 990 + "]" * 990)],
                              "invalid YAML (nested too deeply to read)"),
    # A value of the wrong type is shown cut short, however long or deeply nested.
    "space-value-nested-deep": (lambda t, d: ["validate", space(t, text="name: " + "[" * 100 + "]" * 100)],
                                "name: expected a valid string, got [[[[[...]]]]]"),
    "space-value-long": (lambda t, d: ["validate", space(t, fixed={**SPACE["fixed"], "epochs": list(range(10_000))})],
                         "fixed.epochs: expected a whole number, got [0, 1, 2, 3, 4, 5, 6, 7, ...]"),
    "space-choices-long": (lambda t, d: ["validate", space(t, search={"filters": {
                               "type": "categorical", "choices": list(range(10_000)), "default": -1}})],
                           "search.filters.default: must be one of the choices [0, 1, 2, 3, 4, 5, 6, 7, ...], got -1"),
    "space-invalid-yaml": (lambda t, d: ["validate", space(t, text="name: [unclosed\n")], "invalid YAML"),
    "space-not-a-mapping": (lambda t, d: ["validate", space(t, text="- a\n- b\n")], "expected a mapping of sections"),
    "space-missing-section": (lambda t, d: ["validate", space(t, text="name: x\nmodel: cnn\n")], "required section 'data' is missing"),
    "space-unknown-key": (lambda t, d: ["validate", space(t, tune={"num_sample": 3})], "tune.num_sample: unknown key; did you mean 'num_samples'?"),
    "space-unknown-model": (lambda t, d: ["validate", space(t, model="resnet")], "model: unknown model 'resnet'; known models: cnn, cnn_phot, inception"),
    "space-low-above-high": (
        lambda t, d: ["validate", space(t, search={"learning_rate": {"type": "float", "low": 1e-2, "high": 1e-4}})],
        "search.learning_rate.low: `low <= high` must hold, got low=0.01, high=0.0001"),
    "space-categorical-without-choices": (
        lambda t, d: ["validate", space(t, search={"filters": {"type": "categorical"}})],
        "search.filters.choices: must be a non-empty list"),
    "space-zero-epochs": (lambda t, d: ["validate", space(t, fixed={**SPACE["fixed"], "epochs": 0})], "fixed.epochs: expected a whole number >= 1, got 0"),
    "space-num-samples-not-int": (lambda t, d: ["validate", space(t, tune={"num_samples": "three"})],
                                  "tune.num_samples: expected a valid integer, got 'three'"),
    "space-z-range": (lambda t, d: ["validate", space(t, data={"path": "x", "z_min": 0.5, "z_max": 0.4})], "data.z_max: must be > z_min (0.5), got 0.4"),
    "space-skip-corrupt-not-bool": (
        lambda t, d: ["validate", space(t, data={"path": "x", "skip_corrupt": "often"})],
        "data.skip_corrupt: expected a valid boolean"),
    # command-line values
    "set-without-equals": (lambda t, d: ["validate", space(t), "--set", "fixed.epochs"], "--set fixed.epochs: expected KEY=VALUE"),
    "set-unknown-key": (lambda t, d: ["validate", space(t), "--set", "tune.speed=3"],
                        "--set tune.speed=3: unknown key tune.speed; did you mean 'seed'?"),
    "set-bad-type": (lambda t, d: ["validate", space(t), "--set", "tune.num_samples=many"],
                     "--set tune.num_samples=many: tune.num_samples: expected a valid integer, got 'many'"),
    "simulate-without-n": (lambda t, d: ["simulate", "--out", str(t / "out")], "--n is required unless --catalog is given"),
    "simulate-size-not-int": (lambda t, d: ["simulate", "--n", "10", "--size", "big", "--out", str(t / "out")], "'big' is not a valid integer"),
    "export-top-k-zero": (lambda t, d: ["export", str(t), "--top-k", "0", "--out", str(t.parent / "out")],
                          "--top-k must be a positive integer"),
    "status-not-an-experiment": (lambda t, d: ["status", str(t)], "not a zray experiment (search_space.json missing)"),
    # NaN and infinity are never valid numbers, wherever they are written
    "space-nan-z-max": (lambda t, d: ["validate", space(t, data={"path": "x", "z_max": float("nan")})],
                        "data.z_max: expected a finite number, got nan"),
    "space-inf-fixed-learning-rate": (
        lambda t, d: ["validate", space(t, fixed={**SPACE["fixed"], "learning_rate": float("inf")})],
        "fixed.learning_rate: expected a finite number, got inf"),
    "space-nan-search-choice": (
        lambda t, d: ["validate", space(t, search={"learning_rate": {"type": "categorical",
                                                                    "choices": [float("nan"), 0.1]}})],
        "search.learning_rate.choices: expected a finite number, got nan"),
    "space-inf-search-bound": (
        lambda t, d: ["validate", space(t, search={"learning_rate": {"type": "float", "low": 1e-4,
                                                                    "high": float("inf")}})],
        "search.learning_rate.high: expected a finite number, got inf"),
    "set-nan-cpus": (lambda t, d: ["validate", space(t), "--set", "resources.cpus_per_worker=nan"],
                     "resources.cpus_per_worker: expected a finite number, got 'nan'"),
    "status-negative-top": (lambda t, d: ["status", str(t), "--top", "-1"], "-1 is not in the range x>=1"),
    "inspect-negative-max-problems": (lambda t, d: ["inspect", str(dataset(t, d)), "--max-problems", "-1"],
                                      "-1 is not in the range x>=0"),
    "inspect-zero-max-problems-still-counts": (
        lambda t, d: ["inspect", str(wrong_hash(dataset(t, d))), "--max-problems", "0"],
        ("1 problem(s) found; see the list above", "... and 1 more")),
    # data for train / tune
    "train-no-dataset": (lambda t, d: ["train", space(t), "--runs", str(t / "runs")], "nodata: no dataset there"),
    "train-image-size-too-big": (
        lambda t, d: ["train", space(t, data={"path": str(dataset(t, d)), "image_size": 64}), "--runs", str(t / "runs")],
        "images are 32x32 pixels but data.image_size is 64"),
    "tune-resume-nothing": (
        lambda t, d: ["tune", space(t, dataset(t, d)), "--runs", str(t / "runs"), "--resume"],
        "runs/bad: nothing to resume (no Tune experiment state there); run without --resume"),
    # labels outside the bins: refused with the count and both ways forward
    "train-labels-outside-the-bins": (
        lambda t, d: ["train", space(t, data={"path": str(dataset(t, d)), "image_size": 32, "z_max": 0.2}),
                      "--runs", str(t / "runs")],
        ("have z_spec outside the bins 0 <= z < 0.2; expected every label inside them: widen the bins "
         "(--set data.z_max=0.29) or leave those galaxies out (--drop-out-of-range)")),
    "tune-labels-below-the-bins": (
        lambda t, d: ["tune", space(t, data={"path": str(dataset(t, d)), "image_size": 32, "z_min": 0.1}),
                      "--runs", str(t / "runs")],
        "outside the bins 0.1 <= z < 0.4; expected every label inside them: widen the bins (--set data.z_min=0.01)"),
    # shards
    "train-truncated-shard": (
        lambda t, d: (truncate(first_train_shard(dataset(t, d))),
                      ["train", space(t, t / "data"), "--runs", str(t / "runs")])[1],
        "train-00000.parquet: shard is corrupt (unreadable footer"),
    "tune-truncated-shard": (
        lambda t, d: (truncate(first_train_shard(dataset(t, d))),
                      ["tune", space(t, t / "data"), "--runs", str(t / "runs")])[1],
        "train-00000.parquet: shard is corrupt (unreadable footer"),
    "train-missing-shard": (
        lambda t, d: (first_train_shard(dataset(t, d)).unlink(), ["train", space(t, t / "data"), "--runs", str(t / "runs")])[1],
        "train-00000.parquet"),
    "inspect-missing-shard": (
        lambda t, d: (first_train_shard(dataset(t, d)).unlink(), ["inspect", str(t / "data")])[1],
        ("problem(s) found; see the list above", "train-00000.parquet")),
    "train-shard-column-of-wrong-type": (
        lambda t, d: ["train", space(t, retyped_shard(dataset(t, d))), "--runs", str(t / "runs")],
        "z_spec"),
    "inspect-shard-column-of-wrong-type": (
        lambda t, d: ["inspect", str(retyped_shard(dataset(t, d)))],
        ("problem(s) found; see the list above", "z_spec")),
    "tune-storage-is-a-file": (
        lambda t, d: ((t / "file").write_text("x"), ["tune", space(t, dataset(t, d)), "--storage", str(t / "file")])[1],
        "w/file is a file; expected a folder (or where to make one)"),
    "train-runs-below-a-file": (
        lambda t, d: ((t / "file").write_text("x"),
                      ["train", space(t, dataset(t, d)), "--runs", str(t / "file" / "runs")])[1],
        "w/file is a file; expected a folder (or where to make one)"),
    "tune-resume-truncated-search-space": (
        lambda t, d: ((t / "runs" / "bad").mkdir(parents=True), (t / "runs" / "bad" / "search_space.json").write_text('{"na'),
                      ["tune", space(t, dataset(t, d)), "--runs", str(t / "runs"), "--resume"])[2],
        "runs/bad/search_space.json: unreadable (cut short?); expected the search space zray saved"),
    "status-truncated-json": (
        lambda t, d: ((t / "exp").mkdir(), (t / "exp" / "search_space.json").write_text('{"name": "x", "mod'),
                      ["status", str(t / "exp")])[2],
        "search_space.json: unreadable (Unterminated string"),
    "inspect-missing-folder": (lambda t, d: ["inspect", str(t / "nowhere")], "nowhere: no such dataset directory"),
    "inspect-a-catalogue-file": (
        lambda t, d: ((t / "cat.csv").write_text("ra,dec,z\n1,2,0.1\n"), ["inspect", str(t / "cat.csv")])[1],
        "cat.csv: a file, not a dataset directory; expected a folder written by `zray simulate` or `zray prepare`"),
    "inspect-manifest-not-json": (
        lambda t, d: ((dataset(t, d) / "manifest.json").write_text("{not json"), ["inspect", str(t / "data")])[1],
        "manifest.json: not readable JSON"),
    "inspect-truncated-shard": (
        lambda t, d: (truncate(first_train_shard(dataset(t, d))), ["inspect", str(t / "data")])[1],
        ("2 problem(s) found; see the list above", "train-00000.parquet: not a readable Parquet file")),
    # catalogues and FITS files (zray prepare)
    "catalog-missing-file": (
        lambda t, d: ["prepare", str(t / "none.csv"), "--images", str(t), "--out", str(t / "out")],
        "none.csv: catalogue file not found"),
    "catalog-space-separated": (
        lambda t, d: ((t / "cat.txt").write_text("id z\n"), ["prepare", str(t / "cat.txt"), "--images", str(t),
                                                             "--out", str(t / "out")])[1],
        "cat.txt: its header's names stand apart by spaces, 'id z'; expected them apart by commas"),
    "catalog-misspelt-column-after-a-space": (
        lambda t, d: ((t / "cat.csv").write_text("id, zspec, ebv, file\n1, 0.1, 0.03, a.fits\n"),
                      ["prepare", str(t / "cat.csv"), "--images", str(t), "--out", str(t / "out")])[1],
        "cat.csv: missing column(s) z_spec; expected columns id, z_spec (found 'id', 'zspec', 'ebv', 'file')"),
    # SDSS specObjIDs reach 2**64: ids are 64-bit, signed or (all >= 0) unsigned, and never wrap round
    "catalog-id-beyond-64-bits-in-csv": (
        lambda t, d: fits_setup(t, rows={"id": ["100", "101", str(2**64)]}),
        "cat.csv: row 3: id 18446744073709551616 is larger than 18446744073709551615; expected 64-bit integer ids"),
    "catalog-negative-and-unsigned-ids-in-csv": (
        lambda t, d: fits_setup(t, rows={"id": ["-5", "101", str(2**63)]}),
        "cat.csv: row 1 has id -5 and row 3 id 9223372036854775808; expected ids either all below "
        "9223372036854775808 or all >= 0 (64-bit integers, signed or not)"),
    "catalog-sentinel-magnitude": (lambda t, d: fits_setup(t, rows={"mag_r": [17.0, -9999.0, 18.0]}),
                                   "cat.csv: row 2 (id 101): mag_r -9999 is not a galaxy's apparent magnitude"),
    "catalog-fractional-id-in-csv": (lambda t, d: fits_setup(t, rows={"id": [100, 101.5, 102]}),
                                     "cat.csv: row 2: id '101.5' is not written as an integer; expected integer ids"),
    "catalog-id-a-name": (lambda t, d: fits_setup(t, rows={"id": ["J100021+020011", "J100022+020012", "J1"]}),
                          "cat.csv: row 1: id 'J100021+020011' is not written as an integer; expected integer ids "
                          "(a catalogue that names its galaxies needs a column of whole numbers beside the names, "
                          "its row numbers will do: --column id= names it)"),
    "simulate-catalog-sentinel-magnitude": (
        lambda t, d: ((t / "cat.csv").write_text("id,z,mag_u,mag_g,mag_r,mag_i,mag_z\n7,0.1,19,18,17.5,17,16.8\n"
                                                  "8,0.2,-9999,19,18,17.6,17.4\n"),
                      ["simulate", "--catalog", str(t / "cat.csv"), "--size", "16", "--out", str(t / "out")])[1],
        "cat.csv: row 2 (id 8): mag_u -9999 is not a galaxy's apparent magnitude; expected 5 to 35"),
    "simulate-catalog-99-magnitude": (
        lambda t, d: ((t / "cat.csv").write_text("id,z_spec,mag_u,mag_g,mag_r,mag_i,mag_z\n7,0.1,19,18,17.5,17,99\n"),
                      ["simulate", "--catalog", str(t / "cat.csv"), "--size", "16", "--out", str(t / "out")])[1],
        "cat.csv: row 1 (id 7): mag_z 99 is not a galaxy's apparent magnitude"),
    # --column: which of the catalogue's columns is which of zray's
    "column-without-equals": (lambda t, d: [*fits_setup(t), "--column", "specObjID"],
                              "--column 'specObjID': expected ZRAY=YOURS, e.g. --column id=specObjID"),
    "column-unknown-zray-name": (lambda t, d: [*fits_setup(t), "--column", "zspec=z"],
                                 "--column 'zspec=z': zray reads no column 'zspec'; expected one of id, z_spec, ebv"),
    "column-given-twice": (lambda t, d: [*fits_setup(t), "--column", "id=a", "--column", "id=b"],
                           "--column 'id=b': id is given twice (also id=a)"),
    "column-divisor-zero": (lambda t, d: [*fits_setup(t), "--column", "ebv=ebv/0"],
                            "--column 'ebv=ebv/0': expected YOURS or YOURS/NUMBER (a number > 0)"),
    "column-divisor-nan": (lambda t, d: [*fits_setup(t), "--column", "ebv=ebv/nan"],
                           "--column 'ebv=ebv/nan': expected YOURS or YOURS/NUMBER (a number > 0)"),
    "column-not-in-catalogue": (
        lambda t, d: [*fits_setup(t), "--column", "z_spec=redshift"],
        "cat.csv: --column z_spec=redshift: no column 'redshift'; expected one of the catalogue's columns (found "
        "'id', 'z_spec', 'ebv', 'file')"),
    "column-dividing-text": (lambda t, d: [*fits_setup(t), "--column", "ebv=file/2.751"],
                             "cat.csv: --column ebv=file/2.751: column 'file' has type string; expected numbers"),
    "column-for-a-shard-folder": (
        lambda t, d: ["predict", str(t / "nobundle"), str(dataset(t, d)), "--out", str(t / "pz.parquet"),
                      "--column", "id=objid"],
        "data: is a shard folder, whose columns are zray's own; --column is only for a catalogue file"),
    "simulate-column-without-catalog": (lambda t, d: ["simulate", "--n", "5", "--out", str(t / "sim"),
                                                      "--column", "id=objid"],
                                        "--column names the columns of --catalog's file; expected it with --catalog"),
    "catalog-votable-id-beyond-its-long-field": (
        lambda t, d: votable(t, '<FIELD name="id" datatype="long"/><FIELD name="z_spec" datatype="double"/>',
                             "<TR><TD>12345678901234567890</TD><TD>0.1</TD></TR>"),
        "cat.vot: not a readable VOTable (line 6, column 8: W51: Value '12345678901234567890' is out of range for "
        "a 64-bit integer field); expected integers within their FIELD's datatype (ids above 9223372036854775807 "
        "as char)"),
    "catalog-votable-text-longer-than-its-field": (
        lambda t, d: votable(t, '<FIELD name="id" datatype="long"/><FIELD name="file" datatype="char" arraysize="3"/>',
                             "<TR><TD>1</TD><TD>galaxy1.fits</TD></TR>"),
        "cat.vot: not a readable VOTable (line 6, column 18: W46: char value is too long for specified length of 3); "
        "expected text no longer than its FIELD's arraysize"),
    "catalog-votable-field-twice": (
        lambda t, d: votable(t, '<FIELD name="id" datatype="long"/><FIELD name="id" datatype="long"/>',
                             "<TR><TD>1</TD><TD>2</TD></TR>"),
        "cat.vot: column 'id' appears more than once; expected each column once"),
    "catalog-votable-query-overflow": (
        lambda t, d: votable(t, '<FIELD name="id" datatype="long"/>', "<TR><TD>1</TD></TR>",
                             after='<INFO name="QUERY_STATUS" value="OVERFLOW">MAXREC 1 reached</INFO>'),
        "cat.vot: the query that wrote it ended in OVERFLOW (MAXREC 1 reached); expected a whole result: query "
        "again with a higher row limit (MAXREC), or in parts"),
    "catalog-votable-query-error": (
        lambda t, d: votable(t, '<FIELD name="id" datatype="long"/>', "", status="ERROR"),
        "cat.vot: the query that wrote it ended in ERROR; expected a whole result"),
    "column-mapped-name-twice": (
        lambda t, d: ((t / "cat.csv").write_text("specObjID,z,z,ebv,file\n1,0.1,0.5,0.03,a.fits\n"),
                      ["prepare", str(t / "cat.csv"), "--images", str(t), "--out", str(t / "out"),
                       "--column", "id=specObjID", "--column", "z_spec=z"])[1],
        "cat.csv: column 'z' appears more than once; expected each column once"),
    "column-divisor-on-id": (lambda t, d: [*fits_setup(t), "--column", "id=id/1000"],
                             "--column 'id=id/1000': id is not a number to divide; expected YOURS/NUMBER only for"),
    "column-mapped-value-missing": (
        lambda t, d: [*fits_setup(t, rows={"extinction_r": [0.08, None, 0.08]}), "--column", "ebv=extinction_r/2.751"],
        "cat.csv: row 2 (id 101): ebv (your extinction_r/2.751) is missing or not finite; expected a number"),
    "drop-out-of-range-leaves-nothing": (
        lambda t, d: [*fits_setup(t, rows={"z_spec": [0.5, 0.9, 1.2]}), "--drop-out-of-range"],
        "cat.csv: every one of its 3 galaxies has z_spec outside 0.0 <= z < 0.4; expected some inside the bins "
        "(--z-max widens them)"),
    "column-mapped-z-out-of-range": (
        lambda t, d: [*fits_setup(t, rows={"z": [0.1, 0.9, 0.2]}), "--column", "z_spec=z"],
        "cat.csv: row 2 (id 101): z_spec (your z) 0.9 is outside the binning range; expected 0.0 <= z < 0.4"),
    "cutouts-ra-text-not-an-angle": (
        lambda t, d: ((t / "cat.csv").write_text("id,z_spec,ra,dec\n1,0.1,12:34:56.7,-01:02:03\n2,0.1,12h34x,+5\n"),
                      ["cutouts", str(t / "cat.csv"), "--frames", str(t), "--out", str(t / "out")])[1],
        "cat.csv: row 2 (id 2): ra '12h34x' is not an angle; expected degrees, or sexagesimal hours as 12:34:56.7"),
    "catalog-votable-not-xml": (
        lambda t, d: ((t / "cat.vot").write_text("id,z_spec\n1,0.1\n"),
                      ["prepare", str(t / "cat.vot"), "--images", str(t), "--out", str(t / "out")])[1],
        "cat.vot: not a readable VOTable ("),
    "catalog-ecsv-without-header": (
        lambda t, d: ((t / "cat.ecsv").write_text("id z_spec\n1 0.1\n"),
                      ["prepare", str(t / "cat.ecsv"), "--images", str(t), "--out", str(t / "out")])[1],
        "cat.ecsv: not a readable ECSV table ("),
    # a data.path given with --set names data: a mistyped one is not filled with a simulation
    "train-mistyped-data-path-is-not-simulated": (
        lambda t, d: ["train", str(Path(__file__).parents[1] / "search_spaces" / "quickstart.yaml"),
                      "--set", f"data.path={t / 'dat'}", "--runs", str(t / "runs")],
        "dat: no dataset there (manifest.json missing)"),
    "catalog-missing-column": (
        lambda t, d: ((t / "cat.csv").write_text("id,ebv,file\n1,0.03,a.fits\n"),
                      ["prepare", str(t / "cat.csv"), "--images", str(t), "--out", str(t / "out")])[1],
        "cat.csv: missing column(s) z_spec; expected columns id, z_spec"),
    "catalog-duplicate-ids": (lambda t, d: fits_setup(t, rows={"id": [7, 7, 8]}), "rows 1 and 2 share id 7; expected unique ids"),
    "catalog-z-out-of-range": (lambda t, d: fits_setup(t, rows={"z_spec": [0.1, 0.9, 0.2]}),
                               "row 2 (id 101): z_spec 0.9 is outside the binning range; expected 0.0 <= z < 0.4"),
    "fits-missing-file": (lambda t, d: fits_setup(t, damage=lambda img: (img / "g1.fits").unlink()),
                          "row 2 (id 101): FITS file"),
    "fits-not-fits": (lambda t, d: fits_setup(t, damage=lambda img: (img / "g2.fits").write_bytes(b"garbage" * 100)),
                      # without astropy's advice to its Python callers (ignore_missing_simple=True)
                      "g2.fits is not a readable FITS file (No SIMPLE card found, this file does not appear to be "
                      "a valid FITS file.); --skip-bad"),
    "catalog-word-among-numbers": (lambda t, d: fits_setup(t, rows={"z_spec": [None, "0.2z", "0.2"]}),
                                   # the empty field above it is a missing value, not the word
                                   "cat.csv: row 2 (id 101): z_spec '0.2z' is not a number; expected numbers"),
    "catalog-header-only-with-column-options": (
        lambda t, d: ((t / "cat.csv").write_text("objID,z,extinction_r,file\n"),
                      ["prepare", str(t / "cat.csv"), "--images", str(t), "--out", str(t / "out"),
                       "--column", "id=objID", "--column", "z_spec=z", "--column", "ebv=extinction_r/2.751"])[1],
        "cat.csv: catalogue has no rows"),
    "catalog-ragged-line": (
        lambda t, d: ((t / "cat.csv").write_text("# from a script\nid,z_spec,ebv,file\n1,0.1,0.03,a.fits\n2,0.2\n"),
                      ["prepare", str(t / "cat.csv"), "--images", str(t), "--out", str(t / "out")])[1],
        "cat.csv: line 4 has 2 values ('2,0.2') but the header has 4; expected as many on every line"),
    "fits-wrong-band-count": (lambda t, d: fits_setup(t, image=np.ones((4, 20, 20), np.float32)),
                              "g0.fits holds 4 bands; expected 5 (u,g,r,i,z)"),
    "fits-nan-pixels": (lambda t, d: fits_setup(t, image=np.full((5, 20, 20), np.nan, np.float32)),
                         "g0.fits band u has NaN or infinite pixels; expected finite values"),
    # bundles (zray export / predict / evaluate)
    "export-missing-run": (lambda t, d: ["export", str(t / "runs" / "x"), "--out", str(t / "out")], "no such folder"),
    "predict-missing-bundle": (
        lambda t, d: ["predict", str(t / "nob"), str(dataset(t, d)), "--out", str(t / "pz.parquet")], "no such bundle directory"),
    "predict-bundle-without-json": (
        lambda t, d: ["predict", str(bundle(t, None)), str(dataset(t, d)), "--out", str(t / "pz.parquet")],
        "bundle.json: not found"),
    "predict-bundle-json-garbage": (
        lambda t, d: ["predict", str(bundle(t, "{oops")), str(dataset(t, d)), "--out", str(t / "pz.parquet")],
        "bundle.json: unreadable"),
    "evaluate-bundle-json-a-list": (
        lambda t, d: ["evaluate", str(bundle(t, "[1, 2]")), str(dataset(t, d)), "--out", str(t / "report")],
        "bundle.json: holds list"),
    "evaluate-bundle-no-members": (
        lambda t, d: ["evaluate", str(bundle(t, json.dumps({"format": 2, "members": []}))), str(dataset(t, d)),
                      "--out", str(t / "report")], "bundle.json: missing or malformed field 'bins'"),
    # names that live under a root never leave it, and stay names a file system can hold
    "tune-name-parent": (lambda t, d: ["tune", space(t, dataset(t, d)), "--runs", str(t / "runs"), "--name", "../out"],
                         "Invalid value for '--name': must be letters, digits, '-', '_' or '.'"),
    "train-name-absolute": (
        lambda t, d: ["train", space(t, dataset(t, d)), "--runs", str(t / "runs"), "--name", str(t / "elsewhere")],
        "Invalid value for '--name': must be letters, digits"),
    "tune-name-too-long": (lambda t, d: ["tune", space(t, dataset(t, d)), "--runs", str(t / "runs"), "--name", "a" * 300],
                           "Invalid value for '--name': must be at most 100 characters, got 300"),
    "space-name-too-long": (lambda t, d: ["validate", space(t, name="n" * 300)], "name: must be at most 100 characters"),
    "inspect-shard-outside-dataset": (
        lambda t, d: ["inspect", str(manifest_with(dataset(t, d), first_train_file="../../elsewhere.parquet"))],
        "splits: path '../../elsewhere.parquet' is not inside"),
    "train-shard-absolute-path": (
        lambda t, d: ["train", space(t, manifest_with(dataset(t, d), first_train_file="/etc/passwd")),
                      "--runs", str(t / "runs")],
        "splits: path '/etc/passwd' is not inside"),
    "predict-member-outside-bundle": (
        lambda t, d: ["predict", str(format2_bundle(t, path="../../m0")), str(dataset(t, d)), "--out", str(t / "pz.parquet")],
        "members[0].path: path '../../m0' is not inside"),
    "predict-member-without-checksums": (
        lambda t, d: ["predict", str(format2_bundle(t, sha256={})), str(dataset(t, d)), "--out", str(t / "pz.parquet")],
        "'members[0].sha256' must give the SHA-256 of model.json and weights.weights.h5"),
    # nothing the user owns is overwritten, not even with --overwrite
    "predict-out-is-its-own-shard": (
        lambda t, d: ["predict", str(format2_bundle(t)), str(dataset(t, d)), "--out", str(first_train_shard(t / "data")),
                      "--overwrite"],
        "an input of this command; expected an output apart from the command's inputs"),
    "predict-overwrite-a-file-zray-did-not-write": (
        lambda t, d: ((t / "mine.parquet").write_bytes(b"PAR1 mine"),
                      ["predict", str(format2_bundle(t)), str(dataset(t, d)), "--out", str(t / "mine.parquet"),
                       "--overwrite"])[1],
        "mine.parquet: exists and was not written by zray"),
    "evaluate-overwrite-keeps-the-users-file": (
        lambda t, d: ["evaluate", str(format2_bundle(t)), str(dataset(t, d)), "--out", str(zray_report(t)), "--overwrite"],
        "report: holds notes.txt, which zray did not write"),
    "evaluate-report-without-overwrite": (
        lambda t, d: ["evaluate", str(format2_bundle(t)), str(dataset(t, d)), "--out", str(zray_report(t, None))],
        "report: already exists (a zray report); use --overwrite to replace it"),
    "evaluate-out-is-the-bundle": (
        lambda t, d: ["evaluate", str(format2_bundle(t)), str(dataset(t, d)), "--out", str(t / "bundle"), "--overwrite"],
        "bundle: is, holds or lies inside"),
    "simulate-overwrite-a-dataset-with-user-files": (
        lambda t, d: ((dataset(t, d) / "my-notes.txt").write_text("mine"),
                      ["simulate", "--n", "20", "--size", "16", "--out", str(t / "data"), "--overwrite"])[1],
        "data: holds my-notes.txt, which zray did not write"),
    "simulate-overwrite-a-report": (
        lambda t, d: ["simulate", "--n", "20", "--size", "16", "--out", str(zray_report(t, None)), "--overwrite"],
        "report: holds a zray report, not a dataset; choose another --out"),
    # nor is anything new written inside a folder zray reads as a whole (a dataset, a bundle, a run)
    "predict-new-file-inside-its-dataset": (
        lambda t, d: ["predict", str(format2_bundle(t)), str(dataset(t, d)), "--out", str(t / "data" / "pz.parquet")],
        "pz.parquet: is, holds or lies inside"),
    "evaluate-report-inside-its-bundle": (
        lambda t, d: ["evaluate", str(format2_bundle(t)), str(dataset(t, d)), "--out", str(t / "bundle" / "report")],
        "report: is, holds or lies inside"),
    "export-bundle-inside-its-run": (lambda t, d: ["export", str(t), "--out", str(t / "b")],
                                     "b: is, holds or lies inside"),
    "slurm-out-is-its-own-search-space": (
        lambda t, d: ["slurm", space(t), "--shared", str(t), "--out", str(t / "space.yaml"), "--overwrite"],
        "space.yaml: is, holds or lies inside"),
    "slurm-overwrite-a-file-zray-did-not-write": (
        lambda t, d: ((t / "job.sh").write_text("#!/bin/bash\necho my own job\n"),
                      ["slurm", space(t), "--shared", str(t), "--out", str(t / "job.sh"), "--overwrite"])[1],
        "job.sh: exists and was not written by zray"),
    # the CLI's net under the readers: an OS error is one sentence naming the path
    "simulate-out-name-too-long": (lambda t, d: ["simulate", "--n", "5", "--size", "16", "--out", str(t / ("o" * 300))],
                                   "file name too long; expected a path zray can read and write there"),
    "export-out-is-the-run": (lambda t, d: ["export", str(t), "--out", str(t), "--overwrite"],
                              "is, holds or lies inside"),
}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_sentence_and_leaves_nothing(case, tmp_path, sim_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    setup, expected = CASES[case]
    expected, *elsewhere = (expected,) if isinstance(expected, str) else expected
    work = tmp_path / "w"
    work.mkdir()
    argv = setup(work, sim_data)
    before = _tree(tmp_path)
    result = CliRunner().invoke(main, argv)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    if result.exit_code == 2:  # click's own usage errors
        assert expected in result.output, result.output
    else:
        errors = [line for line in result.output.splitlines() if line.startswith("zray: error: ")]
        assert len(errors) == 1, result.output
        assert expected in errors[0], errors[0]
    for words in elsewhere:  # e.g. the problem list printed above the sentence
        assert words in result.output, result.output
    # Nothing new anywhere: no output, no temporary sibling, no half-written folder.
    assert _tree(tmp_path) == before, sorted(_tree(tmp_path) - before)


def test_catalogue_is_large_enough():
    assert len(CASES) >= 30


def test_no_code_path_unpickles_or_deserialises_user_files():
    """Bundles, checkpoints, shards and catalogues are read as numbers and JSON only:
    no pickle, no NumPy object arrays, no Keras model deserialisation (which can
    run a saved Lambda layer's code)."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "zray"
    banned = re.compile(r"\b(c?pickle|cloudpickle|dill|joblib)\b|allow_pickle\s*=\s*True|"
                        r"models\.load_model|model_from_json|model_from_config|from_config\(|safe_mode\s*=\s*False")
    hits = [f"{path.relative_to(src)}:{n}: {line.strip()}"
            for path in src.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if banned.search(line) and not line.lstrip().startswith(("#", '"""')) and "no pickle" not in line
            and "nothing is unpickled" not in line]
    assert not hits, hits


def test_debug_shows_the_traceback_behind_the_sentence(tmp_path):
    quiet = CliRunner().invoke(main, ["inspect", str(tmp_path / "nothing")])
    loud = CliRunner().invoke(main, ["--debug", "inspect", str(tmp_path / "nothing")])
    sentence = f"zray: error: {tmp_path / 'nothing'}: no such dataset directory"
    assert quiet.exit_code == loud.exit_code == 1
    assert quiet.output.strip() == sentence and "Traceback" not in quiet.output
    assert "Traceback (most recent call last)" in loud.output and "read_manifest" in loud.output
    assert loud.output.strip().splitlines()[-1] == sentence
