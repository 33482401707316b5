"""The event ledger's rows, written once: their key, the failure text they keep, and the
statements that record, count and prune them.

Only `pipeline` calls these, inside the transactions it opens; routes and recovery jobs go
through `EventPipeline`, never through here.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from .._clock import utcnow
from .database import dialect_insert, driver_message
from .events import MAX_EVENT_ID_LENGTH, MAX_EVENT_TYPE_LENGTH, Event, subject_of
from .tables import EventStatus, WorkOSEventRecord
from .untrusted_json import storable_text

MAX_ERROR_LENGTH = 2000
"""The most characters of an error a ledger row keeps (``last_error``)."""


def ledger_table() -> Table:
    """The ledger as a Core table."""
    return WorkOSEventRecord.__table__  # type: ignore[attr-defined, no-any-return]


def error_text(text: str) -> str:
    """``text`` cut to what a ledger row keeps of an error."""
    return text[:MAX_ERROR_LENGTH]


def describe_failure(cause: BaseException) -> str:
    """What the ledger keeps of a failure: the type and message, without SQL or parameters.

    A database error's full text carries the statement and its parameters (emails, names), so
    only the driver's first line is kept.
    """
    message = driver_message(cause) if isinstance(cause, SQLAlchemyError) else str(cause)
    return error_text(f"{type(cause).__name__}: {message}")


def ledger_id(event_id: str) -> str:
    """The ledger key under which `sync_events` records an event it cannot process.

    An id longer than the ledger's column (`MAX_EVENT_ID_LENGTH`) cannot be stored as it is, so
    it is shortened the same way every time: its first characters, ``~``, and 24 hex digits of
    its SHA-256. The stored payload keeps the whole id.
    """
    if len(event_id) <= MAX_EVENT_ID_LENGTH:
        return event_id
    digest = hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{event_id[: MAX_EVENT_ID_LENGTH - 25]}~{digest}"


def ledger_row(
    event: Event[Any], payload: dict[str, Any], source: str, status: EventStatus
) -> dict[str, Any]:
    """A first-attempt ledger row for ``event``."""
    return {
        "id": event.id,
        "event_type": event.event,
        "subject_id": subject_of(event),
        "source": source,
        "status": status.value,
        "attempts": 1,
        "event_created_at": event.created_at,
        "received_at": utcnow(),
        "payload": payload,
    }


def upsert_failure(session: Session, row: dict[str, Any], error: str) -> None:
    """Record a failed attempt: insert ``row`` (a failed one), or count one more attempt on
    the row already there, unless that row says processed."""
    table = ledger_table()
    statement = dialect_insert(session, table).values(**row, last_error=error_text(error))
    # Never overwrite a success: a concurrent delivery may have processed it meanwhile.
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "status": EventStatus.FAILED.value,
                "attempts": table.c.attempts + 1,
                "last_error": statement.excluded.last_error,
            },
            where=table.c.status != EventStatus.PROCESSED.value,
        )
    )


def insert_invalid(session: Session, raw: dict[str, Any], error: str, source: str) -> None:
    """Insert a failed row for an event that could not be parsed (a first one wins).

    ``raw`` must already be storable (see `untrusted_json.clean_json`); its id and type are
    made to fit their columns, and the whole payload is kept.
    """
    statement = dialect_insert(session, ledger_table()).values(
        id=ledger_id(storable_text(str(raw.get("id")))),
        event_type=storable_text(str(raw.get("event") or "unknown"))[:MAX_EVENT_TYPE_LENGTH],
        subject_id=None,
        source=source,
        status=EventStatus.FAILED.value,
        attempts=1,
        last_error=error_text(error),
        received_at=utcnow(),
        payload=raw,
    )
    session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))


def count_failed_attempt(session: Session, event_id: str, error: str) -> None:
    """Count one more failed attempt of a ledger event, with its error."""
    table = ledger_table()
    session.execute(
        update(table)
        .where(table.c.id == event_id)
        .values(attempts=table.c.attempts + 1, last_error=error_text(error))
    )


def delete_processed(session: Session, *, before: datetime, bound: datetime | None) -> int:
    """Delete processed rows received before ``before`` and, with a ``bound``, from events
    created before it; failed rows are kept for `replay_failed`. Returns how many went."""
    table = ledger_table()
    statement = (
        delete(table)
        .where(table.c.status == EventStatus.PROCESSED.value)
        .where(table.c.received_at < before)
    )
    if bound is not None:
        # Event time, not arrival time: the sync replays by created_at. A row without one
        # (never for processed events) falls back to when it arrived.
        created = func.coalesce(table.c.event_created_at, table.c.received_at)
        statement = statement.where(created < bound)
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
