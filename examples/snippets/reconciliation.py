"""The reconciliation guide's code (docs/reconciliation.md).

tests/test_reconciliation_docs.py loads this module and runs every part of it against the fake
WorkOS, on SQLite and PostgreSQL.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, Event, User

# --8<-- [start:poller]
# WORKOS_API_KEY, WORKOS_WEBHOOK_SECRET and AUTHKIT_DATABASE_URL come from the environment.
authkit = AuthKit(
    events_poll_interval=300,  # run sync_events every 5 minutes, from the lifespan
    events_range_start=timedelta(days=30),  # where the very first run starts (the default)
    additional_event_types=["organization.created"],  # pulled too, even without a handler
)


@authkit.on("user.created")
def welcome(session: Session, event: Event[User]) -> None:
    # Runs once per new user, whichever way the news arrives: webhook, Events API or backfill.
    print(f"welcome {event.data.email}")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with authkit.lifespan(app):  # starts the poller; stops it cleanly on shutdown
        yield


app = FastAPI(lifespan=lifespan)
app.include_router(authkit.router())
# --8<-- [end:poller]


# --8<-- [start:catch-up]
async def catch_up(kit: AuthKit) -> None:
    """What a cron job or a deploy hook runs; the CLI commands do the same."""
    backfill = await kit.backfill_users()  # every user WorkOS has, oldest first
    print(f"{backfill.inserted} new users, {backfill.updated} refreshed")

    sync = await kit.sync_events()  # every event since this job's own cursor
    if not sync.ran:
        print(f"another instance is syncing ({sync.lease_holder}); nothing to do")
    elif sync.failed:
        print(f"{sync.failed} events failed in a handler: {sync.failed_event_ids}")


# --8<-- [end:catch-up]


# --8<-- [start:replay]
async def retry_failures(kit: AuthKit) -> int:
    """After fixing a handler: process the failed events again, and report what still fails."""
    result = await kit.replay_failed()
    for event in result.events:
        if event.status == "failed":
            print(
                f"{event.event_id} still fails after {event.attempts} attempts: {event.last_error}"
            )
    return result.failed


# --8<-- [end:replay]


# --8<-- [start:prune]
async def nightly_cleanup(kit: AuthKit) -> None:
    result = await kit.prune(
        ledger_retention=timedelta(days=30),  # processed events; failed ones are kept
        tombstone_retention=timedelta(days=30),  # deleted-user markers; at least 3 days
    )
    print(f"pruned {result.events_deleted} events and {result.tombstones_deleted} tombstones")


# --8<-- [end:prune]


# --8<-- [start:status]
async def health(kit: AuthKit) -> dict[str, object]:
    status = await kit.sync_status()
    return {
        "failed_events": status.ledger["failed"],
        "events_cursor": status.cursors.get("events.cursor"),
        "syncing_now": [lease.holder for lease in status.leases if lease.active],
    }


# --8<-- [end:status]
