"""The quickstart's app, built by a factory: ``uvicorn --factory app:create_app``."""

from fastapi import Depends, FastAPI
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, Event, User, WorkOSUser


def create_app(authkit: AuthKit | None = None) -> FastAPI:
    authkit = authkit or AuthKit()  # tests pass theirs; production reads the environment

    @authkit.on("user.created")
    def welcome(session: Session, event: Event[User]) -> None:
        print(f"welcome, {event.data.email}")

    app = FastAPI(lifespan=authkit.lifespan)
    app.include_router(authkit.router())

    @app.get("/me")
    def me(user: WorkOSUser = Depends(authkit.current_user)) -> WorkOSUser:
        return user

    return app
