"""Handler patterns shown in the handlers guide and run by tests/test_docs.py."""

from typing import Any

import httpx
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, Event, Organization, User

authkit = AuthKit()
audit_log: list[str] = []


# --8<-- [start:several]
@authkit.on("user.created")
def remember_signup(session: Session, event: Event[User]) -> None:
    audit_log.append(f"signed up: {event.data.email}")


@authkit.on("user.created")  # several handlers per type run in registration order
async def notify_team(session: Session, event: Event[User]) -> None:
    # Async handlers are awaited on the app's event loop, inside the same transaction.
    async with httpx.AsyncClient(transport=chat_transport) as client:
        await client.post("https://chat.example/hooks/signups", json={"text": event.data.email})


# --8<-- [end:several]


# --8<-- [start:any-type]
@authkit.on("organization.created")
def organization_created(session: Session, event: Event[Organization]) -> None:
    domains = ", ".join(domain.domain for domain in event.data.domains)
    audit_log.append(f"organization {event.data.name} ({domains})")


@authkit.on("dsync.group.created")  # a type without a typed model keeps its raw data
def directory_group(session: Session, event: Event[dict[str, Any]]) -> None:
    audit_log.append(f"directory group {event.data.get('name')}")


# --8<-- [end:any-type]


# --8<-- [start:failure]
class ProfileServiceDown(Exception):
    """Raised to make WorkOS deliver the event again later."""


profile_service_up = True


@authkit.on("user.updated")
def push_profile(session: Session, event: Event[User]) -> None:
    if not profile_service_up:
        # Nothing of this event is committed, the webhook answers 500, WorkOS retries.
        raise ProfileServiceDown("the profile service is unreachable")
    audit_log.append(f"profile pushed: {event.data.email}")


# --8<-- [end:failure]


def _chat(request: httpx.Request) -> httpx.Response:
    audit_log.append(f"chat: {request.content.decode()}")
    return httpx.Response(204)


# The chat service is faked so the guide's code runs offline in the tests.
chat_transport = httpx.MockTransport(_chat)
