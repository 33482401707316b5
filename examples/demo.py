"""The offline demo behind ``bash scripts/demo``: no WorkOS account, no network, SQLite.

Part 1 starts an app with `AuthKit`, sends signed webhook deliveries in the nastiest order WorkOS
can produce (an update before the create, duplicates, a stale update, a delete followed by a late
create, a delete carrying only the id, a ``session.created``) and prints what each delivery did,
the handler calls, and the resulting tables.

Part 2 walks the example app (``examples/app``) through a user's whole life: a registration
denied, another allowed, the user synced, an access token minted, ``/me`` and the todo lists
called, a sign-in recorded, the user deleted, and the same token refused.

Part 3 shows organizations in the example app: a membership that arrives before its
organization (stored all the same: the mirrored tables have no foreign keys), ``GET
/org/members`` answered for an active admin, and refused with the same token once the admin is
demoted, because the mirrored membership, not the token's ``role`` claim, is the newest state.

Run it with ``python -m examples.demo`` from the repository root (``bash scripts/demo`` does).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlmodel import Session, select

from examples.app.auth import create_authkit
from examples.app.main import create_app
from examples.app.models import AppUser, TodoList
from fastapi_workos_authkit import (
    AuthKit,
    AuthSession,
    Event,
    User,
    WorkOSEventRecord,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSUser,
    WorkOSUserTombstone,
    make_engine,
)
from fastapi_workos_authkit.testing import (
    FakeJWKS,
    TokenFactory,
    factories,
    signed_action_request,
    signed_delivery,
    user_registration_action,
    verify_action_response,
)

DEMO_WEBHOOK_SECRET = "whsec_demo_secret"
DEMO_ACTION_SECRET = "action_demo_secret"
DEMO_CLIENT_ID = "client_01DEMO"
# The fake WorkOS answers here; nothing leaves the process.
DEMO_API = "https://api.workos.demo"

Printer = Callable[[str], None]


@dataclass
class SyncDemoResult:
    """What part 1 observed, so a test can check the demo tells the truth."""

    statuses: list[str] = field(default_factory=list)
    handler_calls: list[str] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)
    tombstones: list[str] = field(default_factory=list)


def _row_state(session: Session, user_id: str) -> str:
    """The table's view of one user: its email, a tombstone, or nothing."""
    if session.get(WorkOSUserTombstone, user_id) is not None:
        return "(tombstone)"
    user = session.get(WorkOSUser, user_id)
    return user.email if user is not None else "(no row)"


_WHY = {
    "stale": "the row is newer, so it was kept and no handler ran",
    "tombstoned": "the user was deleted (or its delete came first): its tombstone keeps it "
    "out, so no handler ran",
    "duplicate": "this event id was already processed, so nothing ran",
    "unchanged": "the row already held this version, so no handler ran",
}


def out_why(out: Printer, event_type: str, ack: str, ran: list[str]) -> None:
    """Explain a delivery whose handlers are not those of its own type."""
    effective = [call.split(" ")[0] for call in ran]
    if effective and effective[0] != event_type:
        change = {"user.created": "inserted", "user.updated": "updated"}.get(effective[0], "")
        out(
            f"      the {event_type} {change} the row, so the {effective[0]} handlers ran: "
            "handlers follow the effective change to the table, not the event's type"
        )
    elif ack in _WHY:
        out(f"      {ack}: {_WHY[ack]}")


