"""The package's exception types, one per way things go wrong."""

from __future__ import annotations


class AuthKitError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(AuthKitError):
    """A required setting is missing or invalid; the message says how to fix it."""


class SignatureError(AuthKitError):
    """A ``WorkOS-Signature`` header is missing, malformed, stale or does not match the body."""


class InvalidEventError(AuthKitError):
    """A body verified but is not a valid WorkOS event (or Action request)."""


class DatabaseUnavailableError(AuthKitError):
    """The database could not be reached; the caller should answer 503 and let WorkOS retry."""


class EventFailedError(AuthKitError):
    """An event could not be applied: its transaction was rolled back and the failure recorded
    in the ledger (status ``failed``), so a redelivery or `replay_failed` can process it later.

    The original exception is chained as ``__cause__``. ``recorded`` is False in the rare case
    where writing the failure record failed too (the log says why): then the ledger does not
    have it, and only a redelivery can bring the event back.
    """

    def __init__(
        self, event_id: str, event_type: str, cause: BaseException, *, recorded: bool = True
    ) -> None:
        super().__init__(self._describe(event_id, event_type, cause))
        self.event_id = event_id
        self.event_type = event_type
        self.recorded = recorded

    @staticmethod
    def _describe(event_id: str, event_type: str, cause: BaseException) -> str:
        return f"{event_type} event {event_id} failed with {type(cause).__name__}"


class HandlerError(EventFailedError):
    """An app handler raised; the transaction was rolled back and the failure recorded."""

    @staticmethod
    def _describe(event_id: str, event_type: str, cause: BaseException) -> str:
        return f"A handler for {event_type} event {event_id} raised {type(cause).__name__}"
