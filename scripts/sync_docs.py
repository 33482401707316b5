"""Copy the tested example code into the guides' code blocks, so the Markdown shows it anywhere.

The guides' code lives in files that the test suite runs (examples/, tests/). Each code block
that shows one of them is marked with an HTML comment, invisible on a code host and in the
built site, naming the file and, after a colon, a section between
``# --8<-- [start:name]`` and ``# --8<-- [end:name]`` lines:

    <!-- snippet: examples/quickstart.py -->
    ```python title="app.py"
    ...the file's code, copied here...
    ```

Run ``python scripts/sync_docs.py`` after changing an example: it rewrites the blocks (and turns
a ``--8<-- "path:section"`` include line into a marked block). ``tests/test_docs.py`` fails when
a block differs from its file, so the guides never show code that was not run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

MARKER = re.compile(r"^(?P<indent>[ \t]*)<!-- snippet: (?P<ref>[^ ]+) -->$")
INCLUDE = re.compile(r'^(?P<indent>[ \t]*)--8<-- "(?P<ref>[^"]+)"$')
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)")
SECTION = re.compile(r"--8<-- \[(start|end):[\w-]+\]")


def extract(ref: str) -> list[str]:
    """The lines ``ref`` (``path`` or ``path:section``) names, without section markers."""
    path, _, section = ref.partition(":")
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    if section:
        start = next(
            (i for i, line in enumerate(lines) if f"--8<-- [start:{section}]" in line), None
        )
        end = next((i for i, line in enumerate(lines) if f"--8<-- [end:{section}]" in line), None)
        if start is None or end is None or end < start:
            raise ValueError(f"{path} has no section {section!r} (start and end markers)")
        lines = lines[start + 1 : end]
    lines = [line for line in lines if not SECTION.search(line)]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def sync(text: str) -> str:
    """``text`` with every marked block (and every include line) filled from its file."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        fence = FENCE.match(lines[i + 1]) if marker and i + 1 < len(lines) else None
        if marker and fence:
            ref, indent = marker["ref"], marker["indent"]
            close = next(
                j
                for j in range(i + 2, len(lines))
                if lines[j].strip() == fence["fence"] and lines[j].startswith(fence["indent"])
            )
            out += [line, lines[i + 1]]
            out += [f"{indent}{code}" if code else "" for code in extract(ref)]
            out.append(lines[close])
            i = close + 1
            continue
        fence = FENCE.match(line)
        include = INCLUDE.match(lines[i + 1]) if fence and i + 1 < len(lines) else None
        if fence and include and lines[i + 2].strip() == fence["fence"]:
            indent = fence["indent"]
            out += [f"{indent}<!-- snippet: {include['ref']} -->", line]
            out += [f"{indent}{code}" if code else "" for code in extract(include["ref"])]
            out.append(lines[i + 2])
            i += 3
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def pages() -> list[Path]:
    """The Markdown files whose blocks are synced: the guides and the READMEs."""
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md", ROOT / "examples" / "app" / "README.md"]


def main() -> int:
    """Rewrite the pages whose blocks differ from their files; print which."""
    for page in pages():
        text = page.read_text(encoding="utf-8")
        synced = sync(text)
        if synced != text:
            page.write_text(synced, encoding="utf-8")
            print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
