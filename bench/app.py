"""The app the benchmark harness drives: AuthKit plus a few endpoints to measure against.

Run by ``bench/run.py`` as ``uvicorn bench.app:app --workers 2``; configured only through
environment variables so every worker builds the same app:

* ``BENCH_DATABASE_URL``: the throwaway PostgreSQL the harness started.
* ``BENCH_FAILURE_FILE``: a file holding a probability (``0.1``); the user-event handlers raise
  that often. The harness rewrites the file to switch failures on and off for all workers at once.
* ``BENCH_JWKS_URL``: base URL of the harness's local JWKS server (the token scenarios).
* ``BENCH_TOKEN_CACHE_SIZE``: the verified-token cache size per worker (10,000 by default).
* ``BENCH_JWKS_REFETCH_COOLDOWN``: seconds between two JWKS fetches per worker (30 by default).
  The fuzzer serves several broken JWKS documents in turn and must make every worker fetch each
  one within seconds, so ``bench/run.py`` sets 1 s; the throttle itself stays in force.

Every handler call is written to ``bench_handler_calls`` in the sync's own transaction, so the
harness can check afterwards that each handler ran exactly once per effective change. That table
has no unique constraint on purpose: a second run of a handler must show up as a duplicate row to
count, not as a constraint error that rolls back and hides it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import anyio.to_thread
import jwt
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from fastapi_workos_authkit import AccessTokenClaims, AuthKit, Event, SignatureError, WorkOSUser
from fastapi_workos_authkit._routes.actions import (
    ActionResponse,
    ActionVerdict,
    AuthenticationAction,
    UserRegistrationAction,
)
from fastapi_workos_authkit._routes.body import read_limited_body
from fastapi_workos_authkit._routes.signatures import verify_signature

WEBHOOK_SECRET = "whsec_bench_secret"
ACTION_SECRET = "action_bench_secret"
CLIENT_ID = "client_01BENCHCLIENT"

bench_metadata = MetaData()

handler_calls = Table(
    "bench_handler_calls",
    bench_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(64), nullable=False, index=True),
    Column("handler", String(32), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
"""One row per handler call that committed."""

floor_rows = Table(
    "bench_floor",
    bench_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(255), nullable=False, unique=True),
    Column("signed_at_ms", BigInteger, nullable=False),
    Column("size", Integer, nullable=False),
)
"""What the floor endpoint writes: the least a signed webhook receiver can do (deduplicated on
the event id, as any receiver of at-least-once deliveries must)."""


def create_bench_tables(engine: Engine) -> None:
    """Create AuthKit's and the bench's tables (the harness does it once, before the workers)."""
    from fastapi_workos_authkit._sync.database import create_tables

    create_tables(engine)
    bench_metadata.create_all(engine)


class _FailureRate:
    """The handler failure probability, re-read when the control file changes."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._mtime: float | None = None
        self._rate = 0.0

    def current(self) -> float:
        if not self._path:
            return 0.0
        try:
            mtime = os.stat(self._path).st_mtime
        except FileNotFoundError:
            return 0.0
        if mtime != self._mtime:
            with open(self._path, encoding="ascii") as handle:
                text = handle.read().strip()
            self._rate = float(text or 0)
            self._mtime = mtime
        return self._rate


class InjectedFailure(Exception):
    """Raised by a handler on purpose, to exercise the failure and replay paths."""


_failures = _FailureRate(os.environ.get("BENCH_FAILURE_FILE"))
_PID = os.getpid()

authkit = AuthKit(
    client_id=CLIENT_ID,
    webhook_secret=WEBHOOK_SECRET,
    action_secret=ACTION_SECRET,
    api_key="sk_bench_key",
    api_base_url=os.environ.get("BENCH_JWKS_URL", "http://127.0.0.1:9"),
    database_url=os.environ.get("BENCH_DATABASE_URL", "sqlite:///./bench.db"),
    token_cache_size=int(os.environ.get("BENCH_TOKEN_CACHE_SIZE", "10000")),
    jwks_refetch_cooldown=float(os.environ.get("BENCH_JWKS_REFETCH_COOLDOWN", "30")),
)


def _record(handler: str) -> Callable[[Session, Event[Any]], None]:
    def record(session: Session, event: Event[Any]) -> None:
        rate = _failures.current()
        if rate and random.random() < rate:
            raise InjectedFailure(f"injected failure in the {handler} handler")
        session.execute(
            insert(handler_calls).values(
                event_id=event.id, handler=handler, user_id=event.data.id, pid=_PID
            )
        )

    record.__name__ = f"record_{handler.replace('.', '_')}"
    return record


# Every kind the storm mixes: each handler call is checked against the model.
for _handler in (
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organization_membership.created",
    "organization_membership.updated",
    "organization_membership.deleted",
    "session.created",
    "session.revoked",
):
    authkit.add_handler(_handler, _record(_handler))


@authkit.action("authentication")
async def check_sign_in(
    session: Session, action: AuthenticationAction, response: ActionResponse
) -> ActionVerdict:
    """A typical policy: deny unverified emails, allow the rest."""
    if not action.user.email_verified:
        return response.deny("Verify your email address first")
    return response.allow()


@authkit.action("user_registration")
async def check_sign_up(
    session: Session, action: UserRegistrationAction, response: ActionResponse
) -> ActionVerdict:
    """A typical policy: sign-ups only from work domains."""
    if action.user_data.email.endswith(("@gmail.com", "@yahoo.com")):
        return response.deny("Please use a work email address")
    return response.allow()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """AuthKit's lifespan: tables exist already (the harness made them), so this is cheap."""
    async with authkit.lifespan(app):
        yield


