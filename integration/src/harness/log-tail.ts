import { open } from "node:fs/promises";

const TAIL_BYTES = 8 * 1024;

/**
 * Returns the last `maxLines` lines of a log file, or "" when it cannot be read.
 * Used to put a dying process's own explanation into the error a test sees.
 */
export async function readLogTail(path: string, maxLines = 25): Promise<string> {
  try {
    const handle = await open(path, "r");
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, TAIL_BYTES);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      const lines = buffer.toString("utf8").split("\n");
      // The first line is probably cut in the middle when we did not read from offset 0.
      if (length < size) lines.shift();
      return lines
        .filter((line) => line.length > 0)
        .slice(-maxLines)
        .join("\n");
    } finally {
      await handle.close();
    }
  } catch {
    return "";
  }
}
