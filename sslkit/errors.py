"""Errors that stand for a user's mistake: train.py prints them as one line, no traceback."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, refused checkpoint)."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass
