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


class UnsafeJSONError(InvalidEventError):
    """A body is valid JSON but cannot be accepted as it is (too deep, non-finite numbers).

    The message says why, never what the body holds.
    """


class WebhookSetupError(AuthKitError):
    """A webhook endpoint cannot be set up as asked (several share the URL, a bad URL...)."""


class EventTypesChangedError(AuthKitError):
    """`sync_events` was asked for other event types than those its cursor was advanced for.

    Continuing would step over the events of the missing types for good (or mark events
    processed without the handlers that should have run), so the run refuses instead.
    """


class EventNotRecordedError(EventFailedError):
    """`sync_events` could neither process an event nor record it in the ledger, although the
    database answers. It stops there rather than move the cursor past an event it has no trace
    of; the log says what failed."""

    @staticmethod
    def _describe(event_id: str, event_type: str, cause: BaseException) -> str:
        return (
            f"{event_type} event {event_id} from the Events API could neither be processed nor "
            "recorded in the ledger, so sync_events stopped before it rather than lose it; the "
            "log says what failed"
        )


class EventsCursorExpiredError(AuthKitError):
    """WorkOS no longer knows the events cursor: it keeps events for 30 days only."""


class InvalidTokenError(AuthKitError):
    """The access token is malformed, badly signed, expired, or not issued for this app.

    The message is safe to send to the client as an RFC 6750 ``error_description``: it says what
    was wrong, never what the token contained.
    """


class KeysUnavailableError(AuthKitError):
    """No signing key could be obtained because the JWKS endpoint is unreachable (answer 503)."""


class SessionOnLoopError(AuthKitError, RuntimeError):
    """An async Action handler used its session for database I/O on the event loop.

    A query there would stall every other request of the app until the database answered. Run
    the database work in a worker thread with ``await session.run_sync(function, ...)``, or
    write the handler as a plain ``def`` (sync handlers run in a worker thread).
    """


class UserNotFoundError(AuthKitError):
    """The token is valid but its user is unknown, deleted, or not synced (answer 401)."""


class LeaseLostError(AuthKitError):
    """The lease expired and another instance took it over while this run was working."""


class WorkOSAPIError(AuthKitError):
    """WorkOS answered with an error we do not retry (or retries ran out)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class WorkOSAuthenticationError(WorkOSAPIError):
    """WorkOS refused the API key (401/403): check ``WORKOS_API_KEY``."""
