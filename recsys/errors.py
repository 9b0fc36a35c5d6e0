"""Errors the toolkit raises on bad input: one line that names the file, column, row or value."""


class RecsysError(ValueError):
    """Bad input or configuration; the message is meant to be shown to the user as is."""


class DataError(RecsysError):
    """A data file or frame that cannot be turned into interactions."""
