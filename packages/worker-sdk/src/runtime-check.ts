/**
 * Imported first by the package entry: on a Node.js the SDK does not support (package.json
 * `engines`: ^22.12.0 || >=24.0.0), stop at import with one clear line, instead of an engine
 * warning at install and a crash much later (`Promise.withResolvers is not a function` in
 * runShards, after the worker already joined and left a dead member behind).
 *
 * It exits rather than throws: an uncaught error at import prints Node's internal frames
 * around the message, and nothing a job could do with the error would make the SDK work.
 */

/** Whether `version` (`process.versions.node`) satisfies `^22.12.0 || >=24.0.0`. */
export function supportedNode(version: string): boolean {
  const [major = 0, minor = 0] = version.split(".").map((p) => Number.parseInt(p, 10));
  return major >= 24 || (major === 22 && minor >= 12);
}

if (!supportedNode(process.versions.node)) {
  process.stderr.write(
    `@org/worker-sdk: unsupported runtime: needs Node.js ^22.12.0 || >=24.0.0, this is Node.js ${process.version} (${process.execPath})\n`,
  );
  process.exit(1);
}
