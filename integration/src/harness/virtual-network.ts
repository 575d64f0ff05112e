import { randomInt } from "node:crypto";
import { HarnessConfigError, HarnessError } from "./errors.js";
import { runNetCommand } from "./net-command.js";
import { addNamespaces, deleteNamespace, networkPrefix, sweepOrphanedNamespaces } from "./netns-registry.js";
import type { Command } from "./parent-death-signal.js";
import type { ProcessHost } from "./process-host.js";

/** A host of a {@link VirtualNetwork}: a network namespace with one address on the network. */
export interface NetHost extends ProcessHost {
  /** The network namespace its processes run in. */
  readonly namespace: string;
}

/** One side of a cut: a host or several. */
export type Hosts = NetHost | readonly NetHost[];

/** Hosts per network: .1 to .253 (.254 is the observer, this process's own address). */
const MAX_HOSTS = 253;
const OBSERVER_OCTET = 254;

let nextIndex = 0;
// Subnets are chosen by looking at the root namespace's routes: serialize choices made in
// this process so two networks created at once cannot pick the same one.
let creating: Promise<unknown> = Promise.resolve();

/**
 * A virtual LAN of hosts, each in a network namespace of its own, for drills with real
 * network partitions (not only a proxy in front of one client).
 *
 * Layout: a bridge in a namespace of its own (`shn-<pid>-<n>-br`), one veth pair per host
 * from the bridge to the host's `eth0` (an address in a private /24 chosen free on this
 * machine), and one veth pair from the bridge to the root namespace, so this process (the
 * *observer*: test assertions, status polls, the drill's etcd recorder) reaches every host
 * and is never part of a cut. Processes are started on a host with {@link NetHost.command},
 * which wraps them in `ip netns exec` (the same pid: it execs).
 *
 * {@link cut} makes every packet between two hosts vanish, both ways, with an iptables
 * DROP on each side's INPUT chain: senders get no error and no reset, connections stay
 * ESTABLISHED (half-open), new connections time out. {@link heal} removes the rules; TCP
 * then retransmits what was withheld. Nothing is created outside the network's namespaces
 * except the observer's veth end, which disappears with the bridge namespace; see
 * `netns-registry.ts` for how namespaces are removed even when this process crashes.
 *
 * @example
 * ```ts
 * await using net = await VirtualNetwork.create();
 * const [a, b] = await net.addHosts(["a", "b"]);
 * spawn(...a.command("etcd", ["--listen-client-urls", `http://${a.address}:2379`]));
 * await net.cut(a, b); // a and b no longer hear each other; the observer hears both
 * await net.heal(a, b);
 * ```
 */
export class VirtualNetwork implements AsyncDisposable {
  readonly #prefix: string;
  readonly #subnet: string;
  readonly #hosts = new Map<string, NetHost>();
  readonly #cuts = new Set<string>();
  #closing: Promise<void> | undefined;

  private constructor(prefix: string, subnet: string) {
    this.#prefix = prefix;
    this.#subnet = subnet;
  }

  /** Creates the bridge and the observer link; add hosts with {@link addHost}. */
  static async create(): Promise<VirtualNetwork> {
    await sweepOrphanedNamespaces();
    const run = creating.then(() => VirtualNetwork.#create());
    creating = run.catch(() => undefined);
    return run;
  }

  static async #create(): Promise<VirtualNetwork> {
    const index = nextIndex++;
    const prefix = networkPrefix(index);
    const subnet = await pickFreeSubnet();
    const net = new VirtualNetwork(prefix, subnet);
    const br = net.#bridgeNamespace;
    const observerIf = net.observerInterface; // at most 15 characters: "shn-" + pid + "-" + index
    try {
      await addNamespaces([br]);
      await ip(["-n", br, "link", "add", "br0", "type", "bridge"]);
      await ip(["-n", br, "link", "set", "br0", "up"]);
      await ip(["link", "add", "obs", "netns", br, "type", "veth", "peer", "name", observerIf]);
      await ip(["-n", br, "link", "set", "obs", "master", "br0", "up"]);
      await ip(["addr", "add", `${net.observerAddress}/24`, "dev", observerIf]);
      await ip(["link", "set", observerIf, "up"]);
      return net;
    } catch (e) {
      await net.close();
      throw e;
    }
  }

  /** This process's address on the network (it can reach every host). */
  get observerAddress(): string {
    return `${this.#subnet}.${OBSERVER_OCTET}`;
  }