async def run_sync_demo(database_url: str, out: Printer = print) -> SyncDemoResult:
    """Part 1: signed deliveries in a nasty order, against a real app on ``database_url``."""
    engine = make_engine(database_url)
    authkit = AuthKit(webhook_secret=DEMO_WEBHOOK_SECRET, engine=engine)
    result = SyncDemoResult()

    @authkit.on("user.created")
    def on_created(session: Session, event: Event[User]) -> None:
        result.handler_calls.append(f"user.created {event.data.email}")

    @authkit.on("user.updated")
    def on_updated(session: Session, event: Event[User]) -> None:
        result.handler_calls.append(f"user.updated {event.data.email}")

    @authkit.on("user.deleted")
    def on_deleted(session: Session, event: Event[Any]) -> None:
        result.handler_calls.append(f"user.deleted {event.data.id}")

    @authkit.on("session.created")
    def on_session(session: Session, event: Event[AuthSession]) -> None:
        result.handler_calls.append(f"session.created {event.data.user_id}")

    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())

    ada, grace, linus = "user_01ADA", "user_01GRACE", "user_01LINUS"
    ada_v2 = factories.user_updated(
        ada, email="ada@example.com", first_name="Ada", updated_at=factories.at(60)
    )
    steps: list[tuple[str, dict[str, Any]]] = [
        ("update arrives before its create", ada_v2),
        (
            "the older create arrives late",
            factories.user_created(ada, email="ada.old@example.com", first_name="Ada"),
        ),
        ("the same update again (redelivery)", ada_v2),
        (
            "a newer update",
            factories.user_updated(
                ada, email="ada@lovelace.dev", first_name="Ada", updated_at=factories.at(120)
            ),
        ),
        (
            "a stale update (older than the row)",
            factories.user_updated(ada, email="ada.stale@example.com", updated_at=factories.at(90)),
        ),
        ("a create", factories.user_created(grace, email="grace@example.com", first_name="Grace")),
        ("a delete carrying only the id", factories.user_deleted(grace, id_only=True)),
        (
            "a late create after the delete",
            factories.user_created(grace, email="grace@example.com", updated_at=factories.at(5)),
        ),
        ("a delete of a user never seen", factories.user_deleted(linus, id_only=True)),
        ("its create, late", factories.user_created(linus, email="linus@example.com")),
        ("a sign-in", factories.session_created(ada)),
    ]

    out("Part 1: signed webhook deliveries in a nasty order")
    out(
        f"{'#':>2}  {'event':<16} {'user':<12} {'http':<4} {'ack':<10} {'row now':<18} handlers run"
    )
    async with (
        authkit.lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://demo.local"
        ) as client,
    ):
        for number, (description, payload) in enumerate(steps, start=1):
            calls_before = len(result.handler_calls)
            body, headers = signed_delivery(payload, DEMO_WEBHOOK_SECRET)
            response = await client.post("/workos/webhook", content=body, headers=headers)
            ack = response.json().get("status", "?") if response.is_success else "refused"
            result.statuses.append(ack)
            subject = payload["data"].get("user_id") or payload["data"]["id"]
            ran = result.handler_calls[calls_before:] or ["none"]
            with Session(engine) as session:
                row = _row_state(session, subject)
            out(f"    {description}")
            out(
                f"{number:>2}  {payload['event']:<16} {subject:<12} "
                f"{response.status_code:<4} {ack:<10} {row:<18} {'; '.join(ran)}"
            )
            out_why(out, payload["event"], ack, result.handler_calls[calls_before:])
        # A forged delivery: the signature was made with another secret.
        body, headers = signed_delivery(factories.user_created(), "whsec_not_the_secret")
        forged = await client.post("/workos/webhook", content=body, headers=headers)
        out(f"    a delivery signed with the wrong secret is answered {forged.status_code}")

    with Session(engine) as session:
        users = session.exec(select(WorkOSUser).order_by(WorkOSUser.id)).all()
        tombstones = session.exec(select(WorkOSUserTombstone)).all()
        ledger = session.exec(select(WorkOSEventRecord)).all()
        out("\nworkos_users:")
        for user in users:
            result.users[user.id] = user.email
            out(f"  {user.id:<14} {user.email:<20} updated_at={user.updated_at.isoformat()}")
        result.tombstones = sorted(t.user_id for t in tombstones)
        out(f"workos_user_tombstones: {', '.join(result.tombstones)}")
        out(f"workos_events (the ledger): {len(ledger)} events, each applied exactly once")
    engine.dispose()
    return result


@dataclass
class StoryResult:
    """What part 2 observed, step by step: ``(step, status code, detail)``."""

    steps: list[tuple[str, int, str]] = field(default_factory=list)


