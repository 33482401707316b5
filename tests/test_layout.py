"""The package's layout rules that a reviewer would otherwise have to remember.

Only the facade knows every feature: each feature module receives just the collaborators it
uses (an engine, its settings, a clock, an `AppProfile`...). A feature module that imports
`AuthKit` back, even only for a type under ``TYPE_CHECKING``, has dependencies that are too
wide, and is one refactoring away from an import cycle. So no module imports `AuthKit` or the
``_authkit`` module except the facade's consumers listed below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "fastapi_workos_authkit"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
FACADE_MODULE = f"{PACKAGE}._authkit"

FACADE_CONSUMERS = {
    "_authkit.py": "the facade itself",
    "__init__.py": "the package root re-exports it",
    "cli.py": "the command line loads the app's AuthKit (--app)",
    "_cli/*": "the commands run on the app's AuthKit",
    # The pytest plugin's fixtures build an AuthKit and hand it to the app's tests: it is a
    # consumer of the public API like an app, and imports the facade from the package root.
    "testing/pytest_plugin.py": "the workos_authkit fixture builds the app's AuthKit",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def facade_imports(source: str, importer: str, *, is_package: bool = False) -> list[str]:
    """Every place ``source`` imports `AuthKit` or the facade module, in any block (a function,
    ``if TYPE_CHECKING:``...), including through ``importlib.import_module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if _is_facade(a.name)]
        elif isinstance(node, ast.ImportFrom):
            origin = absolute(node.module, node.level, importer, is_package)
            for alias in node.names:
                # ``origin.name`` is the facade module too when ``origin`` is.
                if alias.name == "AuthKit" or _is_facade(f"{origin}.{alias.name}"):
                    found.append(f"{where}: from {origin} import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in ("AuthKit", "_authkit"):
            found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Call) and node.args:
            called = node.func.attr if isinstance(node.func, ast.Attribute) else None
            called = node.func.id if isinstance(node.func, ast.Name) else called
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and first.value.endswith("_authkit")
            ):
                found.append(f"{where}: {called}({first.value!r})")
    return found


def _is_facade(name: str) -> bool:
    return name == FACADE_MODULE or name.startswith(f"{FACADE_MODULE}.")


def is_consumer(path: Path) -> bool:
    relative = path.relative_to(PACKAGE_DIR).as_posix()
    return any(
        relative == allowed or (allowed.endswith("/*") and relative.startswith(allowed[:-1]))
        for allowed in FACADE_CONSUMERS
    )


def test_no_module_but_the_facade_and_its_consumers_imports_authkit() -> None:
    offenders = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if is_consumer(path):
            continue
        found = facade_imports(
            path.read_text("utf-8"), module_name(path), is_package=path.name == "__init__.py"
        )
        if found:
            offenders[path.relative_to(PACKAGE_DIR).as_posix()] = found
    assert offenders == {}, (
        "these modules import AuthKit back: hand them the collaborators they use instead "
        "(see docs/architecture.md)"
    )


def test_every_listed_consumer_exists() -> None:
    # A stale entry would silently allow a future module of that name.
    for allowed in FACADE_CONSUMERS:
        target = PACKAGE_DIR / allowed.removesuffix("/*")
        assert target.exists(), allowed


@pytest.mark.parametrize(
    "source",
    [
        "from .._authkit import AuthKit",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .._authkit import AuthKit",
        "def later():\n    from .. import AuthKit",
        "from .. import _authkit",
        "import fastapi_workos_authkit._authkit",
        "from fastapi_workos_authkit import AuthKit as Kit",
        "import fastapi_workos_authkit\nKit = fastapi_workos_authkit.AuthKit",
        "import importlib\nimportlib.import_module('fastapi_workos_authkit._authkit')",
    ],
)
def test_the_guard_sees_every_way_to_import_the_facade(source: str) -> None:
    assert facade_imports(source, "fastapi_workos_authkit._ops.doctor") != []


@pytest.mark.parametrize(
    "source",
    [
        "from .profile import AppProfile, ProfileSource",
        "from .._config import AuthKitSettings",
        "from .. import AuthKitError",
        "import fastapi_workos_authkit._auth.tokens",
    ],
)
def test_the_guard_lets_narrow_imports_through(source: str) -> None:
    assert facade_imports(source, "fastapi_workos_authkit._ops.doctor") == []


