import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Client, type ClientReadableStream, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";

/** `grpc.health.v1.HealthCheckResponse.ServingStatus`, by its wire number. */
export const servingStatusNames: Readonly<Record<number, string>> = {
  0: "UNKNOWN",
  1: "SERVING",
  2: "NOT_SERVING",
  3: "SERVICE_UNKNOWN",
};

// HealthCheckRequest { string service = 1; }
const encodeHealthRequest = (service: string): Buffer =>
  Buffer.from(new BinaryWriter().tag(1, 2).string(service).finish());

// HealthCheckResponse { ServingStatus status = 1; }
function decodeHealthResponse(b: Buffer): string {
  const r = new BinaryReader(b);
  let status = 0;
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1) status = r.int32();
    else r.skip(wire);
  }
  return servingStatusNames[status] ?? `status ${status}`;
}

/**
 * A bare grpc-js client of `grpc.health.v1.Health` and `grpc.reflection.v1` that encodes
 * the few fields it needs by hand (no generated code, no `.proto` loading): what a load
 * balancer or `grpcurl` sends is exactly this.
 */
export class RawHealthClient {
  readonly #client: Client;
  readonly #streams = new Set<ClientReadableStream<string>>();

  constructor(address: string) {
    this.#client = new Client(address, credentials.createInsecure());
  }

  /** `Health/Check` for `service` (`""`: the server as a whole): the status name, or the gRPC error. */
  check(service: string, deadlineMs = 5_000): Promise<string> {
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        encodeHealthRequest,
        decodeHealthResponse,
        service,
        new Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err: ServiceError | null, v?: string) => (err !== null ? reject(err) : resolve(v ?? "")),
      );
    });
  }

  /** `Health/Watch` for `service`: every status the server sends, in order, pushed into the array. */
  watch(service: string): { readonly seen: string[]; cancel(): void } {
    const seen: string[] = [];
    const call = this.#client.makeServerStreamRequest(
      "/grpc.health.v1.Health/Watch",
      encodeHealthRequest,
      decodeHealthResponse,
      service,
      new Metadata(),
    );
    this.#streams.add(call);
    call.on("data", (s: string) => seen.push(s));
    call.on("error", () => undefined);
    call.on("close", () => this.#streams.delete(call));
    return {
      seen,
      cancel: () => {
        call.cancel();
        this.#streams.delete(call);
      },
    };
  }

  /**
   * One `ServerReflectionInfo` exchange: sends a request with the given field (7:
   * list_services, 4: file_containing_symbol) and returns the raw response fields.
   */
  #reflect(field: number, value: string): Promise<{ services: string[]; files: FileDescriptorProto[] }> {
    return new Promise((resolve, reject) => {
      const call = this.#client.makeBidiStreamRequest(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        (v: Buffer) => v,
        (b: Buffer) => b,
        new Metadata(),
        { deadline: Date.now() + 5_000 },
      );
      call.on("data", (b: Buffer) => {
        const services: string[] = [];
        const files: FileDescriptorProto[] = [];
        let error = "";
        const r = new BinaryReader(b);
        while (r.pos < r.len) {
          const [f, wire] = r.tag();
          if (f === 6) {
            // ListServiceResponse { repeated ServiceResponse service = 1 { string name = 1 } }
            const list = new BinaryReader(r.bytes());
            while (list.pos < list.len) {
              const [lf, lw] = list.tag();
              if (lf !== 1) {
                list.skip(lw);
                continue;
              }
              const svc = new BinaryReader(list.bytes());
              while (svc.pos < svc.len) {
                const [sf, sw] = svc.tag();
                if (sf === 1) services.push(svc.string());
                else svc.skip(sw);
              }
            }
          } else if (f === 4) {
            // FileDescriptorResponse { repeated bytes file_descriptor_proto = 1 }
            const fd = new BinaryReader(r.bytes());
            while (fd.pos < fd.len) {
              const [ff, fw] = fd.tag();
              if (ff === 1) files.push(fromBinary(FileDescriptorProtoSchema, fd.bytes()));
              else fd.skip(fw);
            }
          } else if (f === 7) {
            // ErrorResponse { int32 error_code = 1; string error_message = 2 }
            const er = new BinaryReader(r.bytes());
            while (er.pos < er.len) {
              const [ef, ew] = er.tag();
              if (ef === 2) error = er.string();
              else er.skip(ew);
            }
          } else r.skip(wire);
        }
        call.end();
        if (error !== "") reject(new Error(`reflection error: ${error}`));
        else resolve({ services, files });
      });
      call.on("error", reject);
      call.write(Buffer.from(new BinaryWriter().tag(field, 2).string(value).finish()));
    });
  }

  /** The service names server reflection lists. */
  async listServices(): Promise<string[]> {
    return (await this.#reflect(7, "")).services;
  }

  /** The file descriptors reflection returns for a fully-qualified symbol (with its imports). */
  async fileContainingSymbol(symbol: string): Promise<FileDescriptorProto[]> {
    return (await this.#reflect(4, symbol)).files;
  }

  close(): void {
    for (const s of this.#streams) s.cancel();
    this.#streams.clear();
    this.#client.close();
  }
}
