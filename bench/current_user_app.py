"""The app `bench_current_user.py` serves with uvicorn: three endpoints side by side.

* ``GET /noop``: an async endpoint doing nothing, the framework's floor.
* ``GET /me``: ``authkit.current_user`` (the token's session is checked with the user: the
  default ``reject_revoked_sessions``).
* ``GET /me-unchecked``: the same, on a second `AuthKit` with ``reject_revoked_sessions=False``:
  what the session check costs is the difference.
* ``GET /handwritten``: what the FastAPI tutorial leads a user to write: a sync dependency that
  decodes the token with PyJWT on every request and loads the row through a ``Session``
  dependency.

Configured by environment variables the driver sets: ``BENCH_DATABASE_URL``, ``BENCH_JWKS``
(the JWKS as JSON, served to AuthKit through a mock transport: no network in the app) and
``BENCH_CLIENT_ID``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from fastapi_workos_authkit import AuthKit, WorkOSUser
from fastapi_workos_authkit._sync.database import make_engine

CLIENT_ID = os.environ.get("BENCH_CLIENT_ID", "client_01BENCH")
JWKS: dict[str, Any] = json.loads(os.environ.get("BENCH_JWKS", '{"keys": []}'))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "sqlite:///./bench.db")
ISSUER = f"https://api.workos.com/user_management/{CLIENT_ID}"


def _serve_jwks(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=JWKS)


# AuthKit builds its own engine from the URL, as an app following the quickstart does; that is
# what lets "auto" read rows on its read pool on PostgreSQL. The hand-written dependency
# below gets its own engine, as it would in an app without this package.
authkit = AuthKit(
    client_id=CLIENT_ID,
    database_url=DATABASE_URL,
    http_transport=httpx.MockTransport(_serve_jwks),
    api_base_url="https://api.workos.com",
)
unchecked = AuthKit(
    client_id=CLIENT_ID,
    database_url=DATABASE_URL,
    http_transport=httpx.MockTransport(_serve_jwks),
    api_base_url="https://api.workos.com",
    reject_revoked_sessions=False,
)
# How the user row is read: "auto" (the default), "async" or "thread".
authkit.users.mode = os.environ.get("BENCH_USER_LOOKUP", "auto")  # type: ignore[assignment]
unchecked.users.mode = authkit.users.mode


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with authkit.lifespan(app), unchecked.lifespan(app):
        yield


app = FastAPI(lifespan=lifespan)
engine = make_engine(DATABASE_URL)

CurrentUser = Annotated[WorkOSUser, Depends(authkit.current_user)]
UncheckedUser = Annotated[WorkOSUser, Depends(unchecked.current_user)]


@app.get("/noop")
async def noop() -> dict[str, bool]:
    return {"ok": True}


@app.get("/me")
async def me(user: CurrentUser) -> dict[str, str]:
    return {"id": user.id, "email": user.email}


@app.get("/me-unchecked")
async def me_unchecked(user: UncheckedUser) -> dict[str, str]:
    return {"id": user.id, "email": user.email}


# --- the hand-written dependency, as the FastAPI tutorial teaches it --------------------------

_public_keys = {key["kid"]: jwt.PyJWK(key) for key in JWKS["keys"]}
_bearer = HTTPBearer()


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_user(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(_bearer)], session: SessionDep
) -> WorkOSUser:
    token = credentials.credentials
    try:
        kid = jwt.get_unverified_header(token)["kid"]
        payload = jwt.decode(
            token, _public_keys[kid].key, algorithms=["RS256"], issuer=ISSUER, leeway=10
        )
    except (jwt.PyJWTError, KeyError):
        raise HTTPException(401, "Invalid token") from None
    user = session.get(WorkOSUser, payload["sub"])
    if user is None:
        raise HTTPException(401, "Unknown user")
    return user


@app.get("/handwritten")
def handwritten(user: Annotated[WorkOSUser, Depends(get_current_user)]) -> dict[str, str]:
    return {"id": user.id, "email": user.email}
