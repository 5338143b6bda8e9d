#!/usr/bin/env bash
# Installs hutch on a Debian 12 host, as root: the system packages it drives, a virtual
# environment with the Python package, and `hutch` on the PATH. Idempotent: a second run
# checks and changes nothing.
#
#   ./install.sh                 install (or update) hutch
#   HUTCH_PREFIX=/opt/hutch      where the virtual environment lives (default)
#   HUTCH_HOME=/var/lib/hutch    where envd's bundle and the templates are built (default)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${HUTCH_PREFIX:-/opt/hutch}"
venv="$prefix/venv"
bin_link="${HUTCH_BIN_LINK:-/usr/local/bin/hutch}"

# What hutch drives on the host. Keep this list the one place that names them.
system_packages=(
  python3 python3-venv python3-dev   # the interpreter hutch and envd run on
  attr                               # getfattr/setfattr, for operators inspecting file metadata
  e2fsprogs                          # mkfs.ext4 for sealed artifacts, volumes and sandbox disks
  lxcfs                              # /proc/meminfo, cpuinfo, stat, uptime as each sandbox's own
  util-linux                         # mount, nsenter, unshare
  iproute2 nftables                  # per-sandbox network namespaces, bridge, NAT
  runc                               # the default OCI runtime
  runsc                              # gVisor, the stronger-isolation runtime (ptrace platform)
  tini                               # PID 1 in sandboxes: reaps zombies
  busybox-static                     # the tiny `busybox` template
  skopeo                             # templates from OCI images (docker-archive, oci, registries)
  debootstrap                        # the Debian 12 `base` template
  patchelf binutils libc-bin         # envd's relocatable, self-contained bundle (patchelf, strip, ldd)
)

log() { printf 'install.sh: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs system packages)"; exit 1
fi

# One install at a time: two concurrent runs would race on apt, the venv and the template
# builds (debootstrap into one home). The second waits for the first, then finds it done.
exec 9>/var/lock/hutch-install.lock
flock 9

missing=()
for pkg in "${system_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python="${HUTCH_PYTHON:-$(command -v python3)}"
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  mkdir -p "$prefix"
  "$python" -m venv "$venv"
fi

# Reinstall only when the source changed: the stamp is a digest of what pip would install.
stamp="$venv/.hutch-source-sha256"
digest="$(cd "$here" && find pyproject.toml src -type f ! -name '*.pyc' -print0 | sort -z \
  | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  log "installing the hutch package into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$here"
  echo "$digest" > "$stamp"
fi

# envd's bundle, rebuilt only when the installed source changed (same digest as above).
# Built aside and renamed into place; the previous one is kept as envd.prev because
# running sandboxes bind-mount it (they keep the old inode across the rename). The stamp
# lives beside the bundle, not in it: the bundle's own SHA256 covers every file inside.
home="${HUTCH_HOME:-/var/lib/hutch}"
envd_stamp="$home/envd.source-sha256"
mkdir -p "$home" && chmod 700 "$home"
if [ ! -f "$home/envd/SHA256" ] || [ "$(cat "$envd_stamp" 2>/dev/null)" != "$digest" ]; then
  log "building envd's bundle into $home/envd"
  rm -rf "$home/.envd-build"
  "$venv/bin/python" -m hutch.node.envd_bundle build --out "$home/.envd-build" >/dev/null
  if [ -d "$home/envd" ]; then rm -rf "$home/envd.prev"; mv "$home/envd" "$home/envd.prev"; fi
  mv "$home/.envd-build" "$home/envd"
  echo "$digest" > "$envd_stamp"
fi

# The default templates; the builder keeps an already published template (seconds for
# busybox, about a minute of debootstrap for base on the first run only).
for template in busybox base; do
  if [ ! -f "$home/templates/$template/template.json" ]; then
    log "building the $template template into $home/templates"
    "$venv/bin/python" -m hutch.node.templates build "$template" --home "$home" >/dev/null
  fi
done

# The code interpreter (E2B's code-interpreter-v1, docs/interpreter.md), a step build from
# base in a build sandbox: a few minutes on the first run (Debian and PyPI packages), then
# rebuilt only when its definition, the server's source or base changed (its fingerprint;
# a changed server source reruns only the last step). Published atomically, like the others.
if "$venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("hutch.interpreter") is None)'; then
  "$venv/bin/python" -m hutch.node.templates build code-interpreter-v1 --home "$home" >/dev/null
else
  log "skipping the code-interpreter-v1 template: this source has no hutch.interpreter server"
fi

# The MCP gateway (E2B's mcp-gateway template, docs/mcp.md), the same kind of step build:
# Debian's nodejs/npm/git, the catalog's reference MCP servers from npm and PyPI, the
# gateway's venv; about two minutes on the first run, then cached by its fingerprint.
if "$venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("hutch.mcpgateway") is None)'; then
  "$venv/bin/python" -m hutch.node.templates build mcp-gateway --home "$home" >/dev/null
else
  log "skipping the mcp-gateway template: this source has no hutch.mcpgateway gateway"
fi

if [ "$(readlink "$bin_link" 2>/dev/null)" != "$venv/bin/hutch" ]; then
  ln -sfn "$venv/bin/hutch" "$bin_link"
fi
log "hutch $("$venv/bin/hutch" --version | awk '{print $NF}') is installed: $(command -v hutch || echo "$bin_link")"
