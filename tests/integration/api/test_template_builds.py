"""The template build endpoints with the official SDK's ``Template.build`` against the real
API on SQLite, with a fake :class:`~hutch.api.service.ports.BuildRunner` (the real one, with
a node and a build sandbox, is tests/e2e/test_template_builds.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import uvicorn
from e2b import BuildException, Template

from hutch.api.app import create_app
from hutch.api.service.ports import BuildFailedError, BuildLogger
from hutch.api.settings import ApiSettings
from tests.conftest import free_port
from tests.fakes.node import FakeNodeClient
from tests.integration.api.conftest import _seed, run_async


class FakeBuildRunner:
    """Records uploads and builds; a RUN step ``fail`` fails at that step."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.builds: list[tuple[str, Mapping[str, object]]] = []

    async def has_files(self, files_hash: str) -> bool:
        return files_hash in self.files

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        self.files[files_hash] = b"".join([c async for c in chunks])

    async def run_build(
        self, name: str, start: Mapping[str, object], *, cpu_count: float, memory_mb: int,
        log: BuildLogger, build_id: str,
    ) -> None:  # fmt: skip
        self.builds.append((name, start))
        steps = start.get("steps") or []
        assert isinstance(steps, list)
        for i in range(150):  # more than one status page (100 entries)
            log("info", f"line {i}", None)
        for index, step in enumerate(steps):
            log("info", f"[{index}] {step['type']}", str(index))
            if step["type"] == "RUN" and step["args"][0] == "fail":
                log("info", "the step's own output", str(index))
                raise BuildFailedError(f"step {index} failed with exit code 1", step=str(index))
            await asyncio.sleep(0)


@pytest.fixture
def builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, FakeBuildRunner]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    key, _team, other_key, _admin = run_async(lambda: _seed(url))
    runner = FakeBuildRunner()
    port = free_port()
    cfg = ApiSettings(home=tmp_path, database_url=url, api_host="127.0.0.1", api_port=port,
                      reaper_interval_s=3600)  # fmt: skip
    app = create_app(cfg, node=FakeNodeClient(), build_runner=runner)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    api = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("E2B_API_URL", api)
    monkeypatch.setenv("E2B_API_KEY", key)
    monkeypatch.setenv("E2B_SANDBOX_URL", "http://127.0.0.1:9")
    try:
        yield api, other_key, runner
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_build_uploads_files_once_and_streams_every_log_line(
    builds: tuple[str, str, FakeBuildRunner], tmp_path: Path
) -> None:
    api, other_key, runner = builds
    (tmp_path / "app.py").write_text("print('hi')\n")
    template = (
        Template(file_context_path=str(tmp_path)).from_template("base")
        .copy("app.py", "/app/").run_cmd("echo ok")
    )  # fmt: skip
    logs: list[str] = []
    Template.build(template, "built", on_build_logs=lambda e: logs.append(e.message))
    assert [m for m in logs if m.startswith("line ")] == [f"line {i}" for i in range(150)]
    assert any(m.startswith("Uploaded 'app.py'") for m in logs), logs
    assert len(runner.files) == 1
    name, start = runner.builds[0]
    assert name == "built" and start["fromTemplate"] == "base"
    assert [s["type"] for s in start["steps"]] == ["COPY", "RUN"]  # type: ignore[index]

    logs.clear()
    Template.build(template, "built", on_build_logs=lambda e: logs.append(e.message))
    assert any("already cached" in m for m in logs), logs
    assert Template.exists("built")
    listed = httpx.get(f"{api}/templates", headers={"X-API-Key": runner_key()}).json()
    assert {"built"} <= {t["templateID"] for t in listed}
    assert next(t for t in listed if t["templateID"] == "built")["buildStatus"] == "ready"
    # Another team sees the name as taken (403 → exists) and cannot poll the build.
    other = httpx.get(f"{api}/templates/aliases/built", headers={"X-API-Key": other_key})
    assert other.status_code == 403


def runner_key() -> str:
    import os

    return os.environ["E2B_API_KEY"]


def test_failed_first_build_reports_the_step(builds: tuple[str, str, FakeBuildRunner]) -> None:
    api, _other, _runner = builds
    logs: list[str] = []
    with pytest.raises(BuildException, match="step 1 failed"):
        Template.build(Template().from_template("base").run_cmd("echo fine").run_cmd("fail"),
                       "broken", on_build_logs=lambda e: logs.append(e.message))  # fmt: skip
    assert "the step's own output" in logs
    listed = httpx.get(f"{api}/templates", headers={"X-API-Key": runner_key()}).json()
    assert next(t for t in listed if t["templateID"] == "broken")["buildStatus"] == "error"


