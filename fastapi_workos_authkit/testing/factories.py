"""Realistic WorkOS webhook payloads for tests: users, sessions, organizations, memberships.

Plain objects (`user`, `session`, `organization`, `organization_membership`) have the shapes of
WorkOS's webhook payloads; each event type the package mirrors has a builder that wraps one in
an `event`: ``user.created|updated|deleted``, ``session.created|revoked``,
``organization.created|updated|deleted`` and ``organization_membership.created|updated|deleted``.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in WorkOS's ULID ids
_BASE_TIME = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def new_id(prefix: str) -> str:
    """A WorkOS-style id such as ``user_01HXYZ...``: the prefix, ``_``, then 26 ULID characters."""
    return f"{prefix}_01" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def iso(moment: datetime) -> str:
    """Format ``moment`` the way WorkOS does: ``2026-01-15T12:00:00.000Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def at(seconds: float) -> datetime:
    """A fixed, readable point in time: ``seconds`` after 2026-01-15 12:00 UTC."""
    return _BASE_TIME + timedelta(seconds=seconds)


def user(
    user_id: str | None = None,
    *,
    email: str | None = None,
    first_name: str | None = "Marcelina",
    last_name: str | None = "Davis",
    email_verified: bool = True,
    updated_at: datetime | None = None,
    created_at: datetime | None = None,
    metadata: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A WorkOS user object; ``extra`` fields are added as-is (to simulate new WorkOS fields)."""
    user_id = user_id or new_id("user")
    created = created_at or _BASE_TIME
    return {
        "object": "user",
        "id": user_id,
        "email": email or f"{user_id.lower()}@example.com",
        "email_verified": email_verified,
        "first_name": first_name,
        "last_name": last_name,
        "profile_picture_url": None,
        "external_id": None,
        "metadata": metadata or {},
        "last_sign_in_at": None,
        "locale": None,
        "created_at": iso(created),
        "updated_at": iso(updated_at or created),
        **extra,
    }


def event(
    event_type: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    created_at: datetime | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A WorkOS event envelope around ``data``."""
    envelope: dict[str, Any] = {
        "object": "event",
        "id": event_id or new_id("event"),
        "event": event_type,
        "data": data,
        "created_at": iso(created_at or datetime.now(UTC)),
    }
    if context is not None:
        envelope["context"] = context
    return envelope


def user_created(
    user_id: str | None = None, *, event_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A ``user.created`` event; ``fields`` go to `user`."""
    data = user(user_id, **fields)
    return event("user.created", data, event_id=event_id, created_at=_event_time(data))


def user_updated(
    user_id: str | None = None, *, event_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A ``user.updated`` event; pass a later ``updated_at`` than the previous snapshot."""
    data = user(user_id, **fields)
    return event("user.updated", data, event_id=event_id, created_at=_event_time(data))


def user_deleted(
    user_id: str, *, event_id: str | None = None, id_only: bool = False, **fields: Any
) -> dict[str, Any]:
    """A ``user.deleted`` event; ``id_only=True`` sends only ``{"id": ...}``, as WorkOS may."""
    data = {"id": user_id} if id_only else user(user_id, **fields)
    return event("user.deleted", data, event_id=event_id)


def session(
    user_id: str,
    session_id: str | None = None,
    *,
    organization_id: str | None = None,
    auth_method: str = "Password",
    status: str = "active",
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    expires_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A WorkOS session object; an ended status (``revoked``, ``expired``) sets ``ended_at``.

    Times default to now (``updated_at`` to ``created_at``), ``expires_at`` to a week later.
    """
    created = created_at or datetime.now(UTC)
    updated = updated_at or created
    return {
        "object": "session",
        "id": session_id or new_id("session"),
        "user_id": user_id,
        "organization_id": organization_id,
        "auth_method": auth_method,
        "status": status,
        "ip_address": "198.51.100.7",
        "user_agent": "Mozilla/5.0",
        "expires_at": iso(expires_at or created + timedelta(days=7)),
        "ended_at": None if status == "active" else iso(updated),
        "created_at": iso(created),
        "updated_at": iso(updated),
        **extra,
    }


def session_created(
    user_id: str,
    *,
    session_id: str | None = None,
    event_id: str | None = None,
    organization_id: str | None = None,
    auth_method: str = "Password",
    **fields: Any,
) -> dict[str, Any]:
    """A ``session.created`` event for ``user_id``; ``fields`` go to `session`."""
    data = session(
        user_id, session_id, organization_id=organization_id, auth_method=auth_method, **fields
    )
    return event("session.created", data, event_id=event_id, created_at=_event_time(data))


def session_revoked(
    user_id: str,
    *,
    session_id: str | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A ``session.revoked`` event for ``user_id``: the session with ``status: "revoked"`` and
    ``ended_at`` set, as WorkOS sends it; ``fields`` go to `session`."""
    fields.setdefault("status", "revoked")
    data = session(user_id, session_id, **fields)
    return event("session.revoked", data, event_id=event_id, created_at=_event_time(data))


def organization(
    organization_id: str | None = None,
    *,
    name: str = "Foo Corp",
    domains: list[str] | None = None,
    external_id: str | None = None,
    metadata: dict[str, str] | None = None,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A WorkOS organization object; times default to now (``updated_at`` to ``created_at``)."""
    created = created_at or datetime.now(UTC)
    return {
        "object": "organization",
        "id": organization_id or new_id("org"),
        "name": name,
        "domains": [
            {
                "object": "organization_domain",
                "id": new_id("org_domain"),
                "domain": domain,
                "state": "verified",
            }
            for domain in (["foo-corp.com"] if domains is None else domains)
        ],
        "external_id": external_id,
        "metadata": metadata or {},
        "created_at": iso(created),
        "updated_at": iso(updated_at or created),
        **extra,
    }


def organization_created(
    name: str = "Foo Corp",
    *,
    organization_id: str | None = None,
    event_id: str | None = None,
    domains: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An ``organization.created`` event; ``fields`` go to `organization`."""
    data = organization(organization_id, name=name, domains=domains, **fields)
    return event("organization.created", data, event_id=event_id, created_at=_event_time(data))


def organization_updated(
    organization_id: str,
    *,
    name: str = "Foo Corp",
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An ``organization.updated`` event; pass a later ``updated_at`` than the previous one."""
    data = organization(organization_id, name=name, **fields)
    return event("organization.updated", data, event_id=event_id, created_at=_event_time(data))


def organization_deleted(
    organization_id: str, *, event_id: str | None = None, id_only: bool = False, **fields: Any
) -> dict[str, Any]:
    """An ``organization.deleted`` event; ``id_only=True`` sends only ``{"id": ...}``."""
    data = {"id": organization_id} if id_only else organization(organization_id, **fields)
    return event("organization.deleted", data, event_id=event_id)


def organization_membership(
    user_id: str,
    organization_id: str,
    membership_id: str | None = None,
    *,
    role: str = "member",
    roles: list[str] | None = None,
    status: str = "active",
    directory_managed: bool = False,
    custom_attributes: dict[str, Any] | None = None,
    organization_name: str | None = None,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A WorkOS organization membership object, as WorkOS sends it: ``role`` is sent as
    ``{"slug": role}`` and ``roles`` (default ``[role]``) as a list of them; ``status`` is
    ``active``, ``inactive`` or ``pending``; ``organization_name`` is added when given (WorkOS
    sends it on some endpoints). Times default to now (``updated_at`` to ``created_at``)."""
    created = created_at or datetime.now(UTC)
    named = {} if organization_name is None else {"organization_name": organization_name}
    return {
        "object": "organization_membership",
        "id": membership_id or new_id("om"),
        "user_id": user_id,
        "organization_id": organization_id,
        **named,
        "status": status,
        "role": {"slug": role},
        "roles": [{"slug": slug} for slug in (roles if roles is not None else [role])],
        "directory_managed": directory_managed,
        "custom_attributes": custom_attributes or {},
        "created_at": iso(created),
        "updated_at": iso(updated_at or created),
        **extra,
    }


def organization_membership_created(
    user_id: str,
    organization_id: str,
    *,
    role: str = "member",
    event_id: str | None = None,
    membership_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An ``organization_membership.created`` event; ``fields`` go to
    `organization_membership`."""
    data = organization_membership(user_id, organization_id, membership_id, role=role, **fields)
    return event(
        "organization_membership.created", data, event_id=event_id, created_at=_event_time(data)
    )


def organization_membership_updated(
    membership_id: str,
    user_id: str,
    organization_id: str,
    *,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An ``organization_membership.updated`` event; pass a later ``updated_at``."""
    data = organization_membership(user_id, organization_id, membership_id, **fields)
    return event(
        "organization_membership.updated", data, event_id=event_id, created_at=_event_time(data)
    )


def organization_membership_deleted(
    membership_id: str,
    user_id: str,
    organization_id: str,
    *,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An ``organization_membership.deleted`` event (the membership as it was)."""
    data = organization_membership(user_id, organization_id, membership_id, **fields)
    return event("organization_membership.deleted", data, event_id=event_id)


def _event_time(data: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(data["updated_at"]).replace("Z", "+00:00"))
