"""`sync_events`: catch up from the WorkOS Events API, from the job's own cursor.

It pages ``GET /events`` from its **own** persisted cursor (the id of the last event it processed
from the Events API, never anything derived from webhook rows) and hands each event to
`EventPipeline.process`, so an event that also arrives by webhook takes effect once. It holds the
``sync_events`` lease while it runs: with several app instances on one database, at most one
runs at a time.

Upgrades. The event types the cursor was advanced for are saved beside it, and a run that asks
for other types refuses (`EventTypesChangedError`): it would step over events for good. One
change is made gracefully instead: when the only difference is that this version of the package
pulls more types of the kinds it mirrors (an upgrade that started mirroring organizations,
memberships and sessions, or an app that turned a kind back on), the main cursor keeps its place
for the old types and a *catch-up pass* pulls the added types from their own starting point
(`events_range_start`, else 30 days ago, as a first run would), with a cursor of its own. Each
run pulls the main cursor to the end of the feed first, then the catch-up cursor. When both
reached the end in the same run, the added types join the main cursor's for good and the
catch-up state is dropped: every event not seen by either pass was created after the main
pass's last request, so after the main cursor's event, and the main cursor (now for all types)
picks it up; the catch-up's own events after that cursor come again once, and the ledger skips
them.

The main pass and the catch-up pass share their paging loop and cursor rules, so they stay in
one module (a little over 400 lines) rather than two that would have to agree.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread

from .._exceptions import AuthKitError, EventFailedError, InvalidEventError
from .._exceptions import EventNotRecordedError as EventNotRecordedError
from .._exceptions import EventsCursorExpiredError as EventsCursorExpiredError
from .._exceptions import EventTypesChangedError as EventTypesChangedError
from .._sync.events import SYNCED_EVENT_TYPES, parse_event
from .._sync.ledger import ledger_id
from .._sync.mirror import KINDS
from .._sync.pipeline import EventPipeline, Outcome
from .._sync.untrusted_json import clean_json, storable_text
from .._sync.user_table import Effect
from .lease import Lease
from .reconcile_results import Progress, ProgressCallback, SyncEventsResult
from .recovery import (
    DEFAULT_RETENTION,
    EVENTS_CATCH_UP_CURSOR,
    EVENTS_CATCH_UP_POSITION,
    EVENTS_CATCH_UP_TYPES,
    EVENTS_CURSOR,
    EVENTS_LAST_RUN,
    EVENTS_POSITION,
    EVENTS_TYPES,
    PAGE_SIZE,
    LeasedRun,
    Recovery,
    leased,
    parse_time,
    read_states,
    save_under_lease,
)
from .workos_api import WorkOSAPIError

logger = logging.getLogger("fastapi_workos_authkit")

__all__ = [
    "EventNotRecordedError",
    "EventTypesChangedError",
    "EventsCursorExpiredError",
    "event_types_in_play",
    "mirrored_event_types",
    "sync_events",
]


def mirrored_event_types(recovery: Recovery) -> frozenset[str]:
    """The types that change a table this app mirrors: ``user.*`` and those of every mirrored
    kind (``organization.*``, ``organization_membership.*``, ``session.*`` by default)."""
    kinds = (KINDS[name] for name in sorted(recovery.pipeline.mirrored))
    return SYNCED_EVENT_TYPES.union(*(kind.event_types for kind in kinds))


def event_types_in_play(recovery: Recovery) -> list[str]:
    """The types `sync_events` asks for: those of every mirrored kind (`mirrored_event_types`),
    every handled type, and the extras."""
    handled = set(recovery.handled_event_types())
    extra = set(recovery.additional_event_types)
    return sorted(mirrored_event_types(recovery) | handled | extra)


def _split(joined: str | None) -> set[str]:
    return set(joined.split(",")) if joined else set()


def _widened(recovery: Recovery, stored: str, wanted: list[str]) -> list[str] | None:
    """The types to catch up when ``wanted`` only adds types of mirrored kinds to ``stored``
    (a package upgrade); ``None`` for any other change, which `sync_events` refuses.

    Only the package's own mirrored types widen by themselves: their events go through the
    mirror's rules (newest wins, tombstones), so taking them from an earlier start is safe and
    expected. A handler the app added (or removed) is the app's decision about which past
    events it must see, so it still refuses, and the message says how to choose.
    """
    before, after = _split(stored), set(wanted)
    added = after - before
    if not added or before - after or not added <= mirrored_event_types(recovery):
        return None
    return sorted(added)


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
    `EventTypesChangedError` rather than step over events for good. The one exception is a run
    that only adds types of the kinds this app mirrors (an upgrade of the package): those catch
    up from their own starting point on a second cursor, and join the main cursor once caught
    up (see the module docstring). ``restart_from`` (an aware
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
    engine = recovery.engine()
    types = event_types_in_play(recovery)
    joined = ",".join(types)
    result = SyncEventsResult(event_types=types)
    async with leased(recovery, "sync_events", lease_ttl) as run:
        if isinstance(run, str):
            return SyncEventsResult(ran=False, lease_holder=run, event_types=types)
        lease = run.lease
        keys = (
            EVENTS_CURSOR,
            EVENTS_TYPES,
            EVENTS_POSITION,
            EVENTS_CATCH_UP_CURSOR,
            EVENTS_CATCH_UP_TYPES,
            EVENTS_CATCH_UP_POSITION,
        )
        saved = await anyio.to_thread.run_sync(read_states, engine, keys)
        cursor = saved[EVENTS_CURSOR]
        position = saved[EVENTS_POSITION]
        stored = saved[EVENTS_TYPES]
        catch_up = sorted(_split(saved[EVENTS_CATCH_UP_TYPES]))
        main_types = types
        if restart_from is not None:
            start = _start_moment(restart_from, recovery.now())
            cursor, position, catch_up = None, start.isoformat(), []
            fresh = {
                EVENTS_CURSOR: None,
                EVENTS_TYPES: joined,
                EVENTS_POSITION: position,
                EVENTS_CATCH_UP_CURSOR: None,
                EVENTS_CATCH_UP_TYPES: None,
                EVENTS_CATCH_UP_POSITION: None,
            }
            await anyio.to_thread.run_sync(save_under_lease, lease, fresh)
        elif catch_up:
            # A catch-up pass is under way: the main and catch-up types together must still be
            # what this AuthKit asks for.
            if _split(stored) | set(catch_up) != set(types):
                raise _types_changed(",".join(sorted(_split(stored) | set(catch_up))), types)
            main_types = sorted(_split(stored))
        elif stored is not None and stored != joined:
            added = _widened(recovery, stored, types)
            if added is None:
                raise _types_changed(stored, types)
            main_types, catch_up = sorted(_split(stored)), added
            first = _range_start(recovery) or recovery.now() - DEFAULT_RETENTION
            logger.info(
                "sync_events: this version also pulls %s; they catch up from %s on a cursor of "
                "their own while the events cursor keeps its place (run backfill-organizations "
                "and backfill-memberships once for the state from before then)",
                ", ".join(added),
                first.isoformat(),
            )
            begun = {
                EVENTS_CATCH_UP_TYPES: ",".join(added),
                EVENTS_CATCH_UP_CURSOR: None,
                EVENTS_CATCH_UP_POSITION: first.isoformat(),
            }
            await anyio.to_thread.run_sync(save_under_lease, lease, begun)
            saved[EVENTS_CATCH_UP_POSITION] = first.isoformat()
            saved[EVENTS_CATCH_UP_CURSOR] = None
        elif stored is None or (cursor is None and position is None):
            if cursor is None and position is None:
                first = _range_start(recovery) or recovery.now() - DEFAULT_RETENTION
                position = first.isoformat()
            started = {EVENTS_TYPES: joined, EVENTS_POSITION: position}
            await anyio.to_thread.run_sync(save_under_lease, lease, started)
        result.started_after = result.cursor = cursor
        effects: Counter[str] = Counter()
        # The main cursor first, to the end of the feed; then the catch-up cursor. The order is
        # what makes the merge below safe (see the module docstring).
        result.cursor = await _pull(
            recovery, run, main_types, cursor, position, _MAIN, result, effects, progress
        )
        if catch_up:
            result.catch_up_types = catch_up
            result.catch_up_cursor = await _pull(
                recovery,
                run,
                catch_up,
                saved[EVENTS_CATCH_UP_CURSOR],
                saved[EVENTS_CATCH_UP_POSITION],
                _CATCH_UP,
                result,
                effects,
                progress,
            )
            merged = {
                EVENTS_TYPES: joined,
                EVENTS_CATCH_UP_CURSOR: None,
                EVENTS_CATCH_UP_TYPES: None,
                EVENTS_CATCH_UP_POSITION: None,
            }
            await anyio.to_thread.run_sync(save_under_lease, lease, merged)
            logger.info("sync_events: caught up %s; one events cursor again", ", ".join(catch_up))
        result.effects = dict(effects)
        now = recovery.now().isoformat()
        await anyio.to_thread.run_sync(save_under_lease, lease, {EVENTS_LAST_RUN: now})
    return result


_MAIN = (EVENTS_CURSOR, EVENTS_POSITION)
_CATCH_UP = (EVENTS_CATCH_UP_CURSOR, EVENTS_CATCH_UP_POSITION)


async def _pull(
    recovery: Recovery,
    run: LeasedRun,
    types: list[str],
    cursor: str | None,
    position: str | None,
    keys: tuple[str, str],
    result: SyncEventsResult,
    effects: Counter[str],
    progress: ProgressCallback | None,
) -> str | None:
    """Page the events of ``types`` after ``cursor`` (or from ``position``) to the end of the
    feed, each processed and then the cursor saved under ``keys``; return the last cursor."""
    api = recovery.workos()
    range_start = None if cursor else parse_time(position)
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
            outcome = await anyio.to_thread.run_sync(
                _sync_one, recovery.pipeline, run.lease, raw, keys
            )
            if outcome is None:
                result.failed += 1
                result.failed_event_ids.append(ledger_id(storable_text(event_id)))
            elif outcome[0] is Outcome.DUPLICATE:
                result.duplicates += 1
            else:
                result.processed += 1
                effects[outcome[1].value] += 1
            cursor = storable_text(event_id)
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
            return cursor


def _sync_one(
    pipeline: EventPipeline, lease: Lease, raw: dict[str, Any], keys: tuple[str, str] = _MAIN
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
    cursor_key, position_key = keys
    values: dict[str, str | None] = {cursor_key: storable_text(event_id)}
    if created_at is not None:
        values[position_key] = created_at.astimezone(UTC).isoformat()
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
