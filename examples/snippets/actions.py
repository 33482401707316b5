"""An Actions-only app, shown in the Actions guide (docs/actions.md).

tests/test_actions_docs.py loads this module and drives it over HTTP with signed requests.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from sqlmodel import Session, SQLModel, select

from examples.snippets.actions_models import RegisteredDomain
from fastapi_workos_authkit import (
    ActionResponse,
    ActionVerdict,
    AuthenticationAction,
    AuthKit,
    UserRegistrationAction,
)

# --8<-- [start:setup]
# WORKOS_ACTION_SECRET and AUTHKIT_DATABASE_URL come from the environment.
authkit = AuthKit(
    action_timeout=3.0,  # seconds a handler may take before the endpoint answers 504
    unhandled_action="deny",  # the verdict for an action type with no handler
)
# --8<-- [end:setup]

# --8<-- [start:registration]
FREE_MAIL = {"gmail.com", "yahoo.com", "outlook.com", "hotmail.com"}


@authkit.action("user_registration")
def registration(
    session: Session, action: UserRegistrationAction, response: ActionResponse
) -> ActionVerdict:
    domain = action.user_data.email.lower().rpartition("@")[2]
    if domain in FREE_MAIL:
        return response.deny("Please use your corporate email address")
    allowed = session.exec(
        select(RegisteredDomain).where(RegisteredDomain.domain == domain)
    ).first()
    return response.allow() if allowed else response.deny("Your organization is not registered")


# --8<-- [end:registration]

# --8<-- [start:authentication]
RISK_API = "https://risk.example.com/v1/score"


@authkit.action("authentication")
async def authentication(
    session: Session, action: AuthenticationAction, response: ActionResponse
) -> ActionVerdict:
    async with httpx.AsyncClient(timeout=2.0) as http:
        reply = await http.post(RISK_API, json={"user": action.user.id, "ip": action.ip_address})
        reply.raise_for_status()  # an outage raises: the endpoint answers 500, WorkOS falls back
    if reply.json()["score"] > 80:
        return response.deny("This sign-in looks unusual. Please contact support.")
    return response.allow()


# --8<-- [end:authentication]


# --8<-- [start:app]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with authkit.lifespan(app):
        SQLModel.metadata.create_all(authkit.engine)  # the app's own tables, registered_domains too
        yield


app = FastAPI(lifespan=lifespan)
# Register the handlers first: router() mounts POST /workos/action because they exist.
app.include_router(authkit.router(webhooks=False))  # Actions only: no webhook secret needed
# --8<-- [end:app]
