"""Errors a user can cause and fix: they are reported as one sentence, without a traceback."""


class DenselabError(Exception):
    """Base class: the message names the cause and the fix."""


class ConfigError(DenselabError):
    """A composed configuration that cannot be run."""


class DataError(DenselabError):
    """Data that is missing, unreachable or corrupt."""


class TrackingError(DenselabError):
    """An MLflow tracking store that cannot be used."""