def test_relative_imports_resolve_from_the_importing_module() -> None:
    assert absolute("_authkit", 2, "fastapi_workos_authkit._ops.doctor", False) == FACADE_MODULE
    assert absolute("_authkit", 1, "fastapi_workos_authkit", True) == FACADE_MODULE
    assert absolute(None, 1, "fastapi_workos_authkit.cli", False) == PACKAGE


# --- One concurrency model: anyio, not asyncio --------------------------------------------------
#
# The package runs on anyio (docs/architecture.md, "What runs on the loop, what runs in a
# thread"): its locks, events, task groups and threads work on any backend and are checked by
# anyio's rules. asyncio is imported only where asyncio is the point, each module below with
# its reason; anything else that needs background work, a lock or an event uses anyio's.

ASYNCIO_MODULES = {
    # It must know whether the running loop is asyncio's, to use the two asyncio-only readers
    # below (and fall back to anyio's worker threads on trio).
    "_auth/user_store.py": "checks that the backend is asyncio before using its readers",
    # Its reader thread hands each batch of results back with loop.call_soon_threadsafe, one
    # wake-up of the loop per batch, without waiting for it; anyio's way back to the loop
    # (anyio.from_thread) makes the thread wait for the loop on every result, which costs what
    # the thread exists to save. asyncio-only by design (docs/architecture.md, what runs where).
    "_auth/read_thread.py": "hands results back to the loop with call_soon_threadsafe",
    # Sync Action handlers run on the endpoint's own threads, granted and handed back through
    # the loop's timers and call_soon_threadsafe: anyio's worker-thread hop and limiter cost
    # more per request than the handler (measured by bench/bench_actions.py).
    "_routes/action_threads.py": "runs sync Action handlers on threads of its own",
}


def asyncio_imports(source: str) -> list[str]:
    """Every place ``source`` imports asyncio or one of its submodules, in any block, including
    through ``importlib.import_module`` or ``__import__``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        where = f"line {getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if _is_asyncio(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and _is_asyncio(node.module or ""):
                names = ", ".join(alias.name for alias in node.names)
                found.append(f"{where}: from {node.module} import {names}")
        elif isinstance(node, ast.Call) and node.args:
            called = node.func.attr if isinstance(node.func, ast.Attribute) else None
            called = node.func.id if isinstance(node.func, ast.Name) else called
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _is_asyncio(first.value)
            ):
                found.append(f"{where}: {called}({first.value!r})")
    return found


def _is_asyncio(name: str) -> bool:
    return name == "asyncio" or name.startswith("asyncio.")


def test_no_module_but_the_listed_ones_imports_asyncio() -> None:
    offenders = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR).as_posix()
        if relative in ASYNCIO_MODULES:
            continue
        found = asyncio_imports(path.read_text("utf-8"))
        if found:
            offenders[relative] = found
    assert offenders == {}, (
        "these modules import asyncio: use anyio's locks, events, task groups and threads "
        "instead (see docs/architecture.md, what runs on the loop, what runs in a thread)"
    )


def test_every_module_allowed_asyncio_exists_and_uses_it() -> None:
    # A stale entry would silently allow asyncio back into a future module of that name.
    for allowed in ASYNCIO_MODULES:
        assert asyncio_imports((PACKAGE_DIR / allowed).read_text("utf-8")) != [], allowed


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import asyncio.events",
        "from asyncio import Lock",
        "from asyncio.tasks import create_task",
        "import anyio, asyncio as aio",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio",
        "def later():\n    import asyncio",
        "import importlib\nimportlib.import_module('asyncio')",
        "__import__('asyncio')",
    ],
)
def test_the_asyncio_guard_sees_every_way_to_import_it(source: str) -> None:
    assert asyncio_imports(source) != []


@pytest.mark.parametrize(
    "source",
    ["import anyio", "from anyio import Lock", "from .asyncio_helpers import x", "import asyncpg"],
)
def test_the_asyncio_guard_lets_anyio_through(source: str) -> None:
    assert asyncio_imports(source) == []
