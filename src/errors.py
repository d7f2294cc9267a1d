"""Errors that are the user's to fix: a bad config, a missing or damaged file, data that cannot
be read. The entry points print them as one line (`error: ...`, exit status 2) instead of a
traceback (src/model_utils/cli.py); anything else is an internal error and keeps its traceback.
"""


class UserError(Exception):
    """A problem with what the user gave: config, arguments, files, data. The message names the
    key, the file or the record."""


class ConfigError(UserError, ValueError):
    """A configuration problem: unknown key, bad value, missing file a key points to."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (in a config key, a flag or a data set) does not exist."""


class DataError(UserError, ValueError):
    """A data set, annotation file or record that cannot be used as it is."""
