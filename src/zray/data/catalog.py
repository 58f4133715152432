"""Reading user catalogues (CSV, Parquet, a FITS table, a VOTable or ECSV) with checked columns.

Shared by ``zray simulate --catalog``, ``zray prepare``, ``zray cutouts`` and ``zray predict``.
Rows in messages are counted from 1 over the data rows (the CSV header is not a row), and the
object's id is given too, so users can find the line either way. A catalogue keeps its own
column names: ``--column id=specObjID`` (:func:`parse_columns`) tells zray which of them holds
which of its columns.
"""

from __future__ import annotations

import math
import re
import shlex
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from zray.bins import RedshiftBins, edge_above
from zray.errors import ZrayError, first_line

#: Names of uncompressed FITS files (a catalogue may add .gz or .bz2, which astropy reads too).
PLAIN_FITS = (".fits", ".fit", ".fts")
#: What a catalogue's name ends with, by format: VOTables are what TAP services (SDSS's
#: SkyServer, VizieR, Astro Data Lab) and TOPCAT write; ECSV is astropy's own text table.
SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv", ".txt", ".tsv"), "fits": PLAIN_FITS,
            "votable": (".vot", ".votable", ".xml"), "ecsv": (".ecsv",)}
#: Compressed as downloads often are: read as they are (FITS tables and text tables).
COMPRESSED = (".gz", ".bz2")


def catalog_format(path: Path) -> str:
    """``parquet``, ``csv``, ``fits``, ``votable`` or ``ecsv``, from the file's name; anything else
    is refused."""
    name = path.name.lower()
    packed = name.endswith(COMPRESSED)
    suffix = Path(name.rsplit(".", 1)[0] if packed else name).suffix
    for kind, suffixes in SUFFIXES.items():
        if suffix in suffixes and (not packed or kind in ("fits", "csv")):
            return kind
    shown = "".join(Path(name).suffixes[-2:]) if packed else suffix
    raise ZrayError(f"{path}: unknown catalogue format {shown!r}; expected .csv "
                    "(or tab-separated .tsv; either gzipped), .parquet, a FITS table (.fits), a VOTable (.vot, .xml) "
                    "or .ecsv")


@dataclass(frozen=True)
class Source:
    """Where one of zray's columns is in a catalogue with names of its own (``--column``): the
    catalogue's column, and a number to divide it by (SDSS's ``extinction_r / 2.751`` is E(B-V))."""

    name: str
    divisor: float = 1.0

    def __str__(self) -> str:  # as typed: ``extinction_r/2.751`` (repr keeps every digit of the divisor)
        return self.name if self.divisor == 1.0 else f"{self.name}/{self.divisor!r}"


def column_names() -> tuple[str, ...]:
    """The catalogue columns zray reads, which ``--column`` may point elsewhere."""
    from zray.data.shards import BANDS

    return ("id", "z_spec", "ebv", "ra", "dec", "file", *(f"file_{b}" for b in BANDS),
            *(f"mag_{b}" for b in BANDS))


def _numbers(ours: str) -> bool:
    """Whether zray reads its column ``ours`` as a number (one ``--column`` may divide)."""
    return ours in ("z_spec", "ebv", "ra", "dec") or ours.startswith("mag_")


def parse_columns(values: Iterable[str]) -> dict[str, Source]:
    """``--column ZRAY=YOURS`` options (``id=specObjID``, ``ebv=extinction_r/2.751``) as
    ``{zray's name: Source}``; a malformed one, an unknown name or a name given twice is one sentence."""
    known = column_names()
    columns: dict[str, Source] = {}
    for value in values:
        ours, sep, theirs = (part.strip() for part in value.partition("="))
        if not sep or not ours or not theirs:
            raise ZrayError(f"--column {value!r}: expected ZRAY=YOURS, e.g. --column id=specObjID")
        if ours not in known:
            raise ZrayError(f"--column {value!r}: zray reads no column {ours!r}; expected one of {', '.join(known)}")
        if ours in columns:
            raise ZrayError(f"--column {value!r}: {ours} is given twice (also {ours}={columns[ours]})")
        name, slash, divisor = theirs.rpartition("/") if "/" in theirs else (theirs, "", "")
        number = _positive_number(divisor) if slash else 1.0
        if not name.strip() or number is None:
            raise ZrayError(f"--column {value!r}: expected YOURS or YOURS/NUMBER (a number > 0), "
                            "e.g. --column ebv=extinction_r/2.751")
        if slash and not _numbers(ours):
            raise ZrayError(f"--column {value!r}: {ours} is not a number to divide; expected YOURS/NUMBER only "
                            "for z_spec, ebv, ra, dec or a magnitude")
        columns[ours] = Source(name.strip(), number)
    return columns


def source_record(columns: Mapping[str, Source] | None) -> dict:
    """What a dataset's manifest records of ``--column`` options, under its ``source``."""
    return {"columns": {ours: str(source) for ours, source in columns.items()}} if columns else {}


