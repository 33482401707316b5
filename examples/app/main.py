"""The example app's HTTP API: ``/me``, todo lists (shared within an organization) and
``/org/members``, guarded by ``current_user`` and ``current_membership``.

Run it from the repository root (SQLite file ``./workos_authkit.db`` by default; set
``AUTHKIT_DATABASE_URL=postgresql://...`` for PostgreSQL)::

    uvicorn examples.app.main:create_app --factory
"""

# No `from __future__ import annotations` here: FastAPI must see the Annotated aliases defined
# inside api_router() as real objects, not as strings it cannot resolve.
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, Field
from sqlmodel import Session, SQLModel, col, or_, select

from fastapi_workos_authkit import (
    AuthKit,
    WorkOSOrganizationMembership,
    WorkOSUser,
)

from .auth import create_authkit, find_user
from .models import APP_TABLES, AppUser, TodoList
from .organizations import Member, organization_members, require_admin


class NewTodoList(BaseModel):
    """The body of ``POST /todo-lists``."""

    name: str = Field(min_length=1, max_length=200)
    shared: bool = Field(
        False, description="Share the list with the organization the caller signed in to."
    )


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

    # --8<-- [start:membership-dependency]
    # The caller's active membership of the organization their token names: 403 otherwise
    # (no org_id, not a member, inactive or pending), fetched just in time if not synced yet.
    Membership = Annotated[WorkOSOrganizationMembership, Depends(authkit.current_membership)]

    def admin_membership(membership: Membership) -> WorkOSOrganizationMembership:
        return require_admin(membership)

    AdminMembership = Annotated[WorkOSOrganizationMembership, Depends(admin_membership)]

    async def optional_membership(request: Request) -> WorkOSOrganizationMembership | HTTPException:
        """The membership, or the 403 `current_membership` answered, for routes where an
        organization is optional (the caller's own lists are readable all the same)."""
        try:
            return await authkit.current_membership(request)
        except HTTPException as refusal:
            if refusal.status_code != status.HTTP_403_FORBIDDEN:
                raise  # 401 and 503 stay errors
            return refusal

    MaybeMembership = Annotated[
        WorkOSOrganizationMembership | HTTPException, Depends(optional_membership)
    ]
    # --8<-- [end:membership-dependency]

    def readable_by(owner: AppUser, membership: WorkOSOrganizationMembership | Any) -> Any:
        """The caller's own lists, and those shared with their organization while they are an
        active member of it."""
        mine = col(TodoList.owner_id) == owner.id
        if not isinstance(membership, WorkOSOrganizationMembership):
            return mine
        return or_(mine, col(TodoList.organization_id) == membership.organization_id)

    # --8<-- [start:me]
    @router.get("/me", response_model=WorkOSUser, summary="The caller's synced WorkOS user")
    def me(user: CurrentUser) -> WorkOSUser:
        return user

    # --8<-- [end:me]

    @router.get("/todo-lists", response_model=list[TodoList], summary="The caller's todo lists")
    def list_todo_lists(
        session: SessionDep, owner: Me, membership: MaybeMembership
    ) -> list[TodoList]:
        statement = select(TodoList).where(readable_by(owner, membership))
        return list(session.exec(statement.order_by(col(TodoList.id))).all())

    @router.post(
        "/todo-lists",
        response_model=TodoList,
        status_code=status.HTTP_201_CREATED,
        summary="Create a todo list",
    )
    def create_todo_list(
        body: NewTodoList, session: SessionDep, owner: Me, membership: MaybeMembership
    ) -> TodoList:
        assert owner.id is not None
        organization_id = None
        if body.shared:
            # Only an active member may share with the organization: 403 saying why otherwise.
            if isinstance(membership, HTTPException):
                raise membership
            organization_id = membership.organization_id
        todo_list = TodoList(name=body.name, owner_id=owner.id, organization_id=organization_id)
        session.add(todo_list)
        session.commit()
        session.refresh(todo_list)
        return todo_list

    @router.get("/todo-lists/{list_id}", response_model=TodoList, summary="One todo list")
    def read_todo_list(
        list_id: int, session: SessionDep, owner: Me, membership: MaybeMembership
    ) -> TodoList:
        statement = select(TodoList).where(TodoList.id == list_id)
        todo_list = session.exec(statement.where(readable_by(owner, membership))).first()
        if todo_list is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such todo list")
        return todo_list

    # --8<-- [start:members-route]
    @router.get(
        "/org/members",
        response_model=list[Member],
        summary="The members of the caller's organization (active admins only)",
        responses=authkit.current_membership.responses,
    )
    def list_members(session: SessionDep, admin: AdminMembership) -> list[Member]:
        return organization_members(session, admin.organization_id)

    # --8<-- [end:members-route]

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
