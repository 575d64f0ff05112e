import { type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { Server } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { file_shard_v1_shard, file_shard_v1_task } from "@org/proto";
import { service as healthService } from "grpc-health-check";

type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

/**
 * Encodes `files` and their imports as `FileDescriptorProto`s, imports first, each once.
 * The descriptors are the ones protoc-gen-es embedded in the generated code, so they change
 * exactly when `pnpm proto:generate` changes it (and `pnpm proto:check` keeps that in sync).
 */
export function fileDescriptorProtos(files: readonly DescFile[]): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  const visit = (f: DescFile): void => {
    if (seen.has(f.name)) return;
    seen.add(f.name);
    for (const dep of f.dependencies) visit(dep);
    out.push(Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
  };
  for (const f of files) visit(f);
  return out;
}

/**
 * gRPC server reflection (`grpc.reflection.v1` and `v1alpha`, by `@grpc/reflection`) for
 * `shard.v1.ShardService`, `shard.v1.TaskService` and `grpc.health.v1.Health`, so that
 * `grpcurl -plaintext host:port list` and `describe` work without the `.proto` files.
 *
 * `@grpc/reflection` reads `fileDescriptorProtos` from a `@grpc/proto-loader` package
 * definition; we hand it one entry carrying the protobuf-es descriptors instead of loading
 * the `.proto` sources a second time, plus the health service's own (proto-loader) entry.
 */
export function addReflectionService(server: Server): void {
  const health = healthService.Check?.requestType;
  const pkg: PackageDefinition = {
    "shard.v1": {
      format: "Protocol Buffer 3 DescriptorProto",
      type: {},
      fileDescriptorProtos: fileDescriptorProtos([file_shard_v1_shard, file_shard_v1_task]),
    },
    ...(health === undefined ? {} : { "grpc.health.v1.HealthCheckRequest": health }),
  };
  new ReflectionService(pkg).addToServer(server);
}