def test_upload_needs_the_signed_url(builds: tuple[str, str, FakeBuildRunner]) -> None:
    api, other_key, runner = builds
    key = runner_key()
    r = httpx.post(f"{api}/v3/templates", json={"name": "up:v1"}, headers={"X-API-Key": key})
    assert r.status_code == 202
    body = r.json()
    assert body["templateID"] == "up" and body["tags"] == ["v1"] and body["names"] == ["up"]
    link = httpx.get(f"{api}/templates/up/files/{'a' * 64}", headers={"X-API-Key": key})
    assert link.status_code == 201 and link.json()["present"] is False
    url = link.json()["url"]
    assert httpx.put(url.split("?")[0], content=b"x").status_code == 401
    assert httpx.put(url + "0", content=b"x").status_code == 401
    assert httpx.put(url, content=b"tar bytes").status_code == 200
    assert runner.files["a" * 64] == b"tar bytes"
    again = httpx.get(f"{api}/templates/up/files/{'a' * 64}", headers={"X-API-Key": key})
    assert again.json() == {"present": True}
    # Not the other team's template, nor its build.
    assert httpx.get(f"{api}/templates/up/files/{'a' * 64}",
                     headers={"X-API-Key": other_key}).status_code == 404  # fmt: skip
    status = httpx.get(f"{api}/templates/up/builds/{body['buildID']}/status",
                       headers={"X-API-Key": other_key})  # fmt: skip
    assert status.status_code == 404


def _headers() -> dict[str, str]:
    return {"X-API-Key": runner_key()}


def test_tags_recorded_assigned_listed_removed(builds: tuple[str, str, FakeBuildRunner]) -> None:
    api, other_key, _runner = builds
    first = Template.build(Template().from_template("base").run_cmd("echo 1"), "tagged")
    second = Template.build(Template().from_template("base").run_cmd("echo 2"), "tagged:v2",
                            tags=["stable"])  # fmt: skip
    assert sorted(second.tags) == ["stable", "v2"]
    tags = {t.tag: t.build_id for t in Template.get_tags("tagged")}
    # The first build got "default" (it named no tag); the second its two, not "default".
    assert tags == {"default": first.build_id, "v2": second.build_id, "stable": second.build_id}

    info = Template.assign_tags("tagged:v2", ["prod", "prod"])
    assert info.build_id == second.build_id and info.tags == ["prod"]
    info = Template.assign_tags("tagged", "old")  # no tag: the default one
    assert info.build_id == first.build_id
    Template.remove_tags("tagged", ["stable", "old"])
    assert {t.tag for t in Template.get_tags("tagged")} == {"default", "prod", "v2"}

    # A build starting fromTemplate "tagged:v2" gets that build's kept node version.
    Template.build(Template().from_template("tagged:v2").run_cmd("echo 3"), "derived")
    assert _runner.builds[-1][1]["fromTemplate"] == f"tagged@{second.build_id}"

    # The other team sees none of it.
    other = {"X-API-Key": other_key}
    assert httpx.get(f"{api}/templates/tagged/tags", headers=other).status_code == 404
    r = httpx.post(f"{api}/templates/tags", json={"target": "tagged:v2", "tags": ["x"]},
                   headers=other)  # fmt: skip
    assert r.status_code == 404


def test_tag_bad_input(builds: tuple[str, str, FakeBuildRunner]) -> None:
    api, _other, _runner = builds
    h = _headers()
    Template.build(Template().from_template("base").run_cmd("echo 1"), "bad")
    post = lambda body: httpx.post(f"{api}/templates/tags", json=body, headers=h)  # noqa: E731
    delete = lambda body: httpx.request(  # noqa: E731
        "DELETE", f"{api}/templates/tags", json=body, headers=h
    )
    assert post({"target": "bad:nope", "tags": ["x"]}).status_code == 404
    assert post({"target": "missing", "tags": ["x"]}).status_code == 404
    assert post({"target": "bad", "tags": ["has space"]}).status_code == 400
    assert post({"target": "bad", "tags": []}).status_code == 400
    assert post({"target": "bad", "tags": ["-lead"]}).status_code == 400
    assert post({"target": "bad"}).status_code == 400
    assert delete({"name": "bad", "tags": ["nope"]}).status_code == 404
    assert delete({"name": "bad", "tags": ["default", "nope"]}).status_code == 404
    assert {t["tag"] for t in httpx.get(f"{api}/templates/bad/tags", headers=h).json()} == {
        "default"
    }  # all or nothing: "default" is still there
    assert delete({"name": "bad:default", "tags": ["default"]}).status_code == 400
    assert httpx.get(f"{api}/templates/missing/tags", headers=h).status_code == 404
    # A build request with a bad tag is refused before anything is made.
    r = httpx.post(f"{api}/v3/templates", json={"name": "fresh", "tags": ["a/b"]}, headers=h)
    assert r.status_code == 400
    assert httpx.post(f"{api}/v3/templates", json={"name": "fresh:"}, headers=h).status_code == 400
    assert httpx.get(f"{api}/templates/aliases/fresh", headers=h).status_code == 404
    # Creating a sandbox from an unknown tag: 404; from a malformed one: 400.
    for template, code in (("bad:nope", 404), ("bad:", 400), ("missing:v1", 404)):
        r = httpx.post(f"{api}/sandboxes", json={"templateID": template}, headers=h)
        assert r.status_code == code, (template, r.text)
    assert delete({"name": "bad", "tags": ["default"]}).status_code == 204
    assert httpx.get(f"{api}/templates/bad/tags", headers=h).json() == []