def _positive_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def read_catalog(path, required: tuple[str, ...], columns: Mapping[str, Source] | None = None,
                 hinted: tuple[str, ...] = ()) -> pa.Table:
    """Read a CSV, Parquet, FITS-table, VOTable or ECSV catalogue and check the ``required``
    columns exist; ``columns`` (:func:`parse_columns`) names where the catalogue keeps zray's.
    A ``hinted`` column may be missing, unless the catalogue seems to hold it under another name
    (SDSS's ``extinction_r`` for ``ebv``): then it is missing as a required one is, with the
    ``--column`` that reads it."""
    path = Path(path)
    if not path.is_file():
        raise ZrayError(f"{path}: catalogue file not found")
    kind = catalog_format(path)
    columns = dict(columns or {})
    left_out: list[tuple[str, str]] = []
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = _with_pandas_index(pq.read_table(path))
        elif kind == "csv":
            table = _read_csv(path, id_name=columns["id"].name if "id" in columns else "id")
        elif kind == "fits":
            table, left_out = _read_fits(path)
        else:
            table, left_out = _read_astropy(path, kind)
    except (OSError, EOFError, zlib.error, pa.ArrowException) as exc:  # a gzip or bz2 file cut short or damaged
        raise ZrayError(f"{path}: not a readable catalogue ({first_line(exc)})") from None
    twice = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if twice:
        raise ZrayError(f"{path}: column {twice[0]!r} appears more than once; expected each column once")
    # without what the file's own schema says of its columns: only --column marks them (label)
    table = pa.Table.from_arrays(table.columns, names=table.column_names)
    if table.num_rows == 0:
        raise ZrayError(f"{path}: catalogue has no rows")
    if columns:
        table = _renamed(table, columns, path, left_out)
    missing = [c for c in required if c not in table.column_names] + [
        c for c in hinted if c not in table.column_names and _elsewhere(c, table.column_names)]
    if missing:
        found = [repr(c) for c in table.column_names] + [f"{c!r} ({why})" for c, why in left_out]
        raise ZrayError(
            f"{path}: missing column(s) {', '.join(missing)}; expected columns "
            f"{', '.join((*required, *(c for c in hinted if c in missing)))} (found {', '.join(found) or 'none'})"
            f"{column_hints(missing, table.column_names)}"
        )
    return table


#: Names surveys give the columns zray needs, as :func:`_plain` writes them, and what each column is.
#: ``extinction_r`` is SDSS's A_r, which is 2.751 E(B-V) (Schlegel, Finkbeiner & Davis 1998, table 6).
OTHER_NAMES = {
    "id": ("objid", "objectid", "specobjid", "sourceid", "galaxyid", "galid"),
    "z_spec": ("z", "zspec", "specz", "redshift", "zsp", "zbest", "zhelio", "zcmb"),
    "ebv": ("ebv", "ebmv", "ebvsfd", "sfdebv", "reddening"),
    "ra": ("radeg", "alpha", "raj2000"),
    "dec": ("decdeg", "delta", "dej2000", "decj2000"),
    **{f"mag_{b}": (f"dered{b}", f"{b}mag", f"mag{b}") for b in "ugriz"},  # SDSS's dered_r: dereddened
}
MEANING = {"id": "a unique integer per galaxy", "z_spec": "the spectroscopic redshift",
           "ebv": "the Galactic E(B-V)", "ra": "the right ascension in degrees",
           "dec": "the declination in degrees", **{f"mag_{b}": f"the dereddened {b} magnitude" for b in "ugriz"}}


def _elsewhere(column: str, names: list[str]) -> bool:
    """Whether the catalogue seems to hold zray's ``column`` under another of its ``names``."""
    return any(n.lower() == column or _plain(n) in OTHER_NAMES.get(column, ()) for n in names) or (
        column == "ebv" and any(_plain(n) == "extinctionr" for n in names))


def _plain(name: str) -> str:
    """``E(B-V)`` -> ``ebv``: lower case, without spaces and punctuation."""
    return re.sub(r"[\s_\-.()]", "", name.lower())


def column_hints(missing: list[str], names: list[str]) -> str:
    """For each missing column, the ``--column`` that reads it from the catalogue as it is: ``;
    zray's column names are lower case: --column z_spec=Z_SPEC`` where it is there in capitals (CSV
    and Parquet names are read as written); ``; --column z_spec=z if 'z' is the spectroscopic
    redshift`` where the catalogue has a name surveys give it; and what ``ebv`` is where it has none."""
    cased = [f"{c}={shlex.quote(n)}" for c in missing for n in names if n.lower() == c]
    hints = [f"zray's column names are lower case: --column {' --column '.join(cased)}"] if cased else []
    for column in missing:
        if any(n.lower() == column for n in names):
            continue
        near = [n for n in names if _plain(n) in OTHER_NAMES.get(column, ())]
        extinction = [n for n in names if _plain(n) == "extinctionr"]
        if near:
            hints.append(f"--column {column}={shlex.quote(near[0])} if {near[0]!r} is {MEANING[column]}")
        elif column == "ebv" and extinction:
            hints.append(f"--column ebv={shlex.quote(extinction[0] + '/2.751')} if {extinction[0]!r} is SDSS's A_r "
                         "(E(B-V) is A_r / 2.751)")
    return f"; {'; '.join(hints)}" if hints else ""


