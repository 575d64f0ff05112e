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
# The harness must leave nothing behind: no etcd it started, no temp data dir.
echo "== leak check"
leaked=$(pgrep -af 'shard-etcd-' || true)
dirs=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'shard-etcd-*' 2>/dev/null || true)
if [ -n "$leaked$dirs" ]; then
  echo "leaked after the test run:"; echo "$leaked"; echo "$dirs"; exit 1
fi
echo "no etcd process or temp dir left behind"
