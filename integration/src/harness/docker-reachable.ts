/**
 * True when testcontainers can find a working Docker (or compatible) runtime.
 * Meant for `describe.runIf(await isDockerReachable())`; never throws.
 */
export async function isDockerReachable(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import("testcontainers");
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}
