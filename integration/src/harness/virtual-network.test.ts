import { type ChildProcess, spawn } from "node:child_process";
import { connect } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { Etcd3 } from "etcd3";
import { afterEach, describe, expect, it } from "vitest";
import { startEtcdCluster } from "./etcd-cluster.js";
import { findEtcdLeader } from "./etcd-leader.js";
import { runNetCommand } from "./net-command.js";
import { listNamespaces, removeOrphanedNamespaces } from "./netns-registry.js";
import { withParentDeathSignal } from "./parent-death-signal.js";
import { trackChild } from "./process-registry.js";
import { type NetHost, VirtualNetwork } from "./virtual-network.js";

const PORT = 7000;

/**
 * A small node program run on a host: `server` echoes on the host's address; `client`
 * takes JSON commands on stdin (connect, send) and prints one JSON line per socket event.
 */
const PROBE = `
const net = require("node:net");
const [mode, host, port] = process.argv.slice(1);
const say = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
if (mode === "server") {
  net.createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen(Number(port), host, () => say({ event: "listening" }));
} else {
  const socks = new Map();
  require("node:readline").createInterface({ input: process.stdin }).on("line", (line) => {
    const c = JSON.parse(line);
    if (c.op === "connect") {
      const s = net.connect(c.port, c.host);
      socks.set(c.id, s);
      const timer = setTimeout(() => { say({ event: "connect_timeout", id: c.id }); s.destroy(); }, c.timeoutMs);
      s.on("connect", () => { clearTimeout(timer); say({ event: "connected", id: c.id }); });
      s.on("data", (d) => say({ event: "data", id: c.id, data: String(d) }));
      s.on("error", (e) => { clearTimeout(timer); say({ event: "error", id: c.id, code: e.code }); });
      s.on("close", () => say({ event: "closed", id: c.id }));
    } else if (c.op === "send") socks.get(c.id).write(c.data);
  });
  say({ event: "ready" });
}
`;

interface ProbeLine {
  readonly event: string;
  readonly id?: string;
  readonly data?: string;
  readonly code?: string;
}

/** One probe process on a host, with its output lines. */
class Probe {
  readonly lines: ProbeLine[] = [];
  readonly #child: ChildProcess;
  readonly exited: Promise<unknown>;

  constructor(host: NetHost, mode: "server" | "client", target = host) {
    const onHost = host.command(process.execPath, ["-e", PROBE, mode, target.address, String(PORT)]);
    const cmd = withParentDeathSignal(onHost.command, onHost.args);
    this.#child = spawn(cmd.command, [...cmd.args], { stdio: ["pipe", "pipe", "inherit"] });
    trackChild(this.#child);
    this.exited = new Promise((r) => this.#child.once("exit", r));
    createInterface({ input: this.#child.stdout as NodeJS.ReadableStream }).on("line", (l) =>
      this.lines.push(JSON.parse(l) as ProbeLine),
    );
  }

  send(command: Record<string, unknown>): void {
    this.#child.stdin?.write(`${JSON.stringify(command)}\n`);
  }

  async waitFor(pred: (l: ProbeLine) => boolean, timeoutMs: number): Promise<ProbeLine | undefined> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const hit = this.lines.find(pred);
      if (hit !== undefined) return hit;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  }

  async stop(): Promise<void> {
    this.#child.kill("SIGKILL");
    await this.exited;
  }
}

/** Sends `data` from this process (the observer) to an echo server and returns the echo. */
function observerEcho(host: NetHost, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(PORT, host.address, () => s.write(data));
    s.setTimeout(3000, () => {
      s.destroy();
      reject(new Error(`no echo from ${host.name} within 3 s`));
    });
    s.on("data", (d) => {
      s.destroy();
      resolve(String(d));
    });
    s.on("error", reject);
  });
}

/** Interface names in this process's (the root) namespace. */
const rootLinks = async () =>
  (await runNetCommand("ip", ["-o", "link", "show"]))
    .split("\n")
    .map((l) => l.split(": ")[1]?.split("@")[0])
    .filter((n) => n !== undefined);

