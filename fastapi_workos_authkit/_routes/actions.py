"""WorkOS Actions: typed requests, allow/deny verdicts, the signed reply and the route.

WorkOS calls the Actions endpoint synchronously during a sign-up or a sign-in and waits for a
signed verdict. Anything other than a verified 200 makes WorkOS apply the endpoint's configured
fallback (deny by default), so every failure here answers a non-2xx status rather than guessing a
verdict on the app's behalf.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Concatenate,
    Literal,
    ParamSpec,
    TypeAlias,
    TypeVar,
    get_args,
)

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlmodel import Session

from .._config import Clock, UnhandledActionPolicy
from .._exceptions import ConfigurationError, InvalidEventError
from .._exceptions import SessionOnLoopError as SessionOnLoopError
from .._sync.database import is_unavailable
from .._sync.events import Organization, OrganizationMembership, User, UTCTimestamp, WorkOSModel
from .signatures import compute_signature
from .signed_requests import (
    JSON_BODY_DOC,
    SIGNATURE_HEADER_DOC,
    SIGNED_REQUEST_ERRORS,
    read_signed_json,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

logger = logging.getLogger("fastapi_workos_authkit")

ActionType = Literal["authentication", "user_registration"]
"""The action types an app can handle: ``@authkit.action("user_registration")``."""

ACTION_TYPES: tuple[str, ...] = get_args(ActionType)

# --- Request models -------------------------------------------------------------------------


class UserData(WorkOSModel):
    """What a person typed when signing up: there is no WorkOS user yet."""

    object: str = "user_data"
    email: str
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class Invitation(WorkOSModel):
    """The invitation a sign-up is accepting, when there is one."""

    object: str = "invitation"
    id: str
    email: str | None = None
    state: str | None = None
    organization_id: str | None = None
    inviter_user_id: str | None = None
    accepted_at: UTCTimestamp | None = None
    revoked_at: UTCTimestamp | None = None
    expires_at: UTCTimestamp | None = None
    created_at: UTCTimestamp | None = None
    updated_at: UTCTimestamp | None = None


class AuthenticationAction(WorkOSModel):
    """An ``authentication_action_context``: a known user is signing in.

    ``organization`` and ``organization_membership`` are set when the sign-in is for an
    organization. Unknown fields are kept (``model_extra``), as WorkOS adds fields over time.
    """

    object: Literal["authentication_action_context"]
    id: str
    user: User
    organization: Organization | None = None
    organization_membership: OrganizationMembership | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    device_fingerprint: str | None = None
    issuer: str | None = None

    @property
    def action_type(self) -> ActionType:
        """``"authentication"``: the name handlers are registered under."""
        return "authentication"


class UserRegistrationAction(WorkOSModel):
    """A ``user_registration_action_context``: someone is signing up.

    ``user_data`` holds what they entered; ``invitation`` is set when they accept one.
    """

    object: Literal["user_registration_action_context"]
    id: str
    user_data: UserData
    invitation: Invitation | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    device_fingerprint: str | None = None

    @property
    def action_type(self) -> ActionType:
        """``"user_registration"``: the name handlers are registered under."""
        return "user_registration"


Action: TypeAlias = AuthenticationAction | UserRegistrationAction
"""Any Action request this package understands."""

_ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Annotated[Action, Field(discriminator="object")])

_CONTEXT_SUFFIX = "_action_context"


def parse_action(payload: Any) -> Action:
    """Validate decoded JSON into a typed Action; raise `InvalidEventError` if it is not one."""
    if not isinstance(payload, dict):
        raise InvalidEventError("An Action request must be a JSON object")
    try:
        return _ACTION_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        # Name the fields, never echo their values: they hold personal data.
        problems = [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        raise InvalidEventError("Invalid Action request: " + "; ".join(problems[:5])) from None


# --- Verdicts and the signed reply -------------------------------------------------------------


@dataclass(frozen=True)
class ActionVerdict:
    """A decision built by `ActionResponse.allow` or `ActionResponse.deny`.

    Attributes:
        action_type: Which action this answers (decides the reply's ``object``).
        verdict: ``"Allow"`` or ``"Deny"``, spelled as WorkOS expects.
        error_message: Shown to the person on a deny; ``None`` sends no message.
    """

    action_type: str
    verdict: Literal["Allow", "Deny"]
    error_message: str | None = None

    @property
    def allowed(self) -> bool:
        """Whether this verdict lets the sign-up or sign-in go ahead."""
        return self.verdict == "Allow"

    @property
    def response_object(self) -> str:
        """The reply's ``object``: ``authentication_action_response`` and so on."""
        return f"{self.action_type}_action_response"

    def payload(self, timestamp_ms: int) -> dict[str, Any]:
        """The payload to sign, keys in WorkOS's order; ``error_message`` only on a deny."""
        payload: dict[str, Any] = {"timestamp": timestamp_ms, "verdict": self.verdict}
        if self.verdict == "Deny" and self.error_message is not None:
            payload["error_message"] = self.error_message
        return payload


class ActionResponse:
    """Builds verdicts for one action; handlers receive it as their third argument.

    ``return response.allow()`` or ``return response.deny("Please use your work email")``.
    """

    __slots__ = ("action_type",)

    def __init__(self, action_type: ActionType) -> None:
        if action_type not in ACTION_TYPES:
            raise ValueError(f"Unknown action type {action_type!r}: use one of {ACTION_TYPES}")
        self.action_type: ActionType = action_type

    def allow(self) -> ActionVerdict:
        """Let the sign-up or sign-in go ahead."""
        return ActionVerdict(self.action_type, "Allow")

    def deny(self, message: str | None = None) -> ActionVerdict:
        """Refuse it; ``message`` is shown to the person (keep it short and helpful)."""
        if message is not None and not isinstance(message, str):
            raise TypeError("deny() takes the message to show as a string")
        return ActionVerdict(self.action_type, "Deny", message)

    def __repr__(self) -> str:
        return f"ActionResponse({self.action_type!r})"


def compact_json(value: Any) -> str:
    """JSON as JavaScript's ``JSON.stringify`` writes it: no spaces, non-ASCII characters raw."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sign_action_response(verdict: ActionVerdict, secret: str, *, timestamp_ms: int) -> bytes:
    """Return the body of the signed reply to WorkOS for ``verdict`` (HTTP 200, JSON).

    The signature covers ``f"{timestamp}.{compact_json(payload)}"``, and the body carries the
    payload serialised the same way, so a verifier can recompute it from the bytes sent.
    """
    payload_json = compact_json(verdict.payload(timestamp_ms))
    signature = compute_signature(timestamp_ms, payload_json.encode("utf-8"), secret)
    # Assembled by hand so the payload bytes in the body are exactly the bytes that were signed.
    return (
        f'{{"object":{compact_json(verdict.response_object)},'
        f'"payload":{payload_json},"signature":"{signature}"}}'
    ).encode()


class ActionResponsePayload(BaseModel):
    """The signed part of the reply."""

    timestamp: int = Field(description="Unix time in milliseconds when the verdict was signed.")
    verdict: Literal["Allow", "Deny"]
    error_message: str | None = Field(
        default=None, description="Present only on a deny with a message."
    )


class SignedActionResponse(BaseModel):
    """The reply WorkOS verifies: the verdict, and its signature with the action secret."""

    object: Literal["authentication_action_response", "user_registration_action_response"]
    payload: ActionResponsePayload
    signature: str = Field(description="hex HMAC-SHA256 of '<timestamp>.<compact payload>'.")


# --- Handlers ------------------------------------------------------------------------------------

ActionHandler = Callable[[Session, Any, ActionResponse], Any]
"""``(session, action, response) -> ActionVerdict``, sync or async."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ActionSession(Session):
    """The session an ``async`` Action handler receives: a SQLModel `Session` for the loop.

    Its database work runs in a worker thread: ``await session.run_sync(function, *args)`` calls
    ``function(session, *args)`` there and returns its result, like SQLAlchemy's
    ``AsyncSession.run_sync``. ``session.add(row)`` needs no database and works directly; the
    commit after the verdict happens in a worker thread too. Anything that would reach the
    database from the event loop itself (a query, a flush, a lazy load, a commit) raises
    `SessionOnLoopError` instead of blocking the loop.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # Created on the loop by the Actions route: this is the thread that must never wait.
        self._loop_thread = threading.get_ident()
        self._lock: anyio.Lock | None = None

    async def run_sync(
        self, function: Callable[Concatenate[Session, _P], _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Run ``function(session, *args, **kwargs)`` in a worker thread and return its result.

        Calls are taken one at a time: a session is not safe for concurrent use. A call that is
        running when the handler's budget ends is waited for (its thread cannot be stopped, and
        the session must not be closed under it), then the handler is cancelled as usual.
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            return await anyio.to_thread.run_sync(
                functools.partial(function, self, *args, **kwargs)
            )

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        # Every statement, flush and lazy load asks for its bind before taking a connection,
        # so refusing here stops the I/O before a pool checkout could block the loop.
        self._refuse_on_loop("query or flush")
        return super().get_bind(*args, **kwargs)

    def commit(self) -> None:
        self._refuse_on_loop("commit")
        super().commit()

    def rollback(self) -> None:
        self._refuse_on_loop("roll back")
        super().rollback()

    def close(self) -> None:
        if self.in_transaction():
            self._refuse_on_loop("close")  # closing an open transaction rolls it back
        super().close()

    def _refuse_on_loop(self, what: str) -> None:
        if threading.get_ident() == self._loop_thread:
            raise SessionOnLoopError(
                f"An async Action handler tried to {what} on the event loop, which would block "
                "every other request until the database answers. Use "
                "`await session.run_sync(function, ...)` to run database work in a worker "
                "thread, or make the handler a plain `def`."
            )


class ActionRegistry:
    """At most one handler per action type: two verdicts for one request cannot be combined."""

    def __init__(self) -> None:
        self._handlers: dict[str, ActionHandler] = {}

    def add(self, action_type: str, handler: ActionHandler) -> None:
        """Register ``handler`` for ``action_type``; a second handler for a type is an error."""
        if action_type not in ACTION_TYPES:
            raise ValueError(
                f"Unknown action type {action_type!r}: use 'user_registration' or 'authentication'"
            )
        if not callable(handler):
            raise TypeError(f"The handler for {action_type!r} actions must be callable")
        if action_type in self._handlers:
            raise ValueError(f"A handler for {action_type!r} actions is already registered")
        self._handlers[action_type] = handler

    def get(self, action_type: str) -> ActionHandler | None:
        """The handler for ``action_type``, if any."""
        return self._handlers.get(action_type)

    def __bool__(self) -> bool:
        return bool(self._handlers)


class _HandlerFailed(Exception):
    """The handler raised or returned something other than a verdict (already logged)."""

    def __init__(self, unavailable: bool = False) -> None:
        super().__init__()
        self.unavailable = unavailable


class _TimedOut(Exception):
    """The handler ran past the time budget (already logged)."""


class _Saturated(Exception):
    """Every sync handler slot is taken (already logged): answer 503 without running it."""


MAX_SYNC_ACTION_HANDLERS = 20
"""Sync Action handlers that may run at once per `AuthKit`, those past the timeout included."""


class SyncHandlerSlots:
    """At most ``size`` sync Action handler threads at once, counting abandoned ones.

    A handler that runs past ``action_timeout`` is answered 504 but its thread cannot be
    stopped, and it keeps its database connection until it returns. Its slot is therefore
    released by the thread itself when it really ends, not when the request gives up on it
    (unlike anyio's thread limiter, which hands the token back on abandon). When every slot is
    held by an abandoned thread, a new sync Action is refused at once with 503 instead of piling
    up threads; while some are held by handlers still inside their time, a request waits for one
    (within its own ``action_timeout``), as a burst of sign-ins larger than the pool should.
    Each `AuthKit` has one, ``authkit.sync_action_slots``, sized by its
    ``max_sync_action_handlers`` option.

    A lock-guarded counter rather than an anyio `CapacityLimiter`: the release happens in the
    worker thread, and an anyio limiter may only be released from its event loop. A waiting
    request sleeps on an anyio `Event` that the releasing thread sets through the loop.
    """

    def __init__(self, size: int = MAX_SYNC_ACTION_HANDLERS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError("max_sync_action_handlers must be a whole number, at least 1.")
        self.size = size
        self._lock = threading.Lock()
        self._taken = 0
        self._abandoned = 0
        self._waiters: deque[anyio.Event] = deque()

    @property
    def taken(self) -> int:
        """How many slots are held now (running or abandoned handlers)."""
        return self._taken

    @property
    def waiting(self) -> int:
        """How many requests are waiting for a slot now."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot without waiting; False when all are taken."""
        with self._lock:
            if self._taken >= self.size:
                return False
            self._taken += 1
        return True

    async def acquire(self) -> bool:
        """Take a slot, waiting for one while a handler inside its time holds one; False at once
        when every slot is held by an abandoned thread. Call it on the event loop; cancel it
        (a timeout scope) to stop waiting.

        Waiters are served in order: a released slot is handed to the first waiter, never left
        for a newcomer to take first (which starved early waiters into the p99).
        """
        with self._lock:
            if self._taken < self.size and not self._waiters:
                self._taken += 1
                return True
            if self._abandoned >= self.size:
                return False
            granted = anyio.Event()
            self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            with self._lock:
                handed_over = granted not in self._waiters
                if not handed_over:
                    self._waiters.remove(granted)
            if handed_over:
                self.release(on_loop=True)  # a slot was handed to us: pass it on
            raise
        return True

    def abandon(self) -> None:
        """Count a held slot as held by an abandoned thread (until that thread releases it)."""
        with self._lock:
            self._abandoned += 1

    def release(self, *, abandoned: bool = False, on_loop: bool = False) -> None:
        """Give a slot back, or hand it to the first waiter: from the worker thread that held
        it, or ``on_loop``; ``abandoned`` if it had been counted by `abandon`."""
        with self._lock:
            if abandoned:
                self._abandoned -= 1
            if not self._waiters:
                self._taken -= 1
                return
            granted = self._waiters.popleft()  # the slot changes hands; taken stays the same
        if on_loop:
            granted.set()
            return
        # RuntimeError: the loop is gone (shutting down), so nobody is waiting any more.
        with suppress(RuntimeError):
            anyio.from_thread.run_sync(granted.set)


@dataclass
class _SyncRun:
    """State shared between the request and a sync handler's worker thread.

    A timed-out worker cannot be stopped, only abandoned; the lock makes "commit" and "abandon"
    mutually exclusive, so an abandoned handler's writes are always rolled back.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    abandoned: bool = False
    committing: bool = False
    released: bool = False
    counted_abandoned: bool = False
    verdict: ActionVerdict | None = None
    error: BaseException | None = None


def _as_verdict(result: Any) -> ActionVerdict:
    if isinstance(result, ActionVerdict):
        return result
    raise TypeError(
        f"returned {type(result).__name__} instead of response.allow() or response.deny(...)"
    )


def _is_async(handler: ActionHandler) -> bool:
    # An object with an async __call__ is an async handler too.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the method itself is inspected
    )


def _log_failure(action: Action, exc: BaseException) -> None:
    # The exception message and locals may hold the email: log the type and the stack only,
    # except for our own refusal, whose message holds no data and says how to fix the handler.
    stack = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    logger.error(
        "action %s (%s): the handler failed with %s; its writes are rolled back and the "
        "request is refused, so WorkOS applies its fallback. Stack:\n%s",
        action.id,
        action.action_type,
        f"{type(exc).__name__}: {exc}"
        if isinstance(exc, SessionOnLoopError)
        else type(exc).__name__,
        stack,
    )


async def run_handler(
    handler: ActionHandler,
    engine: Engine,
    action: Action,
    budget: float,
    slots: SyncHandlerSlots | None = None,
) -> ActionVerdict:
    """Call ``handler`` with a fresh session; commit on a verdict, roll back on anything else.

    A sync handler runs in a worker thread holding one of ``slots`` until that thread ends.
    Raises `_HandlerFailed`, `_TimedOut` or `_Saturated`, after logging, when there is no
    verdict to send.
    """
    response = ActionResponse(action.action_type)
    if _is_async(handler):
        return await _run_async(handler, engine, action, response, budget)
    return await _run_sync(handler, engine, action, response, budget, slots or SyncHandlerSlots(1))


async def _run_async(
    handler: ActionHandler,
    engine: Engine,
    action: Action,
    response: ActionResponse,
    budget: float,
) -> ActionVerdict:
    # The handler runs on the loop; its database work goes through `ActionSession.run_sync`
    # in a worker thread, and the session refuses I/O on the loop itself.
    session = ActionSession(engine)
    try:
        with anyio.move_on_after(budget) as scope:
            result = await handler(session, action, response)
        # A handler that blocks the loop (or whose run_sync call outlived the budget) cannot be
        # interrupted; it still must not beat the budget.
        if scope.cancelled_caught or anyio.current_time() >= scope.deadline:
            _log_timeout(action, budget)
            raise _TimedOut
        verdict = _as_verdict(result)
        # A handler that never touched the session has nothing to commit: skip the thread hop.
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.commit)
        return verdict
    except (_TimedOut, anyio.get_cancelled_exc_class()):
        raise
    except Exception as exc:
        _log_failure(action, exc)
        raise _HandlerFailed(is_unavailable(exc)) from None
    finally:
        if session.in_transaction():
            # Closing an uncommitted session rolls back whatever the handler did; shielded so a
            # client that hangs up does not leave the connection checked out.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close)
        else:
            session.close()  # no connection held: nothing to wait for


async def _run_sync(
    handler: ActionHandler,
    engine: Engine,
    action: Action,
    response: ActionResponse,
    budget: float,
    slots: SyncHandlerSlots,
) -> ActionVerdict:
    # Waiting for a slot counts against the same budget as the handler.
    deadline = anyio.current_time() + budget
    acquired = False
    with anyio.move_on_at(deadline):
        acquired = await slots.acquire()
    if not acquired:
        logger.error(
            "action %s (%s): %d sync handlers are still running past action_timeout; "
            "answering 503 so WorkOS applies its fallback",
            action.id,
            action.action_type,
            slots.size,
        )
        raise _Saturated
    run = _SyncRun()

    def work() -> None:
        with run.lock:
            if run.abandoned:
                return  # given up on before the thread started: the request freed the slot
            run.started = True
        try:
            with Session(engine) as session:
                verdict = _as_verdict(handler(session, action, response))
                with run.lock:
                    if run.abandoned:
                        return  # leaving the block rolls back
                    run.committing = True
                if session.in_transaction():
                    session.commit()
                run.verdict = verdict
        except BaseException as exc:
            run.error = exc
        finally:
            run.done.set()
            with run.lock:
                run.released = True
                counted = run.counted_abandoned
            # Only now are the thread and its connection really free.
            slots.release(abandoned=counted)

    def give_up() -> bool:
        """Abandon the run unless its commit started; True if the commit is under way."""
        with run.lock:
            late = run.committing
            run.abandoned = not late
            if not run.started:
                run.started = True  # never will: its slot is released here, once
                slots.release(on_loop=True)
            elif run.abandoned and not run.released:
                run.counted_abandoned = True
                slots.abandon()
        return late

    try:
        with anyio.move_on_at(deadline) as scope:
            await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        # The request itself was cancelled (the client hung up): nobody will see the verdict,
        # so the handler's writes must not be kept either.
        give_up()
        raise
    if scope.cancelled_caught:
        late = give_up()
        if not late:
            _log_timeout(action, budget)
            raise _TimedOut
        # The handler answered in time and its commit is under way: wait for that, rather than
        # throw away a verdict whose writes are being kept.
        logger.warning(
            "action %s (%s): action_timeout=%ss passed during the commit; waiting for it",
            action.id,
            action.action_type,
            f"{budget:g}",
        )
        await anyio.to_thread.run_sync(run.done.wait)
    if run.error is not None:
        _log_failure(action, run.error)
        raise _HandlerFailed(is_unavailable(run.error))
    assert run.verdict is not None
    return run.verdict


def _log_timeout(action: Action, budget: float) -> None:
    logger.error(
        "action %s (%s): the handler ran past action_timeout=%ss; answering 504 so WorkOS "
        "applies its fallback, and rolling back its writes",
        action.id,
        action.action_type,
        f"{budget:g}",
    )


# --- The route -----------------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "The body verified but is not a valid Action request."},
    **SIGNED_REQUEST_ERRORS,
    500: {"description": "The handler raised or returned no verdict; WorkOS applies its fallback."},
    503: {
        "description": (
            "The database is unavailable, or every sync handler slot is taken "
            "(max_sync_action_handlers); WorkOS applies its fallback."
        )
    },
    504: {"description": "The handler ran past action_timeout; WorkOS applies its fallback."},
}


def add_action_route(
    router: APIRouter,
    *,
    secret: str | Callable[[], str],
    tolerance: float,
    max_body_size: int,
    clock: Clock,
    engine: Callable[[], Engine],
    handlers: ActionRegistry,
    slots: SyncHandlerSlots,
    timeout: float,
    unhandled: UnhandledActionPolicy,
) -> None:
    """Mount ``POST /action`` on ``router``.

    Args:
        secret: The Actions signing secret: verifies requests and signs the replies. A callable
            is asked on every request (`AuthKit.override` swaps the secret of a mounted app).
        tolerance: Accepted clock skew of a request's signature, in seconds.
        max_body_size: Largest accepted body, in bytes.
        clock: Returns Unix seconds (signature checks and reply timestamps).
        engine: Returns the engine the handlers' sessions use (it may be created lazily).
        handlers: The registered Action handlers, looked up per request.
        slots: Bounds the sync handler threads, abandoned ones included.
        timeout: Time budget of a handler, in seconds.
        unhandled: The verdict for an action type without a handler.
    """

    @router.post(
        "/action",
        response_class=Response,
        responses={
            200: {
                "model": SignedActionResponse,
                "description": "The signed verdict.",
            },
            **_ERRORS,
        },
        summary="Decide a WorkOS Action (sign-up or sign-in)",
        description=(
            "Verifies the `WorkOS-Signature` header over the raw body with the action secret, "
            "calls the app's handler for the action type, and answers its verdict signed with "
            "the same secret. Any non-2xx answer makes WorkOS apply the endpoint's fallback."
        ),
        openapi_extra={"parameters": [SIGNATURE_HEADER_DOC], "requestBody": JSON_BODY_DOC},
    )
    async def decide_action(request: Request) -> Response:
        started = time.perf_counter()
        key = secret() if callable(secret) else secret
        payload = await read_signed_json(
            request,
            secret=key,
            tolerance=tolerance,
            max_body_size=max_body_size,
            clock=clock,
            route="action",
        )
        unknown = _unknown_action_type(payload)
        if unknown is not None:
            # A type WorkOS added after this release: no model, so no handler; apply the policy.
            return _unhandled(clock, key, unhandled, payload, unknown, started)
        try:
            action = parse_action(payload)
        except InvalidEventError as exc:
            # The message names fields, never their values, so it is safe to log.
            logger.warning("action refused: %s", exc)
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None

        handler = handlers.get(action.action_type)
        if handler is None:
            return _unhandled(clock, key, unhandled, payload, action.action_type, started)
        try:
            verdict = await run_handler(handler, engine(), action, timeout, slots)
        except _Saturated:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "Too many action handlers are still running; nothing was run",
                headers={"Retry-After": "5"},
            ) from None
        except _TimedOut:
            raise HTTPException(
                status.HTTP_504_GATEWAY_TIMEOUT,
                "The action handler ran past its time budget; nothing was committed",
            ) from None
        except _HandlerFailed as exc:
            if exc.unavailable:
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE, "The database is unavailable"
                ) from None
            raise HTTPException(
                status.HTTP_500_INTERNAL_SERVER_ERROR,
                "The action handler failed; nothing was committed",
            ) from None
        if verdict.action_type != action.action_type:
            # A verdict built for the other action type would be signed under the wrong object.
            verdict = ActionVerdict(action.action_type, verdict.verdict, verdict.error_message)
        return _answer(clock, key, action.id, verdict, started)


def _unknown_action_type(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return None
    kind = payload.get("object")
    if not isinstance(kind, str) or not kind.endswith(_CONTEXT_SUFFIX):
        return None
    name = kind.removesuffix(_CONTEXT_SUFFIX)
    if name in ACTION_TYPES or not name.replace("_", "").isalpha() or len(name) > 64:
        return None
    return name


def _unhandled(
    clock: Clock,
    secret: str,
    policy: UnhandledActionPolicy,
    payload: dict[str, Any],
    action_type: str,
    started: float,
) -> Response:
    action_id = payload.get("id") if isinstance(payload.get("id"), str) else "<no id>"
    logger.warning(
        "action %s (%s): no handler is registered for this action type; answering %s "
        "(unhandled_action=%r)",
        action_id,
        action_type,
        policy,
        policy,
    )
    verdict = ActionVerdict(action_type, "Allow" if policy == "allow" else "Deny")
    return _answer(clock, secret, str(action_id), verdict, started)


def _answer(
    clock: Clock, secret: str, action_id: str, verdict: ActionVerdict, started: float
) -> Response:
    timestamp_ms = int(clock() * 1000)
    body = sign_action_response(verdict, secret, timestamp_ms=timestamp_ms)
    logger.info(
        "action %s (%s): %s in %.1f ms",
        action_id,
        verdict.action_type,
        verdict.verdict,
        (time.perf_counter() - started) * 1000,
    )
    return Response(content=body, media_type="application/json")