def _read_fits(path: Path) -> tuple[pa.Table, list[tuple[str, str]]]:
    """The first table of a FITS file (binary or ASCII), as astropy reads it, and the columns left
    out, each with why: several values per row, text that is not ASCII, complex numbers (zray
    reads none such).

    Column names are taken in lower case: the FITS standard makes them case-insensitive, and
    tools write them in capitals (``Z_SPEC``). Text loses the spaces FITS pads it with;
    masked values (``TNULL``) become missing values, which the column's checks then name.
    """
    import warnings

    from astropy.io import fits
    from astropy.table import Table
    from astropy.utils.exceptions import AstropyWarning

    size = _stream_size(path)
    try:
        # astropy notes a damaged file in warnings, and reads on: the first of them is the error here.
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", AstropyWarning)
            with fits.open(path, memmap=False) as hdus:
                tables = [i for i, hdu in enumerate(hdus) if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU))]
                if tables:
                    _check_table_header(hdus, tables[0], size, path)
                table = Table.read(hdus, hdu=tables[0], character_as_bytes=False,
                                   unit_parse_strict="silent") if tables else None
    except ZrayError:
        raise
    except Exception as exc:  # astropy raises many kinds on a damaged file; none is the user's to read
        raise ZrayError(f"{path}: not a readable FITS table ({first_line(exc)})") from None
    damage = [first_line(note.message) for note in notes
              if issubclass(note.category, AstropyWarning) and ("truncated" in str(note.message) or table is None)]
    if damage:  # a table cut short reads as zeros; a damaged header hides the table behind it
        raise ZrayError(f"{path}: not a readable FITS table ({damage[0]}); expected a whole FITS file")
    if table is None:
        raise ZrayError(f"{path}: this FITS file holds no table (only images or headers); "
                        "expected a table with one row per galaxy")
    return _from_astropy(table, path, lower=True)


#: VOTable warnings that mean astropy changed a value as it read it, refused rather than read, and
#: what was expected instead: text longer than its FIELD cut short, an integer out of range clamped.
VOTABLE_DAMAGE = {"W46": "text no longer than its FIELD's arraysize (or arraysize=\"*\")",
                  "W51": "integers within their FIELD's datatype (ids above 9223372036854775807 as char)"}


def _read_astropy(path: Path, kind: str) -> tuple[pa.Table, list[tuple[str, str]]]:
    """A VOTable's first table (its FIELDs by name), or an ECSV table, as astropy reads it, with
    the columns left out as :func:`_read_fits` leaves them out. Column names are kept as written."""
    import warnings

    from astropy.io import votable
    from astropy.table import Table

    what = {"votable": "VOTable", "ecsv": "ECSV table"}[kind]
    try:
        with warnings.catch_warnings(record=True) as notes:
            # VOTables from services bend the standard in many small ways astropy notes and reads past;
            # only the notes that a value was changed as it was read stop the reading
            warnings.simplefilter("always")
            if kind == "votable":
                document = votable.parse(path, verify="warn")
                _check_query_status(document, path)
                first = document.get_first_table()
                names = [field.name for field in first.fields]
                twice = sorted({n for n in names if names.count(n) > 1})
                if twice:  # astropy would rename the second; a CSV of the same columns is refused
                    raise ZrayError(f"{path}: column {twice[0]!r} appears more than once; expected each column once")
                table = first.to_table(use_names_over_ids=True)
            else:
                table = Table.read(path, format="ascii.ecsv")
    except ZrayError:
        raise
    except Exception as exc:  # astropy raises many kinds on a file that is not what its name says
        raise ZrayError(f"{path}: not a readable {what} ({first_line(exc)})") from None
    damage = [note.message for note in notes if type(note.message).__name__ in VOTABLE_DAMAGE]
    if damage:  # astropy's "FILE:LINE:COLUMN: W51: ..." as "line 8, column 8: W51: ..."
        said = re.sub(r"^.*?:(\d+):(\d+): (?=[WE]\d\d:)", r"line \1, column \2: ", first_line(damage[0]))
        raise ZrayError(f"{path}: not a readable VOTable ({said}); expected "
                        f"{VOTABLE_DAMAGE[type(damage[0]).__name__]}")
    return _from_astropy(table, path, lower=False)


def _check_query_status(document, path: Path) -> None:
    """Refuse the result of a TAP query that did not end well: its QUERY_STATUS INFO says ERROR,
    or OVERFLOW where the service cut the result at its row limit (MAXREC), which leaves a
    catalogue sorted by redshift or position without its end."""
    infos = [*document.infos, *(info for resource in document.resources for info in resource.infos)]
    for info in infos:
        status = str(info.value or "").upper()
        if info.name == "QUERY_STATUS" and status in ("ERROR", "OVERFLOW"):
            said = " ".join(str(info.content or "").split())
            raise ZrayError(
                f"{path}: the query that wrote it ended in {status}{f' ({said})' if said else ''}; expected a "
                "whole result" + (": query again with a higher row limit (MAXREC), or in parts"
                                  if status == "OVERFLOW" else ""))


