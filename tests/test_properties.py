"""Property-based checks of the command-line contract (the ``hypothesis`` library).

Generated inputs near the valid ones (search spaces, ``--set`` strings,
catalogues, manifests, bundle.json files, experiment and run folders, path
and name arguments) go through every command that needs no Ray, in-process
(click's CliRunner). For every case:

* the command exits 0, or exits non-zero with exactly one ``zray: error: ``
  line (a sentence of sane length, nothing after it) or a click usage error
  (exit 2, ``Error:``), and never prints a traceback;
* nothing outside the command's declared outputs changed: a checksum of the
  whole sandbox tree (every path, every file's bytes) before and after, and
  on a failure not even the outputs; zray's temporary files go to the
  sandbox too (``tempfile.tempdir``), so a leftover one is seen;
* Ray never starts: ``zray.runtime.init_ray`` is replaced by a function that
  raises, so an input that would reach Ray's start is reported by name.

Two checks beyond that, where the commands have them: ``zray predict`` and
``zray evaluate`` never load a model from outside the bundle folder, and
``zray slurm`` writes ``--time``, ``--partition`` and ``--venv`` into the
batch script as one line / one shell word (no command injected).

Every bug found is pinned as an ``@example`` (the comment names the exception
it raised when found), so it stays checked whatever Hypothesis generates.

Each example gets a fresh sandbox ``BASE/a/b/c/w`` (the command runs with
that as its working directory), so paths with up to four ``..`` stay inside
what is checked. Deterministic (``derandomize``): CI sees the same cases each
run. ``ZRAY_PROPERTY_SCALE=10`` multiplies every test's example count, to
hunt for more; ``ZRAY_PROPERTY_LOG=FILE`` appends each violation as a JSON
line and ``ZRAY_PROPERTY_COLLECT=1`` keeps going after one (logged, not
raised), to list the distinct failures of a long run.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st

from zray.cli import main

REPO = Path(__file__).resolve().parents[1]
BANDS = "ugriz"
SCALE = float(os.environ.get("ZRAY_PROPERTY_SCALE", "1"))
LOG = os.environ.get("ZRAY_PROPERTY_LOG")
COLLECT = os.environ.get("ZRAY_PROPERTY_COLLECT") == "1"
SENTENCE_LIMIT = 2000  # characters of the one error line; an echoed alias bomb is megabytes
SECONDS_LIMIT = 30.0  # per command (the first that imports TensorFlow takes ~5 s of it)


def budget(n: int):
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                               HealthCheck.large_base_example],
    )


# --- the contract ---------------------------------------------------------------------


class RayWouldStart(Exception):
    """Raised in place of starting Ray: the input was not refused before it."""


def _no_ray(*args, **kwargs):
    raise RayWouldStart("zray.runtime.init_ray was called: this input was not refused before Ray starts")


class ContractViolation(AssertionError):
    pass


class NotOneSentence(ContractViolation):
    pass


class SentenceTooLong(ContractViolation):
    pass


class TextAfterSentence(ContractViolation):
    pass


class TracebackPrinted(ContractViolation):
    pass


class TreeChanged(ContractViolation):
    pass


class TooSlow(ContractViolation):
    pass


class Sandbox:
    """A fresh folder per example: BASE/a/b/c/w is the working directory."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="zprop-"))
        self.root = self.base / "a" / "b" / "c" / "w"
        self.root.mkdir(parents=True)
        self.tmp = self.base / "tmp"  # zray's own temporary files while a command runs
        self.tmp.mkdir()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.base, ignore_errors=True)

    def write(self, rel: str, content: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        path.write_bytes(content)
        return path

    def sub(self, text: str) -> str:
        """``{root}`` and ``{base}`` in generated text become this sandbox's folders."""
        return text.replace("{root}", str(self.root)).replace("{base}", str(self.base))


def _digest(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = "dir"
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            key = os.path.relpath(full, root)
            if os.path.islink(full):
                out[key] = "link:" + os.readlink(full)
            elif name in filenames:
                try:
                    with open(full, "rb") as fh:
                        out[key] = hashlib.sha256(fh.read()).hexdigest()
                except OSError as exc:
                    out[key] = f"unreadable:{exc.errno}"
    return out


def _inside(key: str, outputs: list[str]) -> bool:
    key = key.rstrip("/")
    return any(key == o or key.startswith(o + "/") for o in outputs)


def _holds(key: str, outputs: list[str]) -> bool:
    """A new folder on the way to an output."""
    return key.endswith("/") and any(o.startswith(key) for o in outputs)


def _log(kind: str, argv, detail: str, where: str = "") -> None:
    if LOG:
        with open(LOG, "a") as fh:
            fh.write(json.dumps({"kind": kind, "where": where, "argv": argv, "detail": detail[-3000:]},
                                default=repr) + "\n")


def _fail(error: BaseException, argv, detail: str, where: str = "") -> None:
    _log(type(error).__name__, argv, detail, where)
    if not COLLECT:
        raise error


def _innermost(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "/zray/" in f.filename] or frames
    return f"{mine[-1].filename.rsplit('/src/', 1)[-1]}:{mine[-1].lineno}" if mine else "?"


def run(sb: Sandbox, argv: list[str], outputs=(), echoed: str = ""):
    """Run ``zray ARGV`` in ``sb`` and check the contract; returns click's Result.

    ``outputs``: paths (absolute, or relative to ``sb.root``) the command may
    create or replace when it succeeds. ``echoed``: a value from an input file
    the error may quote (like the arguments, it may be long or hold a newline).
    """
    argv = [str(a) for a in argv]
    outs = [os.path.relpath(Path(sb.root, o), sb.base) for o in outputs]
    note(f"zray {shlex.join(argv)}")
    before = _digest(sb.base)
    cwd, saved_tmp, saved_env = os.getcwd(), tempfile.tempdir, os.environ.get("TMPDIR")
    os.chdir(sb.root)
    tempfile.tempdir = str(sb.tmp)
    os.environ["TMPDIR"] = str(sb.tmp)
    t0 = time.perf_counter()
    try:
        result = CliRunner().invoke(main, argv, catch_exceptions=True)
    finally:
        elapsed = time.perf_counter() - t0
        os.chdir(cwd)
        tempfile.tempdir = saved_tmp
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
    output = result.output
    shown = output if len(output) < 4000 else output[:2000] + "\n[...]\n" + output[-1500:]
    note(f"exit {result.exit_code} after {elapsed:.2f} s; output:\n{shown}")
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        note(tb)
        _log(type(exc).__name__, argv, f"{exc!r}\n{tb}", _innermost(exc))
        if not COLLECT:
            raise exc  # re-raised as it is: Hypothesis tells distinct bugs apart by where they were raised
        return result
    lines = [line.rstrip("\r") for line in output.split("\n")]  # not splitlines(): \x1c, \x85 are no line ends here
    if "Traceback" in output:
        _fail(TracebackPrinted(f"zray {shlex.join(argv)} printed a traceback:\n{shown}"), argv, shown)
    if elapsed > SECONDS_LIMIT:
        _fail(TooSlow(f"zray {shlex.join(argv)} took {elapsed:.0f} s"), argv, shown)
    errors = [i for i, line in enumerate(lines) if line.startswith("zray: error: ")]
    if result.exit_code == 0:
        if errors:
            _fail(NotOneSentence(f"exit 0 with an error line:\n{shown}"), argv, shown)
    elif result.exit_code == 2 and not errors:
        if not any(line.startswith("Error:") for line in lines):
            _fail(NotOneSentence(f"exit 2 without click's `Error:` line:\n{shown}"), argv, shown)
    elif len(errors) != 1:
        _fail(NotOneSentence(f"exit {result.exit_code} with {len(errors)} `zray: error:` lines:\n{shown}"),
              argv, shown)
    else:
        line = lines[errors[0]]
        quoted = [*argv, echoed]
        if len(line) > SENTENCE_LIMIT + 4 * max(len(q) for q in quoted):
            _fail(SentenceTooLong(f"a {len(line):,}-character error line: {line[:300]}..."), argv, line[:3000])
        rest = [x for x in lines[errors[0] + 1:] if x.strip()]
        if argv[0] == "validate":
            rest = [x for x in rest if not x.endswith("failed validation")]
        if rest and not any("\n" in q for q in quoted):  # a newline the user gave may be quoted as it is
            _fail(TextAfterSentence(f"the error sentence spills over lines:\n{shown}"), argv, shown)
    after = _digest(sb.base)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if result.exit_code == 0:  # the outputs, and the folders made to hold them
        changed = [k for k in changed if not _inside(k, outs) and not _holds(k, outs)]
    if changed:
        what = "a failed command" if result.exit_code else "outside the declared outputs"
        _fail(TreeChanged(f"zray {shlex.join(argv)} (exit {result.exit_code}) changed {what}: {changed[:12]}"),
              argv, f"{changed[:12]}\n{shown}")
    return result


# --- inputs shared by the tests (made once) ----------------------------------------------


LOADED: list[Path] = []  # the model folders zray.models.load_model was asked for


@pytest.fixture(scope="module", autouse=True)
def _guards():
    """No Ray, no RAY_ADDRESS; and nothing written into the repository."""
    import zray.models
    import zray.runtime

    mp = pytest.MonkeyPatch()
    mp.setattr(zray.runtime, "init_ray", _no_ray)
    real_load = zray.models.load_model

    def recording_load(path, *args, **kwargs):
        LOADED.append(Path(path).resolve())
        return real_load(path, *args, **kwargs)

    mp.setattr(zray.models, "load_model", recording_load)
    # Each command starts as a fresh `zray` process would, even when an earlier test of the
    # session left a Ray initialised in this one (predict would then use it).
    import zray.predict

    if hasattr(zray.predict, "_ray_running"):
        mp.setattr(zray.predict, "_ray_running", lambda: False)
    mp.delenv("RAY_ADDRESS", raising=False)
    before = _repo_outputs()
    yield
    mp.undo()
    global _TEMPLATES
    if _TEMPLATES is not None:
        shutil.rmtree(_TEMPLATES, ignore_errors=True)
        _TEMPLATES = None
    assert _repo_outputs() == before, sorted(_repo_outputs() ^ before)


_ZRAY_OUTPUT_NAMES = {"manifest.json", "bundle.json", "search_space.json", "state.json", "metrics.json",
                      "results.csv", "best.json", "index.html", "baselines.json"}


def _repo_outputs() -> set[str]:
    """Files in the repository that only a zray command would write there."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "node_modules", "__pycache__")]
        for name in filenames:
            if name in _ZRAY_OUTPUT_NAMES or name.endswith((".parquet", ".sbatch")) or ".tmp" in name:
                found.add(os.path.relpath(os.path.join(dirpath, name), REPO))
    return found


def _make_templates() -> Path:
    """A 24-galaxy 16x16 dataset (several shards per split) and FITS cutouts."""
    from astropy.io import fits

    from zray.data.simulate import simulate

    root = Path(tempfile.mkdtemp(prefix="zprop-templates-"))
    simulate(root / "data", 24, size=16, seed=1, workers=1, rows_per_shard=5, progress=False)
    img = root / "img"
    img.mkdir()
    for i in range(3):
        cube = np.full((5, 20, 20), 1.0 + i, np.float32)
        hdu = fits.PrimaryHDU(cube)
        for k, b in enumerate(BANDS):
            hdu.header[f"BAND{k + 1}"] = b
        hdu.writeto(img / f"g{i}.fits")
    for b in BANDS:  # one galaxy as one file per band
        hdu = fits.PrimaryHDU(np.full((20, 20), 2.0, np.float32))
        hdu.header["FILTER"] = b
        hdu.writeto(img / f"g0_{b}.fits")
    (img / "sub").mkdir()
    (img / "garbage.fits").write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    return root


_TEMPLATES: Path | None = None


def templates() -> Path:
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = _make_templates()
    return _TEMPLATES


def copy_data(sb: Sandbox, name: str = "data") -> Path:
    return Path(shutil.copytree(templates() / "data", sb.root / name))


def copy_images(sb: Sandbox, name: str = "img") -> Path:
    return Path(shutil.copytree(templates() / "img", sb.root / name))


# --- generated values ------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
SPECIAL_STRINGS = [
    "", " ", ".", "..", "../x", "../../..", "/", "~", "~/x", "a" * 300, "nan", ".nan", "inf", "-.inf", "1e999",
    "0x10", "1_000", "yes", "off", "null", "~", "\t", "\n", "\r\n", "é", "\u202e", "\ufeff", "\x7f", "\x1b[31m",
    "*a", "&a", "!!python/object/apply:os.system", "{", "[", "'", '"', "%", "\\", "C:\\x", "s3://bucket/x",
    "cnn", "inception", "categorical", "float", "int", "val_sigma_mad", "val_loss", "asha", "median", "none",
    "min", "max", "tpe", "random", "cosine", "step", "u", "g,r", "ugriz",
]
KNOWN_KEYS = [
    "name", "model", "data", "path", "image_size", "z_min", "z_max", "n_bins", "simulate", "n", "seed",
    "skip_corrupt", "shuffle_buffer", "fixed", "search", "tune", "resources", "epochs", "batch_size",
    "learning_rate", "filters", "blocks", "dense_units", "dropout", "augment", "label_sigma", "lr_schedule",
    "type", "low", "high", "log", "step", "choices", "default", "metric", "mode", "num_samples", "max_concurrent",
    "scheduler", "grace_period", "reduction_factor", "sampler", "time_budget_s", "num_workers", "cpus_per_worker",
    "gpus_per_worker", "trial_cpus", "mixed_precision", "format", "bins", "bands", "members", "calibration",
    "temperature", "file", "rows", "hash", "splits", "train", "val", "test", "image_shape", "columns", "<<",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.integers(),
    st.integers(-(2**80), 2**80),
    st.floats(),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, NAN, INF, -INF, 0.5, 2.0**53 + 1]),
    st.text(max_size=12),
    st.sampled_from(SPECIAL_STRINGS),
)
json_keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8))
yaml_keys = st.one_of(json_keys, st.integers(-3, 3), st.none(), st.booleans(), st.floats(allow_nan=False))


def _values(keys):
    def extend(children):
        return st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)

    return st.recursive(scalars, extend, max_leaves=8)


yaml_values = _values(yaml_keys)
json_values = _values(json_keys)


def _paths(doc, prefix=()):
    items = list(doc.items()) if isinstance(doc, dict) else list(enumerate(doc)) if isinstance(doc, list) else []
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


def _containers(doc, prefix=()):
    if isinstance(doc, dict):
        yield prefix
    for path in _paths(doc, prefix):
        node = _get(doc, path[len(prefix):])
        if isinstance(node, dict):
            yield path


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated(draw, base, keys=json_keys, values=json_values, max_edits: int = 3, targets=()):
    """``base`` with up to ``max_edits`` keys dropped, renamed, added or given other values.

    ``targets``: (path, strategy) pairs for edits aimed at fields that matter
    (a shard's file name, a member's path).
    """
    doc = copy.deepcopy(base)
    fresh = copy.deepcopy  # a drawn value is edited in place later: never the strategy's own object
    for _ in range(draw(st.integers(0, max_edits))):
        paths = list(_paths(doc))
        ops = ["add", "root"] + (["replace", "replace", "drop", "rename"] if paths else [])
        ops += ["target", "target"] if targets else []
        op = draw(st.sampled_from(ops))
        if op == "root":
            doc = fresh(draw(values))
        elif op == "add":
            where = list(_containers(doc))
            if where:
                _get(doc, draw(st.sampled_from(where)))[draw(keys)] = fresh(draw(values))
        elif op == "target":
            path, strategy = draw(st.sampled_from(list(targets)))
            try:
                parent = _get(doc, path[:-1])
                parent[path[-1]] = fresh(draw(strategy))
            except (KeyError, IndexError, TypeError):
                pass
        else:
            path = draw(st.sampled_from(paths))
            parent = _get(doc, path[:-1])
            if op == "replace":
                parent[path[-1]] = fresh(draw(values))
            elif op == "drop":
                del parent[path[-1]]
            elif isinstance(parent, dict):  # rename
                parent[draw(keys)] = parent.pop(path[-1])
    return doc


YAML_SNIPPETS = [
    "&a ", "*a", "*zz", "<<: *a\n", "!!python/object/apply:os.system ['true']", "!!binary AAAA", "!!float ",
    "!!int x", "!!set {a, b}", "!!omap [a: 1]", "!!timestamp 2001-12-14", "? [a]\n: 1\n", "---\n", "...\n",
    "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "- ", ": ", "{", "}", "[", "]", ",", "'", '"', "\\", "\t", "\n", "\r",
    "\x00", "\x85", "\u2028", "\ufeff", "#", "|", ">", "@", "`", "name: dup\n", "1e-4", ".inf", ".nan", "0o17",
]
JSON_SNIPPETS = ["{", "}", "[", "]", ",", ":", '"', "\\", "\\u0000", "\\ud800", "NaN", "Infinity", "-Infinity",
                 "1e999", "null", "true", "\x00", "\ufeff", "//", "/*", " ", "\n", "0" * 400, "[" * 3000]


@st.composite
def edited(draw, text: str, snippets):
    """``text`` with a few snippets inserted, ranges deleted, or cut short."""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(snippets) | st.text(max_size=4)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 12)):]
        else:
            text = text[:pos]
    return text


@st.composite
def encoded(draw, text: str) -> bytes:
    """UTF-8 mostly; sometimes another encoding or stray non-UTF-8 bytes."""
    how = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "stray"]))
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    if how == "stray":
        data = text.encode("utf-8", "surrogatepass")
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xff"])) + data[pos:]
    return text.encode(how, "surrogatepass")


def deep(n: int, kind: str) -> bytes:
    return ({"list": "[" * n + "]" * n, "dict": '{"a":' * n + "1" + "}" * n,
             "yaml": "a: " + "[" * n + "]" * n}[kind]).encode()


@st.composite
def documents(draw, base, dump, keys, values, snippets, targets=()):
    """File bytes: the base mutated then dumped, a dumped text edited, raw text, bytes, or deep nesting."""
    kind = draw(st.sampled_from(["mutated"] * 5 + ["edited"] * 2 + ["text", "bytes", "deep"]))
    if kind == "mutated":
        return draw(encoded(dump(draw(mutated(base, keys, values, targets=targets)), draw)))
    if kind == "edited":
        return draw(encoded(draw(edited(dump(base, draw), snippets))))
    if kind == "text":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    return deep(draw(st.sampled_from([100, 5000, 200_000])), draw(st.sampled_from(["list", "dict", "yaml"])))


def dump_yaml(doc, draw) -> str:
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans()), sort_keys=False,
                          default_flow_style=draw(st.sampled_from([False, None, True])))


def dump_json(doc, draw) -> str:
    return json.dumps(doc, indent=draw(st.sampled_from([None, 1])))


# --- search spaces ---------------------------------------------------------------------

SPACE = {
    "name": "prop",
    "model": "cnn",
    "data": {"path": "nodata", "image_size": 16, "z_min": 0.0, "z_max": 0.4, "n_bins": 20},
    "fixed": {"epochs": 1, "batch_size": 8, "blocks": 1, "dense_units": 8},
    "search": {"learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True, "default": 1.0e-3},
               "filters": {"type": "categorical", "choices": [4, 8], "default": 4}},
    "tune": {"metric": "val_sigma_mad", "mode": "min", "num_samples": 2, "max_concurrent": 1,
             "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}, "seed": 0},
    "resources": {"num_workers": 1, "cpus_per_worker": 0.5, "gpus_per_worker": 0, "trial_cpus": 0.1},
}
REPO_SPACES = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "search_spaces").glob("*.yaml"))]


@st.composite
def space_files(draw) -> bytes:
    base = draw(st.sampled_from([SPACE, *REPO_SPACES]))
    return draw(documents(base, dump_yaml, yaml_keys, yaml_values, YAML_SNIPPETS))


def alias_bomb(levels: int, where: str = "name") -> bytes:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    rest = dict(SPACE, data=dict(SPACE["data"], path="nodata"))
    if where == "name":
        rest.pop("name")
        lines.append(f"name: *l{levels - 1}")
    else:
        rest["fixed"] = dict(rest["fixed"], epochs=f"*l{levels - 1}")
    text = "\n".join(lines) + "\n" + yaml.safe_dump(rest, sort_keys=False)
    return text.replace(f"'*l{levels - 1}'", f"*l{levels - 1}").encode()


SET_KEYS = [
    "name", "model", "data", "data.path", "data.image_size", "data.z_min", "data.z_max", "data.n_bins",
    "data.simulate", "data.simulate.n", "data.skip_corrupt", "data.shuffle_buffer", "fixed", "fixed.epochs",
    "fixed.batch_size", "fixed.learning_rate", "fixed.filters", "fixed.dropout", "fixed.augment", "fixed.lr_schedule",
    "fixed.nope", "search", "search.learning_rate", "search.learning_rate.low", "search.learning_rate.type",
    "search.filters.choices", "search.filters.default", "search.nope", "tune", "tune.num_samples", "tune.metric",
    "tune.mode", "tune.scheduler", "tune.scheduler.type", "tune.scheduler.reduction_factor", "tune.time_budget_s",
    "tune.seed", "resources", "resources.num_workers", "resources.cpus_per_worker", "resources.gpus_per_worker",
    "name.x", "fixed.epochs.x", "data.path.x", "tune.scheduler.type.x", "", ".", "..", "a..b", ".fixed", "fixed.",
    " fixed.epochs ", "search.learning_rate.low.x",
]


def _flow(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text[:-5] if text.endswith("\n...\n") else text.rstrip("\n")


def _argv_safe(text: str) -> bool:
    return "\x00" not in text  # a shell cannot pass NUL in an argument


set_keys = st.one_of(st.sampled_from(SET_KEYS), st.text(max_size=10),
                     st.lists(st.sampled_from(KNOWN_KEYS) | st.text(max_size=4), min_size=1, max_size=4).map(".".join))
set_values = st.one_of(st.sampled_from(SPECIAL_STRINGS + YAML_SNIPPETS), st.text(max_size=15), yaml_values.map(_flow))
set_args = st.one_of(
    st.tuples(set_keys, set_values).map("=".join),
    st.tuples(set_keys, set_values).map("=".join),
    set_keys,
    st.text(max_size=20),
).filter(_argv_safe)


def _sets(overrides) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


# 600 examples (about 8 s here, zray reading YAML with libyaml); ZRAY_PROPERTY_SCALE=5 runs 3,000.
@budget(600)
@given(content=space_files(), overrides=st.lists(set_args, max_size=2), then=st.sampled_from([None, "train", "tune"]))
@example(content=b"name: \xff\xfe\n", overrides=[], then="train")  # not UTF-8: UnicodeDecodeError
@example(content=alias_bomb(6), overrides=[], then=None)  # the bomb's 2.8 MB echoed in the sentence
@example(content=alias_bomb(6, "fixed"), overrides=[], then=None)
@example(content=deep(5000, "yaml"), overrides=[], then="tune")  # RecursionError (libyaml: its depth limit)
@example(content=b"name: a\x01\n", overrides=[], then=None)  # PyYAML's two-line problem text
@example(content=b"name: !!timestamp x\n", overrides=[], then=None)  # AttributeError from PyYAML
@example(content=b"name: !!int x\n", overrides=[], then=None)  # ValueError from PyYAML
@example(content=b"? [a]\n: 1\n", overrides=[], then=None)  # a list as a key: TypeError (unhashable)
def test_search_space_files(content, overrides, then):
    """validate (and, for a space validate refuses, train or tune: refused the same way)."""
    with Sandbox() as sb:
        path = sb.write("space.yaml", content)
        result = run(sb, ["validate", path, *_sets(overrides)])
        if then and result.exit_code != 0:
            run(sb, [then, path, *_sets(overrides), "--runs", sb.root / "runs"])


@budget(1500)
@given(overrides=st.lists(set_args, min_size=1, max_size=3), base=st.sampled_from([SPACE, *REPO_SPACES]))
@example(overrides=["fixed.epochs={[a]: 1}"], base=SPACE)  # TypeError (unhashable key)
@example(overrides=["fixed.epochs=!!int x"], base=SPACE)  # ValueError
@example(overrides=["fixed.epochs=!!timestamp x"], base=SPACE)  # AttributeError
@example(overrides=["fixed.epochs=!!float "], base=SPACE)  # IndexError
def test_set_overrides(overrides, base):
    with Sandbox() as sb:
        path = sb.write("space.yaml", yaml.safe_dump(base, sort_keys=False))
        run(sb, ["validate", path, *_sets(overrides)])


# --- zray slurm ------------------------------------------------------------------------

slurm_text = st.one_of(st.sampled_from(["1:00:00", "x\ntouch INJECTED", "$(touch INJECTED)", "a b", "'", "\\",
                                        "1:00\r#SBATCH --x", "-", "--help"]),
                       st.text(max_size=12)).filter(_argv_safe)


SLURM_OK = dict(content=yaml.safe_dump(SPACE).encode(), overrides=[], nodes="1", time_limit=None, partition=None,
                venv=None, out="job.sbatch", overwrite=False)


@budget(600)
@example(**{**SLURM_OK, "out": "space.yaml", "overwrite": True})  # replaces its own input
@example(**{**SLURM_OK, "out": "missing/job.sbatch"})  # FileNotFoundError
@example(**{**SLURM_OK, "time_limit": "1:00\ntouch INJECTED"})  # a line of shell in the script
@example(**{**SLURM_OK, "partition": "p\ntouch INJECTED"})
@example(**{**SLURM_OK, "venv": "$(touch INJECTED)"})  # VENV=$(...) unquoted
@example(**{**SLURM_OK, "venv": "a b"})
@given(
    content=st.one_of(st.just(yaml.safe_dump(SPACE).encode()), space_files()),
    overrides=st.lists(set_args, max_size=1),
    nodes=st.sampled_from(["1", "2", "0", "-1", "x", "99999999999999999999"]),
    time_limit=st.none() | slurm_text,
    partition=st.none() | slurm_text,
    venv=st.none() | slurm_text,
    out=st.sampled_from(["job.sbatch", "missing/job.sbatch", "space.yaml", "sub", ".", "{root}/job2.sbatch"]),
    overwrite=st.booleans(),
)
def test_slurm(content, overrides, nodes, time_limit, partition, venv, out, overwrite):
    with Sandbox() as sb:
        path = sb.write("space.yaml", content)
        (sb.root / "sub").mkdir()
        out = sb.sub(out)
        argv = ["slurm", path, "--out", out, "--shared", sb.root / "shared", "--nodes", nodes, *_sets(overrides)]
        for flag, value in (("--time", time_limit), ("--partition", partition), ("--venv", venv)):
            if value is not None:
                argv += [flag, value]
        argv += ["--overwrite"] if overwrite else []
        declared = [] if out in ("space.yaml", ".", "sub") else [out]  # never replace an input or a folder
        result = run(sb, argv, outputs=declared)
        if result.exit_code == 0 and declared:
            _check_script(Path(sb.root, out).read_text(), time_limit, partition, venv, argv)


def _check_script(script: str, time_limit, partition, venv, argv) -> None:
    """Values written into the batch script stay inside their line and their shell word."""
    for flag, value in (("time", time_limit), ("partition", partition)):
        if value and ("\n" in value or "\r" in value or f"#SBATCH --{flag}={value}" not in script.split("\n")):
            _fail(ContractViolation(f"--{flag} {value!r} broke out of its #SBATCH line"), argv, script)
    if venv:  # an empty --venv means this one
        line = next((x for x in script.splitlines() if x.startswith("VENV=")), "")
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = []
        if words != [f"VENV={venv}"] or script.count("\nVENV=") != 1:
            _fail(ContractViolation(f"--venv {venv!r} is not one shell word in the script: {line!r}"), argv, script)


# --- catalogues: zray prepare and zray simulate --catalog ---------------------------

CAT_CELLS = st.one_of(
    st.integers(-3, 10**4).map(str),
    st.integers().map(str),
    st.floats().map(repr),
    st.sampled_from(["", "nan", "NaN", "inf", "-1", "0", "0.1", "0.39", "0.4", "1e999", "null", "NA", "1.5e-3",
                     "g0.fits", "g1.fits", "g2.fits", "missing.fits", "../img/g0.fits", "./g0.fits", "g0.fits ",
                     "sub", ".", "..", "a" * 300, "g0_u.fits", "garbage.fits", "{root}/img/g1.fits",
                     "{root}/img", "img/../g0.fits", "\ufeffg0.fits", "g0.fits\x00", "9" * 30]),
    st.text(max_size=8),
)
CAT_COLUMNS = ["id", "z_spec", "ebv", "file", *(f"file_{b}" for b in BANDS), "mag_r", "mag_u", "z", "ID", "id ", "",
               "z_spec", "file"]


def _catalogue(n: int, per_band: bool) -> list[list[str]]:
    header = ["id", "z_spec", "ebv"] + ([f"file_{b}" for b in BANDS] if per_band else ["file"])
    rows = []
    for i in range(n):
        files = [f"g0_{b}.fits" for b in BANDS] if per_band else [f"g{i % 3}.fits"]
        rows.append([str(100 + i), f"{0.05 + 0.1 * i:.2f}", "0.03", *files])
    return [header, *rows]


@st.composite
def catalogues(draw) -> bytes:
    table = _catalogue(draw(st.integers(1, 3)), draw(st.booleans()))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["cell", "cell", "drop", "rename", "add", "duplicate", "ragged"]))
        width = len(table[0])
        if op == "cell":
            r, c = draw(st.integers(0, len(table) - 1)), draw(st.integers(0, max(width - 1, 0)))
            if c < len(table[r]):
                table[r][c] = draw(CAT_CELLS)
        elif op == "drop" and width:
            c = draw(st.integers(0, width - 1))
            table = [row[:c] + row[c + 1:] for row in table]
        elif op == "rename" and width:
            table[0][draw(st.integers(0, width - 1))] = draw(st.sampled_from(CAT_COLUMNS) | st.text(max_size=5))
        elif op == "add":
            table = [row + [draw(st.sampled_from(CAT_COLUMNS)) if k == 0 else draw(CAT_CELLS)]
                     for k, row in enumerate(table)]
        elif op == "duplicate" and len(table) > 1:
            table.append(list(table[draw(st.integers(1, len(table) - 1))]))
        elif op == "ragged":
            r = draw(st.integers(0, len(table) - 1))
            table[r] = table[r][: draw(st.integers(0, len(table[r])))]
    style = draw(st.sampled_from(["csv", "csv", "raw", "tab", "crlf"]))
    if style == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(table)
        text = buf.getvalue()
    else:
        sep = "\t" if style == "tab" else ","
        text = ("\r\n" if style == "crlf" else "\n").join(sep.join(row) for row in table) + "\n"
    return draw(encoded(text))


PREPARE_OK = dict(catalogue=b"id,z_spec,ebv,file\n1,0.1,0.03,g0.fits\n", suffix=".csv", size="16", seed="0", out="out",
                  overwrite=False, skip_bad=False, columns=[])
#: --column options as users type them: right, in other case, dividing, mistyped, of an unknown name.
COLUMN_OPTIONS = st.lists(st.sampled_from(
    ["id=id", "z_spec=Z_SPEC", "z_spec=z_spec", "ebv=ebv/2.751", "ebv=ebv/0", "ebv=file/3", "file=FILE", "id=ebv",
     "id", "zz=z", "ra=dec", "=", "z_spec=", "ebv=ebv/nan", "ebv=ebv/-1", "id=objid"]), max_size=3).map(
    lambda values: [f"--column={v}" for v in values])


@budget(1000)
@example(**{**PREPARE_OK, "catalogue": b"id,id,z_spec,ebv,file\n1,2,0.1,0.03,g0.fits\n"})  # KeyError from pyarrow
@example(**{**PREPARE_OK, "catalogue": b"id,z_spec,ebv,file,file\n1,0.1,0.03,g0.fits,g0.fits\n"})  # KeyError
@example(**{**PREPARE_OK, "catalogue": b"id,z_spec,ebv,f\xe9\n1,0.1,0.03,x\n"})  # UnicodeDecodeError
@example(**{**PREPARE_OK, "size": "21", "out": "deep/er/out"})  # refused, but deep/er/ is left behind
@given(
    catalogue=st.one_of(catalogues(), catalogues(), st.binary(max_size=40)),
    suffix=st.sampled_from([".csv", ".csv", ".csv", ".txt", ".parquet", ".CSV", "", ".vot", ".xml", ".ecsv"]),
    size=st.sampled_from(["16", "16", "8", "20", "21", "7", "0", "-1", "513", "1e3", "99999999999999999999"]),
    seed=st.sampled_from(["0", "1", "-1", str(2**32), str(2**64), "x"]),
    out=st.sampled_from(["out", "out", "deep/er/out", "img", "cat", "empty", "data"]),
    overwrite=st.booleans(),
    skip_bad=st.booleans(),
    columns=COLUMN_OPTIONS,
)
def test_prepare_catalogues(catalogue, suffix, size, seed, out, overwrite, skip_bad, columns):
    with Sandbox() as sb:
        copy_images(sb)
        cat = sb.write("cat" + suffix, catalogue.replace(b"{root}", str(sb.root).encode()))
        if out == "empty":
            (sb.root / "empty").mkdir()
        if out == "data":
            copy_data(sb)
        if out == "cat":
            out = cat.name
        argv = ["prepare", cat, "--images", sb.root / "img", "--out", out, "--size", size, "--seed", seed, *columns]
        argv += ["--overwrite"] if overwrite else []
        argv += ["--skip-bad"] if skip_bad else []
        # An existing folder that is not a dataset (the images, the catalogue) is never replaced.
        declared = [out] if out in ("out", "deep/er/out", "empty", "data") else []
        listing = sb.root / f"{out}.skipped.csv"
        result = run(sb, argv, outputs=declared + [listing] * bool(declared and skip_bad))
        if result.exit_code == 0 and skip_bad:
            # every galaxy left out is listed, with a reason, and counted in the dataset's manifest
            from zray.data.shards import read_manifest

            left_out = read_manifest(sb.root / out).source["skipped"]
            with open(listing, newline="") if listing.exists() else io.StringIO("header\n") as fh:
                listed = len(list(csv.reader(fh))) - 1
            assert listed == left_out, (listed, left_out)


def _fits_column(kind: str, cells: list[str]):
    """Catalogue cells as one FITS column of ``kind``, as a tool that typed them would write it."""
    from astropy.table import MaskedColumn

    def number(cell, cast):
        try:
            return cast(cell.strip())
        except (ValueError, OverflowError):
            return None

    if kind in ("int", "float", "float32", "masked float"):
        cast = int if kind == "int" else float
        values = [number(c, cast) for c in cells]
        if kind == "int":
            values = [v if v is not None and -(2**63) <= v < 2**63 else None for v in values]
        filled = [0 if v is None else v for v in values]
        dtype = {"int": np.int64, "float32": np.float32}.get(kind, np.float64)
        with np.errstate(over="ignore"):
            data = np.array(filled, dtype=dtype)
        if kind == "float" or kind == "float32":
            data[[v is None for v in values]] = np.nan
            return data
        return MaskedColumn(data, mask=[v is None for v in values])
    if kind == "wide":
        return np.array([[number(c, float) or 0.0] * 3 for c in cells])
    return np.array([c.encode("ascii", "replace").decode() for c in cells])  # FITS text is ASCII


@st.composite
def table_catalogues(draw) -> tuple[bytes, str]:
    """A catalogue (as :func:`catalogues` makes them, cells changed, columns renamed in capitals)
    written by astropy as a FITS table, a VOTable or ECSV, its columns typed as another tool might
    have; then perhaps cut short, damaged or (FITS) compressed."""
    import gzip

    from astropy.io import fits
    from astropy.table import Table

    header, *rows = _catalogue(draw(st.integers(1, 3)), draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        r, c = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
        rows[r][c] = draw(CAT_CELLS)
    names = [draw(st.sampled_from([name, name.upper(), name.title()]) if draw(st.integers(0, 9))
                  else st.sampled_from(CAT_COLUMNS)) for name in header]
    assume(len({n.strip().lower() for n in names}) == len(names) and all(n.strip() for n in names))
    kinds = {"id": "int", "z_spec": "float", "ebv": "float32"}
    table = Table()
    for k, name in enumerate(names):
        kind = draw(st.sampled_from([kinds.get(header[k], "text")] * 10 + ["int", "float", "masked float", "text",
                                                                            "wide"]))
        table[name] = _fits_column(kind, [row[k] for row in rows])
    kind = draw(st.sampled_from(["fits", "fits", "votable", "ecsv"]))
    buffer = io.BytesIO()
    if kind == "fits":
        fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(buffer)
    elif kind == "votable":
        table.write(buffer, format="votable")
    else:
        text = io.StringIO()
        table.write(text, format="ascii.ecsv")
        buffer.write(text.getvalue().encode())
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "none", "cut", "byte"] + ["gzip", "gzip", "gzip cut"] * (kind == "fits")))
    if damage in ("cut", "byte"):
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] if damage == "cut" else data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    if damage.startswith("gzip"):
        data = gzip.compress(data)
        data = data[: draw(st.integers(0, len(data) - 1))] if damage == "gzip cut" else data
    if kind != "fits":
        return data, draw(st.sampled_from([".vot", ".xml"] if kind == "votable" else [".ecsv"]))
    return data, ".fits.gz" if damage.startswith("gzip") else draw(st.sampled_from([".fits", ".FITS", ".fit"]))


# Cutout files as a catalogue of downloads may list them: the reason each is left out, or None.
CUTOUT_FILES = {"g0.fits": None, "g1.fits": None, "g2.fits": None, "../img/g2.fits": None,
                "garbage.fits": "unreadable FITS", "sub": "file missing", "absent.fits": "file missing",
                "": "file missing", "a" * 300 + ".fits": "file missing", "g0_u.fits": "bands not as expected",
                "edge.fits": "NaN or infinite pixels", "small.fits": "smaller than the cutout size"}


@budget(100)
@given(files=st.lists(st.sampled_from(sorted(CUTOUT_FILES)), min_size=1, max_size=6), skip_bad=st.booleans())
def test_prepare_leaves_out_exactly_the_cutouts_it_cannot_use(files, skip_bad):
    """Whatever mix of usable and unusable cutouts a catalogue lists: without --skip-bad any bad
    one stops the run with one sentence; with it, each usable galaxy is written and each other one
    listed once, with its catalogue row and reason, and the dataset counts them."""
    from astropy.io import fits

    from zray.data.shards import read_manifest

    with Sandbox() as sb:
        img = copy_images(sb)
        for name, shape, value in (("edge.fits", (5, 20, 20), np.nan), ("small.fits", (5, 12, 12), 1.0)):
            cube = np.ones(shape, np.float32)
            cube[:, :, :3] = value
            hdu = fits.PrimaryHDU(cube)
            for k, b in enumerate(BANDS):
                hdu.header[f"BAND{k + 1}"] = b
            hdu.writeto(img / name)
        rows = "".join(f"{100 + i},0.1,0.03,{name}\n" for i, name in enumerate(files))
        cat = sb.write("cat.csv", "id,z_spec,ebv,file\n" + rows)
        argv = ["prepare", cat, "--images", img, "--out", "out", "--size", "16"] + ["--skip-bad"] * skip_bad
        result = run(sb, argv, outputs=["out", "out.skipped.csv"])
        bad = {100 + i: CUTOUT_FILES[name] for i, name in enumerate(files) if CUTOUT_FILES[name]}
        if bad and (not skip_bad or len(bad) == len(files)):
            assert result.exit_code == 1, result.output
            return
        assert result.exit_code == 0, result.output
        assert read_manifest(sb.root / "out").total_rows == len(files) - len(bad)
        if skip_bad:
            assert read_manifest(sb.root / "out").source["skipped"] == len(bad)
        if bad:
            with open(sb.root / "out.skipped.csv", newline="") as fh:
                listed = list(csv.DictReader(fh))
            assert {int(r["id"]): r["reason"] for r in listed} == bad
            assert [int(r["row"]) for r in listed] == [i - 99 for i in sorted(bad)]
        else:
            assert not (sb.root / "out.skipped.csv").exists()


@budget(150)
@given(catalogue=table_catalogues(), out=st.sampled_from(["out", "out", "img", "cat"]), columns=COLUMN_OPTIONS)
def test_prepare_table_catalogues(catalogue, out, columns):
    content, suffix = catalogue
    with Sandbox() as sb:
        copy_images(sb)
        cat = sb.write("cat" + suffix, content)
        out = cat.name if out == "cat" else out
        run(sb, ["prepare", cat, "--images", sb.root / "img", "--out", out, "--size", "16", *columns],
            outputs=[out] if out == "out" else [])


@budget(200)
@example(n="1", size="16", seed="-1", workers="1", out="sim", overwrite=False, catalogue=None)  # ValueError
@given(
    n=st.sampled_from(["1", "3", "0", "-1", "x"]),
    size=st.sampled_from(["16", "8", "7", "1", "0", "-4"]),
    seed=st.sampled_from(["0", "-1", str(2**32), str(2**64)]),
    workers=st.sampled_from(["1", "1", "0"]),
    out=st.sampled_from(["sim", "sim", "img", "exists_empty", "data"]),
    overwrite=st.booleans(),
    catalogue=st.none() | st.builds(
        lambda rows: "id,z,mag_u,mag_g,mag_r,mag_i,mag_z,ebv\n" + "\n".join(",".join(r) for r in rows),
        st.lists(st.lists(CAT_CELLS.filter(lambda c: "," not in c and "\n" not in c and "\r" not in c),
                          min_size=8, max_size=8), min_size=1, max_size=2)),
)
def test_simulate(n, size, seed, workers, out, overwrite, catalogue):
    with Sandbox() as sb:
        copy_images(sb)
        if out == "exists_empty":
            (sb.root / out).mkdir()
        if out == "data":
            copy_data(sb)
        argv = ["simulate", "--n", n, "--size", size, "--seed", seed, "--workers", workers, "--out", out]
        if catalogue is not None:
            argv += ["--catalog", sb.write("mags.csv", catalogue)]
        argv += ["--overwrite"] if overwrite else []
        run(sb, argv, outputs=[out] if out != "img" else [])


# --- manifests: zray inspect, train ---------------------------------------------------------

SHARD_NAMES = st.sampled_from([
    "../x.parquet", "../../a/b/c/w/data/train-00000.parquet", "{root}/data/train-00000.parquet", "{base}/x.parquet",
    "/etc/hostname", "train-00000.parquet", "val-00000.parquet", "", ".", "..", "manifest.json", "catalog.parquet",
    "sub/../train-00000.parquet", "a" * 300, "x/" * 40 + "y", "missing.parquet", "./train-00001.parquet",
    "train-00000.parquet\n", "~/x.parquet",
])
MANIFEST_TARGETS = [
    (("splits", "train", 0, "file"), SHARD_NAMES),
    (("splits", "val", 0, "file"), SHARD_NAMES),
    (("splits", "train", 0, "rows"), scalars),
    (("splits", "train", 1, "rows"), st.sampled_from([0, -1, 6, 5.5, "5", 10**30, None])),
    (("hash",), st.sampled_from(["", "sha256:", "sha256:" + "0" * 64, "md5:x", "x" * 1000])),
    (("image_shape",), st.sampled_from([[5, 16], [5, 16, 16, 1], [4, 16, 16], [5, 0, 0], [5, -16, 16],
                                        [5, 1e999, 16], [5, 16.5, 16], [5, "16", 16], [5, 10**12, 10**12], []])),
    (("image_shape", 1), scalars),
    (("bands",), st.sampled_from([[], ["u"], list("ugriz") * 2, "ugriz", [1, 2, 3, 4, 5], None])),
    (("columns",), st.sampled_from([[], ["id"], "id", None])),
    (("schema_version",), st.sampled_from([0, 2, "1", 1.0, True, None])),
    (("z_range",), st.sampled_from([[], [0.4, 0.0], [0, NAN], [0], "0,0.4", [0, INF]])),
    (("split", "fractions", "train"), scalars),
    (("rows_per_shard",), st.sampled_from([0, -5, 1e999, "x", None, 10**30])),
    (("splits",), st.sampled_from([[], {}, None, {"train": {}}, {"train": "x"}, {"train": [None]}, {"train": ["x"]},
                                   {"train": [{"file": "train-00000.parquet"}]}])),
]
SHARD_DAMAGE = st.sampled_from([None, None, "truncate", "delete", "garbage", "empty", "dir", "swap", "link-out"])


def _damage_shard(sb: Sandbox, data: Path, how: str | None) -> None:
    shard = data / "train-00000.parquet"
    if how == "truncate":
        shard.write_bytes(shard.read_bytes()[:700])
    elif how == "delete":
        shard.unlink()
    elif how == "garbage":
        shard.write_bytes(b"PAR1" + b"\xff" * 300 + b"PAR1")
    elif how == "empty":
        shard.write_bytes(b"")
    elif how == "dir":
        shard.unlink()
        shard.mkdir()
    elif how == "swap":
        shutil.copy(data / "val-00000.parquet", shard)
    elif how == "link-out":
        outside = sb.base / "outside.parquet"
        shutil.move(shard, outside)
        shard.symlink_to(outside)


MANIFEST_BASE = None


def manifest_base() -> dict:
    global MANIFEST_BASE
    if MANIFEST_BASE is None:
        MANIFEST_BASE = json.loads((templates() / "data" / "manifest.json").read_text())
    return MANIFEST_BASE


@st.composite
def manifests(draw) -> bytes:
    return draw(documents(manifest_base(), dump_json, json_keys, json_values, JSON_SNIPPETS,
                          targets=MANIFEST_TARGETS))


@budget(1000)
@given(content=st.one_of(st.none(), manifests()), damage=SHARD_DAMAGE, max_problems=st.sampled_from(["20", "0", "1"]),
       also_train=st.booleans())
@example(content=b'{"schema_version": 1, "bands": ["u", "g"', damage=None, max_problems="20", also_train=True)
@example(content=deep(200_000, "list"), damage=None, max_problems="20", also_train=True)  # RecursionError
@example(content={"splits": None}, damage=None, max_problems="20", also_train=False)  # AttributeError
@example(content={"bands": [None, "g", "r", "i", "z"]}, damage=None, max_problems="20", also_train=False)  # TypeError
@example(content={"image_shape": [5, INF, 16]}, damage=None, max_problems="20", also_train=True)  # OverflowError
@example(content={"image_shape": [5, -16, 16]}, damage=None, max_problems="20", also_train=False)  # ArrowInvalid
@example(content={"z_range": [0]}, damage=None, max_problems="20", also_train=False)  # IndexError
@example(content={"splits": {"train": [{"file": "train-00000.parquet", "rows": INF}]}}, damage=None,
         max_problems="20", also_train=True)  # OverflowError
def test_manifests(content, damage, max_problems, also_train):
    """inspect; and train on a manifest that does not read as one: refused before Ray.

    ``content``: the bytes of manifest.json, or top-level fields to change in the real one.
    """
    from zray.data.shards import read_manifest

    with Sandbox() as sb:
        data = copy_data(sb)
        if isinstance(content, dict):
            content = json.dumps({**manifest_base(), **content}).encode()
        if content is not None:
            (data / "manifest.json").write_bytes(content.replace(b"{root}", str(sb.root).encode())
                                                 .replace(b"{base}", str(sb.base).encode()))
        _damage_shard(sb, data, damage)
        run(sb, ["inspect", data, "--max-problems", max_problems])
        if also_train:
            try:
                read_manifest(data)
                broken = False
            except Exception:
                broken = True
            if broken:
                space = sb.write("space.yaml", yaml.safe_dump(dict(SPACE, data=dict(SPACE["data"], path=str(data)))))
                run(sb, ["train", space, "--runs", sb.root / "runs"])


# --- bundles: zray predict, zray evaluate ------------------------------------------------

def _format(module: str) -> int:
    import importlib

    return importlib.import_module(module).FORMAT_VERSION


# The weights are never real (a few bytes of junk): a bundle that passes every check
# still fails when the model loads them, in this process (no Ray: too few galaxies).
# ``{sha:FILE}`` is replaced by the SHA-256 of the member file written, so a bundle
# can be whole but for one field; model.json's hyperparameters stay those of a
# tiny model (a generated one could ask TensorFlow for terabytes).
WEIGHTS_JUNK = b"\x89HDF\r\n\x1a\n" + b"\0" * 64
BINS = {"z_min": 0.0, "z_max": 0.4, "n_bins": 20}
BUNDLE = {
    "format": _format("zray.bundle"),
    "kind": "zray photo-z bundle",
    "bins": BINS,
    "image_size": 16,
    "bands": list(BANDS),
    "members": [{"path": "members/m0", "model": "cnn",
                 "sha256": {"model.json": "{sha:m0/model.json}", "weights.weights.h5": "{sha:m0/weights.weights.h5}"}}],
    "calibration": {"temperature": 1.0},
    "data": {"manifest_hash": "sha256:" + "0" * 64, "path": "data"},
}
MODEL_JSON = {
    "format": _format("zray.models._saving"),
    "model": "cnn",
    "hyperparameters": {"filters": 4, "blocks": 1, "dense_units": 8},
    "spec": {"image_size": 16, "n_bands": 5, "bins": BINS},
    "weights_sha256": "{sha:m0/weights.weights.h5}",
}
MEMBER_PATHS = st.sampled_from(["members/m0", "members/m1", "members", "", ".", "..", "../bundle/members/m0",
                                "{root}/bundle/members/m0", "/", "members/m0/model.json", "a" * 300, "members/../../x",
                                "members/m0/", "./members/m0", "members//m0", "members/m0\n", "link",
                                "../outside/m0", "{root}/outside/m0", "link/a/b/c/w/outside/m0"])
SHA = st.sampled_from(["", "0" * 64, "{sha:m0/model.json}", "{sha:m1/weights.weights.h5}", "{sha:m0/weights.weights.h5}",
                       "A" * 64, None, 0, ["x"]])
BUNDLE_TARGETS = [
    (("members", 0, "path"), MEMBER_PATHS),
    (("members", 0, "sha256", "model.json"), SHA),
    (("members", 0, "sha256", "weights.weights.h5"), SHA),
    (("members", 0, "sha256"), st.sampled_from([None, [], {}, "x"])),
    (("members",), st.sampled_from([[], {}, None, "members/m0", [None], ["members/m0"], [{}], [{"path": None}],
                                    [{"path": "members/m0"}, {"path": "members/m1"}]])),
    (("calibration", "temperature"), st.sampled_from([0, -1.0, NAN, INF, "x", None, [], 1e-300, 1e300, True])),
    (("calibration",), st.sampled_from([None, [], "x", {}])),
    (("bins", "n_bins"), st.sampled_from([0, 1, -1, 1e999, 20.5, "20", None, 10**30, NAN, 20.0, True])),
    (("bins", "z_max"), st.sampled_from([0.0, -1, NAN, INF, "0.4", None, 1e308, 0.2])),
    (("bins",), st.sampled_from([[], None, "x", {}, [0, 0.4, 20]])),
    (("image_size",), st.sampled_from([0, -16, 16.5, "16", 1e999, NAN, 10**30, None, True, 32, 8])),
    (("bands",), st.sampled_from([[], "ugriz", list("zirgu"), ["u"], None, [1, 2], 5, ["", "g", "r", "i", "z"]])),
    (("format",), st.sampled_from([0, 1, 2, 3, "1", 1.0, True, None])),
]
MODEL_TARGETS = [
    (("spec",), st.sampled_from([[], None, "x", {}, {"bins": []}, {"image_size": 16, "n_bands": 5}])),
    (("spec", "image_size"), st.sampled_from([0, -1, 8, 16.0, "16", None, 10**30, True])),
    (("spec", "n_bands"), st.sampled_from([0, 4, 6, 5.0, None])),
    (("spec", "bins"), st.sampled_from([[], None, {"z_min": 0, "z_max": 0.4}, {"z_min": 0, "z_max": 0.4, "n_bins": 19},
                                        {"z_min": 0, "z_max": "x", "n_bins": 20}])),
    (("model",), st.sampled_from(["inception", "nope", None, 1, ["cnn"]])),
    (("format",), st.sampled_from([0, 2, "1", None])),
    (("weights_sha256",), SHA),
]


def _tiny_model(doc):
    """The generated model.json, with the base's (tiny) hyperparameters wherever it still has that key."""
    if isinstance(doc, dict) and "hyperparameters" in doc:
        doc = {**doc, "hyperparameters": MODEL_JSON["hyperparameters"]}
    return json.dumps(doc).encode()


model_json_files = st.one_of(
    st.just(json.dumps(MODEL_JSON).encode()),
    mutated(MODEL_JSON, targets=MODEL_TARGETS).map(_tiny_model),
    st.binary(max_size=20),
)


def _with_checksums(content: bytes, bundle: Path) -> bytes:
    for m in ("m0", "m1"):
        for name in ("model.json", "weights.weights.h5"):
            file = bundle / "members" / m / name
            digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else "f" * 64
            content = content.replace(f"{{sha:{m}/{name}}}".encode(), digest.encode())
    return content


@budget(1000)
@given(
    content=st.one_of(st.none(), documents(BUNDLE, dump_json, json_keys, json_values, JSON_SNIPPETS,
                                           targets=BUNDLE_TARGETS)),
    member=st.sampled_from(["both", "both", "info", "weights", "none"]),
    model_json=model_json_files,
    command=st.sampled_from(["predict", "evaluate"]),
    extra=st.sampled_from([[], ["--no-pdf"], ["--split", "test"], ["--batch-size", "0"], ["--workers", "0"],
                           ["--split", "val"], ["--overwrite"], ["--batch-size", "1"]]),
    out=st.sampled_from(["pz.parquet", "report", "data", "bundle", "deep/er/pz.parquet", "bundle/bundle.json"]),
)
@example(content=json.dumps({**BUNDLE, "image_size": 1e999}).encode(), member="both",
         model_json=json.dumps(MODEL_JSON).encode(), command="predict", extra=[], out="pz.parquet")
@example(content=deep(200_000, "list"), member="both", model_json=json.dumps(MODEL_JSON).encode(),
         command="evaluate", extra=[], out="report")
@example(content=json.dumps(BUNDLE).encode(), member="both", model_json=json.dumps({**MODEL_JSON, "spec": []}).encode(),
         command="predict", extra=[], out="pz.parquet")
@example(content=json.dumps({**BUNDLE, "calibration": {"temperature": "x"}}).encode(), member="both",
         model_json=json.dumps(MODEL_JSON).encode(), command="predict", extra=[], out="pz.parquet")
@example(content=json.dumps(BUNDLE).encode(), member="both", model_json=json.dumps(MODEL_JSON).encode(),
         command="predict", extra=[], out="deep/er/pz.parquet")  # refused, but deep/er/ is left behind
@example(content=json.dumps({**BUNDLE, "members": [{**BUNDLE["members"][0], "path": "../outside/m0"}]}).encode(),
         member="both", model_json=json.dumps(MODEL_JSON).encode(), command="predict", extra=[], out="pz.parquet")
@example(content=json.dumps({**BUNDLE, "members": [{**BUNDLE["members"][0], "path": "{root}/outside/m0"}]}).encode(),
         member="both", model_json=json.dumps(MODEL_JSON).encode(), command="evaluate", extra=[], out="report")
def test_bundles(content, member, model_json, command, extra, out):
    """predict / evaluate; and no model is ever loaded from outside the bundle folder."""
    with Sandbox() as sb:
        data = copy_data(sb)
        bundle = sb.root / "bundle"
        bundle.mkdir()
        (bundle / "link").symlink_to(sb.base)  # a member path through a link leaves the bundle
        for m in ("m0", "m1"):
            (bundle / "members" / m).mkdir(parents=True)
            if member in ("both", "weights"):
                (bundle / "members" / m / "weights.weights.h5").write_bytes(WEIGHTS_JUNK)
            if member in ("both", "info"):
                (bundle / "members" / m / "model.json").write_bytes(
                    _with_checksums(model_json, bundle) if member == "both" else model_json)
        shutil.copytree(bundle / "members", sb.root / "outside")  # the same members, outside the bundle
        if content is not None:
            content = _with_checksums(content.replace(b"{root}", str(sb.root).encode()), bundle)
            (bundle / "bundle.json").write_bytes(content)
        declared = [out] if out in ("pz.parquet", "report", "deep/er/pz.parquet") else []
        LOADED.clear()
        argv = [command, bundle, data, "--out", out, *extra]
        run(sb, argv, outputs=declared)
        outside = [str(p) for p in LOADED if bundle.resolve() not in p.parents]
        if outside:
            _fail(ContractViolation(f"a model was loaded from outside the bundle {bundle}: {outside}"), argv,
                  str(outside))


# --- experiment and run folders: zray status, zray export ------------------------------------

PARAMS = {"learning_rate": 0.001, "filters": 4, "epochs": 1}
RESULT = {"epoch": 1, "val_sigma_mad": 0.05, "val_loss": 2.0, "loss": 2.1, "done": True}
JOB = {"model": "cnn", "hyperparameters": {"filters": 4, "blocks": 1, "dense_units": 8, "epochs": 1},
       "data_path": "data", "image_size": 16, "z_min": 0.0, "z_max": 0.4, "n_bins": 20,
       "manifest_hash": "sha256:" + "0" * 64, "metric": "val_sigma_mad", "mode": "min"}
INDEX_BYTES = b"\0\1\2\3"
STATE = {"epoch": 0, "metrics": {"epoch": 1, "val_sigma_mad": 0.05}, "job": JOB,
         "files": {"tf/ckpt.index": len(INDEX_BYTES)}}
STATE_TARGETS = [
    (("metrics",), st.sampled_from([[], None, "x", {}, {"val_sigma_mad": NAN}, {"val_sigma_mad": "0.1"},
                                    {"val_sigma_mad": 0.1, "epoch": "x"}, {"val_sigma_mad": 0.1, "epoch": 1e999}])),
    (("metrics", "val_sigma_mad"), scalars),
    (("epoch",), scalars),
    (("files",), st.sampled_from([[], None, "x", {}, {"tf/ckpt.index": "4"}, {"../../x": 1}, {"/etc/hostname": 1}])),
]


def _space_json() -> dict:
    from zray.config.schema import SearchSpace

    return SearchSpace.model_validate(SPACE).model_dump(mode="json")


SPACE_JSON = _space_json()


def json_files(base, targets=()):
    return st.one_of(
        st.just(json.dumps(base).encode()),
        documents(base, dump_json, json_keys, json_values, JSON_SNIPPETS, targets=targets),
        st.none(),
    )


@st.composite
def run_folders(draw):
    """(kind, {relative path: bytes}) for an experiment, a training run or a checkpoint folder."""
    kind = draw(st.sampled_from(["experiment", "experiment", "training run", "checkpoint", "empty"]))
    files: dict[str, bytes | None] = {}
    # A whole-looking checkpoint (its index file there) keeps a valid job: export then builds
    # the tiny model it names and reads the (garbage) weights, instead of a generated huge one.
    whole = draw(st.booleans())
    state = draw(json_files(STATE, STATE_TARGETS if whole else STATE_TARGETS + [(("job",), json_values),
                                                                                 (("job", "model"), scalars)]))
    if kind == "experiment":
        files["search_space.json"] = draw(json_files(SPACE_JSON))
        for t in draw(st.lists(st.sampled_from(["trial-a", "trial-b", "trial-", "trial-../x"]), max_size=2,
                               unique=True)):
            files[f"{t}/params.json"] = draw(json_files(PARAMS))
            lines = draw(st.lists(st.one_of(st.just(json.dumps(RESULT)), json_files(RESULT).map(
                lambda b: (b or b"").decode("utf-8", "replace").replace("\n", " "))), max_size=3))
            files[f"{t}/result.json"] = "\n".join(lines).encode()
            files[f"{t}/error.txt"] = draw(st.none() | st.text(max_size=30).map(str.encode))
            files[f"trials/{t}/checkpoint_000001/state.json"] = state
            if whole:
                files[f"trials/{t}/checkpoint_000001/tf/ckpt.index"] = INDEX_BYTES
    elif kind == "training run":
        files["checkpoint_000001/state.json"] = state
        if whole:
            files["checkpoint_000001/tf/ckpt.index"] = INDEX_BYTES
    elif kind == "checkpoint":
        files["state.json"] = state
        if whole:
            files["tf/ckpt.index"] = INDEX_BYTES
    return kind, {k: v for k, v in files.items() if v is not None}


def _experiment(**files) -> tuple[str, dict]:
    return "experiment", {"search_space.json": json.dumps(SPACE_JSON).encode(), "trial-a/params.json": b"{}",
                          **{k.replace("__", "/"): v.encode() if isinstance(v, str) else v for k, v in files.items()}}


RUN_OK = dict(command="status", top="5", calibrate=True, out="bundle")
EXPORT_OK = dict(command="export", top="1", calibrate=False, out="bundle")
WHOLE = {"tf/ckpt.index": INDEX_BYTES}


@budget(1000)
@example(folder=("experiment", {"search_space.json": b"{"}), **RUN_OK)  # JSONDecodeError
@example(folder=("experiment", {"search_space.json": b"[]"}), **RUN_OK)  # pydantic ValidationError
@example(folder=("experiment", {"search_space.json": b"\xff"}), **RUN_OK)  # UnicodeDecodeError
@example(folder=_experiment(**{"trial-a__params.json": "[1]"}), **RUN_OK)  # AttributeError
@example(folder=_experiment(**{"trial-a__params.json": "{"}), **RUN_OK)  # JSONDecodeError
@example(folder=_experiment(**{"trial-a__params.json": '{"epochs": "x"}'}), **RUN_OK)  # ValueError
@example(folder=_experiment(**{"trial-a__params.json": '{"epochs": []}'}), **RUN_OK)  # TypeError
@example(folder=("experiment", {"search_space.json": json.dumps(
    {**SPACE_JSON, "fixed": {**SPACE_JSON["fixed"], "epochs": {}}}).encode()}), **RUN_OK)  # TypeError
@example(folder=_experiment(**{"trial-a__result.json": '{"epoch": "x"}'}), **RUN_OK)  # ValueError
@example(folder=_experiment(**{"trial-a__result.json": "[1]"}), **RUN_OK)  # AttributeError
@example(folder=_experiment(**{"trial-a__error.txt": b"\xff"}), **RUN_OK)  # UnicodeDecodeError
@example(folder=_experiment(**{"trials__trial-a__checkpoint_000001__state.json": "[" * 100_000}),
         **RUN_OK)  # RecursionError
@example(folder=("checkpoint", {"state.json": b"[]"}), **EXPORT_OK)  # AttributeError
@example(folder=("checkpoint", {"state.json": deep(100_000, "list")}), **EXPORT_OK)  # RecursionError
@example(folder=("checkpoint", {"state.json": json.dumps(STATE).encode(), **WHOLE}),
         **EXPORT_OK)  # tensorflow OpError: junk weights
@example(folder=("checkpoint", {"state.json": json.dumps({**STATE, "job": None}).encode(), **WHOLE}),
         **EXPORT_OK)  # TypeError
@example(folder=("checkpoint", {"state.json": json.dumps({**STATE, "job": {**JOB, "metric": {}}}).encode()}),
         **EXPORT_OK)  # TypeError (unhashable)
@example(folder=("training run", {"checkpoint_000001/state.json": json.dumps({**STATE, "metrics": []}).encode()}),
         **EXPORT_OK)  # AttributeError
@example(folder=("training run", {"checkpoint_000001/state.json": json.dumps(
    {**STATE, "metrics": {"val_sigma_mad": 0.1, "epoch": "x"}}).encode()}), **EXPORT_OK)  # ValueError
@example(folder=("training run", {"checkpoint_000001/state.json": json.dumps(
    {**STATE, "metrics": {"val_sigma_mad": 0.1, "epoch": INF}}).encode()}), **EXPORT_OK)  # OverflowError
@example(folder=("training run", {"checkpoint_000001/state.json": json.dumps(STATE).encode()}),
         **{**EXPORT_OK, "out": "deep/er/bundle"})  # refused (incomplete checkpoint), but deep/er/ is left behind
@given(
    folder=run_folders(),
    command=st.sampled_from(["status", "status", "export"]),
    top=st.sampled_from(["1", "5", "0", "-1", "x", "99999999999999999999"]),
    calibrate=st.booleans(),
    out=st.sampled_from(["bundle", "bundle", "runs/exp", "deep/er/bundle", "runs"]),
)
def test_run_folders(folder, command, top, calibrate, out):
    kind, files = folder
    with Sandbox() as sb:
        exp = sb.root / "runs" / "exp"
        exp.mkdir(parents=True)
        copy_data(sb)
        for rel, content in files.items():
            path = exp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        if command == "status":
            run(sb, ["status", exp, "--top", top])
        else:
            argv = ["export", exp, "--out", out, "--top-k", top, "--calibrate" if calibrate else "--no-calibrate"]
            run(sb, argv, outputs=[out] if out not in ("runs/exp", "runs") else [])


# --- names and paths as arguments -------------------------------------------------------------

BAD_NAMES = st.one_of(
    st.sampled_from(["..", ".", "../x", "../../..", "../../../../x", "a/b", "a/../b", "/", "{base}/abs", "{root}/abs",
                     "a" * 300, "x\n", "\t", "name/", "./x", "x" * 255 + "/y"]),
    st.tuples(st.text(max_size=6), st.sampled_from(["/", "/../", "\n"]), st.text(max_size=6)).map("".join),
).filter(_argv_safe)


@budget(300)
@given(name=BAD_NAMES, command=st.sampled_from(["train", "tune"]))
@example(name="../x", command="train")  # not refused: reaches Ray's start
@example(name="a/b", command="tune")
@example(name="a" * 300, command="tune")  # OSError
def test_run_names_are_refused_before_ray(name, command):
    """A --name that is not one folder name is refused before anything starts: valid space, valid data."""
    with Sandbox() as sb:
        name = sb.sub(name)
        target = Path(os.path.abspath(sb.root / "runs" / name))
        assume(target == sb.base or sb.base in target.parents)  # what it would write stays in the sandbox
        data = copy_data(sb)
        space = sb.write("space.yaml", yaml.safe_dump(dict(SPACE, data=dict(SPACE["data"], path=str(data)))))
        run(sb, [command, space, "--runs", sb.root / "runs", "--name", name])


DATA_PATHS = st.one_of(
    st.sampled_from(["", ".", "..", "/", "~", "~nobody_zray/x", "a" * 300, "a" * 300 + "/x", "x/" * 2100,
                     "{root}/space.yaml", "{root}/space.yaml/x", "a\x00b", "a\nb", "\udcff", "nodata/",
                     "file:///nonexistent/zray", "{base}"]),
    st.text(max_size=10),
)


@budget(400)
@given(path=DATA_PATHS, command=st.sampled_from(["train", "tune", "validate"]))
@example(path="a" * 300, command="train")  # OSError (ENAMETOOLONG)
@example(path="~nobody_zray/x", command="validate")  # RuntimeError from expanduser
@example(path="\udcff", command="train")  # UnicodeEncodeError printing it
def test_data_paths(path, command):
    """data.path of a valid space naming no dataset (and no data.simulate): refused, whatever the path."""
    with Sandbox() as sb:
        raw = dict(SPACE, data=dict(SPACE["data"], path=sb.sub(path)))
        space = sb.write("space.yaml", yaml.safe_dump(raw))
        argv = [command, space] + ([] if command == "validate" else ["--runs", sb.root / "runs"])
        run(sb, argv, echoed=sb.sub(path))


PATH_ARGS = st.one_of(
    st.sampled_from(["nope", "a" * 300, "a" * 300 + "/x", "x/" * 2100, "..", ".", "/", "{root}/file.txt",
                     "{root}/file.txt/sub", "~nobody_zray/x", "-", "\udcff", "\udcff/x", "é", " ", "\n",
                     "{root}/data", "{root}/data/manifest.json", "{root}/loop", "{root}/dangling"]),
    st.text(max_size=8).filter(lambda t: _argv_safe(t) and not t.startswith("-")),
)


@budget(1000)
@given(command=st.sampled_from(["inspect", "status", "export", "validate", "prepare", "predict", "evaluate"]),
       path=PATH_ARGS, second=PATH_ARGS)
@example(command="inspect", path="a" * 300, second="out")  # OSError (ENAMETOOLONG)
@example(command="status", path="~nobody_zray/x", second="out")  # RuntimeError from expanduser
@example(command="predict", path="nope", second="{root}/loop")  # RuntimeError: symlink loop
@example(command="export", path="{root}/loop", second="out")
def test_path_arguments(command, path, second):
    with Sandbox() as sb:
        sb.write("file.txt", "x")
        copy_data(sb)
        (sb.root / "loop").symlink_to(sb.root / "loop")
        (sb.root / "dangling").symlink_to(sb.root / "nowhere")
        p, q = sb.sub(path), sb.sub(second)
        argv = {
            "inspect": ["inspect", p],
            "status": ["status", p],
            "export": ["export", p, "--out", q],
            "validate": ["validate", p],
            "prepare": ["prepare", p, "--images", q, "--out", "out"],
            "predict": ["predict", p, q, "--out", "pz.parquet"],
            "evaluate": ["evaluate", p, q, "--out", "report"],
        }[command]
        declared = {"export": [q], "prepare": ["out"], "predict": ["pz.parquet"], "evaluate": ["report"]}
        run(sb, argv, outputs=[o for o in declared.get(command, []) if not o.startswith(str(sb.root / "data"))])


@budget(2000)
@given(z=st.one_of(st.floats(min_value=-0.5, max_value=15.0), st.floats(min_value=0, max_value=15, width=32),
                   st.integers(min_value=0, max_value=1500).map(lambda k: k / 100)))
@example(z=0.57)  # 0.57 * 100 is 56.99999999999999: a floor of it gave back 0.57
def test_the_bin_edges_hints_suggest_hold_the_redshift(z):
    """`--z-max` and `--set data.z_max` / `data.z_min` hints: following them holds the galaxy."""
    from zray.bins import edge_above, edge_below

    above = edge_above(float(z))
    assert float(z) < above <= float(z) + 0.02 and above == round(above, 2)
    if z >= 0:
        below = edge_below(float(z))
        assert below <= float(z) and float(z) - below <= 0.02 and below == round(below, 2)
