# Sourced by scripts/test.sh and scripts/run.sh: makes a fresh Debian machine with
# only Node 20 (or newer) ready, idempotently and quickly when already done.
#   - etcd 3.4 from Debian's etcd-server/etcd-client when `etcd` is not on PATH;
#   - iproute2 and iptables (network-namespace drills) when `ip` or `iptables` is missing;
#   - openssl (the TLS tests' certificates) when it is missing;
#   - PostgreSQL (Debian's postgresql) when no `initdb` is on PATH or under
#     /usr/lib/postgresql/*/bin: the PostgreSQL data source's tests, drills and benchmark
#     start throwaway servers from those binaries (integration/src/harness/postgres-server.ts);
#   - chromium and promtool (Debian's chromium and prometheus) when missing: the console's
#     browser test and the alert-rule checks;
#   - a Node 24 runtime from the npm registry (package `node`) into .tools/ when the
#     machine's node is older than 22 (vitest, connect-node and testcontainers need 22+);
#   - the pnpm version pinned in package.json's `packageManager`, into .tools/.
#     (corepack 0.34 as shipped with Node 20 fails to verify pnpm 10's registry
#     signatures, "No compatible signature found", so npm installs the same pin);
#   - `pnpm install --frozen-lockfile` and the TypeScript build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_PIN="$(cat "$ROOT/.node-version")"
PNPM_PIN="$(sed -n 's/.*"packageManager": *"pnpm@\([^"]*\)".*/\1/p' "$ROOT/package.json")"
TOOLS="$ROOT/.tools"

log() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v etcd >/dev/null 2>&1; then
  log "etcd not found: installing Debian's etcd-server and etcd-client"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client >/dev/null
  # The Debian package starts a system etcd on 2379; our harness and run script use
  # their own ports and data dirs, so stop it rather than share state with it.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true; fi
fi

# The TLS tests make their certificates with the openssl CLI (integration/src/support/test-certs.ts).
if ! command -v openssl >/dev/null 2>&1; then
  log "openssl not found: installing Debian's openssl"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >/dev/null
fi

# The virtual-network harness (integration/src/harness/virtual-network.ts) puts drill hosts
# in network namespaces and cuts links with iptables: iproute2 (ip, ss) and iptables.
if ! command -v iptables >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
  log "ip or iptables not found: installing Debian's iproute2 and iptables"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2 iptables >/dev/null
fi

# PostgreSQL: Debian installs the server binaries under /usr/lib/postgresql/<version>/bin,
# off PATH; the harness looks there. The package's own cluster (port 5432) is not used.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "PostgreSQL not found: installing Debian's postgresql"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now postgresql >/dev/null 2>&1 || true; fi
fi

# The console's browser test drives Debian's chromium (playwright-core downloads no browser);
# the alert rules are checked with Prometheus' own promtool (Debian's prometheus package; its
# service is not used).
if ! command -v chromium >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  log "chromium or promtool not found: installing Debian's chromium and prometheus"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi

export PATH="$TOOLS/node_modules/.bin:$PATH"
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 22 ] || [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_PIN" ]; then
  want=("pnpm@$PNPM_PIN")
  [ "$(node_major)" -lt 22 ] && want+=("node@$NODE_PIN")
  [ -x "$TOOLS/node_modules/.bin/node" ] && want+=("node@$NODE_PIN")
  log "installing ${want[*]} into .tools/ (machine node: $(node --version 2>/dev/null || echo none))"
  mkdir -p "$TOOLS"
  # npm refuses install scripts by default; the node package ships its binary, so none is needed.
  npm install --prefix "$TOOLS" --no-save --no-audit --no-fund --loglevel=error "${want[@]}" >/dev/null
fi
log "node $(node --version), pnpm $(pnpm --version), $(etcd --version | head -1)"

cd "$ROOT"
pnpm install --frozen-lockfile --prefer-offline --reporter=silent
pnpm run --silent build
