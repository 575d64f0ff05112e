import { LOOPBACK_HOST } from "./free-port.js";
import type { Command } from "./parent-death-signal.js";

/**
 * Where a harness process runs: the address it binds and advertises, and how to start a
 * program there. The loopback host runs programs as they are; a {@link NetHost} of a
 * virtual network runs them inside its network namespace.
 */
export interface ProcessHost {
  /** Short name, e.g. `rm1`. */
  readonly name: string;
  /** IPv4 address the host's processes listen on and advertise, e.g. `10.211.7.3`. */
  readonly address: string;
  /** The command line that runs `command args` on this host (same pid: it execs). */
  command(command: string, args: readonly string[]): Command;
}

/** This machine's loopback: processes run as they are and listen on 127.0.0.1. */
export const loopbackHost: ProcessHost = {
  name: "loopback",
  address: LOOPBACK_HOST,
  command: (command, args) => ({ command, args }),
};
