"""`run_doctor`: find the misconfigurations users would otherwise find first.

Each check is one `Check` (ok, warn, fail or info, with the fix); a report with any fail means
something is broken now, a warn that something will be, or may be. The groups:

1. settings: which secrets and ids are set, and what each enables (a value is never shown);
2. database: reachable, the ``workos_*`` tables exist, Alembic at its head if it is in use;
3. tokens: the JWKS of the client id can be fetched and holds a usable RS256 key;
4. webhooks (with an API key): the key works, an endpoint ends with ``{prefix}/webhook``, it is
   enabled and subscribed to every type the app needs (`needed_event_types`);
5. sync: failed ledger events, the Events API catch-up's age against WorkOS's 30-day retention,
   the leases held; and the most database connections one process opens (info).

Everything is read; nothing is changed. The checks read the app through its `AppProfile`
(settings, engine, WorkOS client, what it listens to), never through the facade.

It is longer than most modules because the five groups of checks read as one list, top to
bottom, in the order the report prints them; split, the order would live in a sixth place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import anyio.to_thread
import httpx
from sqlalchemy import func, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from .._auth.jwks import _read_entry, _SkippedEntry
from .._recovery.recovery import EVENTS_CURSOR, EVENTS_LAST_RUN, parse_time
from .._recovery.workos_api import WorkOSAPIError, WorkOSAuthenticationError
from .._sync.database import driver_message
from .._sync.tables import TABLES, EventStatus, WorkOSEventRecord, WorkOSLease, WorkOSSyncState
from .profile import AppProfile, ProfileSource
from .webhook_endpoints import (
    EventNeed,
    WebhookEndpoint,
    WebhookSetupError,
    _path,
    endpoints_for_url,
    event_needs,
    list_webhook_endpoints,
    webhook_path,
)

__all__ = ["Check", "DoctorReport", "max_connections_per_process", "run_doctor"]

Status = Literal["ok", "warn", "fail", "info"]
EVENTS_RETENTION = timedelta(days=30)
"""How long WorkOS keeps events: a catch-up older than this has lost some for good."""
APP_PLACEHOLDER = "<module:attr>"
EVENTS_STALE = timedelta(days=7)
"""A catch-up older than this is a warn: there is still time, but not much."""


@dataclass(frozen=True)
class Check:
    """One finding: its group, what was checked, the verdict, and how to fix it."""

    group: str
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorReport:
    """Every check, in order; `failed` when any is a fail."""

    checks: tuple[Check, ...]

    @property
    def failed(self) -> bool:
        """Whether any check failed (the command exits non-zero)."""
        return any(c.status == "fail" for c in self.checks)


def max_connections_per_process(authkit: ProfileSource) -> int | None:
    """The most database connections one process opens through ``authkit``.

    ``None`` when it is not counted (SQLite, or an engine of the app's); see
    `AuthKit.max_connections_per_process`.
    """
    return authkit.app_profile().max_connections_per_process()


async def run_doctor(
    authkit: ProfileSource, *, url: str | None = None, app: str | None = None
) -> DoctorReport:
    """Run every check against ``authkit``'s settings, database and WorkOS environment.

    Args:
        authkit: The app's `AuthKit` (its handlers and mirrored kinds decide the event types
            the webhook endpoint must be subscribed to). The checks read only its
            `AppProfile`, so any object with an ``app_profile()`` method will do.
        url: Check only the webhook endpoint with this URL, when several end with the path.
        app: The ``--app`` target, written into the fixes (``<module:attr>`` otherwise).
    """
    profile = authkit.app_profile()
    checks: list[Check] = []
    checks += _settings(profile)
    database_ok = await _database(profile, checks)
    checks += await _tokens(profile)
    checks += await _webhooks(profile, url)
    if database_ok:
        checks += await anyio.to_thread.run_sync(_sync_checks, profile)
    checks.append(_connections(profile))
    if app:
        checks = [replace(c, fix=c.fix.replace(APP_PLACEHOLDER, app)) for c in checks]
    return DoctorReport(tuple(checks))


# -- 1. settings ------------------------------------------------------------------------------


def _settings(profile: AppProfile) -> list[Check]:
    s = profile.settings
    checks: list[Check] = []

    def is_set(name: str, value: object, enables: str, missing: Check) -> None:
        if value:
            checks.append(Check("settings", "ok", f"{name} is set: {enables}"))
        else:
            checks.append(missing)

    is_set(
        "WORKOS_CLIENT_ID",
        s.client_id,
        "access tokens can be verified (current_user and the token dependencies)",
        Check(
            "settings",
            "warn",
            "WORKOS_CLIENT_ID is not set: access tokens cannot be verified, so current_user "
            "answers every request with an error",
            "copy the Client ID from the WorkOS dashboard (API Keys page) into WORKOS_CLIENT_ID",
        ),
    )
    is_set(
        "WORKOS_API_KEY",
        s.api_key,
        "the recovery commands, the just-in-time user fetch and the webhook endpoint checks",
        Check(
            "settings",
            "warn",
            "WORKOS_API_KEY is not set: no Events API catch-up, no backfill, no just-in-time user "
            "fetch, and the webhook endpoint cannot be checked",
            "create a secret key (sk_...) on the WorkOS dashboard's API Keys page and set "
            "WORKOS_API_KEY",
        ),
    )
    is_set(
        "WORKOS_WEBHOOK_SECRET",
        s.webhook_secret,
        f"the webhook route ({webhook_path(s)}) can verify deliveries",
        Check(
            "settings",
            "warn",
            "WORKOS_WEBHOOK_SECRET is not set: authkit.router() refuses to mount the webhook "
            "route, so no event is received",
            "run webhooks setup --url https://<your app>"
            f"{webhook_path(s)} and set the secret it prints as WORKOS_WEBHOOK_SECRET",
        ),
    )
    actions = profile.has_action_handlers
    is_set(
        "WORKOS_ACTION_SECRET",
        s.action_secret,
        "the Actions route can verify requests",
        Check(
            "settings",
            "fail" if actions else "info",
            "WORKOS_ACTION_SECRET is not set, and Action handlers are registered: "
            "authkit.router() refuses to start"
            if actions
            else "WORKOS_ACTION_SECRET is not set: Actions are off (no Action handler)",
            "copy the signing secret of your Action endpoint (Authentication, Actions) into "
            "WORKOS_ACTION_SECRET"
            if actions
            else "",
        ),
    )
    return checks


# -- 2. database ------------------------------------------------------------------------------


def _safe_url(url: object) -> str:
    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing of it rather than leak a password
        return "(the configured database)"


async def _database(profile: AppProfile, checks: list[Check]) -> bool:
    def inspect_schema() -> tuple[set[str], list[str] | None]:
        with profile.engine().connect() as connection:
            connection.execute(text("SELECT 1"))
            names = set(inspect(connection).get_table_names())
            versions = None
            if "alembic_version" in names:
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
                versions = sorted(str(row[0]) for row in rows)
            return names, versions

    where = _safe_url(profile.settings.database_url)
    try:
        where = _safe_url(profile.engine().url)
        names, versions = await anyio.to_thread.run_sync(inspect_schema)
    except Exception as exc:  # any failure to connect is the finding itself
        detail = driver_message(exc) or type(exc).__name__
        checks.append(
            Check(
                "database",
                "fail",
                f"cannot reach the database at {where}: {detail}",
                "check AUTHKIT_DATABASE_URL (or the engine= the app passes) and that the server "
                "is up",
            )
        )
        return False
    checks.append(Check("database", "ok", f"reachable at {where}"))
    missing = sorted(t.name for t in TABLES if t.name not in names)
    if not missing:
        checks.append(Check("database", "ok", f"all {len(TABLES)} workos_* tables exist"))
    elif profile.settings.create_tables:
        checks.append(
            Check(
                "database",
                "warn",
                f"missing tables {', '.join(missing)}: the app creates them at start-up "
                "(create_tables=True)",
                "start the app once, or run any command with --app",
            )
        )
    else:
        checks.append(
            Check(
                "database",
                "fail",
                f"missing tables {', '.join(missing)}, and create_tables=False: the first "
                "write fails",
                "generate and apply a migration (alembic revision --autogenerate; alembic "
                "upgrade head), see the migrations guide",
            )
        )
    checks.append(await anyio.to_thread.run_sync(_alembic, versions))
    return True


def _alembic(versions: list[str] | None) -> Check:
    if versions is None:
        return Check("database", "info", "Alembic is not in use (no alembic_version table)")
    ini = os.environ.get("ALEMBIC_CONFIG", "alembic.ini")
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        if not os.path.exists(ini):
            raise FileNotFoundError(ini)
        heads = sorted(ScriptDirectory.from_config(Config(ini)).get_heads())
    except Exception as exc:  # alembic missing, no alembic.ini here, a broken script folder
        return Check(
            "database",
            "warn",
            f"Alembic is in use (database at {', '.join(versions) or 'no revision'}), but its "
            f"head is unknown here ({type(exc).__name__}: {exc})",
            "run doctor from the folder that holds alembic.ini (or set ALEMBIC_CONFIG), or "
            "check with alembic current",
        )
    if versions == heads:
        return Check("database", "ok", f"migrations are current (head {', '.join(heads)})")
    return Check(
        "database",
        "fail",
        f"migrations are not current: the database is at {', '.join(versions) or 'nothing'}, "
        f"the head is {', '.join(heads)}",
        "alembic upgrade head",
    )


# -- 3. tokens --------------------------------------------------------------------------------


async def _tokens(profile: AppProfile) -> list[Check]:
    client_id = profile.settings.client_id
    if not client_id:
        return [Check("tokens", "info", "JWKS not checked: WORKOS_CLIENT_ID is not set")]
    checks = []
    urls = profile.jwks_urls()
    async with httpx.AsyncClient(
        transport=profile.http_transport, timeout=profile.settings.jwks_timeout
    ) as http:
        for url in urls:
            checks.append(await _jwks(http, url, client_id))
    return checks


async def _jwks(http: httpx.AsyncClient, url: str, client_id: str) -> Check:
    wrong_id = (
        f"check WORKOS_CLIENT_ID ({client_id}): copy the Client ID of this environment from "
        "the WorkOS dashboard's API Keys page"
    )
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        return Check(
            "tokens",
            "fail",
            f"cannot fetch the JWKS at {url}: {type(exc).__name__}",
            "check the network, and WORKOS_API_BASE_URL if it is set",
        )
    if response.status_code != 200:
        return Check(
            "tokens", "fail", f"the JWKS at {url} answered {response.status_code}", wrong_id
        )
    try:
        entries = json.loads(response.content).get("keys")
    except (ValueError, AttributeError):
        entries = None
    if not isinstance(entries, list):
        return Check("tokens", "fail", f"the JWKS at {url} is not a key set", wrong_id)
    usable = 0
    for entry in entries:
        try:
            _read_entry(entry)
        except _SkippedEntry:
            continue
        usable += 1
    if not usable:
        return Check(
            "tokens",
            "fail",
            f"the JWKS at {url} holds {len(entries)} keys, none a usable RS256 signing key",
            wrong_id,
        )
    return Check("tokens", "ok", f"the JWKS at {url} holds {usable} usable RS256 keys")


# -- 4. webhooks ------------------------------------------------------------------------------


async def _webhooks(profile: AppProfile, url: str | None) -> list[Check]:
    if profile.settings.api_key is None:
        return [Check("webhooks", "info", "endpoint not checked: WORKOS_API_KEY is not set")]
    path = webhook_path(profile.settings)
    setup = f"fastapi-workos-authkit webhooks setup --url {url or f'https://<your app>{path}'}"
    try:
        endpoints = await list_webhook_endpoints(profile.workos_api())
    except WorkOSAuthenticationError as exc:
        return [
            Check(
                "webhooks",
                "fail",
                f"WorkOS refused WORKOS_API_KEY ({exc.status_code})",
                "set WORKOS_API_KEY to a secret key (sk_...) of this environment, from the "
                "dashboard's API Keys page",
            )
        ]
    except WorkOSAPIError as exc:
        return [Check("webhooks", "fail", f"cannot list the webhook endpoints: {exc}")]
    checks = [Check("webhooks", "ok", "WORKOS_API_KEY is valid")]
    if url is not None:
        candidates = endpoints_for_url(endpoints, url)
        where = f"with the URL {url}"
    else:
        candidates = [e for e in endpoints if _path(e.endpoint_url).endswith(path)]
        where = f"whose URL ends with {path}"
    if not candidates:
        checks.append(
            Check(
                "webhooks",
                "fail",
                f"no webhook endpoint {where}: WorkOS sends this app no events",
                setup + " --app <module:attr>",
            )
        )
        return checks
    if len(candidates) > 1:
        ids = ", ".join(f"{e.id} ({e.endpoint_url})" for e in candidates)
        checks.append(
            Check(
                "webhooks",
                "warn",
                f"{len(candidates)} endpoints {where}: {ids}; each is checked below",
                "pick this deployment's with doctor --url",
            )
        )
    try:
        needed = event_needs(profile)
    except WebhookSetupError as exc:  # a wildcard in additional_event_types
        checks.append(Check("webhooks", "fail", str(exc), "fix additional_event_types"))
        return checks
    for endpoint in candidates:
        checks += _endpoint_checks(endpoint, needed)
    return checks


def _endpoint_checks(endpoint: WebhookEndpoint, needed: dict[str, EventNeed]) -> list[Check]:
    name = f"endpoint {endpoint.id} ({endpoint.endpoint_url})"
    fix = f"fastapi-workos-authkit webhooks setup --url {endpoint.endpoint_url} --app <module:attr>"
    checks = []
    if endpoint.enabled:
        checks.append(Check("webhooks", "ok", f"{name} is enabled"))
    else:
        checks.append(
            Check(
                "webhooks",
                "fail",
                f"{name} is {endpoint.status}: WorkOS delivers nothing to it",
                fix + " (enables it)",
            )
        )
    subscribed = set(endpoint.events)
    missing = [need for event_type, need in needed.items() if event_type not in subscribed]
    for need in missing:
        consequence = (
            f"handler {' and '.join(need.handlers)} will never run from a webhook"
            if need.handlers
            else f"{need.reason()} will not hear of it"
        )
        checks.append(
            Check(
                "webhooks",
                "fail",
                f"{name} is not subscribed to {need.event_type}: {consequence}",
                fix,
            )
        )
    if not missing:
        checks.append(
            Check("webhooks", "ok", f"{name} is subscribed to all {len(needed)} needed types")
        )
    unused = sorted(subscribed - set(needed))
    if unused:
        checks.append(
            Check(
                "webhooks",
                "warn",
                f"{name} is subscribed to {', '.join(unused)}, which nothing in the app uses "
                "(each delivery is recorded and ignored)",
                f"{fix} (unsubscribes them), or add them to additional_event_types",
            )
        )
    return checks


# -- 5. sync ----------------------------------------------------------------------------------


def _sync_checks(profile: AppProfile) -> list[Check]:
    now = datetime.fromtimestamp(profile.clock(), UTC)
    try:
        with Session(profile.engine()) as session:
            failed = session.exec(
                select(func.count())
                .select_from(WorkOSEventRecord)
                .where(col(WorkOSEventRecord.status) == EventStatus.FAILED.value)
            ).one()
            state = {row.key: row.value for row in session.exec(select(WorkOSSyncState))}
            leases = list(session.exec(select(WorkOSLease).order_by(col(WorkOSLease.name))))
    except Exception as exc:  # the tables are missing: reported by the database checks
        return [
            Check("sync", "info", f"sync state not read ({type(exc).__name__}): no tables yet?")
        ]
    checks = [_failed_check(int(failed)), _cursor_check(state, now)]
    active = [lease for lease in leases if lease.expires_at > now]
    checks += [
        Check("sync", "info", f"lease {lease.name} held by {lease.holder} until {lease.expires_at}")
        for lease in active
    ] or [Check("sync", "ok", "no lease held (no recovery job running)")]
    return checks


def _failed_check(failed: int) -> Check:
    if not failed:
        return Check("sync", "ok", "no failed events in the ledger")
    return Check(
        "sync",
        "warn",
        f"{failed} failed events in the ledger: their handlers raised",
        "see fastapi-workos-authkit status --app <module:attr>, fix the handler, then "
        "replay-failed",
    )


def _cursor_check(state: dict[str, str | None], now: datetime) -> Check:
    schedule = (
        "run fastapi-workos-authkit sync-events --app <module:attr> on a schedule, or set "
        "events_poll_interval"
    )
    last_run = parse_time(state.get(EVENTS_LAST_RUN))
    if last_run is None:
        return Check(
            "sync",
            "warn",
            "the Events API catch-up (sync-events) never ran: events a webhook missed are not "
            "recovered",
            schedule,
        )
    age = now - last_run
    days = age.total_seconds() / 86400
    cursor = state.get(EVENTS_CURSOR) or "none yet"
    if age > EVENTS_RETENTION:
        return Check(
            "sync",
            "fail",
            f"the Events API catch-up last ran {days:.0f} days ago, past WorkOS's 30-day "
            "retention: events since may be lost",
            "backfill-users (and the other backfills), then sync-events --reset-cursor; "
            + schedule,
        )
    if age > EVENTS_STALE:
        return Check(
            "sync",
            "warn",
            f"the Events API catch-up last ran {days:.0f} days ago (WorkOS keeps 30)",
            schedule,
        )
    return Check("sync", "ok", f"the Events API catch-up ran {days:.1f} days ago (cursor {cursor})")


def _connections(profile: AppProfile) -> Check:
    try:
        maximum = profile.max_connections_per_process()
    except Exception:  # counting needs the engine's dialect; the database check said why not
        return Check(
            "connections",
            "info",
            "connections per process: not counted (the engine cannot be built: see the "
            "database check)",
        )
    return Check(
        "connections",
        "info",
        f"at most {maximum} database connections per process"
        if maximum is not None
        else "connections per process: not counted by AuthKit (SQLite, or an engine= of "
        "the app's, whose pool_size + max_overflow is the budget)",
    )


def summary(checks: Sequence[Check]) -> str:
    """``3 fail, 1 warn, 9 ok`` for the last line."""
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("fail", "warn", "ok")}
    return ", ".join(f"{n} {s}" for s, n in counts.items())
