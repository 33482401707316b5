"""An async Action handler that reads the database without blocking the loop (docs/actions.md).

tests/test_actions_docs.py registers it on an `AuthKit` and drives it over HTTP.
"""

from sqlmodel import Session

from examples.snippets.actions_models import RegisteredDomain
from fastapi_workos_authkit import (
    ActionResponse,
    ActionSession,
    ActionVerdict,
    UserRegistrationAction,
)


# --8<-- [start:async-registration]
async def registration(
    session: ActionSession, action: UserRegistrationAction, response: ActionResponse
) -> ActionVerdict:
    domain = action.user_data.email.lower().rpartition("@")[2]

    def is_registered(session: Session) -> bool:  # runs in a worker thread
        return session.get(RegisteredDomain, domain) is not None

    if await session.run_sync(is_registered):
        return response.allow()
    return response.deny("Your organization is not registered")


# --8<-- [end:async-registration]
