"""The committed dashboard build (``src/hutch/dashboard/static``, ADR 0027): fresh, and fit
for the strict Content-Security-Policy it is served under. No npm here: the build records
a digest of the sources it was built from (``frontend/scripts/stamp.mjs``), recomputed
below the same way."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FRONTEND = REPO / "frontend"
STATIC = REPO / "src" / "hutch" / "dashboard" / "static"
#: What ``stamp.mjs`` digests (its ``SOURCES``), relative to ``frontend/``.
SOURCES = (
    "index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts",
    "public", "src", "scripts",
)  # fmt: skip


def _source_digest() -> str:
    files: list[str] = []
    for name in SOURCES:
        path = FRONTEND / name
        found = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        files += [p.relative_to(FRONTEND).as_posix() for p in found]
    digest = hashlib.sha256()
    for rel in sorted(files):
        content = hashlib.sha256((FRONTEND / rel).read_bytes()).hexdigest()
        digest.update(f"{rel}\0{content}\n".encode())
    return digest.hexdigest()


def test_static_build_matches_frontend_sources() -> None:
    stamp = json.loads((STATIC / "build.json").read_text())
    assert stamp["sourceDigest"] == _source_digest(), (
        "src/hutch/dashboard/static is older than frontend/: run `npm ci && npm run build` "
        "in frontend/ and commit the result"
    )


def test_stamp_script_digests_the_same_sources() -> None:
    script = (FRONTEND / "scripts" / "stamp.mjs").read_text()
    listed = re.search(r"SOURCES = \[([^\]]*)\]", script)
    assert listed is not None
    assert tuple(re.findall(r'"([^"]+)"', listed.group(1))) == SOURCES


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] in ("script", "style") and data.strip():
            self.inline_script = True


def test_static_index_has_nothing_inline_and_names_existing_assets() -> None:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    assert not page.inline_script
    assert "style" not in {tag for tag, _ in page.tags}
    for tag, attrs in page.tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
    linked = [a.get("src") or a.get("href") for t, a in page.tags if t in ("script", "link")]
    suffixes = {Path(str(x)).suffix for x in linked}
    assert {".js", ".css"} <= suffixes, linked
    for url in linked:
        assert url is not None and url.startswith("/dashboard/"), url
        assert (STATIC / url.removeprefix("/dashboard/")).is_file(), url


def test_static_assets_need_no_eval_inline_data_or_secrets() -> None:
    assets = sorted((STATIC / "assets").iterdir())
    assert assets
    for asset in assets:
        assert asset.suffix in (".js", ".css"), asset.name  # no source maps, no images
        text = asset.read_text()
        assert re.search(r"\beval\(|new Function\(", text) is None, asset.name
        assert "url(data:" not in text.replace(" ", ""), asset.name
        assert re.search(r"e2b_[0-9a-f]{40}", text) is None, asset.name


def test_frontend_sources_never_render_strings_as_markup() -> None:
    # Strings from the API (names, metadata, file names, log lines) reach the page as JSX
    # text only; a way to hand markup to the DOM would have to appear here.
    pattern = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|dangerouslySetInnerHTML|"
                         r"document\.write|\beval\(|new Function\(")  # fmt: skip
    for path in sorted((FRONTEND / "src").rglob("*.ts*")):
        found = pattern.search(path.read_text())
        assert found is None, f"{path.relative_to(REPO)}: {found.group(0) if found else ''}"


def test_frontend_errors_are_shown_through_api_message() -> None:
    # A caught value is not always an Error; api.ts's message() says what it is, where
    # ``(err as Error).message`` would show "undefined" (the TimeoutForm did).
    raw = re.compile(r"as Error\)\.message")
    offenders = [
        f"{p.relative_to(FRONTEND)}:{n}"
        for p in sorted((FRONTEND / "src").rglob("*.ts*"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if raw.search(line)
    ]
    assert offenders == [], f"use message(err) from api.ts: {offenders}"
