"""The ``base`` template as E2B users' code expects it (Debian 12, user ``user``)."""

from __future__ import annotations

import pytest
from e2b import Sandbox

from tests.conftest import machine_lacks

from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.fixture
def base(serve: Serve):  # type: ignore[no-untyped-def]
    if not (serve.home / "templates" / "base" / "template.json").is_file():
        machine_lacks("the base template is not installed (./install.sh builds it)")
    sbx = Sandbox.create(timeout=120)  # the SDK's default template is "base"
    try:
        yield sbx
    finally:
        sbx.kill()


def _run(sbx: Sandbox, cmd: str) -> str:
    return sbx.commands.run(cmd).stdout.strip()


def test_base_user_cwd_and_tools(base: Sandbox) -> None:
    assert base.get_info().template_id == "base"
    assert _run(base, "whoami") == "user"
    assert _run(base, "pwd") == "/home/user"
    assert _run(base, "echo $HOME") == "/home/user"
    assert _run(base, "umask") == "0022"
    assert _run(base, "python3 -c 'print(6*7)'") == "42"
    assert _run(base, "python -c 'import sys; print(sys.version_info[0])'") == "3"
    assert _run(base, "sudo -n whoami") == "root"  # passwordless
    assert _run(base, "sudo -n -u user whoami") == "user"
    git = _run(base, "git --version").split()[-1]
    assert tuple(int(x) for x in git.split(".")[:2]) >= (2, 28), git
    assert _run(base, 'test -x "$(git --exec-path)/git-daemon" && echo yes') == "yes"
    assert _run(base, "curl --version").startswith("curl ")
    assert len(_run(base, "command -v tput ps bash").splitlines()) == 3
    assert "Debian GNU/Linux 12" in _run(base, "cat /etc/os-release")
    assert _run(base, "hostname") == base.sandbox_id


def test_base_files_are_the_users(base: Sandbox) -> None:
    base.files.write("work/notes.txt", "hi", metadata={"k": "v"})  # relative to /home/user
    assert _run(base, "stat -c '%U %a' /home/user/work/notes.txt /home/user/work") == (
        "user 644\nuser 755"
    )
    assert base.files.get_info("/home/user/work/notes.txt").metadata == {"k": "v"}
    assert base.files.read("/home/user/work/notes.txt") == "hi"
    base.commands.run("mkdir made && touch made/f")
    assert _run(base, "stat -c '%U %a' made made/f") == "user 755\nuser 644"
    assert _run(base, "sudo -n touch /root-owned && stat -c %U /root-owned") == "root"
