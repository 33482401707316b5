from fastapi import Depends, FastAPI
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, Event, User, WorkOSUser

authkit = AuthKit()  # reads WORKOS_WEBHOOK_SECRET and friends from the environment


@authkit.on("user.created")
def welcome(session: Session, event: Event[User]) -> None:
    print(f"welcome, {event.data.email}")  # runs inside the sync's transaction


app = FastAPI(lifespan=authkit.lifespan)  # creates the workos_* tables
app.include_router(authkit.router())  # POST /workos/webhook


@app.get("/me")  # the caller's synced user, from the access token
def me(user: WorkOSUser = Depends(authkit.current_user)) -> WorkOSUser:
    return user
