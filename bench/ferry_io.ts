/**
 * ferry with an explicit socket path, for benchmarking I/O paths end to end
 * against the CLI's default (src/runtime/select.ts). Prints the same JSON
 * lines the CLI does for `listening` and `file`.
 *
 *     deno run -A bench/ferry_io.ts native|node serve DIR
 *     deno run -A bench/ferry_io.ts native|node send PATH HOST:PORT
 *
 * @module
 */
import process from "node:process";
import { send, serve } from "../mod.ts";
import { denoNativeRuntime } from "../src/runtime/deno_native.ts";
import { nodeNetRuntime } from "../src/runtime/node_net.ts";

const [io, mode, a, b] = process.argv.slice(2);
const runtime = io === "native" ? denoNativeRuntime : io === "node" ? nodeNetRuntime : undefined;
if (runtime && mode === "serve" && a) {
  const server = await serve({ dir: a, hostname: "127.0.0.1", port: 0, runtime });
  server.on("file", ({ receipt }) => {
    process.stdout.write(JSON.stringify({ event: "file", name: receipt.name, size: receipt.size }) + "\n");
  });
  process.stdout.write(
    JSON.stringify({ event: "listening", host: server.hostname, port: server.port }) + "\n",
  );
  process.on("SIGTERM", () => server.close({ graceMs: 0 }).then(() => process.exit(0)));
} else if (runtime && mode === "send" && a && b) {
  const result = await send(b, [a], { runtime });
  process.exit(result.failures.length === 0 ? 0 : 1);
} else {
  process.stderr.write("usage: ferry_io.ts native|node serve DIR | send PATH HOST:PORT\n");
  process.exit(2);
}
