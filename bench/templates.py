"""Template import benchmark: import-and-seal, cache hit, sandbox create from the template.

Run as root from the repository:

    .venv/bin/python bench/templates.py [--size-mb 100] [-n 3] [--creates 10]

It writes a ``docker-archive`` of about ``--size-mb`` MB (busybox plus incompressible data
spread over four layers, with a whiteout and an opaque directory), then with
``hutch template create-from-image`` against a private ``hutch serve`` (``bench/_instance.py``):
imports it under fresh names with the artifact cache emptied each time (import + seal),
again with the artifact present (a cache hit), both without and with envd injection, and
finally creates sandboxes from the imported templates with the official SDK (no warm pool
for them). Prints a table; removes everything after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _instance
from _instance import Serve, new_instance
from _table import print_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.imagebuild import BUSYBOX_CONFIG, Layer, busybox_layers, write_docker_archive


def make_image(out: Path, size_mb: int) -> Path:
    """A docker-archive of ~``size_mb`` MB: the busybox layers plus random data."""
    layers = busybox_layers()
    chunk = max(1, size_mb // 4)
    for i in range(4):
        layer = Layer().dir(f"data{i}")
        for j in range(chunk):
            layer.file(f"data{i}/blob{j}.bin", os.urandom(1 << 20))
        layers.append(layer)
    return write_docker_archive(out, layers, **BUSYBOX_CONFIG)


def _median_s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, n={len(values)})"


def bench_imports(inst: Serve, archive: Path, n: int, *, inject: bool) -> list[tuple[str, str]]:
    label = "injected" if inject else "mounted"
    extra = ["--enable-inject-envd", "--envd-path", str(inst.envd_bundle)] if inject else []
    cold, warm = [], []
    for i in range(n + 1):
        names = (f"cold-{label}-{i}", f"{label}-{i}")
        for times, name in zip((cold, warm), names, strict=True):
            t0 = time.perf_counter()
            out = inst.hutch("template", "create-from-image", f"docker-archive:{archive}",
                             "--name", name, "--json", *extra)  # fmt: skip
            times.append(time.perf_counter() - t0)
            assert json.loads(out)["cacheHit"] is (times is warm), out
        if i < n:  # both gone, so the artifact is pruned: the next import is cold again
            for name in names:
                inst.hutch("template", "delete", name)
    cold, warm = cold[:n], warm[:n]
    return [
        (f"import + seal ({label} envd), `hutch template create-from-image`", _median_s(cold)),
        (f"same inputs again: artifact reused ({label} envd)", _median_s(warm)),
    ]


def bench_creates(inst: Serve, template: str, n: int) -> list[tuple[str, str]]:
    from e2b import Sandbox

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sbx = Sandbox.create(template, timeout=120)
        times.append(time.perf_counter() - t0)
        assert sbx.commands.run("cat /tmp/main.txt").exit_code == 0
        sbx.kill()
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return [(f"Sandbox.create({template!r}) to ready, median / p95",
             f"{statistics.median(times) * 1000:.0f} ms / {p95 * 1000:.0f} ms")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="image size")
    parser.add_argument("-n", type=int, default=3, help="imports of each kind")
    parser.add_argument("--creates", type=int, default=10, help="sandbox creates per template")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/templates.py needs root (ownership, runc, namespaces)")
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-templates-", dir="/var/tmp"))
    (home / "templates").mkdir()
    inst = new_instance(home=home, extra_env={"HUTCH_NODE_POOL_SIZE": ""})
    rows: list[tuple[str, str]] = []
    try:
        archive = make_image(home / "image.tar", args.size_mb)
        size = archive.stat().st_size / 1e6
        rows.append(("image (docker-archive, 7 layers)", f"{size:.0f} MB"))
        inst.start()  # the template commands talk to its API
        rows += bench_imports(inst, archive, args.n, inject=False)
        rows += bench_imports(inst, archive, args.n, inject=True)
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url, E2B_SANDBOX_URL=inst.sandbox_url, E2B_API_KEY=key
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        rows += bench_creates(inst, f"mounted-{args.n}", args.creates)
        rows += bench_creates(inst, f"injected-{args.n}", args.creates)
    finally:
        inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)
    print_table(
        f"hutch templates from OCI images on this machine ({os.cpu_count()} CPUs, runc)",
        rows,
        ("what", "result"),
    )


if __name__ == "__main__":
    main()
