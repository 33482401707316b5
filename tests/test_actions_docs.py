"""The Actions guide's code: every block is included from a file, and those files run here."""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel

from examples.snippets.actions_models import RegisteredDomain
from examples.snippets.actions_testing import check_free_mail_is_refused
from fastapi_workos_authkit import AuthKit
from fastapi_workos_authkit.testing import (
    authentication_action,
    signed_action_request,
    user_registration_action,
    verify_action_response,
)
from tests.conftest import ACTION_SECRET
from tests.test_docs import assert_python_blocks_are_snippets

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "actions.md"
EXAMPLE = ROOT / "examples" / "snippets" / "actions.py"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INCLUDE = re.compile(r'^--8<-- "([^":]+):([\w-]+)"$')


def test_every_python_block_of_the_guide_is_copied_from_a_tested_file() -> None:
    assert_python_blocks_are_snippets(GUIDE)


@pytest.fixture
def example(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh copy of the example app module, configured from the environment as documented."""
    monkeypatch.setenv("WORKOS_ACTION_SECRET", ACTION_SECRET)
    monkeypatch.setenv("AUTHKIT_DATABASE_URL", database_url)
    monkeypatch.delenv("WORKOS_WEBHOOK_SECRET", raising=False)
    spec = importlib.util.spec_from_file_location(f"actions_example_{uuid.uuid4().hex}", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.authkit.engine.dispose()


@pytest.fixture
async def client(example: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        example.lifespan(example.app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=example.app), base_url="http://testserver"
        ) as client,
    ):
        yield client


async def post(client: httpx.AsyncClient, payload: dict[str, object]) -> httpx.Response:
    body, headers = signed_action_request(payload, ACTION_SECRET)
    return await client.post("/workos/action", content=body, headers=headers)


@pytest.mark.anyio
async def test_the_documented_test_passes(client: httpx.AsyncClient) -> None:
    await check_free_mail_is_refused(client, ACTION_SECRET)


@pytest.mark.anyio
async def test_registration_reads_the_allowed_domains(
    client: httpx.AsyncClient, example: ModuleType
) -> None:
    unknown = await post(client, user_registration_action("ana@acme.test"))
    assert verify_action_response(unknown.content, ACTION_SECRET).payload.error_message == (
        "Your organization is not registered"
    )
    with Session(example.authkit.engine) as session:
        session.add(RegisteredDomain(domain="acme.test"))
        session.commit()
    known = await post(client, user_registration_action("Ana@ACME.test"))
    assert verify_action_response(known.content, ACTION_SECRET).payload.verdict == "Allow"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("risk", "status", "verdict"),
    [(10, 200, "Allow"), (95, 200, "Deny"), (None, 500, None)],
    ids=["calm", "risky", "risk-api-down"],
)
async def test_authentication_asks_the_risk_api(
    client: httpx.AsyncClient,
    example: ModuleType,
    risk: int | None,
    status: int,
    verdict: str | None,
) -> None:
    with respx.mock(assert_all_called=True) as mock:
        answer = httpx.Response(503) if risk is None else httpx.Response(200, json={"score": risk})
        route = mock.post(example.RISK_API).mock(return_value=answer)
        reply = await post(client, authentication_action(ip_address="203.0.113.9"))
    assert json.loads(route.calls.last.request.content)["ip"] == "203.0.113.9"
    assert reply.status_code == status
    if verdict is not None:
        assert verify_action_response(reply.content, ACTION_SECRET).payload.verdict == verdict


def test_the_example_mounts_only_the_action_route(example: ModuleType) -> None:
    paths = example.app.openapi()["paths"]
    assert set(paths) == {"/workos/action"}
    operation = paths["/workos/action"]["post"]
    assert {"200", "400", "401", "413", "500", "503", "504"} <= set(operation["responses"])
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("WorkOS-Signature", "header", True)
    ]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/SignedActionResponse"}


@pytest.mark.anyio
async def test_the_async_registration_reads_the_allowed_domains_off_the_loop(
    engine: Engine,
) -> None:
    from examples.snippets.actions_async import registration

    kit = AuthKit(engine=engine, action_secret=ACTION_SECRET)
    kit.add_action_handler("user_registration", registration)
    app = FastAPI(lifespan=kit.lifespan)
    app.include_router(kit.router(webhooks=False))
    async with (
        kit.lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        await anyio.to_thread.run_sync(
            lambda: SQLModel.metadata.create_all(engine, tables=[RegisteredDomain.__table__])  # type: ignore[attr-defined]
        )
        unknown = await post(client, user_registration_action("ana@acme.test"))
        with Session(engine) as session:
            session.add(RegisteredDomain(domain="acme.test"))
            session.commit()
        known = await post(client, user_registration_action("Ana@ACME.test"))
    assert verify_action_response(unknown.content, ACTION_SECRET).payload.error_message == (
        "Your organization is not registered"
    )
    assert verify_action_response(known.content, ACTION_SECRET).payload.verdict == "Allow"
