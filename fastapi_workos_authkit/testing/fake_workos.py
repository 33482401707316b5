"""A stateful fake of the WorkOS REST API: users, organizations, an events log, faults.

`FakeWorkOS` is a plain ASGI app. Reach it in-process with ``fake.transport()`` (pass it to
``AuthKit(http_transport=...)``), or serve it on a loopback port with `FakeWorkOSServer` (uvicorn
in a thread) or ``python -m fastapi_workos_authkit.testing`` (uvicorn in its own
process, for command-line tests and benchmarks). Serving needs uvicorn, the ``server`` extra.

It implements the WorkOS REST endpoints the package calls:

* ``GET /user_management/users`` (``limit``, ``after``, ``before``, ``order``), oldest first;
* ``GET /user_management/users/{id}`` (404 for an unknown or deleted user);
* ``GET /organizations`` and ``GET /organizations/{id}``;
* ``GET /user_management/organization_memberships`` (``user_id`` and/or ``organization_id``
  required, ``statuses``, default only ``active``) and ``.../organization_memberships/{id}``
  (served by `OrganizationStore`, in ``_fake_workos_orgs.py``);
* ``GET /events`` (``events`` comma-joined or repeated, ``after``, ``range_start``, ``limit``);
* ``GET``, ``POST /webhook_endpoints`` and ``PATCH``, ``DELETE /webhook_endpoints/{id}``, the
  signing secret returned by the create call only (`WebhookEndpointStore`, in
  ``_fake_workos_webhooks.py``);
* ``GET /sso/jwks/{client_id}`` when constructed with a JWKS;

checks the bearer API key (401 otherwise), and injects faults on demand: ``429`` with
``Retry-After``, storms of 5xx answers, and connections dropped half-way through a page, each
on the next matching requests or only after ``skip`` of them (the Nth page of a listing).
Changing users with `create_user`, `update_user` and `delete_user` appends the matching events,
and so do `create_organization`, `update_organization`, `delete_organization`,
`create_membership`, `update_membership` and `delete_membership`.

Organizations, memberships and webhook endpoints already live in their own stores; what is
left (users, events, faults, the server) shares one request dispatcher, so this module stays
longer than most.
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx

from . import factories
from ._fake_workos_orgs import OrganizationStore
from ._fake_workos_webhooks import ENDPOINTS, WebhookEndpointStore

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

__all__ = ["FakeWorkOS", "FakeWorkOSServer", "Fault", "RecordedRequest"]


class ConnectionDropped(Exception):
    """Raised by the fake after sending half a page: the server "crashed" mid-response."""


@dataclass
class Fault:
    """One injected failure, applied to the next ``times`` requests whose path starts with
    ``path``, once ``skip`` of them have been let through: an HTTP ``status`` (with
    ``Retry-After`` when set), or a dropped connection."""

    kind: str  # "status" or "drop"
    times: int
    path: str = "/"
    status: int = 503
    retry_after: float | None = None
    skip: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake received: its path and decoded query (values in order)."""

    path: str
    query: list[tuple[str, str]]
    status: int
    method: str = "GET"

    def params(self, name: str) -> list[str]:
        """Every value of query parameter ``name``."""
        return [value for key, value in self.query if key == name]


