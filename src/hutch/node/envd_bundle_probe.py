"""Describe a Python installation for the envd bundle builder; run *by path* in that Python.

The builder may bundle an interpreter other than the one it runs in, so it runs this file as
``<python> -I envd_bundle_probe.py REQ...`` and reads one JSON document from stdout. Only the
standard library is used here, and nothing from ``hutch`` is imported: the probed Python need
not have hutch installed.

For each requirement (``name==version``) the probe walks ``Requires-Dist`` to the installed
closure. Markers are not evaluated (that needs ``packaging``, which the probed Python may
lack); instead a conditional requirement is followed when its distribution is installed, and
``extra`` requirements are never followed. An unconditional requirement that is not installed
is reported as missing, and the builder fails on it.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import sys
import sysconfig

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> tuple[dict[str, dict[str, object]], list[str]]:
    wanted: list[tuple[str, bool]] = []
    for req in requirements:
        name, _, _version = req.partition("==")
        wanted.append((name.strip(), True))
    found: dict[str, dict[str, object]] = {}
    missing: list[str] = []
    while wanted:
        name, required = wanted.pop()
        key = _canonical(name)
        if key in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            if required:
                missing.append(name)
            continue
        files = []
        for entry in dist.files or ():
            files.append([str(entry), str(dist.locate_file(entry))])
        found[key] = {"name": dist.metadata["Name"], "version": dist.version, "files": files}
        for spec in dist.requires or ():
            requirement, _, marker = spec.partition(";")
            if "extra" in marker:
                continue
            match = _NAME.match(requirement)
            if match:
                wanted.append((match.group(1), not marker.strip()))
    return found, missing


def main() -> None:
    """Print the JSON description of this interpreter and the requested closure."""
    stdlib = os.path.dirname(os.__file__)
    dynload = next((p for p in sys.path if p.rstrip("/").endswith("lib-dynload")), "")
    distributions, missing = _closure(sys.argv[1:])
    json.dump(
        {
            "executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
            "version": ".".join(map(str, sys.version_info[:3])),
            "version_short": ".".join(map(str, sys.version_info[:2])),
            "implementation": sys.implementation.name,
            "machine": os.uname().machine,
            "stdlib": os.path.realpath(stdlib),
            "lib_dynload": os.path.realpath(dynload) if dynload else "",
            "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX") or "",
            "distributions": distributions,
            "missing": missing,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
