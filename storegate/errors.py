"""Exceptions raised by storegate.

Every error derives from :class:`StoreGateError`. Not-found errors also derive from
:class:`KeyError` and argument errors from :class:`ValueError`, so existing ``except``
clauses written for multiml keep working.
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "IndexOutOfRangeError",
    "InvalidArgumentError",
    "NoReplyError",
    "NotFoundError",
    "ReadOnlyError",
    "StorageError",
    "StoreGateError",
    "StoreGateWarning",
    "ValidationError",
]


class StoreGateError(Exception):
    """Base class of every error raised by storegate."""


class NotFoundError(StoreGateError, KeyError):
    """A data_id, phase or variable that was asked for does not exist."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(StoreGateError, ValueError):
    """An argument has the wrong type, shape, dtype or value."""


class IndexOutOfRangeError(StoreGateError, IndexError):
    """A row index lies outside the rows that exist."""


class ReadOnlyError(StoreGateError, PermissionError):
    """A write was attempted on a store opened with mode 'r'."""


class ValidationError(StoreGateError, ValueError):
    """Stored data break a rule that compile() checks (lengths, dtypes, row shapes)."""


class StorageError(StoreGateError, OSError):
    """The storage location could not be reached or used."""


class NoReplyError(StorageError):
    """A remote server sent no reply to a request within its timeouts, on every attempt.

    The server is stopped, overloaded or unreachable (a connection opens, nothing answers).
    For S3 the wait is set by ``storage_options['config_kwargs']`` (``read_timeout``,
    ``retries``): see :data:`storegate.locations.DEFAULT_S3_CONFIG`. storegate's own rule (the
    seed systems say nothing of a silent server).

    Attributes
    ----------
    endpoint
        The server's URL (``'http://host:port'``), or ``None`` when not known.
    """

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class ConflictError(StoreGateError):
    """Another writer holds the store (its write lock or lease) or changed it under this call.

    Nothing of the call that raised it was written: wait and retry, or give a longer
    ``lock_timeout``.
    """


class StoreGateWarning(UserWarning):
    """Something storegate did succeeded but left something worth knowing (e.g. cleanup failed)."""
