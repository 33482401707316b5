"""`sync_events`: catch up from the WorkOS Events API, from the job's own cursor.

It pages ``GET /events`` from its **own** persisted cursor (the id of the last event it processed
from the Events API, never anything derived from webhook rows) and hands each event to
`EventPipeline.process`, so an event that also arrives by webhook takes effect once. It holds the
``sync_events`` lease while it runs: with several app instances on one database, at most one
runs at a time.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread

from .errors import AuthKitError, EventFailedError, InvalidEventError
from .events import SYNCED_EVENT_TYPES, parse_event
from .lease import Lease
from .ledger import ledger_id
from .pipeline import EventPipeline, Outcome
from .reconcile_results import Progress, ProgressCallback, SyncEventsResult
from .recovery import (
    DEFAULT_RETENTION,
    EVENTS_CURSOR,
    EVENTS_LAST_RUN,
    EVENTS_POSITION,
    EVENTS_TYPES,
    PAGE_SIZE,
    Recovery,
    leased,
    parse_time,
    read_states,
    save_under_lease,
)
from .untrusted_json import clean_json, storable_text
from .user_table import Effect
from .workos_api import WorkOSAPIError

logger = logging.getLogger("fastapi_workos_authkit")

__all__ = [
    "EventNotRecordedError",
    "EventTypesChangedError",
    "EventsCursorExpiredError",
    "event_types_in_play",
    "sync_events",
]


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


def event_types_in_play(recovery: Recovery) -> list[str]:
    """The types `sync_events` asks for: ``user.*``, every handled type, and the extras."""
    handled = set(recovery.handled_event_types())
    return sorted(SYNCED_EVENT_TYPES | handled | set(recovery.additional_event_types))


def _range_start(recovery: Recovery) -> datetime | None:
    start = recovery.events_range_start
    if isinstance(start, timedelta):
        return recovery.now() - start
    return start


def _start_moment(start: datetime | timedelta, now: datetime) -> datetime:
    if isinstance(start, timedelta):
        return now - start
    if start.tzinfo is None:
        raise ValueError("restart_from must be an aware datetime (UTC) or a timedelta")
    return start


def _types_changed(stored: str, wanted: list[str]) -> EventTypesChangedError:
    before = set(stored.split(",")) if stored else set()
    added = sorted(set(wanted) - before)
    removed = sorted(before - set(wanted))
    change = "; ".join(
        part
        for part in (
            f"new: {', '.join(added)}" if added else "",
            f"no longer asked for: {', '.join(removed)}" if removed else "",
        )
        if part
    )
    return EventTypesChangedError(
        f"The events cursor was advanced for other event types than this AuthKit asks for "
        f"({change}). Continuing would skip events for good. If this is not the app's own "
        "AuthKit, run with it (CLI: --app main:authkit), so its handlers run. If the app's "
        "handlers changed on purpose, restart the cursor from a moment before the change "
        "(sync_events(restart_from=...), CLI: sync-events --from 2026-01-31T00:00:00Z, or "
        "--reset-cursor for the configured events_range_start); the ledger skips the events "
        "already processed."
    )


def _cursor_expired(cursor: str, position: str | None, exc: WorkOSAPIError) -> AuthKitError:
    since = f" (its event is from {position})" if position else ""
    return EventsCursorExpiredError(
        f"WorkOS refused the events cursor {cursor}{since} with {exc.status_code}: the Events "
        "API keeps events for 30 days, so the cursor has most likely expired and the events in "
        "between are gone from it. To recover, run backfill_users() (CLI: backfill-users) to "
        "refresh every user, then restart the cursor: sync_events(restart_from=timedelta(days=29))"
        " (CLI: sync-events --reset-cursor, or --from <an ISO datetime within the last 30 days>)."
        " The ledger skips events already processed."
    )


async def sync_events(
    recovery: Recovery,
    *,
    progress: ProgressCallback | None = None,
    lease_ttl: float = 60.0,
    restart_from: datetime | timedelta | None = None,
) -> SyncEventsResult:
    """Pull every event of the types in play since the cursor and process each one once.

    The cursor is saved after each event commits, so a crash at any point resumes exactly after
    the last committed event (an event processed but not yet counted by the cursor is a ledger
    duplicate next time, with no second effect). Each cursor write checks, in its transaction,
    that the lease is still ours: a run that stalled and lost it stops with `LeaseLostError`
    instead of moving the new holder's cursor backwards.

    The event types the cursor was advanced for are saved beside it. A later run that asks for
    other types (an `AuthKit` without the app's handlers, or a handler added since) raises
    `EventTypesChangedError` rather than step over events for good. ``restart_from`` (an aware
    ``datetime``, or a ``timedelta`` before now) forgets the cursor and starts again from that
    moment with the current types; the ledger skips what was already processed.

    A handler that raises does not stop the run: the pipeline records the event as failed in the
    ledger (with its payload), the cursor moves on, and `replay_failed` processes it again once
    the handler is fixed. Stopping instead would hold every later event hostage to one bad
    handler; moving on loses nothing because the failed row is checked before the cursor moves.
    A poison event (one that can never be stored as it is: too deep, non-finite numbers, values
    longer than their columns) is recorded as failed the same way, logged at WARNING, and
    stepped over; lone surrogates and NUL characters are replaced with U+FFFD and the event is
    processed, exactly as the webhook route does.
    Database outages and WorkOS errors stop the run with the cursor at the last committed event.
    """
    api = recovery.workos()
    engine = recovery.engine()
    types = event_types_in_play(recovery)
    joined = ",".join(types)
    result = SyncEventsResult(event_types=types)
    async with leased(recovery, "sync_events", lease_ttl) as run:
        if isinstance(run, str):
            return SyncEventsResult(ran=False, lease_holder=run, event_types=types)
        lease = run.lease
        keys = (EVENTS_CURSOR, EVENTS_TYPES, EVENTS_POSITION)
        saved = await anyio.to_thread.run_sync(read_states, engine, keys)
        cursor = saved[EVENTS_CURSOR]
        position = saved[EVENTS_POSITION]
        if restart_from is not None:
            start = _start_moment(restart_from, recovery.now())
            cursor, position = None, start.isoformat()
            fresh = {EVENTS_CURSOR: None, EVENTS_TYPES: joined, EVENTS_POSITION: position}
            await anyio.to_thread.run_sync(save_under_lease, lease, fresh)
        elif saved[EVENTS_TYPES] is not None and saved[EVENTS_TYPES] != joined:
            raise _types_changed(saved[EVENTS_TYPES] or "", types)
        elif saved[EVENTS_TYPES] is None or (cursor is None and position is None):
            if cursor is None and position is None:
                first = _range_start(recovery) or recovery.now() - DEFAULT_RETENTION
                position = first.isoformat()
            started = {EVENTS_TYPES: joined, EVENTS_POSITION: position}
            await anyio.to_thread.run_sync(save_under_lease, lease, started)
        result.started_after = result.cursor = cursor
        range_start = None if cursor else parse_time(position)
        effects: Counter[str] = Counter()
        while True:
            try:
                page = await api.list_events(
                    events=types,
                    after=cursor,
                    range_start=range_start,
                    limit=PAGE_SIZE,
                    keepalive=run.keepalive,
                )
            except WorkOSAPIError as exc:
                if cursor and exc.status_code in (400, 404, 410, 422):
                    raise _cursor_expired(cursor, position, exc) from exc
                raise
            # The fetch may have waited out retries: renew before processing, so the page never
            # starts on a lease that is about to lapse (and a lost one stops the run right here).
            await run.renew()
            result.fetched += len(page.data)
            for raw in page.data:
                event_id = raw.get("id")
                if not isinstance(event_id, str) or not event_id:
                    raise InvalidEventError(
                        f"The Events API sent a {str(raw.get('event'))[:128]!r} event without an "
                        f"id, after {cursor or 'the start'}. An event without an id can neither "
                        "be deduplicated nor serve as a cursor, so sync_events stopped with the "
                        "cursor on the last good event and recorded nothing for it. To step over "
                        "it, restart the cursor from a moment after it (CLI: sync-events --from "
                        "<ISO datetime>)."
                    )
                outcome = await anyio.to_thread.run_sync(_sync_one, recovery.pipeline, lease, raw)
                if outcome is None:
                    result.failed += 1
                    result.failed_event_ids.append(ledger_id(storable_text(event_id)))
                elif outcome[0] is Outcome.DUPLICATE:
                    result.duplicates += 1
                else:
                    result.processed += 1
                    effects[outcome[1].value] += 1
                cursor = result.cursor = storable_text(event_id)
                position = raw.get("created_at") or position
            if progress is not None and page.data:
                progress(
                    Progress(
                        "sync-events",
                        result.fetched,
                        counts={
                            "processed": result.processed,
                            "duplicates": result.duplicates,
                            "failed": result.failed,
                        },
                    )
                )
            # WorkOS leaves list_metadata.after out on the last page; a short page is not the
            # end (the type filter can make pages short).
            if not page.data or page.after is None:
                break
        result.effects = dict(effects)
        now = recovery.now().isoformat()
        await anyio.to_thread.run_sync(save_under_lease, lease, {EVENTS_LAST_RUN: now})
    return result


def _sync_one(
    pipeline: EventPipeline, lease: Lease, raw: dict[str, Any]
) -> tuple[Outcome, Effect] | None:
    """Process one event from the API and then move the cursor; ``None`` if it failed.

    A poison event (one that can never be processed as it is) is recorded as failed, with a
    copy of its payload that any database can store, and the cursor moves past it: it must
    never hold later events back. The same rules as the webhook route apply (see
    `untrusted_json` and `parse_event`): lone surrogates and NUL characters are replaced and the
    event processed; too deep nesting, non-finite numbers and over-long values make it invalid.
    """
    event_id = str(raw["id"])
    outcome: tuple[Outcome, Effect] | None = None
    payload, problems = clean_json(raw)
    created_at = parse_time(payload.get("created_at"))
    if problems:
        reason = "The event is refused: " + "; ".join(sorted(problems))
        recorded = _record_poison(pipeline, payload, reason)
    else:
        try:
            event = parse_event(payload)
        except InvalidEventError as exc:
            recorded = _record_poison(pipeline, payload, str(exc))
        else:
            created_at = event.created_at
            try:
                processed = pipeline.process(event, payload, source="events_api")
                outcome = (processed.outcome, processed.effect)
                recorded = True
            except EventFailedError as exc:
                recorded = exc.recorded
    if not recorded:
        # Its payload could not be written down: keep at least its id, type and time, so
        # `status` shows it, rather than stop here on every run.
        envelope = {key: payload.get(key) for key in ("id", "event", "created_at")}
        recorded = pipeline.record_invalid(
            envelope,
            "The event failed and its payload could not be stored either",
            source="events_api",
        )
    if not recorded:
        # Moving the cursor now would lose the event without a trace: stop, honestly.
        raise EventNotRecordedError(
            event_id,
            str(payload.get("event")),
            RuntimeError("recording the failure failed"),
            recorded=False,
        )
    values: dict[str, str | None] = {EVENTS_CURSOR: storable_text(event_id)}
    if created_at is not None:
        values[EVENTS_POSITION] = created_at.astimezone(UTC).isoformat()
    save_under_lease(lease, values)
    return outcome


def _record_poison(pipeline: EventPipeline, payload: dict[str, Any], reason: str) -> bool:
    # The reason names fields and limits, never values: safe to log.
    logger.warning(
        "event %s from the Events API is invalid and recorded as failed: %s",
        ledger_id(str(payload.get("id"))),
        reason,
    )
    return pipeline.record_invalid(payload, f"InvalidEventError: {reason}", source="events_api")
