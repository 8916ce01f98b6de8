/**
 * Benchmark worker for case (c): runs one `send()` per file given, all at
 * once, each on its own connection, and prints one JSON summary line.
 *
 *     deno run -A bench/sender_worker.ts [--io=native|node] HOST:PORT FILE...
 *     bun bench/sender_worker.ts HOST:PORT FILE...
 *
 * @module
 */
import process from "node:process";
// From the client module, not mod.ts: a worker needs none of the server, image and dashboard modules,
// and each of the four workers would load them (Deno: 0.14 against 0.11 s of start-up CPU).
import { send } from "../src/client/sender.ts";
import { denoNativeRuntime } from "../src/runtime/deno_native.ts";
import { nodeNetRuntime } from "../src/runtime/node_net.ts";

const argv = process.argv.slice(2);
// --io=native|node forces a socket path; the default is the one src/runtime/select.ts picks.
const io = argv[0]?.startsWith("--io=") ? argv[0].slice(5) : undefined;
const [target, ...files] = io ? argv.slice(1) : argv;
const runtime = io === "native" ? denoNativeRuntime : io === "node" ? nodeNetRuntime : undefined;
if (!target || files.length === 0) {
  process.stderr.write("usage: sender_worker.ts HOST:PORT FILE...\n");
  process.exit(2);
}
const t0 = performance.now();
const results = await Promise.allSettled(files.map((path) => send(target, [path], { retries: 0, runtime })));
let receipts = 0;
const errors: string[] = [];
for (const r of results) {
  if (r.status === "rejected") errors.push(String((r.reason as Error)?.message ?? r.reason));
  else {
    receipts += r.value.receipts.length;
    for (const f of r.value.failures) errors.push(`${f.name}: ${f.error.code}: ${f.error.message}`);
  }
}
process.stdout.write(
  JSON.stringify({ files: files.length, receipts, errors: errors.slice(0, 5), ms: performance.now() - t0 }) +
    "\n",
);
process.exit(errors.length === 0 && receipts === files.length ? 0 : 1);