def _from_astropy(table, path: Path, lower: bool) -> tuple[pa.Table, list[tuple[str, str]]]:
    """An astropy table as Arrow, and the columns left out, each with why: several values per row,
    text that is not ASCII, complex numbers, objects such as a Time or SkyCoord (zray reads none
    such). Masked values become missing values, which the column's checks then name; text loses
    its padding spaces. ``lower``: names in lower case (FITS's, which ignore case)."""
    from astropy.table import Column

    names, arrays, left_out, written = [], [], [], {}
    for written_name in table.colnames:
        column = table[written_name]
        name = written_name.strip().lower() if lower else written_name.strip()
        if name in written:
            raise ZrayError(f"{path}: columns {written[name]!r} and {written_name!r} are one name in FITS, whose "
                            "column names ignore case; expected each column once")
        written[name] = written_name
        if not isinstance(column, Column):  # an astropy mixin: Time, SkyCoord, ...
            left_out.append((name, f"a {type(column).__name__}, not plain numbers or text"))
            continue
        data, mask = np.ma.getdata(column), np.ma.getmaskarray(column)
        if data.dtype.kind == "O" and data.ndim == 1 and all(isinstance(v, str) for v in data[~mask]):
            data = np.where(mask, "", data).astype(str)  # a VOTable's text of any length (arraysize="*")
        if data.ndim != 1 or data.dtype.kind not in "biufU":
            why = {"S": "text that is not ASCII", "c": "complex numbers"}.get(data.dtype.kind, "values of another kind")
            left_out.append((name, "several values per row" if data.ndim != 1 else why))
            continue
        if data.dtype.kind == "U":
            data = np.char.strip(data)
        elif not data.dtype.isnative:  # FITS is big-endian; Arrow takes the machine's order only
            data = data.astype(data.dtype.newbyteorder("="))
        names.append(name)
        arrays.append(pa.array(data, mask=mask if mask.any() else None))
    return pa.Table.from_arrays(arrays, names=names), left_out


def _stream_size(path: Path) -> int:
    """The FITS file's length in bytes, decompressed for a gzip or bzip2 file, known by its first
    bytes as astropy knows it (a stream cut short or damaged is refused here: astropy stops
    quietly where it ends)."""
    if _packing(path) is None:
        return path.stat().st_size
    size = 0
    try:
        with _open_unpacked(path) as stream:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise ZrayError(f"{path}: not a readable FITS table ({first_line(exc)}); expected a whole FITS file") from None
    return size


def _check_table_header(hdus, index: int, size: int, path: Path) -> None:
    """Refuse a table whose header promises more rows than the file holds, before astropy sets
    aside memory for all of them (a damaged NAXIS2 can ask for terabytes), and a binary table whose
    columns do not fill its rows (NAXIS1): astropy would read each row's bytes at the wrong places."""
    from astropy.io import fits

    hdu = hdus[index]
    header = hdu.header
    width, rows = int(header["NAXIS1"]), int(header["NAXIS2"])
    ends = hdus.fileinfo(index)["datLoc"] + width * rows + int(header.get("PCOUNT", 0))
    if ends > size:
        raise ZrayError(f"{path}: not a readable FITS table (its header promises {rows} rows, "
                        f"{ends:,} bytes, and the file ends after {size:,}); expected a whole FITS file")
    if isinstance(hdu, fits.BinTableHDU) and hdu.columns.dtype.itemsize != width:
        raise ZrayError(f"{path}: not a readable FITS table (its columns take {hdu.columns.dtype.itemsize} bytes "
                        f"of each row, and its header says a row is {width} (NAXIS1)); expected a whole FITS file")


def _renamed(table: pa.Table, columns: Mapping[str, Source], path: Path, left_out) -> pa.Table:
    """The table with each of ``columns``' sources under zray's name, divided where asked, in place
    of any column of that name the catalogue has; the sources keep their own names too."""
    import pyarrow.compute as pc

    names = table.column_names
    taken = {}
    for ours, source in columns.items():
        name = _find(source, names, path, ours, left_out)
        col = table.column(name)
        if source.divisor != 1.0:
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                raise ZrayError(f"{path}: --column {ours}={source}: column {name!r} has type {col.type}; "
                                "expected numbers to divide")
            col = pc.divide(pc.cast(col, pa.float64()), source.divisor)
        taken[ours] = (col, pa.field(ours, col.type, metadata={FROM_KEY: str(source).encode()}))
    kept = [n for n in names if n not in taken]
    schema = pa.schema([*(table.schema.field(n) for n in kept), *(field for _, field in taken.values())])
    return pa.table([*(table.column(n) for n in kept), *(col for col, _ in taken.values())], schema=schema)


def _matching(name: str, names: list[str]) -> str | None:
    """The column of ``names`` a user's ``name`` means: as written, or in another case where only
    one column matches (FITS names are read in lower case); None where none does."""
    if name in names:
        return name
    cased = [n for n in names if n.lower() == name.lower()]
    return cased[0] if len(cased) == 1 else None


