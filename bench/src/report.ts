import type { Machine } from "./machine.js";

type Cell = string | number | boolean | null | undefined;
export type Row = Readonly<Record<string, Cell>>;

/** One table of the human output; in --json mode every row becomes one JSON object. */
export interface Table {
  /** e.g. "heartbeat.rate" — also the `measurement` field of each JSON object. */
  readonly measurement: string;
  readonly title: string;
  readonly rows: readonly Row[];
  /** Settings the figures depend on (flags, sizes), printed under the title. */
  readonly settings?: Readonly<Record<string, Cell>>;
  readonly notes?: readonly string[];
}

export class Reporter {
  readonly #json: boolean;
  readonly #machine: Machine;
  readonly tables: Table[] = [];

  constructor(json: boolean, machine: Machine) {
    this.#json = json;
    this.#machine = machine;
  }

  get json(): boolean {
    return this.#json;
  }

  /** Progress for humans, on stderr so that stdout stays tables (or pure JSON lines). */
  progress(msg: string): void {
    process.stderr.write(`[bench] ${msg}\n`);
  }

  table(t: Table): void {
    this.tables.push(t);
    if (this.#json) {
      for (const row of t.rows) {
        process.stdout.write(
          `${JSON.stringify({ measurement: t.measurement, ...row, settings: t.settings ?? {}, machine: this.#machine })}\n`,
        );
      }
      return;
    }
    process.stdout.write(`\n${formatTable(t)}\n`);
  }
}

function cellText(c: Cell): string {
  if (c === null || c === undefined) return "–";
  if (typeof c === "number") return Number.isFinite(c) ? String(c) : "–";
  return String(c);
}

/** A Markdown table (readable in a terminal and pasteable into docs/benchmarks.md as is). */
export function formatTable(t: Table): string {
  const cols = [...new Set(t.rows.flatMap((r) => Object.keys(r)))];
  const lines: string[] = [`### ${t.title}`, ""];
  if (t.settings !== undefined) {
    lines.push(
      `settings: ${Object.entries(t.settings)
        .map(([k, v]) => `${k}=${cellText(v)}`)
        .join(", ")}`,
      "",
    );
  }
  const cells = t.rows.map((r) => cols.map((c) => cellText(r[c])));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((row) => (row[i] ?? "").length)));
  const fmt = (row: readonly string[]) => `| ${row.map((s, i) => s.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  lines.push(fmt(cols), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...cells.map(fmt));
  for (const n of t.notes ?? []) lines.push("", n);
  return lines.join("\n");
}
