"""The organizations and memberships half of `FakeWorkOS` (kept apart to keep each module short).

`OrganizationStore` holds the fake's organizations and organization memberships and answers the
WorkOS routes that read them, with WorkOS's parameters and answers:

* ``GET /organizations`` (``limit``, ``after``, ``before``, ``order``, default ``desc``);
* ``GET /organizations/{id}`` (404 for an unknown or deleted organization);
* ``GET /user_management/organization_memberships``: ``user_id`` and/or ``organization_id``
  (at least one is required, 422 otherwise, as WorkOS), ``statuses`` comma-joined or repeated
  (without it, only ``active`` memberships), ``limit``, ``after``, ``before``, ``order``;
* ``GET /user_management/organization_memberships/{id}`` (404 when unknown or deleted).

It holds no lock and keeps no clock: `FakeWorkOS` calls it under its own lock, with its stamp,
and gives it the function that appends an event to the Events API log.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

from . import factories

Query = list[tuple[str, str]]
Answer = tuple[int, Any]
LogEvent = Callable[[str, dict[str, Any], datetime], object]

ORGANIZATIONS = "/organizations"
MEMBERSHIPS = "/user_management/organization_memberships"
MEMBERSHIP_STATUSES = frozenset({"active", "inactive", "pending"})


class _Ordered:
    """Objects in creation order (deleted ones kept, for cursors) and the live ones by id."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.live: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()

    def add(self, item: dict[str, Any], what: str) -> None:
        if item["id"] in self._seen:
            raise ValueError(f"{what} {item['id']} already exists")
        self._seen.add(item["id"])
        self.items.append(item)
        self.live[item["id"]] = item

    def get(self, object_id: str, what: str) -> dict[str, Any]:
        found = self.live.get(object_id)
        if found is None:
            raise KeyError(f"no live {what} {object_id}")
        return found


