"""Organizations in the example app: who is an active member, who is an admin, who belongs.

Everything here reads the mirrored ``workos_organization_memberships`` and ``workos_users``
tables; the caller's own membership comes from ``authkit.current_membership`` (see ``main``).
"""

from __future__ import annotations

from fastapi import HTTPException, status
from pydantic import BaseModel
from sqlmodel import Session, col, select

from fastapi_workos_authkit import WorkOSOrganizationMembership, WorkOSUser


# --8<-- [start:require-admin]
def require_admin(membership: WorkOSOrganizationMembership) -> WorkOSOrganizationMembership:
    """403 unless the membership's primary role, as mirrored now, is ``admin``."""
    if membership.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Only an organization admin may do this")
    return membership


# --8<-- [end:require-admin]


class Member(BaseModel):
    """One membership of the organization, with its user's details once the user is synced."""

    membership_id: str
    user_id: str
    status: str | None
    role: str | None
    email: str | None
    name: str | None


# --8<-- [start:members]
def organization_members(session: Session, organization_id: str) -> list[Member]:
    """Every mirrored membership of the organization, oldest first. A membership whose user is
    not synced yet is listed all the same, with its ``user_id`` only: the mirror has no foreign
    keys, so the join is an outer join."""
    rows = session.exec(
        select(WorkOSOrganizationMembership, WorkOSUser)
        .join(
            WorkOSUser,
            col(WorkOSUser.id) == col(WorkOSOrganizationMembership.user_id),
            isouter=True,
        )
        .where(WorkOSOrganizationMembership.organization_id == organization_id)
        .order_by(
            col(WorkOSOrganizationMembership.created_at),
            col(WorkOSOrganizationMembership.id),
        )
    ).all()
    return [
        Member(
            membership_id=membership.id,
            user_id=membership.user_id,
            status=membership.status,
            role=membership.role,
            email=user.email if user is not None else None,
            name=_display_name(user),
        )
        for membership, user in rows
    ]


# --8<-- [end:members]


def _display_name(user: WorkOSUser | None) -> str | None:
    if user is None:
        return None
    parts = [part for part in (user.first_name, user.last_name) if part]
    return user.name or " ".join(parts) or None
