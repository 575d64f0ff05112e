#!/usr/bin/env node
// Thin shim so the package's bin exists before the first build (pnpm links bins at install).
import "../dist/cli/bin.js";
