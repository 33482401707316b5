import logging

from fastapi import FastAPI
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, Event, User

authkit = AuthKit()  # reads WORKOS_WEBHOOK_SECRET and friends from the environment
log = logging.getLogger("myapp")


@authkit.on("user.created")
def welcome(session: Session, event: Event[User]) -> None:
    # Runs inside the sync's transaction: raise, and nothing is committed.
    log.info("new user %s", event.data.id)


app = FastAPI(lifespan=authkit.lifespan)  # creates the workos_* tables
app.include_router(authkit.router())  # POST /workos/webhook
