"""current_user patterns from docs/current-user.md, run by tests/test_current_user_docs.py."""

from typing import Annotated

from fastapi import Depends, FastAPI, WebSocket

from fastapi_workos_authkit import (
    AccessTokenClaims,
    AuthKit,
    WorkOSUser,
    auth_config_providers,
    custom_domain_providers,
)

# --8<-- [start:setup]
authkit = AuthKit()  # WORKOS_CLIENT_ID is all token checks need; WORKOS_API_KEY enables JIT
app = FastAPI(lifespan=authkit.lifespan)  # the lifespan preloads the signing keys

CurrentUser = Annotated[WorkOSUser, Depends(authkit.current_user)]
OptionalUser = Annotated[WorkOSUser | None, Depends(authkit.optional_user)]
Claims = Annotated[AccessTokenClaims, Depends(authkit.claims)]


@app.get("/me")
async def me(user: CurrentUser) -> dict[str, str]:
    return {"id": user.id, "email": user.email}


@app.get("/greeting")
async def greeting(user: OptionalUser) -> dict[str, str]:
    return {"message": f"Hello, {user.first_name if user else 'stranger'}!"}


@app.get("/session")
async def session(claims: Claims) -> dict[str, str | None]:
    # Claims come from the token alone: no database read.
    return {"user": claims.sub, "organization": claims.org_id, "role": claims.role}


# --8<-- [end:setup]


# --8<-- [start:authorization]
@app.delete(
    "/posts/{post_id}",
    dependencies=[Depends(authkit.require_permissions("posts:delete"))],
)
async def delete_post(post_id: int) -> dict[str, int]:
    return {"deleted": post_id}


@app.get("/billing", dependencies=[Depends(authkit.require_roles("admin", "owner"))])
async def billing() -> dict[str, str]:
    return {"plan": "pro"}


@app.get("/team", dependencies=[Depends(authkit.require_organization())])
async def team(claims: Claims) -> dict[str, str | None]:
    return {"organization": claims.org_id}


# --8<-- [end:authorization]


# --8<-- [start:websocket]
@app.websocket("/ws")
async def notifications(websocket: WebSocket, user: CurrentUser) -> None:
    await websocket.accept()
    await websocket.send_json({"hello": user.id})
    await websocket.close()


# --8<-- [end:websocket]


# --8<-- [start:providers]
def convex_style_config(client_id: str) -> dict[str, object]:
    # The same list the verifier trusts, for another service (a Convex auth.config, a gateway).
    return {"providers": auth_config_providers(client_id)}


custom_domain = AuthKit(
    client_id="client_123",
    extra_providers=custom_domain_providers("client_123", "auth.example.com"),
)
# --8<-- [end:providers]