def _find(source: Source, names: list[str], path: Path, ours: str, left_out) -> str:
    """The catalogue's column ``source`` names (:func:`_matching`), or one sentence saying why none."""
    found_name = _matching(source.name, names)
    if found_name is not None:
        return found_name
    why = next((why for n, why in left_out if n.lower() == source.name.lower()), None)
    found = ", ".join(repr(n) for n in names) or "none"
    raise ZrayError(f"{path}: --column {ours}={source}: " + (
        f"column {source.name!r} is left out ({why}); expected one number or text per row" if why else
        f"no column {source.name!r}; expected one of the catalogue's columns (found {found})"))


def _with_pandas_index(table: pa.Table) -> pa.Table:
    """A Parquet file pandas wrote from ``df.set_index("id")``: a named range index is kept
    only in the file's metadata (``pandas.read_parquet`` shows it); it becomes a column."""
    try:
        index = (table.schema.pandas_metadata or {}).get("index_columns")
    except (ValueError, AttributeError):  # metadata under pandas' key that is not pandas' JSON
        return table
    ranges = [c for c in (index if isinstance(index, list) else []) if isinstance(c, dict)
              and c.get("kind") == "range" and isinstance(c.get("name"), str) and c["name"]
              and c["name"] not in table.column_names]
    for c in ranges:
        # What another tool wrote there is a range only when it is one (whole numbers, as pandas
        # writes them), of the table's length; otherwise the id column is missing, and said so.
        bounds = [c.get(key) for key in ("start", "stop", "step")]
        if not all(type(b) is int for b in bounds) or bounds[2] == 0:
            continue
        ids = range(*bounds)
        if len(ids) == table.num_rows and max(abs(ids.start), abs(ids.stop)) < 2**63:
            table = table.append_column(c["name"], pa.array(np.arange(*bounds, dtype=np.int64)))
    return table