class OrganizationStore:
    """The fake's organizations and memberships; every change logs its WorkOS event."""

    def __init__(self, log: LogEvent) -> None:
        self._log = log
        self.organizations = _Ordered()
        self.memberships = _Ordered()

    # -- changes (called under FakeWorkOS's lock) ---------------------------------------------

    def create_organization(
        self, stamp: datetime, organization_id: str | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        organization = factories.organization(
            organization_id, created_at=stamp, updated_at=stamp, **fields
        )
        self.organizations.add(organization, "organization")
        self._log("organization.created", organization, stamp)
        return copy.deepcopy(organization)

    def update_organization(
        self, stamp: datetime, organization_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        organization = self.organizations.get(organization_id, "organization")
        organization.update(fields)
        organization["updated_at"] = factories.iso(stamp)
        self._log("organization.updated", organization, stamp)
        return copy.deepcopy(organization)

    def delete_organization(self, stamp: datetime, organization_id: str) -> None:
        # WorkOS's own cascade to memberships is not modelled: delete them explicitly.
        organization = self.organizations.get(organization_id, "organization")
        del self.organizations.live[organization_id]
        self._log("organization.deleted", organization, stamp)

    def create_membership(
        self,
        stamp: datetime,
        user_id: str,
        organization_id: str,
        membership_id: str | None,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        membership = factories.organization_membership(
            user_id, organization_id, membership_id, created_at=stamp, updated_at=stamp, **fields
        )
        self.memberships.add(membership, "membership")
        self._log("organization_membership.created", membership, stamp)
        return copy.deepcopy(membership)

    def update_membership(
        self, stamp: datetime, membership_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        membership = self.memberships.get(membership_id, "membership")
        fields = dict(fields)
        # Roles are given as slugs, as to the factories; WorkOS sends them as {"slug": ...}.
        if "role" in fields:
            membership["role"] = {"slug": fields.pop("role")}
            if "roles" not in fields:
                membership["roles"] = [dict(membership["role"])]
        if "roles" in fields:
            membership["roles"] = [{"slug": slug} for slug in fields.pop("roles")]
        membership.update(fields)
        membership["updated_at"] = factories.iso(stamp)
        self._log("organization_membership.updated", membership, stamp)
        return copy.deepcopy(membership)

    def delete_membership(self, stamp: datetime, membership_id: str) -> None:
        membership = self.memberships.get(membership_id, "membership")
        del self.memberships.live[membership_id]
        self._log("organization_membership.deleted", membership, stamp)

    # -- routes ------------------------------------------------------------------------------

    def handle(self, path: str, query: Query) -> Answer | None:
        """The answer to a GET of ``path``, or ``None`` when the path is not one of these."""
        if path == ORGANIZATIONS:
            return _page(self.organizations, query, lambda _: True)
        if path.startswith(ORGANIZATIONS + "/"):
            return _one(self.organizations, path, "Organization")
        if path == MEMBERSHIPS:
            return self._list_memberships(query)
        if path.startswith(MEMBERSHIPS + "/"):
            return _one(self.memberships, path, "Organization membership")
        return None

    def _list_memberships(self, query: Query) -> Answer:
        params = dict(query)
        user_id = params.get("user_id")
        organization_id = params.get("organization_id")
        if not user_id and not organization_id:
            return 422, {
                "code": "invalid_request_parameters",
                "message": "Validation failed: either user_id or organization_id is required",
            }
        statuses = {s for key, v in query if key == "statuses" for s in v.split(",") if s}
        unknown = statuses - MEMBERSHIP_STATUSES
        if unknown:
            return 422, {
                "code": "invalid_request_parameters",
                "message": f"Invalid statuses {sorted(unknown)}: use active, inactive, pending",
            }
        wanted = statuses or {"active"}  # without `statuses`, WorkOS lists only active ones

        def matches(membership: dict[str, Any]) -> bool:
            return (
                membership["status"] in wanted
                and (not user_id or membership["user_id"] == user_id)
                and (not organization_id or membership["organization_id"] == organization_id)
            )

        return _page(self.memberships, query, matches)


def _one(objects: _Ordered, path: str, what: str) -> Answer:
    found = objects.live.get(path.rsplit("/", 1)[-1])
    if found is None:
        return 404, {"message": f"{what} not found", "code": "entity_not_found"}
    return 200, copy.deepcopy(found)


def _page(objects: _Ordered, query: Query, keep: Callable[[dict[str, Any]], bool]) -> Answer:
    """One page of a WorkOS list: ``limit`` (1..100, default 10), ``order`` (default ``desc``),
    ``after`` or ``before`` an id, and ``list_metadata`` cursors (``None`` at either end)."""
    params = dict(query)
    try:
        limit = int(params.get("limit", "10"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        return 422, {"message": "limit must be between 1 and 100"}
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        return 422, {"message": "order must be asc or desc"}
    matching = [item for item in objects.items if item["id"] in objects.live and keep(item)]
    if order == "desc":
        matching.reverse()
    ids = [item["id"] for item in matching]
    window, backwards = matching, False
    for cursor in ("after", "before"):
        if params.get(cursor):
            if params[cursor] not in ids:
                return 400, {"message": f"Invalid '{cursor}' cursor"}
            at = ids.index(params[cursor])
            window, backwards = (
                (matching[at + 1 :], False)
                if cursor == "after"
                else (
                    matching[:at],
                    True,
                )
            )
            break
    page = window[-limit:] if backwards else window[:limit]
    first = ids.index(page[0]["id"]) if page else 0
    last = ids.index(page[-1]["id"]) if page else len(matching) - 1
    return 200, {
        "object": "list",
        "data": [copy.deepcopy(item) for item in page],
        "list_metadata": {
            "before": page[0]["id"] if page and first > 0 else None,
            "after": page[-1]["id"] if page and last < len(matching) - 1 else None,
        },
    }
