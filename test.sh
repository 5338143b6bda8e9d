#!/usr/bin/env bash
# Runs hutch's whole test suite on a fresh Debian 12 host, as root: installs hutch (through
# install.sh, so a missing install step fails here), the test-only system packages and a
# development virtual environment, then runs pytest. Extra arguments go to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

./install.sh

# Test-only system packages: a real PostgreSQL server for the store tests, dosfstools for a
# filesystem without user xattrs, musl to prove envd's bundle runs in a musl image; node and
# npm for the compatibility matrix's JS SDK and CLI (tests/compat; any node >= 20.18.1 that
# is already installed will do); Debian's chromium and its chromedriver for the dashboard's
# browser tests (tests/e2e/test_dashboard.py; nothing downloads a browser of its own).
test_packages=(postgresql dosfstools musl chromium chromium-driver)
missing=()
for pkg in "${test_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$here/.venv"
[ -x "$venv/bin/python" ] || "$(command -v python3)" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]"

# The compatibility matrix's pinned clients (tests/compat/clients.py): a cached virtual
# environment per extra Python e2b release, the npm clients from their lock files.
"$venv/bin/python" -m tests.compat.clients

# Style is part of the suite: lint and formatting (config in pyproject.toml) before pytest.
"$venv/bin/ruff" check --quiet src tests bench
"$venv/bin/ruff" format --check --quiet src tests bench

exec "$venv/bin/python" -m pytest "$@"