async def run_example_app_story(database_url: str, out: Printer = print) -> StoryResult:
    """Part 2: the example app, from a refused sign-up to a deleted user's refused token."""
    engine = make_engine(database_url)
    tokens = TokenFactory(DEMO_CLIENT_ID)
    authkit = create_authkit(
        client_id=DEMO_CLIENT_ID,
        webhook_secret=DEMO_WEBHOOK_SECRET,
        action_secret=DEMO_ACTION_SECRET,
        api_base_url=DEMO_API,
        engine=engine,
        http_transport=FakeJWKS(tokens, api_base_url=DEMO_API).transport(),
    )
    app = create_app(authkit)
    story = StoryResult()

    def show(step: str, response: httpx.Response, detail: str) -> None:
        story.steps.append((step, response.status_code, detail))
        out(f"  {step:<44} {response.status_code}  {detail}")

    out("\nPart 2: the example app (examples/app), a user's whole life")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo") as http,
    ):

        async def register(email: str) -> None:
            body, headers = signed_action_request(
                user_registration_action(email), DEMO_ACTION_SECRET
            )
            response = await http.post("/workos/action", content=body, headers=headers)
            verdict = verify_action_response(response.content, DEMO_ACTION_SECRET).payload
            reason = f" ({verdict.error_message})" if verdict.error_message else ""
            show(f"registration action for {email}", response, f"{verdict.verdict}{reason}")

        async def webhook(step: str, payload: dict[str, Any]) -> None:
            body, headers = signed_delivery(payload, DEMO_WEBHOOK_SECRET)
            response = await http.post("/workos/webhook", content=body, headers=headers)
            show(step, response, response.json().get("status", response.text))

        await register("mallory@gmail.com")
        await register("ada@acme.test")
        ada = "user_01ADALOVELACE"
        await webhook(
            "webhook user.created",
            factories.user_created(ada, email="ada@acme.test", first_name="Ada", last_name="L"),
        )
        with Session(engine) as session:
            app_user = session.exec(select(AppUser).where(AppUser.auth_id == ada)).one()
            out(f"{'':<4}users row: auth_id={app_user.auth_id} name={app_user.name!r}")

        token = tokens.mint(ada)
        out(f"{'':<4}minted an RS256 access token for {ada} (testing kit TokenFactory)")
        auth = {"Authorization": f"Bearer {token}"}
        me = await http.get("/me", headers=auth)
        show("GET /me", me, me.json().get("email", me.text))
        created = await http.post("/todo-lists", json={"name": "Launch plan"}, headers=auth)
        show("POST /todo-lists", created, created.json().get("name", created.text))
        lists = await http.get("/todo-lists", headers=auth)
        show("GET /todo-lists", lists, ", ".join(item["name"] for item in lists.json()))

        await webhook("webhook session.created", factories.session_created(ada))
        with Session(engine) as session:
            app_user = session.exec(select(AppUser).where(AppUser.auth_id == ada)).one()
            login = app_user.last_login_at.isoformat() if app_user.last_login_at else None
            out(f"{'':<4}users.last_login_at = {login}")

        await webhook("webhook user.deleted (id only)", factories.user_deleted(ada, id_only=True))
        with Session(engine) as session:
            remaining = len(session.exec(select(TodoList)).all())
            out(f"{'':<4}app user removed; todo lists left: {remaining}")
        refused = await http.get("/me", headers=auth)
        show("GET /me with the same token", refused, refused.headers.get("WWW-Authenticate", ""))
    engine.dispose()
    return story


