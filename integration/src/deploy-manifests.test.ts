import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { StatefulSet } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { Secret, Service } from "kubernetes-models/v1";
import { describe, expect, it } from "vitest";
import { parseAllDocuments, parseDocument } from "yaml";
import { coordinatorBin } from "./support/rm-cluster.js";

// The Kubernetes example validated against the Kubernetes OpenAPI schemas (kubernetes-models'
// generated validators), and checked for what the replica needs: node started directly, a
// stable --id, probes on the endpoints the replica really serves.
const file = fileURLToPath(new URL("../../deploy/kubernetes/coordinator.yaml", import.meta.url));

type Validating = { validate(): void };
const models: Record<string, (doc: Record<string, unknown>) => Validating> = {
  StatefulSet: (d) => new StatefulSet(d as ConstructorParameters<typeof StatefulSet>[0]),
  Service: (d) => new Service(d as ConstructorParameters<typeof Service>[0]),
  PodDisruptionBudget: (d) =>
    new PodDisruptionBudget(d as ConstructorParameters<typeof PodDisruptionBudget>[0]),
  Secret: (d) => new Secret(d as ConstructorParameters<typeof Secret>[0]),
};

async function documents(): Promise<Record<string, unknown>[]> {
  const docs = parseAllDocuments(await readFile(file, "utf8"));
  for (const d of docs) expect(d.errors).toEqual([]);
  return docs.map((d) => d.toJS() as Record<string, unknown>);
}

describe("deploy/kubernetes", () => {
  it("every object validates against its Kubernetes schema", async () => {
    const docs = await documents();
    expect(docs.map((d) => d.kind)).toEqual(["Service", "Service", "PodDisruptionBudget", "StatefulSet"]);
    for (const d of docs) {
      const model = models[String(d.kind)];
      expect(model, `no validator for ${String(d.kind)}`).toBeDefined();
      expect(() => model?.(d).validate()).not.toThrow();
    }
  });

  it("the validation catches a wrong type (it really runs)", async () => {
    const sts = (await documents()).find((d) => d.kind === "StatefulSet");
    const spec = sts?.spec as Record<string, unknown>;
    expect(() =>
      new StatefulSet({ ...(sts as object), spec: { ...spec, replicas: "three" } } as never).validate(),
    ).toThrow();
  });

  it("runs node directly with a stable id and probes the replica's real endpoints", async () => {
    const sts = new StatefulSet((await documents()).find((d) => d.kind === "StatefulSet") as never);
    const c = sts.spec?.template.spec?.containers[0];
    expect(c?.command?.[0]).toBe("node");
    expect(c?.env?.find((e) => e.name === "RM_ID")?.value).toBe("$(POD_NAME)");
    expect(c?.readinessProbe?.httpGet?.path).toBe("/readyz");
    expect(c?.livenessProbe?.httpGet?.path).toBe("/healthz");
    expect(c?.startupProbe?.grpc?.port).toBe(50051);
    expect(sts.spec?.replicas).toBe(3);
    const pdb = (await documents()).find((d) => d.kind === "PodDisruptionBudget");
    expect((pdb?.spec as { minAvailable: number } | undefined)?.minAvailable).toBe(2);
  });
});

// deploy/compose: no Compose schema validator is installed here (no Docker either), so the
// file is checked for structure and, above all, that every flag it passes exists: the
// replicas' against `coordinator serve --help` and `data load --help`, the jobs' against the
// options their sources declare.
describe("deploy/compose", () => {
  const composeFile = fileURLToPath(new URL("../../deploy/compose/compose.yaml", import.meta.url));
  const helpFlags = async (args: readonly string[]) => {
    const { stdout } = await promisify(execFile)(process.execPath, [coordinatorBin, ...args, "--help"], {
      encoding: "utf8",
    });
    return new Set([...stdout.matchAll(/^\s+(--[a-z][a-z-]*)/gm)].map((m) => m[1]));
  };
  const flagsOf = (argv: readonly string[]) => argv.filter((a) => /^--[a-z]/.test(a));

  it("3 etcd members, 3 replicas started by node with real flags, the demo jobs with real flags", async () => {
    const doc = parseDocument(await readFile(composeFile, "utf8"), { merge: true });
    expect(doc.errors).toEqual([]);
    const services = (doc.toJS() as { services: Record<string, Record<string, unknown>> }).services;
    expect(Object.keys(services).sort()).toEqual(
      [
        "data-load",
        "etcd-0",
        "etcd-1",
        "etcd-2",
        "rm-1",
        "rm-2",
        "rm-3",
        "task-feed",
        "task-worker",
        "worker",
      ].sort(),
    );
    const serve = await helpFlags(["serve"]);
    const load = await helpFlags(["data", "load"]);
    for (const id of ["rm-1", "rm-2", "rm-3"]) {
      const s = services[id] ?? {};
      const command = s.command as string[];
      expect(command[0]).toBe("serve");
      expect(flagsOf(command).filter((f) => !serve.has(f))).toEqual([]);
      expect(command[command.indexOf("--id") + 1]).toBe(id);
      // The image's entry point is node itself (deploy/Dockerfile), so SIGTERM reaches it.
      expect((s.build as { target: string }).target).toBe("runtime");
    }
    const dataLoad = services["data-load"]?.command as string[];
    expect(dataLoad.slice(0, 2)).toEqual(["data", "load"]);
    expect(flagsOf(dataLoad).filter((f) => !load.has(f))).toEqual([]);
    const dockerfile = await readFile(
      fileURLToPath(new URL("../../deploy/Dockerfile", import.meta.url)),
      "utf8",
    );
    expect(dockerfile).toMatch(/AS runtime\n/);
    expect(dockerfile).toMatch(/AS demo\n/);
    expect(dockerfile).toContain('ENTRYPOINT ["node", "packages/coordinator/bin/coordinator.js"]');
    const jobs: Record<string, string> = {
      "dataset-job.js": "examples/src/dataset-job.ts",
      "task-worker.js": "examples/src/task-worker.ts",
      "task-feed.js": "examples/src/task-feed.ts",
    };
    for (const id of ["worker", "task-worker", "task-feed"]) {
      const entry = ((services[id]?.entrypoint as string[] | undefined) ?? []).join(" ");
      const script = Object.keys(jobs).find((j) => entry.includes(`examples/dist/${j}`));
      expect(script, `${id} runs an example job`).toBeDefined();
      const source = await readFile(
        fileURLToPath(new URL(`../../${jobs[script ?? ""]}`, import.meta.url)),
        "utf8",
      );
      for (const f of entry.match(/--[a-z][a-z-]*/g) ?? [])
        expect(source, `${id}: ${f}`).toMatch(new RegExp(`(^|\\s)"?${f.slice(2)}"?: \\{ type:`, "m"));
    }
    for (const id of ["etcd-0", "etcd-1", "etcd-2"])
      expect(services[id]?.command as string[]).toContain("--pre-vote");
  });
});
