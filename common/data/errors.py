"""Errors raised for bad input data."""


class DatasetError(ValueError):
    """Bad input data.

    When the problem comes from a file, the message names the file and the
    1-based line number, e.g. "ratings.dat line 17: expected 3 or 4 fields
    separated by '::', got 2", so a user can open the file and fix it.
    """