  /** Every host added so far, in order. */
  get hosts(): NetHost[] {
    return [...this.#hosts.values()];
  }

  /** Every namespace of the network (the hosts' and the bridge's), for leak checks. */
  get namespaces(): string[] {
    return [...[...this.#hosts.values()].map((h) => h.namespace), this.#bridgeNamespace];
  }

  /** Name of the observer's veth end in the root namespace (gone once the network is closed). */
  get observerInterface(): string {
    return this.#prefix;
  }

  /** The host called `name`; throws when there is none. */
  host(name: string): NetHost {
    const h = this.#hosts.get(name);
    if (h === undefined) throw new HarnessConfigError(`no host ${JSON.stringify(name)} on this network`);
    return h;
  }

  /** Adds a host: a namespace with `lo` and an `eth0` on the bridge, addressed `<subnet>.<n>`. */
  async addHost(name: string): Promise<NetHost> {
    const [host] = await this.addHosts([name]);
    if (host === undefined) throw new HarnessError("unreachable: addHosts returned no host");
    return host;
  }

  /**
   * Adds several hosts, in order. Batched (`ip -batch`): on a loaded machine every
   * process spawned costs tens of milliseconds, and a drill adds a dozen hosts.
   */
  async addHosts(names: readonly string[]): Promise<NetHost[]> {
    if (this.#closing !== undefined) throw new HarnessConfigError("the network is closed");
    const added: NetHost[] = [];
    for (const name of names) {
      if (!/^[a-z0-9][a-z0-9-]{0,19}$/.test(name))
        throw new HarnessConfigError(`host name ${JSON.stringify(name)} must match [a-z0-9][a-z0-9-]{0,19}`);
      if (this.#hosts.has(name) || added.some((h) => h.name === name))
        throw new HarnessConfigError(`host ${name} exists already`);
      const octet = this.#hosts.size + added.length + 1;
      if (octet > MAX_HOSTS) throw new HarnessConfigError(`at most ${MAX_HOSTS} hosts per network`);
      const namespace = `${this.#prefix}-${name}`;
      added.push({
        name,
        namespace,
        address: `${this.#subnet}.${octet}`,
        command: (command, args): Command => ({
          command: "ip",
          args: ["netns", "exec", namespace, command, ...args],
        }),
      });
    }
    for (const h of added) this.#hosts.set(h.name, h);
    const br = this.#bridgeNamespace;
    const port = (h: NetHost) => `h${h.address.split(".").at(-1)}`;
    await addNamespaces(added.map((h) => h.namespace));
    await ipBatch(
      [],
      added.map((h) => `link add eth0 netns ${h.namespace} type veth peer name ${port(h)} netns ${br}`),
    );
    for (const h of added)
      await ipBatch(
        ["-n", h.namespace],
        [`addr add ${h.address}/24 dev eth0`, "link set eth0 up", "link set lo up"],
      );
    await ipBatch(
      ["-n", br],
      added.map((h) => `link set ${port(h)} master br0 up`),
    );
    return added;
  }

  /**
   * Cuts every link between a host of `a` and a host of `b`, both directions: packets
   * vanish (DROP on each receiver's INPUT chain). Cutting a cut link does nothing.
   */
  async cut(a: Hosts, b: Hosts): Promise<void> {
    const fresh = [...pairs(a, b)].filter(([x, y]) => !this.#cuts.has(linkId(x, y)));
    for (const [x, y] of fresh) this.#cuts.add(linkId(x, y));
    await applyDrops(fresh, "-I");
  }

  /** Restores the links {@link cut} took down between `a` and `b`; healing a live link does nothing. */
  async heal(a: Hosts, b: Hosts): Promise<void> {
    const cut = [...pairs(a, b)].filter(([x, y]) => this.#cuts.has(linkId(x, y)));
    await applyDrops(cut, "-D");
    for (const [x, y] of cut) this.#cuts.delete(linkId(x, y));
  }

  /** Restores every cut link. */
  async healAll(): Promise<void> {
    for (const id of [...this.#cuts]) {
      const [x, y] = id.split("|").map((n) => this.host(n));
      if (x !== undefined && y !== undefined) await this.heal(x, y);
    }
  }

  /** True while the link between `a` and `b` is cut. */
  isCut(a: NetHost, b: NetHost): boolean {
    return this.#cuts.has(linkId(a, b));
  }

  /**
   * Deletes every namespace of the network (hosts first, then the bridge, which takes
   * the observer link with it). Processes still running on a host keep their namespace
   * alive, unreachable, until they exit: stop them first. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const errors: unknown[] = [];
      // Deleting the observer's veth end first is synchronous; left to the bridge
      // namespace's teardown, which the kernel does in the background, it lingers seconds.
      if ((await rootInterfaces()).includes(this.observerInterface))
        await ip(["link", "del", this.observerInterface]).catch((e) => errors.push(e));
      for (const h of this.#hosts.values()) await deleteNamespace(h.namespace).catch((e) => errors.push(e));
      await deleteNamespace(this.#bridgeNamespace).catch((e) => errors.push(e));
      this.#cuts.clear();
      // The kernel dismantles a deleted namespace in the background: wait until the
      // observer's veth end is gone, so a leak check right after sees nothing.
      await waitUntilGone(this.observerInterface).catch((e) => errors.push(e));
      if (errors.length > 0) throw errors[0];
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  get #bridgeNamespace(): string {
    return `${this.#prefix}-br`;
  }
}

/** Names of the interfaces of the root namespace (this process's). */
async function rootInterfaces(): Promise<string[]> {
  const links = await ip(["-o", "link", "show"]);
  return links
    .split("\n")
    .map((l) => l.split(": ")[1]?.split("@")[0])
    .filter((n) => n !== undefined);
}

/** Waits until the root namespace has no interface called `name`. */
async function waitUntilGone(name: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (!(await rootInterfaces()).includes(name)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new HarnessError(`interface ${name} still exists ${timeoutMs} ms after its namespace was deleted`);
}

function ip(args: readonly string[]): Promise<string> {
  return runNetCommand("ip", args);
}

/** Runs `lines` through one `ip [global] -batch -`; it stops at the first failing line. */
function ipBatch(global: readonly string[], lines: readonly string[]): Promise<string> {
  return runNetCommand("ip", [...global, "-batch", "-"], `${lines.join("\n")}\n`);
}

/**
 * Adds (`-I`) or removes (`-D`) the rules that drop everything between the two hosts of
 * each pair, on both receivers' INPUT chains: one iptables call per host, with every
 * peer of that host in one `-s a,b,c` (iptables makes one rule per address, so a later
 * `-D` of a subset removes just those).
 */
async function applyDrops(links: readonly [NetHost, NetHost][], op: "-I" | "-D"): Promise<void> {
  const peersOf = new Map<NetHost, NetHost[]>();
  for (const [x, y] of links) {
    for (const [host, peer] of [
      [x, y],
      [y, x],
    ] as const) {
      const list = peersOf.get(host) ?? [];
      list.push(peer);
      peersOf.set(host, list);
    }
  }
  for (const [host, peers] of peersOf) {
    const sources = peers.map((p) => `${p.address}/32`).join(",");
    await runNetCommand("ip", [
      "netns",
      "exec",
      host.namespace,
      "iptables",
      "-w",
      op,
      "INPUT",
      "-s",
      sources,
      "-j",
      "DROP",
    ]);
  }
}

function* pairs(a: Hosts, b: Hosts): Generator<[NetHost, NetHost]> {
  const as = Array.isArray(a) ? a : [a as NetHost];
  const bs = Array.isArray(b) ? b : [b as NetHost];
  for (const x of as) for (const y of bs) if (x.name !== y.name) yield [x, y];
}

/** The same id for (a, b) and (b, a). */
function linkId(a: NetHost, b: NetHost): string {
  return a.name < b.name ? `${a.name}|${b.name}` : `${b.name}|${a.name}`;
}

/**
 * A `10.x.y` /24 that no route or address of the root namespace touches. x is kept in
 * 200..249 to stay clear of the small 10.0.x ranges tools tend to use; two processes
 * creating networks at the same instant could in theory pick the same subnet, which is
 * why the choice is random over 12,800 candidates rather than sequential.
 */
async function pickFreeSubnet(): Promise<string> {
  const taken = `${await runNetCommand("ip", ["-4", "-o", "route", "show", "table", "all"])}\n${await runNetCommand("ip", ["-4", "-o", "addr", "show"])}`;
  for (let attempt = 0; attempt < 100; attempt++) {
    const subnet = `10.${200 + randomInt(50)}.${randomInt(256)}`;
    if (!taken.includes(`${subnet}.`)) return subnet;
  }
  throw new HarnessError("no free 10.x.y.0/24 subnet found for a virtual network");
}