app = FastAPI(lifespan=lifespan, title="fastapi-workos-authkit bench app")
app.include_router(authkit.router())

_floor_engine: Engine | None = None


def _engine() -> Engine:
    global _floor_engine
    if _floor_engine is None:
        _floor_engine = authkit.engine
    return _floor_engine


def _floor_insert() -> Any:
    insert_for = postgresql.insert if _engine().dialect.name == "postgresql" else sqlite.insert
    return insert_for(floor_rows)


@app.post("/bench/floor")
async def floor(request: Request) -> dict[str, str]:
    """The least a signed webhook receiver does: an HMAC check, then one
    ``INSERT ... ON CONFLICT DO NOTHING`` keyed on the event id, in a thread."""
    body = await read_limited_body(request, authkit.settings.max_body_size)
    try:
        signed_at = verify_signature(
            body,
            request.headers.get("workos-signature"),
            WEBHOOK_SECRET,
            tolerance=authkit.settings.webhook_tolerance,
        )
    except SignatureError as exc:
        raise HTTPException(401, str(exc)) from None

    event_id = str(json.loads(body)["id"])

    def write() -> None:
        with _engine().begin() as connection:
            connection.execute(
                _floor_insert()
                .values(event_id=event_id, signed_at_ms=signed_at, size=len(body))
                .on_conflict_do_nothing(index_elements=["event_id"])
            )

    await anyio.to_thread.run_sync(write)
    return {"status": "ok"}


@app.get("/bench/noop")
async def noop() -> dict[str, str]:
    """The framework's floor: an async endpoint that does nothing."""
    return {"status": "ok"}


@app.get("/bench/pid")
async def pid() -> dict[str, int]:
    """Which worker answered (the harness finds and kills workers by pid)."""
    return {"pid": _PID}


@app.get("/bench/me")
async def me(user: Annotated[WorkOSUser, Depends(authkit.current_user)]) -> dict[str, str]:
    """The package's ``current_user``: verified token (cached), then one primary-key read."""
    return {"id": user.id, "email": user.email}


@app.get("/bench/claims")
async def claims(token: Annotated[AccessTokenClaims, Depends(authkit.claims)]) -> dict[str, str]:
    """``authkit.claims`` alone: 200 means the token verified (the fuzzer's verdict endpoint).

    ``/bench/me`` answers 401 for a valid token of a user never synced, which would hide a token
    that verifies when it must not; this endpoint does not look the user up.
    """
    return {"sub": token.sub}


# The hand-written alternative an app would write without the package: PyJWT's JWKS client,
# ``jwt.decode``, then a ``Session`` read, as a sync dependency (FastAPI runs it in a thread).
_bearer = HTTPBearer()
_jwks_client = jwt.PyJWKClient(
    f"{authkit.settings.api_base_url.rstrip('/')}/sso/jwks/{CLIENT_ID}", cache_keys=True
)
_ISSUERS = [
    f"https://{authkit.settings.api_hostname}/user_management/{CLIENT_ID}",
    f"https://{authkit.settings.api_hostname}",
    f"https://{authkit.settings.api_hostname}/",
]


def handwritten_user(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(_bearer)],
) -> WorkOSUser:
    """PyJWT plus a SQLModel ``Session``: the baseline ``current_user`` is compared with.

    A sync dependency decoding the token on every request, then a ``session.get``. The session
    is opened inside the dependency rather than through a ``yield`` dependency: at 64 concurrent
    requests the ``yield`` shape (as in ``bench/current_user_app.py``) stalled in this harness
    (no answer within a 3 s run), which would measure the stall, not the token check.
    """
    try:
        key = _jwks_client.get_signing_key_from_jwt(credentials.credentials)
        claims = jwt.decode(
            credentials.credentials,
            key.key,
            algorithms=["RS256"],
            issuer=_ISSUERS,
            leeway=10,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.PyJWTError:
        raise HTTPException(401, "invalid token") from None
    with Session(_engine()) as session:
        user = session.get(WorkOSUser, claims["sub"])
    if user is None:
        raise HTTPException(401, "unknown user")
    return user


@app.get("/bench/me-pyjwt")
def me_pyjwt(user: Annotated[WorkOSUser, Depends(handwritten_user)]) -> dict[str, str]:
    """The same answer as ``/bench/me``, through the hand-written dependency."""
    return {"id": user.id, "email": user.email}


@app.post("/bench/replay")
async def replay() -> dict[str, Any]:
    """Replay failed ledger events with ``authkit.replay_failed()``, when the package has it."""
    replay_failed = getattr(authkit, "replay_failed", None)
    if replay_failed is None:
        raise HTTPException(404, "this version of the package has no replay_failed()")
    result = await replay_failed()
    return {
        name: getattr(result, name)
        for name in ("replayed", "succeeded", "failed")
        if isinstance(getattr(result, name, None), int)
    }


ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def _with_worker_header(inner: ASGIApp) -> ASGIApp:
    """Add ``X-Bench-Worker: <pid>`` to every answer (plain ASGI: no per-request task)."""
    header = (b"x-bench-worker", str(_PID).encode("ascii"))

    async def wrapped(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            await send(message)

        await inner(scope, receive, send_with_header)

    return wrapped


fastapi_app = app
app = _with_worker_header(fastapi_app)  # type: ignore[assignment]

__all__ = ["app", "create_bench_tables"]
