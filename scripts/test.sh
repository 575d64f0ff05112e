#!/usr/bin/env bash
# The one test command: set-up (see setup.sh), then every check CI runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
echo "== buf lint"; pnpm exec buf lint
echo "== proto:check"; pnpm run --silent proto:check
echo "== biome"; pnpm exec biome ci --colors=off .
# vitest strips types without checking them: type-check every test file against the built packages.
echo "== typecheck tests"; pnpm exec tsc -p tsconfig.tests.json
echo "== vitest"; pnpm exec vitest run "$@"
# The benchmarks still run (reduced sizes; no timing assertions: timing goals live in docs/benchmarks.md).
echo "== bench smoke"; node bench/dist/cli.js --smoke --json
# The harness must leave nothing behind: no etcd or PostgreSQL it started (both keep their
# data in shard-etcd-* temp dirs, which their command lines name), no temp data dir, no
# network namespace or root-namespace veth of the virtual network (prefix shn-).
echo "== leak check"
leaked=$(pgrep -af 'shard-etcd-' || true)
dirs=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'shard-etcd-*' 2>/dev/null || true)
netns=$(ip netns list 2>/dev/null | grep '^shn-' || true)
links=$(ip -o link show 2>/dev/null | grep -E '^[0-9]+: shn-' || true)
if [ -n "$leaked$dirs$netns$links" ]; then
  echo "leaked after the test run:"; echo "$leaked"; echo "$dirs"; echo "$netns"; echo "$links"; exit 1
fi
echo "no etcd or PostgreSQL process, temp dir, network namespace or veth left behind"