async def run_organizations_story(database_url: str, out: Printer = print) -> StoryResult:
    """Part 3: a membership before its organization, ``/org/members`` for admins only, and a
    revoked session's token refused."""
    engine = make_engine(database_url)
    tokens = TokenFactory(DEMO_CLIENT_ID)
    authkit = create_authkit(
        client_id=DEMO_CLIENT_ID,
        webhook_secret=DEMO_WEBHOOK_SECRET,
        action_secret=DEMO_ACTION_SECRET,
        api_base_url=DEMO_API,
        engine=engine,
        http_transport=FakeJWKS(tokens, api_base_url=DEMO_API).transport(),
    )
    app = create_app(authkit)
    story = StoryResult()
    ada, grace, acme = "user_01ADALOVELACE", "user_01GRACEHOPPER", "org_01ACME"

    def show(step: str, response: httpx.Response, detail: str) -> None:
        story.steps.append((step, response.status_code, detail))
        out(f"  {step:<44} {response.status_code}  {detail}")

    def tables() -> None:
        with Session(engine) as session:
            organizations = session.exec(select(WorkOSOrganization)).all()
            memberships = session.exec(select(WorkOSOrganizationMembership)).all()
        names = ", ".join(str(o.name) for o in organizations) or "(none)"
        rows = ", ".join(f"{m.user_id}:{m.role}:{m.status}" for m in memberships) or "(none)"
        out(f"{'':<4}workos_organizations: {names}; workos_organization_memberships: {rows}")

    out("\nPart 3: organizations and memberships in the example app")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo") as http,
    ):

        async def webhook(step: str, payload: dict[str, Any]) -> None:
            body, headers = signed_delivery(payload, DEMO_WEBHOOK_SECRET)
            response = await http.post("/workos/webhook", content=body, headers=headers)
            show(step, response, response.json().get("status", response.text))

        await webhook(
            "webhook user.created (Ada)",
            factories.user_created(ada, email="ada@acme.test", first_name="Ada", last_name="L"),
        )
        await webhook(
            "webhook organization_membership.created",
            factories.organization_membership_created(
                ada, acme, membership_id="om_01ADA", role="admin", created_at=factories.at(10)
            ),
        )
        out(f"{'':<4}the membership arrived before its organization and was stored all the same:")
        out(f"{'':<4}the mirrored tables have no foreign keys, webhooks come in any order")
        tables()
        await webhook(
            "webhook organization.created (late)",
            factories.organization_created(
                "Acme", organization_id=acme, created_at=factories.at(0)
            ),
        )
        await webhook(
            "webhook organization_membership.created",
            factories.organization_membership_created(
                grace, acme, membership_id="om_01GRACE", created_at=factories.at(20)
            ),
        )
        out(f"{'':<4}Grace's membership is stored too, before Grace herself is synced")
        tables()

        # The token says role "admin": it is what WorkOS signed at sign-in.
        token = tokens.mint(ada, org_id=acme, role="admin")
        out(f"{'':<4}minted a token for {ada} with org_id={acme} and role=admin")
        auth = {"Authorization": f"Bearer {token}"}
        members = await http.get("/org/members", headers=auth)
        listed = ", ".join(
            f"{m['user_id']} ({m['email'] or 'not synced yet'})" for m in members.json()
        )
        show("GET /org/members (active admin)", members, listed)

        await webhook(
            "webhook organization_membership.updated",
            factories.organization_membership_updated(
                "om_01ADA", ada, acme, role="member", updated_at=factories.at(30)
            ),
        )
        out(f"{'':<4}Ada was demoted to member; her token still says role=admin")
        refused = await http.get("/org/members", headers=auth)
        show("GET /org/members with the same token", refused, refused.json().get("detail", ""))
        out(f"{'':<4}the mirrored membership is the newest state, so the app trusts it")

        # A sign-out: WorkOS sends session.revoked, and the token of that session is refused at
        # once (reject_revoked_sessions), though it would be valid for minutes more.
        sid = "session_01ADALAPTOP"
        session_token = tokens.mint(ada, org_id=acme, role="member", sid=sid)
        session_auth = {"Authorization": f"Bearer {session_token}"}
        await webhook(
            "webhook session.created (Ada's laptop)",
            factories.session_created(ada, session_id=sid, organization_id=acme),
        )
        me = await http.get("/me", headers=session_auth)
        show("GET /me with that session's token", me, me.json().get("id", ""))
        await webhook(
            "webhook session.revoked (Ada signs out)",
            factories.session_revoked(ada, session_id=sid),
        )
        signed_out = await http.get("/me", headers=session_auth)
        show("GET /me with the same token", signed_out, signed_out.json().get("detail", ""))
        out(f"{'':<4}the token has minutes left, but its session was revoked: refused at once")
    engine.dispose()
    return story


async def run(
    directory: Path, out: Printer = print
) -> tuple[SyncDemoResult, StoryResult, StoryResult]:
    """Run every part of the demo with its databases in ``directory``."""
    sync = await run_sync_demo(f"sqlite:///{directory / 'demo_sync.db'}", out)
    story = await run_example_app_story(f"sqlite:///{directory / 'demo_app.db'}", out)
    organizations = await run_organizations_story(f"sqlite:///{directory / 'demo_orgs.db'}", out)
    return sync, story, organizations


def main() -> None:
    """Entry point: run the demo in a temporary folder and print the story."""
    # The package logs refusals as warnings; show them inline, as an operator would see them.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stdout, format="    log: %(levelname)s %(message)s"
    )
    with tempfile.TemporaryDirectory(prefix="authkit-demo-") as directory:
        asyncio.run(run(Path(directory)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
