"""WorkOS's organizations and memberships endpoints, for the recovery tests, until the testing
kit's `FakeWorkOS` serves them: an ASGI app in front of a `FakeWorkOS` that answers
``/organizations`` and ``/user_management/organization_memberships`` itself (shapes per
SPEC §5) and hands every other request to the fake.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import httpx

from fastapi_workos_authkit.testing import factories
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MEMBERSHIPS = "/user_management/organization_memberships"


class OrgDirectory:
    """Organizations and memberships, listed oldest first with WorkOS's cursors and filters."""

    def __init__(self, fake: FakeWorkOS) -> None:
        self.fake = fake
        self.organizations: list[dict[str, Any]] = []
        self.memberships: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self._faults: list[tuple[str, int, int]] = []  # (path, status, requests to let by)

    def create_organization(self, **fields: Any) -> dict[str, Any]:
        organization = factories.organization(**fields)
        self.organizations.append(organization)
        return organization

    def create_membership(
        self, user_id: str, organization_id: str, **fields: Any
    ) -> dict[str, Any]:
        membership = factories.organization_membership(user_id, organization_id, **fields)
        self.memberships.append(membership)
        return membership

    def fail(self, path: str, status: int, *, skip: int = 0) -> None:
        """Answer ``status`` once to the request to ``path`` after ``skip`` good ones."""
        self._faults.append((path, status, skip))

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path.startswith("/organizations") or path.startswith(MEMBERSHIPS)
        ):
            await self.fake(scope, receive, send)  # type: ignore[arg-type]
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        status, body = self._answer(path, query)
        self.requests.append((path, query, status))
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        for index, (fault_path, status, skip) in enumerate(self._faults):
            if fault_path == path:
                if skip == 0:
                    del self._faults[index]
                    return status, {"message": "refused"}
                self._faults[index] = (fault_path, status, skip - 1)
                break
        if path == "/organizations":
            return 200, _page(self.organizations, query)
        if path.startswith("/organizations/"):
            return _one(self.organizations, path.rsplit("/", 1)[1])
        if path == MEMBERSHIPS:
            organization_id, user_id = query.get("organization_id"), query.get("user_id")
            if organization_id is None and user_id is None:
                return 400, {"message": "organization_id or user_id is required"}
            statuses = query.get("statuses", "active").split(",")
            matching = [
                m
                for m in self.memberships
                if (organization_id is None or m["organization_id"] == organization_id)
                and (user_id is None or m["user_id"] == user_id)
                and m["status"] in statuses
            ]
            return 200, _page(matching, query)
        return _one(self.memberships, path.rsplit("/", 1)[1])


def _one(items: list[dict[str, Any]], item_id: str) -> tuple[int, Any]:
    for item in items:
        if item["id"] == item_id:
            return 200, item
    return 404, {"message": "not found"}


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    limit = int(query.get("limit", "10"))
    start = 0
    if "after" in query:
        ids = [item["id"] for item in items]
        start = ids.index(query["after"]) + 1 if query["after"] in ids else len(ids)
    data = items[start : start + limit]
    more = start + limit < len(items)
    return {
        "object": "list",
        "data": data,
        "list_metadata": {"before": None, "after": data[-1]["id"] if more and data else None},
    }