def _read_csv(path: Path, id_name: str = "id") -> pa.Table:
    """A CSV (or tab-separated .tsv) catalogue, read as written by hand or by tools that put a space
    after each comma (``id, z_spec, ebv``) or ``#`` comment lines above the header (blank lines
    among them, and VizieR's units and dashes lines under it, as VizieR writes a .tsv): names and
    text values lose the spaces around them, numbers never had them. An id column (``id_name``)
    that is not whole numbers is read again as text, so that :func:`id_column` can name the row
    (pyarrow reads ids beyond 64 bits as rounded floats)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    bare = path.name.lower().removesuffix(".gz").removesuffix(".bz2")
    parse = pcsv.ParseOptions(delimiter="\t" if bare.endswith(".tsv") else ",")
    layout = _text_layout(path, parse.delimiter)
    skip = pcsv.ReadOptions(skip_rows=layout.before, skip_rows_after_names=layout.after)
    table = _csv_table(path, skip, parse, layout)  # .gz and .bz2 unpacked as read
    # numpy.savetxt(..., header="id,z_spec") writes the header itself as the last comment
    header = [n.strip() for n in layout.comments[-1].lstrip("#").split(parse.delimiter)] if layout.comments else []
    if id_name in header and id_name not in (name.strip() for name in table.column_names):
        skip = pcsv.ReadOptions(skip_rows=layout.before, column_names=header)
        table = _csv_table(path, skip, parse, layout)
    names = [name.strip() for name in table.column_names]
    table = table.rename_columns(names)
    for i, name in enumerate(names):
        if pa.types.is_string(table.column(i).type):
            table = table.set_column(i, name, pc.utf8_trim_whitespace(table.column(i)))
    id_name = _matching(id_name, names) or id_name  # --column id=specObjID: as the user knows it
    if names.count(id_name) == 1 and not pa.types.is_integer(table.column(id_name).type):
        raw = pcsv.read_csv(_unpacked(path), read_options=skip,
                            parse_options=parse).column_names[names.index(id_name)]
        as_text = pcsv.ConvertOptions(include_columns=[raw], column_types={raw: pa.string()})
        text = pcsv.read_csv(_unpacked(path), read_options=skip, parse_options=parse,
                             convert_options=as_text).column(0)
        table = table.set_column(names.index(id_name), id_name, pc.utf8_trim_whitespace(text))
    return table


@dataclass(frozen=True)
class _Layout:
    """Where a text table's header is: ``before`` lines above it (``comments``, the ``#`` lines,
    and blank ones), and ``after`` lines under it that hold no data (VizieR's units line and its
    line of dashes)."""

    comments: list[str]
    before: int
    after: int


_SEPARATORS = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "bars"}


def _text_layout(path: Path, delimiter: str) -> _Layout:
    """The file's :class:`_Layout`; a header whose names stand apart by another separator than
    ``delimiter`` is refused, saying which (before a semicolon file with decimal commas is read as
    rows of the wrong length)."""
    comments, before, header, under = [], 0, "", []
    with _open_unpacked(path) as fh:
        for raw in fh:
            text = raw.lstrip(b"\xef\xbb\xbf").decode("utf-8", "replace").strip("\r\n")
            if not header:
                if text.startswith("#") or not text.strip():
                    comments += [text.strip()] if text.startswith("#") else []
                    before += 1
                    continue
                header = text
                continue
            under.append(text.strip())
            if len(under) == 2:
                break
    if header and delimiter not in header:
        other = next((name for sep, name in _SEPARATORS.items() if sep != delimiter and sep in header), None)
        other = other or ("spaces" if len(header.split()) > 1 else None)
        if other:
            wanted = _SEPARATORS[delimiter]
            way = (" (a .tsv for tabs): save it as CSV (TOPCAT, pandas.to_csv)" if delimiter == "," else
                   ": name it .csv if it is a CSV" if other == "commas" else ": save it as TSV or CSV (TOPCAT)")
            raise ZrayError(f"{path}: its header's names stand apart by {other}, {header.strip()[:60]!r}; expected "
                            f"them apart by {wanted}{way}")

    def dashes(line: str) -> bool:
        return bool(line) and set(line.replace(delimiter, "").replace(" ", "")) == {"-"}

    after = 1 if under and dashes(under[0]) else 2 if len(under) == 2 and dashes(under[1]) else 0
    return _Layout(comments, before, after)


def _csv_table(path: Path, read_options, parse_options, layout: _Layout) -> pa.Table:
    """``pyarrow.csv.read_csv``; a line with more or fewer values than the header is named by its
    number in the file (pyarrow's row count leaves out blank lines: the line is found by its text)."""
    import pyarrow.csv as pcsv

    try:
        return pcsv.read_csv(_unpacked(path), read_options=read_options, parse_options=parse_options)
    except pa.ArrowInvalid as exc:
        found = re.search(r"Expected (\d+) columns, got (\d+): (.*)", str(exc))
        if not found:
            raise
        want, got, text = found.groups()
        line = _line_number(path, text, layout.before + 1)
        where = f"line {line}" if line else "a line"
        raise ZrayError(f"{path}: {where} has {got} values ({text[:60]!r}) but the header has {want}; "
                        "expected as many on every line") from None


def _line_number(path: Path, text: str, header_line: int) -> int | None:
    """The number of the first line below the header (line ``header_line``) reading ``text``."""
    with _open_unpacked(path) as fh:
        for number, raw in enumerate(fh, start=1):
            if number > header_line and raw.decode("utf-8", "replace").rstrip("\r\n") == text:
                return number
    return None


def _packing(path: Path) -> str | None:
    """``gzip``, ``bz2`` or None (plain), from the file's first bytes: a name in capitals
    (``CAT.CSV.GZ``) or without the suffix is read as what it is."""
    with open(path, "rb") as handle:
        magic = handle.read(3)
    return "gzip" if magic[:2] == b"\x1f\x8b" else "bz2" if magic == b"BZh" else None


def _open_unpacked(path: Path):
    """The file opened for reading its bytes (lines), unpacked as read where it is gzip or bzip2."""
    import bz2
    import gzip

    return {"gzip": gzip.open, "bz2": bz2.open}.get(_packing(path), open)(path, "rb")


def _unpacked(path: Path):
    """A stream of the file's bytes, unpacked as read (pyarrow's own guess goes by the name's case)."""
    return pa.input_stream(str(path), compression=_packing(path))


#: Arrow field metadata naming the catalogue's own column behind one of zray's (``--column``).
FROM_KEY = b"zray.column"


def label(table: pa.Table, name: str) -> str:
    """``name`` as the catalogue has it, for messages: ``ebv (your extinction_r/2.751)`` where
    ``--column`` read it from another column, else ``name``."""
    source = (table.schema.field(name).metadata or {}).get(FROM_KEY)
    return f"{name} (your {source.decode(errors='replace')})" if source else name


def numeric_column(table: pa.Table, name: str, path, ids=None) -> np.ndarray:
    """A column as float64; nulls, text or non-finite values name their row."""
    col = table.column(name)
    try:
        values = col.to_numpy(zero_copy_only=False).astype(np.float64)
    except (ValueError, TypeError, pa.ArrowException):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):  # a CSV with a word among numbers
            for i, text in enumerate(col.to_pylist()):
                try:
                    float(text if text not in (None, "") else "nan")  # empty: missing, named below
                except ValueError:
                    raise ZrayError(f"{path}: {where(i, ids)}: {label(table, name)} {text!r} is not a number; "
                                    "expected numbers (a missing value as an empty field)") from None
        raise ZrayError(f"{path}: column {label(table, name)!r} has type {col.type}; expected numbers") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ZrayError(f"{path}: {where(bad[0], ids)}: {label(table, name)} is missing or not finite; "
                        "expected a number")
    return values


_INTEGER = re.compile(r"[+-]?[0-9]+")
#: Ids are signed 64-bit integers, or unsigned ones where a catalogue has ids above the signed
#: range: SDSS's specObjIDs (DR8 on) keep the plate in their top 14 bits, so a plate from 8192 on
#: makes an id of 2**63 or more. Each dataset keeps its ids as its catalogue gave them.
MAX_ID = int(np.iinfo(np.int64).max)
MAX_UNSIGNED_ID = int(np.iinfo(np.uint64).max)


