import { existsSync } from "node:fs";
import { type Browser, chromium, type Page } from "playwright-core";

/**
 * Debian's chromium (`apt-get install chromium`, done by scripts/setup.sh), or the one named
 * by `CHROMIUM_PATH`. playwright-core drives it over CDP and downloads no browser of its own.
 */
export const chromiumPath: string = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Launches headless chromium; fails with the install hint when it is missing. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(chromiumPath))
    throw new Error(`no chromium at ${chromiumPath}: run scripts/setup.sh (it installs Debian's chromium)`);
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    // Root in CI containers has no user namespace sandbox; /dev/shm may be small there.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/** The text of the element with `data-testid=id` (null when absent). */
export async function testIdText(page: Page, id: string): Promise<string | null> {
  const el = await page.$(`[data-testid="${id}"]`);
  return el === null ? null : ((await el.textContent()) ?? "").trim();
}

/** The node ids of the member rows of `group` shown by the page. */
export async function memberRows(page: Page, group: string): Promise<string[]> {
  return page.$$eval(`[data-testid="group-${group}"] tr[data-testid^="member-"]`, (rows) =>
    rows.map((r) => (r.getAttribute("data-testid") ?? "").slice("member-".length)).sort(),
  );
}

/** Per shard of `group`, the owners of its timeline segments in order (`""`: a gap). */
export async function timelineOwners(page: Page, group: string): Promise<string[][]> {
  return page.$$eval(`[data-testid^="timeline-${group}-"]`, (rows) =>
    rows.map((r) => Array.from(r.querySelectorAll(".tl-seg")).map((s) => s.getAttribute("data-owner") ?? "")),
  );
}