describe("VirtualNetwork", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  const start = async (hosts: string[]) => {
    const net = await VirtualNetwork.create();
    cleanups.push(() => net.close());
    return { net, hosts: await net.addHosts(hosts) };
  };
  const probe = (host: NetHost, mode: "server" | "client", target?: NetHost) => {
    const p = new Probe(host, mode, target);
    cleanups.push(() => p.stop());
    return p;
  };

  it("gives each host its own namespace and address, reachable from the others and the observer", async () => {
    const { net, hosts } = await start(["a", "b"]);
    const [a, b] = hosts as [NetHost, NetHost];
    expect(a.address).not.toBe(b.address);
    expect(await listNamespaces()).toEqual(expect.arrayContaining(net.namespaces));
    const server = probe(b, "server");
    expect(await server.waitFor((l) => l.event === "listening", 5000)).toBeDefined();
    const client = probe(a, "client", b);
    await client.waitFor((l) => l.event === "ready", 5000);
    client.send({ op: "connect", id: "c1", host: b.address, port: PORT, timeoutMs: 3000 });
    expect((await client.waitFor((l) => l.id === "c1", 5000))?.event).toBe("connected");
    client.send({ op: "send", id: "c1", data: "hello" });
    expect((await client.waitFor((l) => l.event === "data", 5000))?.data).toBe("hello");
    expect(await observerEcho(b, "from the observer")).toBe("from the observer");
    // A host does not see the other's loopback: b's server is not on a's 127.0.0.1.
    client.send({ op: "connect", id: "lo", host: "127.0.0.1", port: PORT, timeoutMs: 3000 });
    expect((await client.waitFor((l) => l.id === "lo", 5000))?.code).toBe("ECONNREFUSED");
  });

  it("cut: packets vanish both ways, connections stay half-open; heal: the withheld bytes arrive", async () => {
    const { net, hosts } = await start(["a", "b", "c"]);
    const [a, b, c] = hosts as [NetHost, NetHost, NetHost];
    const onB = probe(b, "server");
    const onA = probe(a, "server");
    await onB.waitFor((l) => l.event === "listening", 5000);
    await onA.waitFor((l) => l.event === "listening", 5000);
    const fromA = probe(a, "client");
    const fromB = probe(b, "client");
    const fromC = probe(c, "client");
    for (const p of [fromA, fromB, fromC]) await p.waitFor((l) => l.event === "ready", 5000);
    fromA.send({ op: "connect", id: "old", host: b.address, port: PORT, timeoutMs: 3000 });
    expect((await fromA.waitFor((l) => l.id === "old", 5000))?.event).toBe("connected");

    await net.cut(a, b);
    expect(net.isCut(b, a)).toBe(true);
    fromA.send({ op: "send", id: "old", data: "during the cut" });
    // No echo, and no error or close either: the connection is left half-open.
    expect(await fromA.waitFor((l) => l.id === "old" && l.event !== "connected", 1500)).toBeUndefined();
    // New connections time out in both directions (no RST, no ECONNREFUSED: packets vanish).
    fromA.send({ op: "connect", id: "a->b", host: b.address, port: PORT, timeoutMs: 1500 });
    fromB.send({ op: "connect", id: "b->a", host: a.address, port: PORT, timeoutMs: 1500 });
    expect((await fromA.waitFor((l) => l.id === "a->b", 5000))?.event).toBe("connect_timeout");
    expect((await fromB.waitFor((l) => l.id === "b->a", 5000))?.event).toBe("connect_timeout");
    // Only that link is cut: c reaches both, and so does the observer.
    fromC.send({ op: "connect", id: "c->b", host: b.address, port: PORT, timeoutMs: 3000 });
    fromC.send({ op: "connect", id: "c->a", host: a.address, port: PORT, timeoutMs: 3000 });
    expect((await fromC.waitFor((l) => l.id === "c->b", 5000))?.event).toBe("connected");
    expect((await fromC.waitFor((l) => l.id === "c->a", 5000))?.event).toBe("connected");
    expect(await observerEcho(a, "x")).toBe("x");
    expect(await observerEcho(b, "y")).toBe("y");

    await net.heal(a, b);
    expect(net.isCut(a, b)).toBe(false);
    // TCP retransmits what the cut swallowed, on the same connection.
    const echo = await fromA.waitFor((l) => l.id === "old" && l.event === "data", 15_000);
    expect(echo?.data).toBe("during the cut");
    fromA.send({ op: "connect", id: "after", host: b.address, port: PORT, timeoutMs: 3000 });
    expect((await fromA.waitFor((l) => l.id === "after", 5000))?.event).toBe("connected");
  }, 40_000);

  it("runs an etcd cluster with a member per host; a raft leader cut off from its peers is replaced", async () => {
    const { net, hosts } = await start(["e0", "e1", "e2"]);
    const etcd = await startEtcdCluster({ size: 3, hosts });
    cleanups.push(() => etcd.stop());
    expect(etcd.endpoints).toEqual(hosts.map((h) => `http://${h.address}:2379`));
    const client = new Etcd3({ hosts: etcd.endpoints });
    cleanups.push(async () => client.close());
    await client.put("k").value("v");
    expect(await client.get("k").string()).toBe("v");
    const leader = await findEtcdLeader(etcd.members);
    const leaderHost = hosts[etcd.members.indexOf(leader)] as NetHost;
    await net.cut(
      leaderHost,
      hosts.filter((h) => h !== leaderHost),
    );
    // The two others elect one of them; the observer still reads every member's status.
    const next = await findEtcdLeader(
      etcd.members.filter((m) => m !== leader),
      15_000,
    );
    expect(next).not.toBe(leader);
  }, 60_000);

  it("close() removes every namespace and the observer's link", async () => {
    const net = await VirtualNetwork.create();
    const [a, b] = await net.addHosts(["a", "b"]);
    await net.cut(a as NetHost, b as NetHost);
    const names = net.namespaces;
    expect(names).toHaveLength(3);
    expect(await rootLinks()).toContain(net.observerInterface);
    await net.close();
    await net.close(); // twice is fine
    const left = await listNamespaces();
    for (const n of names) expect(left).not.toContain(n);
    expect(await rootLinks()).not.toContain(net.observerInterface);
  });

  // The crash cases run the built harness (pnpm build) in a child process of their own.
  const harness = fileURLToPath(new URL("../../dist/harness/index.js", import.meta.url));
  const owner = (): { child: ChildProcess; namespaces: Promise<string[]> } => {
    const script = `
      const { VirtualNetwork } = await import(${JSON.stringify(harness)});
      const net = await VirtualNetwork.create();
      await net.addHosts(["a", "b"]);
      process.stdout.write(JSON.stringify(net.namespaces) + "\\n");
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    trackChild(child);
    const namespaces = new Promise<string[]>((resolve, reject) => {
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).once("line", (l) =>
        resolve(JSON.parse(l) as string[]),
      );
      child.once("exit", (code) => reject(new Error(`owner exited with ${code}`)));
    });
    return { child, namespaces };
  };

  it("an owner that is terminated deletes its namespaces in its exit handler", async () => {
    const { child, namespaces } = owner();
    const names = await namespaces;
    expect(await listNamespaces()).toEqual(expect.arrayContaining(names));
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
    const left = await listNamespaces();
    for (const n of names) expect(left).not.toContain(n);
  });

  it("the namespaces of an owner that was SIGKILLed are swept as orphans", async () => {
    const { child, namespaces } = owner();
    const names = await namespaces;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    // Nothing ran in the owner: its namespaces are still there until someone sweeps.
    expect(await listNamespaces()).toEqual(expect.arrayContaining(names));
    const removed = await removeOrphanedNamespaces();
    expect(removed).toEqual(expect.arrayContaining(names));
    const left = await listNamespaces();
    for (const n of names) expect(left).not.toContain(n);
  });
});
