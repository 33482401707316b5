"""Organizations guide snippets (docs/organizations.md), run by tests/test_organizations_docs.py."""

import logging
from typing import Any

from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, Event, OrganizationMembership

log = logging.getLogger("app.organizations")


# --8<-- [start:opt-out]
def mirror_memberships_but_not_sessions(**options: Any) -> AuthKit:
    # Users are always mirrored; here organizations and memberships too, sessions not: the
    # session.* events then change no table and only run their own handlers.
    return AuthKit(mirror=["organization", "organization_membership"], **options)


# --8<-- [end:opt-out]


# --8<-- [start:handler]
def register_membership_audit(authkit: AuthKit, seen: list[str]) -> None:
    @authkit.on("organization_membership.updated")
    def role_changed(session: Session, event: Event[OrganizationMembership]) -> None:
        # Runs once per effective change, in the sync's transaction: a duplicate, or a
        # snapshot older than the row, runs nothing.
        membership = event.data
        role = membership.role.slug if membership.role else None
        seen.append(f"{membership.user_id} is {role} ({membership.status})")
        log.info("membership %s changed", membership.id)


# --8<-- [end:handler]
