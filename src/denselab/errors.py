"""Errors a user can cause and fix: they are reported as one sentence, without a traceback."""


class DenselabError(Exception):
    """Base class: the message names the cause and the fix."""


class ConfigError(DenselabError):
    """A composed configuration that cannot be run."""


class DataError(DenselabError):
    """Data that is missing, unreachable or corrupt."""


class TrackingError(DenselabError):
    """An MLflow tracking store that cannot be used."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (libraries' messages can run to pages),
    or its type's name when it has none: what fits in a one-sentence error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
