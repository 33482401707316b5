"""The webhook-endpoints half of `FakeWorkOS` (kept apart to keep each module short).

`WebhookEndpointStore` answers the WorkOS routes that manage webhook endpoints, with WorkOS's
parameters and answers:

* ``GET /webhook_endpoints`` (``limit``, ``after``, ``before``, ``order``, default ``desc``):
  the list envelope; no endpoint in a list carries its secret;
* ``POST /webhook_endpoints`` ``{"endpoint_url", "events"}``: 201 with the new endpoint and,
  only here, its ``secret``;
* ``PATCH /webhook_endpoints/{id}`` ``{"endpoint_url"?, "status"?, "events"?}``: the endpoint,
  without its secret;
* ``DELETE /webhook_endpoints/{id}``: 204 (404 when unknown).

It holds no lock and keeps no clock: `FakeWorkOS` calls it under its own lock, with its stamp.
"""

from __future__ import annotations

import copy
import secrets
from datetime import datetime
from typing import Any

from . import factories
from ._fake_workos_orgs import Answer, Query, _Ordered, _page

ENDPOINTS = "/webhook_endpoints"
STATUSES = frozenset({"enabled", "disabled"})


def _invalid(message: str) -> Answer:
    return 422, {"code": "invalid_request_parameters", "message": message}


def _check_events(value: object) -> str | None:
    if not isinstance(value, list) or not value or not all(isinstance(e, str) for e in value):
        return "events must be a non-empty list of event type names"
    return None


def _check_url(value: object) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "endpoint_url must be an http(s) URL"
    return None


class WebhookEndpointStore:
    """The fake's webhook endpoints; each keeps its signing secret, shown on create only."""

    def __init__(self) -> None:
        self.endpoints = _Ordered()
        self._secrets: dict[str, str] = {}

    def secret_of(self, endpoint_id: str) -> str:
        """The signing secret of an endpoint (for tests that sign deliveries to it)."""
        return self._secrets[endpoint_id]

    def handle(self, method: str, path: str, query: Query, body: Any, stamp: datetime) -> Answer:
        """The answer to ``method path``; the caller checked that ``path`` is under ours."""
        if path == ENDPOINTS:
            if method == "GET":
                return _page(self.endpoints, query, lambda _: True)
            if method == "POST":
                return self._create(body, stamp)
            return 405, {"message": "Method not allowed"}
        endpoint_id = path[len(ENDPOINTS) + 1 :]
        found = self.endpoints.live.get(endpoint_id)
        if "/" in endpoint_id or found is None:
            return 404, {"message": "Webhook endpoint not found", "code": "entity_not_found"}
        if method == "PATCH":
            return self._update(found, body, stamp)
        if method == "DELETE":
            del self.endpoints.live[endpoint_id]
            return 204, None
        if method == "GET":
            return 200, copy.deepcopy(found)
        return 405, {"message": "Method not allowed"}

    def _create(self, body: Any, stamp: datetime) -> Answer:
        if not isinstance(body, dict):
            return _invalid("the body must be a JSON object")
        problem = _check_url(body.get("endpoint_url")) or _check_events(body.get("events"))
        if problem:
            return _invalid(problem)
        endpoint_id = factories.new_id("we")
        when = factories.iso(stamp)
        endpoint = {
            "object": "webhook_endpoint",
            "id": endpoint_id,
            "endpoint_url": body["endpoint_url"],
            "status": "enabled",
            "events": list(body["events"]),
            "created_at": when,
            "updated_at": when,
        }
        self.endpoints.add(endpoint, "webhook endpoint")
        secret = secrets.token_urlsafe(24)
        self._secrets[endpoint_id] = secret
        return 201, {**copy.deepcopy(endpoint), "secret": secret}

    def _update(self, endpoint: dict[str, Any], body: Any, stamp: datetime) -> Answer:
        if not isinstance(body, dict):
            return _invalid("the body must be a JSON object")
        unknown = set(body) - {"endpoint_url", "status", "events"}
        if unknown:
            return _invalid(f"unknown fields {sorted(unknown)}")
        if "endpoint_url" in body and (problem := _check_url(body["endpoint_url"])):
            return _invalid(problem)
        if "events" in body and (problem := _check_events(body["events"])):
            return _invalid(problem)
        if "status" in body and body["status"] not in STATUSES:
            return _invalid("status must be enabled or disabled")
        endpoint.update(copy.deepcopy(body))
        endpoint["updated_at"] = factories.iso(stamp)
        return 200, copy.deepcopy(endpoint)
