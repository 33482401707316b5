"""The example app's HTTP API: ``/me`` and todo lists, guarded by ``current_user``.

Run it from the repository root (SQLite file ``./workos_authkit.db`` by default; set
``AUTHKIT_DATABASE_URL=postgresql://...`` for PostgreSQL)::

    uvicorn examples.app.main:create_app --factory
"""

# No `from __future__ import annotations` here: FastAPI must see the Annotated aliases defined
# inside api_router() as real objects, not as strings it cannot resolve.
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, status
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, Field
from sqlmodel import Session, SQLModel, col, select

from fastapi_workos_authkit import AuthKit, WorkOSUser

from .auth import create_authkit, find_user
from .models import APP_TABLES, AppUser, TodoList


class NewTodoList(BaseModel):
    """The body of ``POST /todo-lists``."""

    name: str = Field(min_length=1, max_length=200)


def api_router(authkit: AuthKit) -> APIRouter:
    """The app's routes, guarded by this `AuthKit`'s dependencies."""
    router = APIRouter()

    def db_session() -> Iterator[Session]:
        with Session(authkit.engine) as session:
            yield session

    SessionDep = Annotated[Session, Depends(db_session)]
    CurrentUser = Annotated[WorkOSUser, Depends(authkit.current_user)]

    def app_user(session: SessionDep, user: CurrentUser) -> AppUser:
        found = find_user(session, user.id)
        if found is None:  # the user.created handler always runs in the user's sync transaction
            raise HTTPException(status.HTTP_404_NOT_FOUND, "This user has no app profile")
        return found

    Me = Annotated[AppUser, Depends(app_user)]

    # --8<-- [start:me]
    @router.get("/me", response_model=WorkOSUser, summary="The caller's synced WorkOS user")
    def me(user: CurrentUser) -> WorkOSUser:
        return user

    # --8<-- [end:me]

    @router.get("/todo-lists", response_model=list[TodoList], summary="The caller's todo lists")
    def list_todo_lists(session: SessionDep, owner: Me) -> list[TodoList]:
        statement = select(TodoList).where(TodoList.owner_id == owner.id)
        return list(session.exec(statement.order_by(col(TodoList.id))).all())

    @router.post(
        "/todo-lists",
        response_model=TodoList,
        status_code=status.HTTP_201_CREATED,
        summary="Create a todo list",
    )
    def create_todo_list(body: NewTodoList, session: SessionDep, owner: Me) -> TodoList:
        assert owner.id is not None
        todo_list = TodoList(name=body.name, owner_id=owner.id)
        session.add(todo_list)
        session.commit()
        session.refresh(todo_list)
        return todo_list

    @router.get("/todo-lists/{list_id}", response_model=TodoList, summary="One todo list")
    def read_todo_list(list_id: int, session: SessionDep, owner: Me) -> TodoList:
        todo_list = session.get(TodoList, list_id)
        if todo_list is None or todo_list.owner_id != owner.id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such todo list")
        return todo_list

    return router


def create_app(authkit: AuthKit | None = None) -> FastAPI:
    """Build the app; without an `AuthKit`, one is configured from the environment."""
    authkit = authkit or create_authkit()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with authkit.lifespan(app):  # creates the workos_* tables
            await anyio.to_thread.run_sync(
                lambda: SQLModel.metadata.create_all(authkit.engine, tables=APP_TABLES)
            )
            yield

    app = FastAPI(title="fastapi-workos-authkit example", lifespan=lifespan)
    app.state.authkit = authkit
    # The frontend calls the API from another origin (the Vite dev server by default).
    origins = os.environ.get("APP_CORS_ORIGINS", "http://localhost:5173").split(",")
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[origin.strip() for origin in origins if origin.strip()],
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
    )
    app.include_router(authkit.router())  # POST /workos/webhook and POST /workos/action
    app.include_router(api_router(authkit))
    return app
