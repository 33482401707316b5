"""The app's `AuthKit`: user sync handlers, sign-in tracking and the two Actions."""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import Session, col, delete, select

from fastapi_workos_authkit import (
    ActionResponse,
    ActionVerdict,
    AuthenticationAction,
    AuthKit,
    AuthSession,
    DeletedUser,
    Event,
    User,
    UserRegistrationAction,
    WorkOSUserTombstone,
)

from .models import AllowedDomain, AppUser, TodoList

log = logging.getLogger("example_app")


def display_name(user: User) -> str:
    """The name to show: WorkOS's ``name`` when set, else first and last name, else the email."""
    parts = [part for part in (user.first_name, user.last_name) if part]
    return user.name or " ".join(parts) or user.email


def find_user(session: Session, auth_id: str) -> AppUser | None:
    """The app's user for a WorkOS user id."""
    return session.exec(select(AppUser).where(AppUser.auth_id == auth_id)).first()


# --8<-- [start:user-handlers]
def on_user_created(session: Session, event: Event[User]) -> None:
    """A user appeared in workos_users: give them an app user and a first todo list."""
    user = AppUser(auth_id=event.data.id, email=event.data.email, name=display_name(event.data))
    session.add(user)
    session.flush()  # assigns user.id; the transaction commits after every handler succeeded
    assert user.id is not None
    first_name = event.data.first_name or display_name(event.data)
    session.add(TodoList(name=f"{first_name}'s Todo List", owner_id=user.id))


def on_user_updated(session: Session, event: Event[User]) -> None:
    """The synced user changed: copy the fields the app mirrors."""
    user = find_user(session, event.data.id)
    if user is None:
        log.warning("user.updated for %s, who has no app user", event.data.id)
        return
    user.email = event.data.email
    user.name = display_name(event.data)
    session.add(user)


def on_user_deleted(session: Session, event: Event[DeletedUser]) -> None:
    """The user was deleted in WorkOS: remove the app user and everything they own."""
    user = find_user(session, event.data.id)
    if user is None:
        return
    session.exec(delete(TodoList).where(col(TodoList.owner_id) == user.id))
    session.delete(user)


# --8<-- [end:user-handlers]


# --8<-- [start:session-handlers]
class UserNotSyncedYet(Exception):
    """A session event arrived before its user.created: fail, so WorkOS delivers it again."""


def _user_for_session(session: Session, event: Event[AuthSession]) -> AppUser | None:
    user_id = event.data.user_id
    if user_id is None:
        return None
    user = find_user(session, user_id)
    if user is None and session.get(WorkOSUserTombstone, user_id) is None:
        # Webhooks arrive in any order. Raising rolls this event back and answers 500; WorkOS
        # retries it, by which time the user.created has been processed.
        raise UserNotSyncedYet(f"user {user_id} is not synced yet")
    return user  # None when the user was deleted: nothing to track


def on_session_created(session: Session, event: Event[AuthSession]) -> None:
    """A sign-in: remember when it happened."""
    user = _user_for_session(session, event)
    if user is not None:
        user.last_login_at = event.data.created_at or event.created_at
        session.add(user)


def on_session_revoked(session: Session, event: Event[AuthSession]) -> None:
    """A sign-out or a revoked session: remember when."""
    user = _user_for_session(session, event)
    if user is not None:
        user.last_logout_at = event.data.ended_at or event.created_at
        session.add(user)


# --8<-- [end:session-handlers]


# --8<-- [start:actions]
def check_registration(
    session: Session, action: UserRegistrationAction, response: ActionResponse
) -> ActionVerdict:
    """Decide whether someone may sign up, before WorkOS creates the user."""
    domain = action.user_data.email.rpartition("@")[2].lower()
    if domain == "blocked-domain.com":
        return response.deny("Sign-ups from this domain are blocked")
    if domain == "gmail.com":
        return response.deny("Please use your corporate email address")
    allowed = session.exec(select(AllowedDomain.domain)).all()
    if allowed and domain not in allowed:
        return response.deny(f"{domain} is not allowed to sign up")
    return response.allow()


def check_authentication(
    session: Session, action: AuthenticationAction, response: ActionResponse
) -> ActionVerdict:
    """Every known user may sign in."""
    return response.allow()


# --8<-- [end:actions]


# --8<-- [start:create-authkit]
def create_authkit(**options: Any) -> AuthKit:
    """The app's AuthKit; options (``engine``, secrets, ``http_transport``...) go to `AuthKit`."""
    authkit = AuthKit(**options)
    authkit.add_handler("user.created", on_user_created)
    authkit.add_handler("user.updated", on_user_updated)
    authkit.add_handler("user.deleted", on_user_deleted)
    authkit.add_handler("session.created", on_session_created)
    authkit.add_handler("session.revoked", on_session_revoked)
    authkit.add_action_handler("user_registration", check_registration)
    authkit.add_action_handler("authentication", check_authentication)
    return authkit


# --8<-- [end:create-authkit]