@dataclass
class _Log:
    """Items in creation order with a position index, so ``after`` cursors are O(1)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)

    def append(self, item: dict[str, Any]) -> None:
        self.position[item["id"]] = len(self.items)
        self.items.append(item)


class FakeWorkOS:
    """A stateful, in-memory WorkOS for tests (an ASGI app).

    Args:
        api_key: The bearer key requests must carry (anything else gets 401).
        jwks: A JWKS document to serve at ``/sso/jwks/{client_id}`` (any client id unless
            ``client_id`` is given).
        client_id: Restrict the JWKS route to this client id.
        now: The clock used to stamp users and events; timestamps are forced to increase by at
            least a millisecond each time, as WorkOS's ``updated_at`` would.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk_test_key",
        jwks: dict[str, Any] | None = None,
        client_id: str | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.api_key = api_key
        self.jwks = jwks
        self.client_id = client_id
        self._now = now or (lambda: datetime.now(UTC))
        self._last_stamp: datetime | None = None
        self._users = _Log()
        self._live: dict[str, dict[str, Any]] = {}
        self._events = _Log()
        self._organizations = OrganizationStore(self._log)
        self.webhook_endpoints = WebhookEndpointStore()
        """The webhook endpoints; ``.endpoints.live`` by id, ``.secret_of(id)``."""
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    # -- state -----------------------------------------------------------------------------

    def create_user(self, user_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a user (fields as in `factories.user`) and log ``user.created``."""
        with self._lock:
            stamp = self._stamp()
            user = factories.user(user_id, created_at=stamp, updated_at=stamp, **fields)
            if user["id"] in self._users.position:
                raise ValueError(f"user {user['id']} already exists")
            self._users.append(user)
            self._live[user["id"]] = user
            self._log("user.created", user, stamp)
            return copy.deepcopy(user)

    def update_user(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a live user, bump its ``updated_at`` and log ``user.updated``."""
        with self._lock:
            user = self._live.get(user_id)
            if user is None:
                raise KeyError(f"no live user {user_id}")
            stamp = self._stamp()
            user.update(fields)
            user["updated_at"] = factories.iso(stamp)
            self._log("user.updated", user, stamp)
            return copy.deepcopy(user)

    def delete_user(self, user_id: str) -> None:
        """Delete a live user and log ``user.deleted`` (with the full user object)."""
        with self._lock:
            user = self._live.pop(user_id, None)
            if user is None:
                raise KeyError(f"no live user {user_id}")
            self._log("user.deleted", user, self._stamp())

    def create_organization(
        self, organization_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Create an organization (fields as in `factories.organization`: ``name``, ``domains``
        as a list of domain names, ``external_id``, ``metadata``) and log
        ``organization.created``."""
        with self._lock:
            return self._organizations.create_organization(self._stamp(), organization_id, fields)

    def update_organization(self, organization_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a live organization (as WorkOS sends them), bump its
        ``updated_at`` and log ``organization.updated``."""
        with self._lock:
            return self._organizations.update_organization(self._stamp(), organization_id, fields)

    def delete_organization(self, organization_id: str) -> None:
        """Delete a live organization and log ``organization.deleted`` (the full object).

        Its memberships are left alone: delete them with `delete_membership`."""
        with self._lock:
            self._organizations.delete_organization(self._stamp(), organization_id)

    def create_membership(
        self,
        user_id: str,
        organization_id: str,
        membership_id: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create a membership (fields as in `factories.organization_membership`: ``role``,
        ``roles``, ``status``...) and log ``organization_membership.created``.

        The user and the organization need not exist in the fake, so a test can serve a
        membership whose user or organization is unknown."""
        with self._lock:
            return self._organizations.create_membership(
                self._stamp(), user_id, organization_id, membership_id, fields
            )

    def update_membership(self, membership_id: str, **fields: Any) -> dict[str, Any]:
        """Change a live membership (``role="admin"``, ``roles=[...]`` as slugs, ``status``...),
        bump its ``updated_at`` and log ``organization_membership.updated``."""
        with self._lock:
            return self._organizations.update_membership(self._stamp(), membership_id, fields)

    def delete_membership(self, membership_id: str) -> None:
        """Delete a live membership and log ``organization_membership.deleted``."""
        with self._lock:
            self._organizations.delete_membership(self._stamp(), membership_id)

    @property
    def organizations(self) -> list[dict[str, Any]]:
        """The live organizations, oldest first (deep copies)."""
        with self._lock:
            store = self._organizations.organizations
            return [copy.deepcopy(o) for o in store.items if o["id"] in store.live]

    @property
    def memberships(self) -> list[dict[str, Any]]:
        """The live memberships, oldest first (deep copies)."""
        with self._lock:
            store = self._organizations.memberships
            return [copy.deepcopy(m) for m in store.items if m["id"] in store.live]

    def add_event(
        self, event_type: str, data: dict[str, Any], *, event_id: str | None = None
    ) -> dict[str, Any]:
        """Log an event of any type (sessions, organizations...) without changing users.

        ``event_id`` overrides the generated id (to serve a hostile or odd one)."""
        with self._lock:
            return copy.deepcopy(self._log(event_type, data, self._stamp(), event_id))

    def restore(
        self,
        *,
        users: Sequence[dict[str, Any]] = (),
        organizations: Sequence[dict[str, Any]] = (),
        memberships: Sequence[dict[str, Any]] = (),
        events: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Load saved live objects and an events log as they are, logging no new events.

        For resuming a fake that was saved from `users`, `organizations`, `memberships` and
        `events` (the ``dev serve`` state folder does this), so that ids, timestamps and the
        Events API's cursors stay valid across a restart. Call it on a fresh fake."""
        with self._lock:
            for saved in users:
                user = copy.deepcopy(saved)
                self._users.append(user)
                self._live[user["id"]] = user
            for organization in organizations:
                self._organizations.organizations.add(copy.deepcopy(organization), "organization")
            for membership in memberships:
                self._organizations.memberships.add(copy.deepcopy(membership), "membership")
            for event in events:
                self._events.append(copy.deepcopy(event))
            stamps = [_parse(e["created_at"]) for e in self._events.items]
            if stamps:
                self._last_stamp = max(stamps)

    def seed_users(self, count: int) -> None:
        """Create ``count`` users quickly (benchmarks), each with its ``user.created`` event."""
        for index in range(count):
            self.create_user(f"user_{index:026d}", first_name=f"User{index}")

    @property
    def users(self) -> list[dict[str, Any]]:
        """The live users, oldest first (deep copies: changing them leaves the fake alone)."""
        with self._lock:
            return [copy.deepcopy(u) for u in self._users.items if u["id"] in self._live]

    @property
    def events(self) -> list[dict[str, Any]]:
        """The whole events log, oldest first (deep copies: changing them leaves the fake alone)."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._events.items]

    # -- faults ----------------------------------------------------------------------------

    def fail_with_429(
        self, times: int = 1, *, retry_after: float = 1, path: str = "/", skip: int = 0
    ) -> None:
        """Answer the next ``times`` matching requests ``429`` with ``Retry-After``, after
        letting ``skip`` of them through."""
        self._faults.append(Fault("status", times, path, 429, retry_after, skip))

    def fail_with_status(
        self, times: int = 1, *, status: int = 503, path: str = "/", skip: int = 0
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (a 5xx storm, or a
        revoked key's 401), after letting ``skip`` of them through: ``skip=1`` on
        ``/user_management/users`` fails a listing's second page."""
        self._faults.append(Fault("status", times, path, status, skip=skip))

    def drop_connection(self, times: int = 1, *, path: str = "/", skip: int = 0) -> None:
        """Send half of the next ``times`` matching pages, then drop the connection, after
        letting ``skip`` of them through."""
        self._faults.append(Fault("drop", times, path, skip=skip))

    # -- transport -------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport to this fake, in-process; dropped connections surface as
        `httpx.RemoteProtocolError`, as they would over a socket."""
        return _FakeTransport(self)

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # pragma: no cover - websockets are not part of the fake
            return
        path: str = scope["path"]
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
        request_body = b""
        if scope["method"] in ("POST", "PATCH"):
            while True:
                message = await receive()
                request_body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        status, body, headers, drop = self._handle(scope, path, query, request_body)
        with self._lock:
            self.requests.append(RecordedRequest(path, query, status, scope["method"]))
        payload = json.dumps(body, separators=(",", ":")).encode()
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
        if drop:
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            half = payload[: len(payload) // 2]
            await send({"type": "http.response.body", "body": half, "more_body": True})
            raise ConnectionDropped(path)
        if body is None:  # 204: no content
            payload, raw_headers = b"", []
        raw_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    def _handle(
        self, scope: Scope, path: str, query: list[tuple[str, str]], request_body: bytes = b""
    ) -> tuple[int, Any, dict[str, str], bool]:
        webhooks = path == ENDPOINTS or path.startswith(ENDPOINTS + "/")
        if scope["method"] != "GET" and not webhooks:
            return 405, {"message": "Method not allowed"}, {}, False
        if path.startswith("/sso/jwks/"):
            wanted = self.client_id is None or path.rsplit("/", 1)[-1] == self.client_id
            if self.jwks is not None and wanted:
                return 200, self.jwks, {}, False
            return 404, {"message": "Not found"}, {}, False
        fault = self._next_fault(path)
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            return fault.status, {"message": "Injected failure"}, headers, False
        if dict(_headers(scope)).get("authorization") != f"Bearer {self.api_key}":
            return 401, {"message": "Unauthorized", "code": "unauthorized"}, {}, False
        drop = fault is not None and fault.kind == "drop"
        with self._lock:
            if path == "/user_management/users":
                return (*self._list_users(query), {}, drop)
            if path.startswith("/user_management/users/"):
                user = self._live.get(path.rsplit("/", 1)[-1])
                if user is None:
                    return 404, {"message": "User not found", "code": "entity_not_found"}, {}, False
                return 200, dict(user), {}, drop
            if path == "/events":
                return (*self._list_events(query), {}, drop)
            if webhooks:
                try:
                    decoded = json.loads(request_body) if request_body else None
                except ValueError:
                    return 400, {"message": "The body is not JSON"}, {}, False
                status, answer = self.webhook_endpoints.handle(
                    scope["method"], path, query, decoded, self._stamp()
                )
                return status, answer, {}, drop and status == 200
            answer = self._organizations.handle(path, query)
            if answer is not None:
                status, body = answer
                return status, body, {}, drop and status == 200
        return 404, {"message": "Not found"}, {}, False

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and path.startswith(fault.path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        continue
                    fault.times -= 1
                    return fault
        return None

    def _list_users(self, query: list[tuple[str, str]]) -> tuple[int, Any]:
        params = dict(query)
        limit = _limit(params.get("limit"))
        if limit is None:
            return 422, {"message": "limit must be between 1 and 100"}
        items = self._users.items
        if params.get("order", "desc") == "desc":
            items = items[::-1]
            order = {u["id"]: i for i, u in enumerate(items)}
        else:
            order = self._users.position
        start = 0
        if params.get("after"):
            if params["after"] not in order:
                return 400, {"message": "Invalid 'after' cursor"}
            start = order[params["after"]] + 1
        page: list[dict[str, Any]] = []
        index = start
        while index < len(items) and len(page) < limit:
            if items[index]["id"] in self._live:
                page.append(dict(items[index]))
            index += 1
        # Stop at the first live user left, without copying the rest of the list: a slice here
        # made paging through many users quadratic.
        more = any(items[later]["id"] in self._live for later in range(index, len(items)))
        return 200, {
            "object": "list",
            "data": page,
            "list_metadata": {
                "before": page[0]["id"] if page and start else None,
                "after": page[-1]["id"] if page and more else None,
            },
        }

    def _list_events(self, query: list[tuple[str, str]]) -> tuple[int, Any]:
        params = dict(query)
        types = {t for key, value in query if key == "events" for t in value.split(",") if t}
        if not types:
            return 422, {"message": "events is required"}
        limit = _limit(params.get("limit"))
        if limit is None:
            return 422, {"message": "limit must be between 1 and 100"}
        items = self._events.items
        start = 0
        if params.get("after"):
            if params["after"] not in self._events.position:
                return 400, {"message": "Invalid 'after' cursor"}
            start = self._events.position[params["after"]] + 1
        elif params.get("range_start"):
            since = datetime.fromisoformat(params["range_start"].replace("Z", "+00:00"))
            start = next(
                (i for i, e in enumerate(items) if _parse(e["created_at"]) >= since), len(items)
            )
        # Walk from the cursor and copy only the page (a copy of the whole rest of the log per
        # page made a long catch-up quadratic); one more match says whether a next page exists.
        page: list[dict[str, Any]] = []
        more = False
        for index in range(start, len(items)):
            if items[index]["event"] not in types:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(copy.deepcopy(items[index]))
        return 200, {
            "object": "list",
            "data": page,
            # As WorkOS: no `after` on the last page.
            "list_metadata": {"after": page[-1]["id"] if page and more else None},
        }

    def _stamp(self) -> datetime:
        moment = self._now().astimezone(UTC)
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        if self._last_stamp is not None and moment <= self._last_stamp:
            moment = self._last_stamp + timedelta(milliseconds=1)
        self._last_stamp = moment
        return moment

    def _log(
        self,
        event_type: str,
        data: dict[str, Any],
        stamp: datetime,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        # A deep copy: the log keeps the user as it was, however the live user changes later.
        event = factories.event(
            event_type, copy.deepcopy(data), event_id=event_id, created_at=stamp
        )
        self._events.append(event)
        return event


def _limit(value: str | None) -> int | None:
    try:
        limit = int(value) if value is not None else 10
    except ValueError:
        return None
    return limit if 1 <= limit <= 100 else None


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _FakeTransport(httpx.AsyncBaseTransport):
    def __init__(self, fake: FakeWorkOS) -> None:
        self._inner = httpx.ASGITransport(app=fake)  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=request
            ) from None


def _uvicorn(feature: str) -> Any:
    # uvicorn is the `server` extra: only serving the fake on a real port needs it.
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"{feature} serves the fake WorkOS with uvicorn, which is not installed: install "
            "the server extra, pip install 'fastapi-workos-authkit[server]' (or pip install "
            "uvicorn). FakeWorkOS itself needs no server: pass it as AuthKit(http_transport=...)."
        ) from exc
    return uvicorn


class FakeWorkOSServer:
    """Serve a `FakeWorkOS` with uvicorn on a free loopback port, in a background thread.

    Use as a context manager; ``base_url`` is set once the server listens::

        with FakeWorkOSServer(fake) as server:
            authkit = AuthKit(api_base_url=server.base_url, ...)
    """

    def __init__(self, fake: FakeWorkOS, *, host: str = "127.0.0.1", port: int = 0) -> None:
        uvicorn = _uvicorn("FakeWorkOSServer")
        self.fake = fake
        config = uvicorn.Config(fake, host=host, port=port, log_level="critical", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.base_url = ""

    def __enter__(self) -> FakeWorkOSServer:
        self._thread.start()
        ready = threading.Event()
        for _ in range(500):
            if self._server.started:
                ready.set()
                break
            if not self._thread.is_alive():
                break
            ready.wait(0.01)
        if not ready.is_set():
            raise RuntimeError("the fake WorkOS server did not start")
        socket = self._server.servers[0].sockets[0]
        host, port = socket.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextmanager
def serve(fake: FakeWorkOS) -> Iterator[str]:
    """Serve ``fake`` on a loopback port for the duration of the block; yields its base URL."""
    with FakeWorkOSServer(fake) as server:
        yield server.base_url


def main(argv: list[str] | None = None) -> None:
    """Run a seeded fake WorkOS under uvicorn (for the command-line tests and benchmarks)."""
    uvicorn = _uvicorn("python -m fastapi_workos_authkit.testing")
    parser = argparse.ArgumentParser(description="Serve a fake WorkOS REST API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="sk_test_key")
    parser.add_argument("--users", type=int, default=0, help="seed this many users")
    args = parser.parse_args(argv)
    fake = FakeWorkOS(api_key=args.api_key)
    fake.seed_users(args.users)
    uvicorn.run(fake, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
