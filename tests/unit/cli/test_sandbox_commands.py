"""Pure helpers of ``hutch sandbox``: the command line exec sends, log lines, filters."""

from __future__ import annotations

import click
import pytest

from hutch.cli.sandbox import log_text, parse_metadata
from hutch.cli.sandbox_exec import build_command


def test_one_argument_is_a_shell_line_and_several_are_quoted_words() -> None:
    assert build_command(["echo $HOME | wc -c"]) == "echo $HOME | wc -c"
    assert build_command(["printf", "%s|", "a b", "$HOME", "it's"]) == (
        "printf '%s|' 'a b' '$HOME' 'it'\"'\"'s'"
    )


def test_log_text_puts_time_level_message_first_and_fields_once() -> None:
    entry = {
        "timestamp": "2026-12-01T22:55:57.897317Z",
        "level": "warn",
        "message": "started pid 8",
        "fields": {"logger": "process", "timestamp": "2026-12-01T22:55:57.897317Z", "pid": 8},
    }
    assert log_text(entry) == (
        "2026-12-01T22:55:57.897317Z WARN  started pid 8 logger=process pid=8"
    )
    assert log_text({**entry, "fields": {}}) == "2026-12-01T22:55:57.897317Z WARN  started pid 8"


def test_metadata_filters_want_key_value_and_keep_empty_values() -> None:
    assert parse_metadata(("a=1", "b=", "c=x=y")) == {"a": "1", "b": "", "c": "x=y"}
    with pytest.raises(click.BadParameter, match="want KEY=VALUE"):
        parse_metadata(("novalue",))
    with pytest.raises(click.BadParameter, match="want KEY=VALUE"):
        parse_metadata(("=v",))
