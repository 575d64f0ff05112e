import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { StatefulSet } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { Secret, Service } from "kubernetes-models/v1";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";

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
