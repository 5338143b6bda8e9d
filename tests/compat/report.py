"""``docs/compat.md`` from the matrix's results: a table of features by client release.

A result is what a client's run emitted for one test (``plugin.py`` for Python,
``js/reporter.mjs`` for node): ``{"name", "features", "outcome", "error"?}``. A feature
passes for a client when every test of that client naming it passed.

``python -m tests.compat.report RESULTS.json`` prints the page for a saved
``{client: [result, ...]}`` file; ``test_matrix.py`` renders its own run's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: Rows in this order; a feature not listed here follows, alphabetically.
FEATURES = (
    "create", "commands", "files", "metadata", "watch", "pty", "list", "pause", "connect",
    "kill", "info", "logs", "async", "run_code", "run_code errors", "code contexts", "charts",
)  # fmt: skip

_HEADER = """\
# Compatibility matrix

Generated from the last run of the compatibility matrix (`tests/compat/test_matrix.py`,
part of `./test.sh` and CI) by `tests/compat/report.py`: do not edit by hand. Each column is
a released client, pinned (`tests/compat/clients.py`, `tests/compat/js/clients/*/`), run
against one real `hutch serve`: the Python SDK runs the `compat`-marked tests of
`tests/e2e`, the JS SDK `tests/compat/js/sdk.test.cjs`, the CLI `tests/compat/js/cli.test.cjs`;
the code-interpreter SDKs (the versions the e2e tests pin) run the `compat_interpreter`-marked
tests of `tests/e2e/test_interpreter.py` and `tests/e2e/js/interpreter.test.cjs` against its
`code-interpreter-v1` template (the last four rows). The columns of the SDKs the e2e tests
themselves pin (`.venv`'s `e2b` and `e2b-code-interpreter`) are the suite's own run of those
tests when it ran all of them, not a second run with the same SDK.
A cell says whether every test of that client proving the feature passed, and how many
there are; `-` means that client's subset does not cover it.

To add a release: a version in `PYTHON_SDKS`, or a directory under `tests/compat/js/clients/`
with a `package.json` naming it and the `package-lock.json` that `npm install` writes; then
`pytest tests/compat` rewrites this page.
"""


def _cell(results: list[dict[str, Any]], feature: str) -> str:
    mine = [r for r in results if feature in r["features"]]
    if not mine:
        return "-"
    failed = sum(r["outcome"] == "failed" for r in mine)
    skipped = sum(r["outcome"] == "skipped" for r in mine)
    if failed:
        return f"FAIL ({failed} of {len(mine)})"
    if skipped:
        return f"skipped ({skipped} of {len(mine)})"
    return f"pass ({len(mine)})"


def render(by_client: dict[str, list[dict[str, Any]]]) -> str:
    """The whole page for ``{client label: results}``, clients in the given order."""
    seen = {f for results in by_client.values() for r in results for f in r["features"]}
    rows = [f for f in FEATURES if f in seen] + sorted(seen - set(FEATURES))
    labels = list(by_client)
    out = [_HEADER, "| feature | " + " | ".join(labels) + " |",
           "|---|" + "---|" * len(labels)]  # fmt: skip
    for feature in rows:
        out.append(
            f"| {feature} | " + " | ".join(_cell(by_client[c], feature) for c in labels) + " |"
        )
    out.append("\n## Tests\n")
    for label, results in by_client.items():
        out.append(f"### {label}\n")
        for r in results:
            out.append(f"- `{r['name']}` ({', '.join(r['features'])}): {r['outcome']}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.compat.report RESULTS.json", file=sys.stderr)
        return 2
    sys.stdout.write(render(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