def test_builds_are_counted_by_outcome_on_metrics(
    builds: tuple[str, str, FakeBuildRunner],
) -> None:
    # The api's metrics live in this process (the app runs in a thread here).
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        labels = {"kind": "build", "outcome": outcome}
        return REGISTRY.get_sample_value("hutch_template_builds_total", labels) or 0.0

    ok, error = count("ok"), count("error")
    Template.build(Template().from_template("base").run_cmd("echo fine"), "counted")
    with pytest.raises(BuildException):
        Template.build(Template().from_template("base").run_cmd("fail"), "counted-broken")
    assert (count("ok") - ok, count("error") - error) == (1, 1)


class GatedBuildRunner(FakeBuildRunner):
    """Every build waits until ``release`` is set (builds that run at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def run_build(self, name: str, start: Mapping[str, object], **kw: object) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        self.builds.append((name, start))


def test_builds_at_once_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``maxConcurrentBuilds`` (here the settings' default, 2): a third build started while
    two run is 429 naming the quota and is not started; it starts once one has finished;
    another team is not limited by it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    key, _team, other_key, _admin = run_async(lambda: _seed(url))
    runner = GatedBuildRunner()
    port = free_port()
    cfg = ApiSettings(home=tmp_path, database_url=url, api_host="127.0.0.1", api_port=port,
                      reaper_interval_s=3600, team_max_concurrent_builds=2)  # fmt: skip
    app = create_app(cfg, node=FakeNodeClient(), build_runner=runner)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    api = f"http://127.0.0.1:{port}"

    def requested(c: httpx.Client, name: str) -> str:
        r = c.post("/v3/templates", json={"name": name})
        assert r.status_code == 202, r.text
        return str(r.json()["buildID"])

    def start(c: httpx.Client, name: str, build_id: str) -> httpx.Response:
        return c.post(f"/v2/templates/{name}/builds/{build_id}", json={"steps": []})

    try:
        with httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=30) as c:
            builds = {n: requested(c, n) for n in ("t1", "t2", "t3")}
            assert start(c, "t1", builds["t1"]).status_code == 202
            assert start(c, "t2", builds["t2"]).status_code == 202
            r = start(c, "t3", builds["t3"])
            assert r.status_code == 429, r.text
            assert r.json()["message"] == (
                "You have reached the maximum number of concurrent template builds (2): "
                "quota maxConcurrentBuilds of this team"
            )
            status = c.get(f"/templates/t3/builds/{builds['t3']}/status").json()
            assert status["status"] == "waiting"  # not started
            # The official SDK's Template.build gets it too, as an error naming the quota.
            monkeypatch.setenv("E2B_API_URL", api)
            monkeypatch.setenv("E2B_API_KEY", key)
            with pytest.raises(Exception, match="quota maxConcurrentBuilds") as raised:
                Template.build(Template().from_template("base").run_cmd("echo"), "t4")
            assert "429" in str(raised.value) or raised.type.__name__ == "RateLimitException"
            with httpx.Client(base_url=api, headers={"X-API-Key": other_key}) as other:
                assert start(other, "o1", requested(other, "o1")).status_code == 202
            runner.release.set()
            deadline = time.monotonic() + 30
            while c.get(f"/templates/t1/builds/{builds['t1']}/status").json()["status"] != "ready":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert start(c, "t3", builds["t3"]).status_code == 202
    finally:
        runner.release.set()
        server.should_exit = True
        thread.join(timeout=30)
