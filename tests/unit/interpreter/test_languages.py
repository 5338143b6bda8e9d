"""Language names, env var checks and the per-language snippets (hutch.interpreter.languages)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hutch.interpreter import languages
from hutch.interpreter.errors import BadRequest, LanguageNotInstalled


@pytest.mark.parametrize(
    "given, want",
    [
        (None, "python"),
        ("", "python"),
        (" Python ", "python"),
        ("js", "javascript"),
        ("TS", "typescript"),
        ("r", "r"),
        ("sh", "bash"),
    ],
)
def test_normalize(given, want) -> None:
    assert languages.normalize(given) == want


def test_normalize_rejects_non_strings() -> None:
    with pytest.raises(BadRequest):
        languages.normalize(3)  # type: ignore[arg-type]


def test_check_env_vars() -> None:
    assert languages.check_env_vars(None) == {}
    assert languages.check_env_vars({"A_1": "x"}) == {"A_1": "x"}
    for bad in ({"1A": "x"}, {"A-B": "x"}, {"A": 1}, ["A"], "A=1", {"A;rm": "x"}):
        with pytest.raises(BadRequest):
            languages.check_env_vars(bad)


def test_unknown_language_names_the_installed_ones() -> None:
    langs = languages.Languages(sys.executable)
    with pytest.raises(
        LanguageNotInstalled, match=r"'cobol' is not installed.*installed: .*python"
    ):
        langs.command("cobol")


def test_python_snippets_set_and_restore_exactly() -> None:
    env = {"KEEP": "new 'quoted' \"value\"", "FRESH": "x"}
    code = "\n".join(
        [
            "import os",
            "os.environ['KEEP'] = 'old'",
            "os.environ.pop('FRESH', None)",
            languages.set_env("python", env),
            "print(os.environ['KEEP'], os.environ['FRESH'])",
            languages.restore_env("python", env),
            "print(os.environ['KEEP'], 'FRESH' in os.environ)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["new 'quoted' \"value\" x", "old False"]


def test_bash_snippets_set_and_restore_exactly() -> None:
    env = {"KEEP": "new $(no) 'quoted'", "FRESH": "x"}
    script = "\n".join(
        [
            "export KEEP=old; unset FRESH",
            languages.set_env("bash", env),
            'echo "$KEEP|$FRESH"',
            languages.restore_env("bash", env),
            'echo "$KEEP|${FRESH-unset}"',
            languages.chdir("bash", "/tmp"),
            "pwd",
        ]
    )
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert out.stdout.splitlines() == ["new $(no) 'quoted'|x", "old|unset", "/tmp"]
