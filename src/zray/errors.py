"""The one exception type that reaches the user as a sentence, not a traceback."""

import re
import reprlib


class ZrayError(Exception):
    """A user mistake or unusable input.

    The message is one sentence that names the file, field or row at fault and
    says what was expected, e.g. ``data/x/train-00000.parquet: row 17: image has
    NaN pixels; expected finite values``. The CLI prints it and exits 1.
    """



# A value the user wrote, as a sentence shows it: a long string, list or mapping, or one
# nested hundreds deep, is cut short ("[[[[[...]]]]]"; a mapping's keys come sorted).
_SHOWN = reprlib.Repr()  # Python 3.11's takes no arguments
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 4, 80, 80, 80
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 8


def shown(value: object) -> str:
    """``repr(value)``, cut short where it is long or deep (reprlib)."""
    return _SHOWN.repr(value)


#: Advice libraries give their Python callers, meaningless on zray's command line (astropy's, for
#: a file that is not FITS: "If this is really a FITS file, try with ignore_missing_simple=True").
_PYTHON_ADVICE = re.compile(r"\s*If this is really a FITS file, try with \w+=True\.?")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, for quoting inside a sentence (without advice
    meant for a Python caller)."""
    text = _PYTHON_ADVICE.sub("", str(exc)).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def last_error_line(text: str, limit: int = 300) -> str:
    """The innermost error line of a (possibly wrapped) traceback text.

    Ray wraps a worker's exception in its own traceback text; the line that
    names the original error is the last one mentioning an error.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line[:limit]
    return lines[-1][:limit] if lines else "failed"