def id_column(table: pa.Table, path) -> np.ndarray:
    """The ``id`` column as unique integers; duplicates name both rows. Ids written as text (a CSV
    whose ids pyarrow could not read as integers) are read as whole numbers or name their row.

    int64, or uint64 where some id is above the signed range (all of them must then be >= 0):
    :func:`id_key` joins ids of either kind."""
    col, name = table.column("id"), label(table, "id")
    if pa.types.is_string(col.type):
        col = _text_ids(col, path, name)
    if not pa.types.is_integer(col.type):
        raise ZrayError(f"{path}: column {name!r} has type {col.type}; expected integers")
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise ZrayError(f"{path}: row {row + 1}: {name} is missing; expected an integer")
    ids = col.to_numpy()
    if not (ids.dtype == np.uint64 and (ids > MAX_ID).any()):
        ids = ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        a, b = sorted(order[dup[0]: dup[0] + 2])
        raise ZrayError(f"{path}: rows {a + 1} and {b + 1} share id {ids[a]}; expected unique ids")
    return ids


def id_key(ids) -> np.ndarray:
    """Ids as int64 keys for joining and hashing: uint64 ids above the signed range become the
    negative numbers of the same 64 bits, so ids of either kind compare exactly (numpy would
    compare an int64 with a uint64 as floats, which cannot tell neighbouring large ids apart)."""
    ids = np.asarray(ids)
    return ids.view(np.int64) if ids.dtype == np.uint64 else ids.astype(np.int64, copy=False)


def _text_ids(col, path, name: str = "id") -> pa.ChunkedArray:
    """Ids written as text, as int64 (uint64 where one is above the signed range); the first
    that is not a whole number within 64 bits names its row."""
    import pyarrow.compute as pc

    try:
        return pc.cast(col, pa.int64())
    except pa.ArrowInvalid:
        pass
    values = []
    for i, text in enumerate(col.to_pylist()):
        if text is None or text == "":
            raise ZrayError(f"{path}: row {i + 1}: {name} is missing; expected an integer")
        if not _INTEGER.fullmatch(text.strip()):  # not Python's int(): "1_000" or other scripts' digits
            names = "" if re.fullmatch(r"[+-]?[0-9.eE_+-]+", text.strip()) else (
                " (a catalogue that names its galaxies needs a column of whole numbers beside the names, its row "
                "numbers will do: --column id= names it)")
            raise ZrayError(f"{path}: row {i + 1}: {name} {text!r} is not written as an integer; "
                            f"expected integer ids{names}")
        value = int(text)
        if value > MAX_UNSIGNED_ID:
            raise ZrayError(f"{path}: row {i + 1}: id {value} is larger than {MAX_UNSIGNED_ID}; "
                            "expected 64-bit integer ids")
        if value < -MAX_ID - 1:
            raise ZrayError(f"{path}: row {i + 1}: id {value} is below {-MAX_ID - 1}; expected 64-bit integer ids")
        values.append(value)
    if not values or max(values) <= MAX_ID:
        return pa.chunked_array([pa.array(values, pa.int64())])
    if min(values) < 0:
        big, low = values.index(max(values)), values.index(min(values))
        raise ZrayError(f"{path}: row {low + 1} has id {values[low]} and row {big + 1} id {values[big]}; "
                        f"expected ids either all below {MAX_ID + 1} or all >= 0 (64-bit integers, signed "
                        "or not)")
    return pa.chunked_array([pa.array(values, pa.uint64())])


