"""The one exception type that reaches the user as a sentence, not a traceback."""


class ZrayError(Exception):
    """A user mistake or unusable input.

    The message is one sentence that names the file, field or row at fault and
    says what was expected, e.g. ``data/x/train-00000.parquet: row 17: image has
    NaN pixels; expected finite values``. The CLI prints it and exits 1.
    """
