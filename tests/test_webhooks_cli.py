"""`webhooks list/setup/delete` and the functions behind them, against the package's FakeWorkOS.

The command-line tests serve the fake on a loopback port and reach it through
``WORKOS_API_BASE_URL``, as a deployment pointed at an emulator would.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy.exc import NoSuchModuleError

from fastapi_workos_authkit import AuthKit, ConfigurationError
from fastapi_workos_authkit._cli.webhooks import run_webhooks
from fastapi_workos_authkit._ops.webhook_endpoints import (
    WebhookSetupError,
    create_webhook_endpoint,
    delete_webhook_endpoint,
    list_webhook_endpoints,
    needed_event_types,
    plan_setup,
    same_url,
    setup_webhook_endpoint,
    update_webhook_endpoint,
)
from fastapi_workos_authkit._recovery.workos_api import WorkOSAPIError, WorkOSClient
from fastapi_workos_authkit.cli import build_parser, main
from fastapi_workos_authkit.testing.fake_workos import FakeWorkOS, FakeWorkOSServer

pytestmark = pytest.mark.anyio

API_KEY = "sk_webhooks_key"
URL = "https://preview-42.example.com/workos/webhook"
USER_TYPES = ["user.created", "user.deleted", "user.updated"]

APP_MODULE = textwrap.dedent(
    """
    from fastapi_workos_authkit import AuthKit, ConfigurationError

    authkit = AuthKit(additional_event_types=["organization_domain.verified"])


    @authkit.on("role.created")
    def sync_roles(session, event) -> None:
        pass
    """
)


@pytest.fixture
def fake() -> FakeWorkOS:
    return FakeWorkOS(api_key=API_KEY)


@pytest.fixture
def server(fake: FakeWorkOS, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorkOSServer]:
    for name in list(os.environ):
        if name.startswith(("WORKOS_", "AUTHKIT_")):
            monkeypatch.delenv(name)
    with FakeWorkOSServer(fake) as server:
        monkeypatch.setenv("WORKOS_API_BASE_URL", server.base_url)
        monkeypatch.setenv("WORKOS_API_KEY", API_KEY)
        yield server


@pytest.fixture
def app(tmp_path: Path) -> str:
    """An app module with a ``role.created`` handler, under a name no other test imported."""
    name = f"webhooks_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(APP_MODULE)
    return f"{name}:authkit"


def run(*argv: str, app_dir: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    extra = ["--app-dir", str(app_dir)] if app_dir is not None else []
    code = main([*extra, *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


class Terminal(io.StringIO):
    """Typed answers on a terminal."""

    def isatty(self) -> bool:
        return True


def kit_for(fake: FakeWorkOS, **options: object) -> AuthKit:
    return AuthKit(
        api_key=API_KEY,
        api_base_url="https://api.workos.test",
        http_transport=fake.transport(),
        **options,
    )


def posts(fake: FakeWorkOS) -> int:
    return sum(1 for r in fake.requests if r.method == "POST")


# -- the fake speaks the webhook-endpoints API as WorkOS does ---------------------------------


async def test_fake_lists_newest_first_in_the_list_envelope_and_never_a_secret(
    fake: FakeWorkOS,
) -> None:
    async with httpx.AsyncClient(
        transport=fake.transport(),
        base_url="https://api.workos.test",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as http:
        created = []
        for index in range(3):
            answer = await http.post(
                "/webhook_endpoints",
                json={"endpoint_url": f"https://a{index}.example/hook", "events": USER_TYPES},
            )
            assert answer.status_code == 201
            body = answer.json()
            assert body["object"] == "webhook_endpoint"
            assert body["id"].startswith("we_")
            assert body["status"] == "enabled"
            assert isinstance(body["secret"], str)
            assert body["secret"]
            created.append(body)
        page = (await http.get("/webhook_endpoints", params={"limit": 2})).json()
        assert page["object"] == "list"
        assert [e["id"] for e in page["data"]] == [created[2]["id"], created[1]["id"]]
        assert page["list_metadata"] == {"before": None, "after": created[1]["id"]}
        rest = (await http.get("/webhook_endpoints", params={"after": created[1]["id"]})).json()
        assert [e["id"] for e in rest["data"]] == [created[0]["id"]]
        oldest = (await http.get("/webhook_endpoints", params={"order": "asc"})).json()
        assert [e["id"] for e in oldest["data"]] == [c["id"] for c in created]
        assert all("secret" not in e for e in page["data"] + rest["data"] + oldest["data"])

        changed = await http.patch(
            f"/webhook_endpoints/{created[0]['id']}",
            json={"status": "disabled", "events": ["user.created"]},
        )
        assert changed.status_code == 200
        assert changed.json()["status"] == "disabled"
        assert "secret" not in changed.json()
        assert (
            await http.patch(f"/webhook_endpoints/{created[0]['id']}", json={"status": "x"})
        ).status_code == 422
        gone = await http.delete(f"/webhook_endpoints/{created[0]['id']}")
        assert gone.status_code == 204
        assert gone.content == b""
        assert (await http.delete(f"/webhook_endpoints/{created[0]['id']}")).status_code == 404
        unauthorized = await http.get("/webhook_endpoints", headers={"Authorization": "Bearer x"})
        assert unauthorized.status_code == 401


async def test_client_functions_round_trip_and_refuse_an_implausible_id(fake: FakeWorkOS) -> None:
    async with WorkOSClient(
        base_url="https://api.workos.test", api_key=API_KEY, transport=fake.transport()
    ) as client:
        created = await create_webhook_endpoint(client, URL, USER_TYPES)
        assert created.secret == fake.webhook_endpoints.secret_of(created.endpoint.id)
        assert created.secret not in repr(created)
        listed = await list_webhook_endpoints(client)
        assert listed == [created.endpoint]
        updated = await update_webhook_endpoint(client, created.endpoint.id, status="disabled")
        assert not updated.enabled
        requests_before = len(fake.requests)
        with pytest.raises(WorkOSAPIError, match="implausible webhook endpoint id"):
            await update_webhook_endpoint(client, "../users", status="enabled")
        assert len(fake.requests) == requests_before  # nothing was sent
        await delete_webhook_endpoint(client, created.endpoint.id)
        await delete_webhook_endpoint(client, created.endpoint.id)  # already gone: fine
        assert await list_webhook_endpoints(client) == []


# -- the needed set and the matching --------------------------------------------------------


def test_needed_set_is_explicit_names_from_users_kinds_handlers_and_settings() -> None:
    kit = AuthKit(mirror=["organization"], additional_event_types=["dsync.user.created"])
    kit.add_handler("role.created", lambda session, event: None)
    needed = needed_event_types(kit, ["authentication.email_verification_succeeded"])
    assert sorted(needed) == sorted(
        [
            *USER_TYPES,
            "organization.created",
            "organization.updated",
            "organization.deleted",
            "role.created",
            "dsync.user.created",
            "authentication.email_verification_succeeded",
        ]
    )
    assert "session.created" not in needed  # sessions are not mirrored here, nor handled
    assert needed["role.created"].handlers[0].endswith("<lambda>")
    with pytest.raises(WebhookSetupError, match="without wildcards"):
        needed_event_types(kit, ["user.*"])


def test_the_needed_set_reads_what_the_app_listens_to_and_builds_nothing() -> None:
    """`needed_event_types` reads the app's `AppProfile`: the engine, the WorkOS client and the
    token issuers stay unbuilt, so a database driver that is not installed or an unusable JWKS
    base URL (doctor's findings) cannot stop `webhooks setup`."""
    kit = AuthKit(
        database_url="postgresql+nodriver://u@localhost/db",
        api_base_url="ftp://nowhere",
        client_id="client_01LAZY",
        additional_event_types=["dsync.user.created"],
    )
    kit.add_handler("role.created", lambda session, event: None)
    kit.add_action_handler("authentication", lambda session, action, response: None)
    profile = kit.app_profile()
    needed = needed_event_types(kit)
    # The webhooks and the Events API catch-up ask for the same types.
    assert sorted(needed) == list(profile.event_types_in_play)
    assert needed["role.created"].handlers == profile.handler_names["role.created"]
    assert profile.has_action_handlers
    assert profile.mirrored_kinds == {"user", "organization", "organization_membership", "session"}
    with pytest.raises(ConfigurationError, match="must be an http"):
        profile.jwks_urls()  # built only when doctor checks the JWKS
    with pytest.raises(NoSuchModuleError):
        profile.engine()  # built only when doctor checks the database


def test_urls_match_without_trailing_slash_or_query_and_duplicates_are_refused() -> None:
    assert same_url(URL, URL + "/")
    assert same_url(URL, URL + "?x=1")
    assert not same_url(URL, "https://other.example.com/workos/webhook")


# -- webhooks setup -------------------------------------------------------------------------


def test_setup_creates_the_endpoint_prints_the_secret_once_and_list_never_shows_it(
    fake: FakeWorkOS, server: FakeWorkOSServer, app: str, tmp_path: Path
) -> None:
    code, out, err = run("webhooks", "setup", "--url", URL, "--app", app, "--yes", app_dir=tmp_path)
    assert code == 0, err
    (endpoint_id,) = fake.webhook_endpoints.endpoints.live
    secret = fake.webhook_endpoints.secret_of(endpoint_id)
    assert f"WORKOS_WEBHOOK_SECRET={secret}" in out
    assert out.count(secret) == 1
    assert secret not in err
    assert set(fake.webhook_endpoints.endpoints.live[endpoint_id]["events"]) >= {
        *USER_TYPES,
        "role.created",
        "organization_domain.verified",
        "session.created",
    }

    code, listed, _ = run("webhooks", "list")
    assert code == 0
    assert endpoint_id in listed
    assert "enabled" in listed
    assert "role.created" in listed
    assert secret not in listed
    code, as_json, _ = run("webhooks", "list", "--json")
    assert code == 0
    assert secret not in as_json
    assert json.loads(as_json)[0]["endpoint_url"] == URL


def test_setup_updates_the_endpoint_with_that_url_to_exactly_what_is_needed(
    fake: FakeWorkOS, server: FakeWorkOSServer, app: str, tmp_path: Path
) -> None:
    kit = kit_for(fake)

    async def create_disabled() -> str:
        created = await create_webhook_endpoint(kit.workos_api, URL, [*USER_TYPES, "dsync.deleted"])
        await update_webhook_endpoint(kit.workos_api, created.endpoint.id, status="disabled")
        await kit.shutdown()
        return created.endpoint.id

    endpoint_id = anyio.run(create_disabled)
    secret = fake.webhook_endpoints.secret_of(endpoint_id)
    secret_file = tmp_path / "secret"
    code, out, err = run(
        "webhooks",
        "setup",
        "--url",
        URL + "/",  # the same URL, a trailing slash apart
        "--app",
        app,
        "--events",
        "a.one,b.two",
        "c.three",
        "--yes",
        "--secret-file",
        str(secret_file),
        app_dir=tmp_path,
    )
    assert code == 0, err
    assert "status: disabled -> enabled" in err
    assert "  + role.created" in err
    assert "  - dsync.deleted" in err
    assert f"updated {endpoint_id}" in out
    assert "nothing was written" in err
    assert not secret_file.exists()
    assert secret not in out + err
    endpoint = fake.webhook_endpoints.endpoints.live[endpoint_id]
    assert endpoint["status"] == "enabled"
    assert {"a.one", "b.two", "c.three", "role.created"} <= set(endpoint["events"])
    assert "dsync.deleted" not in endpoint["events"]
    assert posts(fake) == 1  # the first create only: setup updated

    code, out, _ = run(
        "webhooks",
        "setup",
        "--url",
        URL,
        "--app",
        app,
        "--events",
        "a.one,b.two",
        "c.three",
        app_dir=tmp_path,
    )
    assert code == 0
    assert "already enabled and subscribed" in out


def test_setup_refuses_when_several_endpoints_share_the_url(
    fake: FakeWorkOS, server: FakeWorkOSServer
) -> None:
    kit = kit_for(fake)

    async def two() -> list[str]:
        ids = [
            (await create_webhook_endpoint(kit.workos_api, url, USER_TYPES)).endpoint.id
            for url in (URL, URL + "?copy=1")
        ]
        await kit.shutdown()
        return ids

    ids = anyio.run(two)
    code, out, err = run("webhooks", "setup", "--url", URL, "--yes")
    assert code == 1
    assert all(endpoint_id in err for endpoint_id in ids)
    assert posts(fake) == 2
    assert out == ""


def test_setup_without_a_terminal_or_yes_changes_nothing(
    fake: FakeWorkOS, server: FakeWorkOSServer
) -> None:
    code, _out, err = run("webhooks", "setup", "--url", URL)
    assert code == 1
    assert "nothing changed" in err
    assert "create an endpoint" in err
    assert posts(fake) == 0
    assert not fake.webhook_endpoints.endpoints.live


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_setup_asks_on_a_terminal_declining_changes_nothing_accepting_applies(
    fake: FakeWorkOS, server: FakeWorkOSServer
) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run_webhooks(parsed("webhooks", "setup", "--url", URL), out, err, stdin=Terminal("n\n"))
    assert code == 1
    assert "Apply? [y/N]" in err.getvalue()
    assert "nothing changed" in err.getvalue()
    assert posts(fake) == 0

    out, err = io.StringIO(), io.StringIO()
    code = run_webhooks(parsed("webhooks", "setup", "--url", URL), out, err, stdin=Terminal("y\n"))
    assert code == 0, err.getvalue()
    assert posts(fake) == 1
    assert "WORKOS_WEBHOOK_SECRET=" in out.getvalue()


def test_secret_file_gets_the_raw_secret_mode_0600(
    fake: FakeWorkOS, server: FakeWorkOSServer, tmp_path: Path
) -> None:
    path = tmp_path / "webhook-secret"
    path.write_text("old")
    path.chmod(0o644)
    code, out, err = run("webhooks", "setup", "--url", URL, "--yes", "--secret-file", str(path))
    assert code == 0, err
    (endpoint_id,) = fake.webhook_endpoints.endpoints.live
    secret = fake.webhook_endpoints.secret_of(endpoint_id)
    assert path.read_text() == secret + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret not in out + err
    assert "WORKOS_WEBHOOK_SECRET" in out


def test_an_unwritable_secret_file_is_refused_before_anything_is_created(
    fake: FakeWorkOS, server: FakeWorkOSServer, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "secret"
    code, _, err = run("webhooks", "setup", "--url", URL, "--yes", "--secret-file", str(missing))
    assert code == 1
    assert "does not exist" in err
    assert "nothing changed" in err
    assert fake.requests == []


def test_the_create_call_is_never_retried(fake: FakeWorkOS, server: FakeWorkOSServer) -> None:
    # The list goes through; the create gets a 503, which a GET would retry.
    fake.fail_with_status(3, status=503, path="/webhook_endpoints", skip=1)
    code, _out, err = run("webhooks", "setup", "--url", URL, "--yes")
    assert code == 5
    assert "never retried" in err
    assert "webhooks list" in err
    assert [r.method for r in fake.requests] == ["GET", "POST"]


async def test_setup_from_code_returns_the_secret_on_creation_only(fake: FakeWorkOS) -> None:
    kit = kit_for(fake)
    seen = []
    first = await setup_webhook_endpoint(kit, URL, confirm=lambda plan: seen.append(plan) or True)
    assert first.applied
    assert first.plan.action == "create"
    assert first.secret
    again = await setup_webhook_endpoint(kit, URL, events=["role.created"])
    assert again.plan.action == "update"
    assert again.plan.added == ("role.created",)
    assert again.secret is None
    declined = await setup_webhook_endpoint(kit, URL, confirm=lambda plan: False)
    assert not declined.applied
    assert declined.plan.removed == ("role.created",)
    assert [p.action for p in seen] == ["create"]
    with pytest.raises(WebhookSetupError, match="absolute"):
        plan_setup([], "/workos/webhook", USER_TYPES)
    await kit.shutdown()


# -- webhooks delete ------------------------------------------------------------------------


def test_delete_removes_every_endpoint_with_the_url_after_confirmation(
    fake: FakeWorkOS, server: FakeWorkOSServer
) -> None:
    assert run("webhooks", "setup", "--url", URL, "--yes")[0] == 0
    assert (
        run("webhooks", "setup", "--url", "https://prod.example.com/workos/webhook", "--yes")[0]
        == 0
    )

    code, _, err = run("webhooks", "delete", "--url", URL)
    assert code == 1
    assert "nothing changed" in err
    assert len(fake.webhook_endpoints.endpoints.live) == 2
    out, err_io = io.StringIO(), io.StringIO()
    args = parsed("webhooks", "delete", "--url", URL)
    assert run_webhooks(args, out, err_io, stdin=Terminal("no\n")) == 1
    assert len(fake.webhook_endpoints.endpoints.live) == 2

    code, out_text, err = run("webhooks", "delete", "--url", URL + "/", "--yes")
    assert code == 0, err
    assert "deleted we_" in out_text
    remaining = list(fake.webhook_endpoints.endpoints.live.values())
    assert [e["endpoint_url"] for e in remaining] == ["https://prod.example.com/workos/webhook"]

    code, out_text, _ = run("webhooks", "delete", "--url", URL, "--yes")
    assert code == 0
    assert "nothing to delete" in out_text


# -- configuration errors -------------------------------------------------------------------


def test_missing_and_refused_api_keys(
    fake: FakeWorkOS, server: FakeWorkOSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKOS_API_KEY", "sk_wrong")
    code, _, err = run("webhooks", "list")
    assert code == 4
    assert "WORKOS_API_KEY" in err
    monkeypatch.delenv("WORKOS_API_KEY")
    code, _, err = run("webhooks", "list")
    assert code == 3
    assert "WORKOS_API_KEY is not set" in err


# -- the preview recipe of docs/preview-environments.md ------------------------------------


async def test_the_preview_hooks_keep_the_secret_made_at_creation(fake: FakeWorkOS) -> None:
    from examples.snippets.preview_webhooks import on_preview_deployed, on_preview_removed

    kit = kit_for(fake)
    kit.add_handler("role.created", lambda session, event: None)
    stored: list[str] = []
    preview = "https://pr-7.preview.example.com"
    await on_preview_deployed(kit, preview, stored.append)
    await on_preview_deployed(kit, preview, stored.append)  # a redeploy: updated, no new secret
    (endpoint_id,) = fake.webhook_endpoints.endpoints.live
    assert stored == [fake.webhook_endpoints.secret_of(endpoint_id)]
    assert "role.created" in fake.webhook_endpoints.endpoints.live[endpoint_id]["events"]
    await on_preview_removed(kit, preview)
    assert not fake.webhook_endpoints.endpoints.live
    await kit.shutdown()