def lookup(known: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, found)``: where each of ``ids`` is in ``known`` (ids, each once), and whether it
    is there at all: a join by id, e.g. ``values[rows]`` where ``found``."""
    if len(known) == 0:
        return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    known, ids = id_key(known), id_key(ids)
    order = np.argsort(known, kind="stable")
    rows = order[np.clip(np.searchsorted(known[order], ids), 0, len(known) - 1)]
    return rows, known[rows] == ids


def check_redshifts(z: np.ndarray, bins: RedshiftBins, path, ids, name: str = "z_spec", *,
                    drop: bool | None = None) -> np.ndarray:
    """Which rows' redshifts lie inside ``bins`` (a boolean mask). Where some do not, the run stops
    naming the first, how many, and the ways forward: ``--z-max`` to widen the dataset's bins and
    ``--drop-out-of-range`` to leave them out, for the commands that have them (``drop`` not None);
    with ``drop`` True the mask is returned for the caller to leave them out (where it leaves any)."""
    inside = bins.contains(z)
    if inside.all():
        return inside
    if drop:
        if not inside.any():
            raise ZrayError(f"{path}: every one of its {len(z)} galaxies has {name} outside {bins.z_min} <= z < "
                            f"{bins.z_max}; expected some inside the bins"
                            f"{' (--z-max widens them)' if (z >= bins.z_max).any() else ''}")
        return inside
    bad = np.flatnonzero(~inside)
    i = int(bad[0])
    count = f" (and {bad.size - 1} more of its {len(z)} galaxies)" if bad.size > 1 else ""
    ways = ""
    if drop is not None:
        above = z[~inside][z[~inside] >= bins.z_max]
        top = float(above.max(initial=-math.inf))
        if above.size == bad.size and top < MAX_Z:
            ways = f": --z-max {edge_above(top):g} widens the bins to hold them"
        elif above.size and top < MAX_Z:
            ways = (f": --z-max {edge_above(top):g} widens the bins to hold the {above.size} "
                    f"above {bins.z_max}")
        ways = f"{ways}{', or' if ways else ':'} --drop-out-of-range leaves them out"
    raise ZrayError(
        f"{path}: {where(i, ids)}: {name} {z[i]:.4g} is outside the binning range{count}; "
        f"expected {bins.z_min} <= z < {bins.z_max}{ways}"
    )


#: The largest ``--z-max`` the data commands take: beyond the most distant galaxies known.
MAX_Z = 15.0


def ebv_or_zero(table: pa.Table, path, ids) -> np.ndarray:
    """The ``ebv`` column, or 0 for every galaxy with a warning where the catalogue has none
    (read with ``hinted=("ebv",)``: one holding it under another name was refused)."""
    ebv = ebv_column(table, path, ids)
    if ebv is None:
        from zray.console import LOG

        LOG.warning(f"{path} has no ebv column: E(B-V) is 0 for every galaxy; the networks take it as an input, "
                    "so give it (each galaxy's Galactic E(B-V), from a dust map such as SFD's) unless your images "
                    "are corrected for extinction")
        ebv = np.zeros(len(ids))
    return ebv


def ebv_column(table: pa.Table, path, ids) -> np.ndarray | None:
    """The ``ebv`` column (E(B-V), magnitudes, >= 0), or None where the catalogue has none."""
    if "ebv" not in table.column_names:
        return None
    ebv = numeric_column(table, "ebv", path, ids)
    if (ebv < 0).any():
        i = int(np.flatnonzero(ebv < 0)[0])
        raise ZrayError(f"{path}: {where(i, ids)}: {label(table, 'ebv')} {ebv[i]} is negative; expected E(B-V) >= 0")
    if (ebv > EBV_PLAUSIBLE).any():  # the dustiest skies galaxy surveys look through stay well below
        from zray.console import LOG

        i = int(np.argmax(ebv))
        LOG.warning(f"{path}: {int((ebv > EBV_PLAUSIBLE).sum())} galaxies have {label(table, 'ebv')} above "
                    f"{EBV_PLAUSIBLE:g} "
                    f"(largest {ebv[i]:g}, {where(i, ids)}); ebv is E(B-V), not an extinction A_V or A_r "
                    "(about 3 times larger)")
    return ebv


#: E(B-V) above this (magnitudes) is warned about: galaxy surveys avoid such dusty sky.
EBV_PLAUSIBLE = 1.0


#: The apparent magnitudes a catalogue may give; catalogues mark missing photometry
#: with sentinels outside it (SDSS: -9999; others: 99).
MAG_RANGE = (5.0, 35.0)


def magnitude_columns(table: pa.Table, path, ids, bands: str) -> dict[str, np.ndarray]:
    """The optional ``mag_<band>`` columns the catalogue has, checked, to carry into the shards."""
    mags = {f"mag_{b}": numeric_column(table, f"mag_{b}", path, ids) for b in bands
            if f"mag_{b}" in table.column_names}
    for name, values in mags.items():
        _check_magnitudes(values, name, path, ids)
    return mags


def _check_magnitudes(values: np.ndarray, name: str, path, ids) -> None:
    """Refuse a magnitude outside :data:`MAG_RANGE`, naming its row: a sentinel for "no
    photometry" would otherwise pass for a very bright or very faint galaxy."""
    low, high = MAG_RANGE
    bad = np.flatnonzero((values < low) | (values > high))
    if bad.size:
        i = int(bad[0])
        raise ZrayError(f"{path}: {where(i, ids)}: {name} {values[i]:g} is not a galaxy's apparent magnitude; "
                        f"expected {low:g} to {high:g} (a sentinel such as -9999 or 99 marks missing photometry: "
                        "leave such galaxies out, or the column)")


def warn_repeats(keys: list, path, ids, what: str) -> None:
    """Warn when rows of different ids share ``keys`` (a position, a FITS file): their cutouts are
    the same picture, which the split hash may put in training and test alike."""
    from zray.console import LOG

    first: dict = {}
    repeats = []
    for i, key in enumerate(keys):
        if key in first:
            repeats.append((first[key], i))
        else:
            first[key] = i
    if repeats:
        a, b = repeats[0]
        LOG.warning(f"{path}: {len(repeats)} row(s) share {what} with an earlier row (first {where(a, ids)} and "
                    f"{where(b, ids)}): the same cutout under two ids, in training and test alike if the split "
                    "puts them there; a catalogue joined twice?")


def where(i: int, ids=None) -> str:
    return f"row {int(i) + 1}" + (f" (id {int(ids[i])})" if ids is not None else "")
