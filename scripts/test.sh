#!/usr/bin/env bash
# The one test command: set-up (see setup.sh), then every check CI runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
echo "== buf lint"; pnpm exec buf lint
echo "== proto:check"; pnpm run --silent proto:check
echo "== biome"; pnpm exec biome ci --colors=off .
echo "== vitest"; pnpm exec vitest run "$@"
