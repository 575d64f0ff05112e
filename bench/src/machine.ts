import os from "node:os";

/** The machine a run happened on: every figure is printed next to it (the box is shared and noisy). */
export interface Machine {
  readonly cores: number;
  readonly cpuModel: string;
  readonly node: string;
  readonly totalMemGiB: number;
  readonly platform: string;
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    node: process.version,
    totalMemGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.platform()} ${os.release()}`,
  };
}

export function machineLine(m: Machine): string {
  return `machine: ${m.cores} cores (${m.cpuModel}), Node ${m.node}, ${m.totalMemGiB} GiB RAM, ${m.platform}`;
}
