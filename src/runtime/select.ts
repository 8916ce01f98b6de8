/**
 * Picks the socket path for the runtime we are on, by measurement.
 *
 * Measured on 2 vCPUs (Xeon, Linux 6.18), Deno 2.9.6 and Bun 1.4.5, with
 * bench/io_paths.ts (DATA frames through Channel over loopback, receiver
 * and sender in separate processes, medians of 3; full table in
 * bench/RESULTS.md, "I/O path"):
 *
 * | runtime | adapter     | 1 GiB, 256 KiB frames | CPU ms/GiB | 64 B frames/s | CPU ms/100k |
 * | ------- | ----------- | --------------------: | ---------: | ------------: | ----------: |
 * | Deno    | node:net    |           1,215 MiB/s |      1,433 |       211,665 |         868 |
 * | Deno    | deno-native |           1,473 MiB/s |      1,201 |       627,030 |         234 |
 * | Bun     | node:net    |           1,881 MiB/s |        946 |       244,760 |         758 |
 *
 * End to end (bench/run.ts --io-paths, Deno, native vs node:net) hashing and
 * disk dominate and the difference is within run-to-run noise: one 1 GiB
 * file 4.62 vs 4.40 s, and 4.84 vs 4.95 s in a repeat; 2,000 × 64 KiB 4.92
 * vs 4.76 s (2.88 vs 3.07 s in a loaded run); 200 concurrent senders 3.72 vs
 * 3.41 s. Memory is not noise: server peak RSS with 200 senders 282 vs
 * 375 MiB, receiving 1 GiB 131 vs 154 MiB.
 *
 * So Deno uses its native sockets: a faster socket path with less CPU per
 * byte, less memory, and every test passes on it. Bun keeps node:net, which
 * is Bun's own native socket code underneath and already the fastest row; a
 * Bun.listen adapter could only speed up the socket share, which for one
 * connection is not where Bun's time goes (hashing and disk are). With 200
 * connections (bench (c)) it is a candidate: in a bare server, accepting 200
 * connections cost 50-65 ms of CPU through node:net against 14-15 ms through
 * Bun.listen, and hashing and writing 200 × 4 MiB 1.10-1.27 s against
 * 1.02-1.05 s (bench/RESULTS.md, seventh round).
 *
 * @module
 */
import { denoNativeRuntime } from "./deno_native.ts";
import { nodeNetRuntime } from "./node_net.ts";
import type { Runtime } from "./transport.ts";

/**
 * The default runtime adapter: Deno's native sockets on Deno, node:net on
 * Bun (and anywhere else). TLS always goes through node:tls.
 *
 * @example
 * ```ts
 * import { defaultRuntime } from "./select.ts";
 * const runtime = defaultRuntime(); // runtime.name is "deno" or "bun"
 * const listener = await runtime.listen({ hostname: "127.0.0.1", port: 0 }, (conn) => conn.close());
 * await listener.close();
 * ```
 */
export function defaultRuntime(): Runtime {
  const g = globalThis as { Deno?: { listen?: unknown }; Bun?: unknown };
  // Bun defines no Deno global, but check both in case a shim does.
  return typeof g.Deno?.listen === "function" && g.Bun === undefined ? denoNativeRuntime : nodeNetRuntime;
}
