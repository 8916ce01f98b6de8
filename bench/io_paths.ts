/**
 * Which socket path is faster on each runtime? Streams DATA frames through
 * {@linkcode Channel} over every runtime adapter available there: node:net
 * on Deno and Bun, Deno.listen/Deno.connect on Deno. The receiver runs in
 * this process, the sender in a child process on the same runtime and
 * adapter, like a real server and sender.
 *
 *     deno run -A bench/io_paths.ts [--size 1G] [--small 200000] [--runs 3]
 *
 * Run under Deno, it measures Deno's adapters and then Bun's (by running
 * itself under Bun with `--inner`). Results: a table on stdout and
 * bench/out/io_paths.json.
 *
 * @module
 */
import { spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { parseCount, parseSize } from "../src/cli/units.ts";
import { Channel } from "../src/protocol/channel.ts";
import { denoNativeRuntime } from "../src/runtime/deno_native.ts";
import { nodeNetRuntime } from "../src/runtime/node_net.ts";
import type { Connection, Runtime } from "../src/runtime/transport.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const MiB = 1024 * 1024;
/** The sender's default DATA payload (SendOptions.chunkSize). */
const CHUNK = 256 * 1024;
/** Payload of a "small" frame: a typical control frame is tens of bytes. */
const SMALL_PAYLOAD = 64;
const MAX_FRAME = 1024 * 1024;
const IS_BUN = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

/** The adapters this runtime can use, by name. */
function adapters(): Record<string, Runtime> {
  return IS_BUN
    ? { "node:net": nodeNetRuntime }
    : { "node:net": nodeNetRuntime, "deno-native": denoNativeRuntime };
}

function selfCommand(): [string, string[]] {
  const script = fileURLToPath(import.meta.url);
  return IS_BUN ? [process.execPath, [script]] : [process.execPath, ["run", "-A", script]];
}

/** Sender side (child process): stream frames, then END, then wait for the receiver to close. */
async function sendSide(
  adapter: string,
  port: number,
  mode: "bulk" | "small",
  amount: number,
): Promise<void> {
  const cpu0 = process.cpuUsage();
  const conn = await adapters()[adapter].connect({ hostname: "127.0.0.1", port });
  const channel = new Channel(conn, { maxFrameSize: MAX_FRAME });
  if (mode === "bulk") {
    for (let offset = 0; offset < amount; offset += CHUNK) {
      // A fresh buffer per frame, as the real sender reads each chunk into a new one.
      const payload = new Uint8Array(Math.min(CHUNK, amount - offset));
      await channel.sendData(1, offset, payload);
    }
  } else {
    const payload = new Uint8Array(SMALL_PAYLOAD);
    for (let i = 0; i < amount; i++) await channel.sendData(1, i * SMALL_PAYLOAD, payload);
  }
  await channel.send({ kind: "end", id: 1 });
  await conn.read(); // the receiver closes once it has seen END
  conn.close();
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(JSON.stringify({ cpuMs: (cpu.user + cpu.system) / 1000 }) + "\n");
}

/** Wall time from accept to END, and CPU time of receiver and sender together. */
interface Measured {
  ms: number;
  cpuMs: number;
}

/** Receiver side: accept one connection and time it from accept to END. */
async function measure(adapter: string, mode: "bulk" | "small", amount: number): Promise<Measured> {
  const runtime = adapters()[adapter];
  let resolveDone!: (m: Measured) => void;
  let rejectDone!: (e: unknown) => void;
  const done = new Promise<Measured>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  const listener = await runtime.listen({ hostname: "127.0.0.1", port: 0 }, async (conn: Connection) => {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const channel = new Channel(conn, { maxFrameSize: MAX_FRAME });
    let bytes = 0;
    let frames = 0;
    try {
      for (;;) {
        const m = await channel.receive();
        if (m === null) throw new Error("Sender closed before END");
        if (m.kind === "data") {
          bytes += m.bytes.length;
          frames++;
        } else if (m.kind === "end") break;
      }
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const expected = mode === "bulk" ? amount : amount * SMALL_PAYLOAD;
      if (bytes !== expected) {
        throw new Error(`Received ${bytes} bytes in ${frames} frames, expected ${expected}`);
      }
      resolveDone({ ms, cpuMs: (cpu.user + cpu.system) / 1000 });
    } catch (e) {
      rejectDone(e);
    } finally {
      conn.close();
    }
  });
  const [cmd, args] = selfCommand();
  const child = spawn(cmd, [...args, "--send", adapter, String(listener.port), mode, String(amount)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => out += d);
  const exited = new Promise<number>((res, rej) =>
    child.once("exit", (code) => {
      if (code !== 0) return rej(new Error(`sender exited ${code}`));
      res(JSON.parse(out.trim()).cpuMs);
    })
  );
  try {
    const [m, senderCpu] = await Promise.all([done, exited]);
    return { ms: m.ms, cpuMs: m.cpuMs + senderCpu };
  } finally {
    await listener.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

interface Row {
  runtime: string;
  adapter: string;
  bulkMiBs: number;
  /** CPU time of both processes per GiB of bulk data: steadier than wall time on a shared machine. */
  bulkCpuMsPerGiB: number;
  smallFramesPerSec: number;
  /** CPU time of both processes per 100,000 small frames. */
  smallCpuMsPer100k: number;
  bulkRuns: number[];
  smallRuns: number[];
}

/** Measures every adapter of this runtime, alternating them run by run. */
async function measureHere(size: number, small: number, runs: number): Promise<Row[]> {
  const names = Object.keys(adapters());
  const bulk: Record<string, Measured[]> = {};
  const tiny: Record<string, Measured[]> = {};
  for (const n of names) {
    bulk[n] = [];
    tiny[n] = [];
  }
  // One throwaway round: JIT and (on Deno) the module cache.
  for (const n of names) await measure(n, "bulk", Math.min(size, 16 * MiB));
  for (let r = 0; r < runs; r++) {
    for (const n of r % 2 ? [...names].reverse() : names) {
      bulk[n].push(await measure(n, "bulk", size));
      tiny[n].push(await measure(n, "small", small));
    }
  }
  const runtime = IS_BUN
    ? `bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
    : `deno ${Deno.version.deno}`;
  const ms = (xs: Measured[]) => median(xs.map((x) => x.ms));
  const cpu = (xs: Measured[]) => median(xs.map((x) => x.cpuMs));
  return names.map((adapter) => ({
    runtime,
    adapter,
    bulkMiBs: Math.round(size / MiB / (ms(bulk[adapter]) / 1000)),
    bulkCpuMsPerGiB: Math.round(cpu(bulk[adapter]) * (1024 * MiB / size)),
    smallFramesPerSec: Math.round(small / (ms(tiny[adapter]) / 1000)),
    smallCpuMsPer100k: Math.round(cpu(tiny[adapter]) * (100_000 / small)),
    bulkRuns: bulk[adapter].map((x) => Math.round(x.ms)),
    smallRuns: tiny[adapter].map((x) => Math.round(x.ms)),
  }));
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--send") {
    await sendSide(argv[1], Number(argv[2]), argv[3] as "bulk" | "small", Number(argv[4]));
    return 0;
  }
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: "string", default: "1G" },
      small: { type: "string", default: "200000" },
      runs: { type: "string", default: "3" },
      inner: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
    },
  });
  const size = parseSize(values.quick ? "64M" : values.size!, "--size");
  const small = values.quick ? 20_000 : parseCount(values.small!, "--small", 1);
  const runs = values.quick ? 1 : parseCount(values.runs!, "--runs", 1);
  const rows = await measureHere(size, small, runs);
  if (values.inner) {
    process.stdout.write(JSON.stringify(rows) + "\n");
    return 0;
  }
  if (!IS_BUN) {
    // Bun's turn: the same measurement in a Bun process.
    const bun = join(ROOT, "node_modules", ".bin", "bun");
    const out = await new Promise<string>((res, rej) => {
      const child = spawn(bun, [
        fileURLToPath(import.meta.url),
        "--inner",
        "--size",
        String(size),
        "--small",
        String(small),
        "--runs",
        String(runs),
      ], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let text = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => text += d);
      child.once("exit", (code) => (code === 0 ? res(text) : rej(new Error(`bun run exited ${code}`))));
    });
    rows.push(...JSON.parse(out.trim().split("\n").at(-1)!) as Row[]);
  }
  const lines = [
    `DATA frames through Channel over loopback, receiver in the parent, sender in a child process; ` +
    `bulk = ${size / MiB} MiB in ${
      CHUNK / 1024
    } KiB frames, small = ${small} frames of ${SMALL_PAYLOAD} B; ` +
    `median of ${runs}.`,
    "",
    "| runtime | adapter | bulk MiB/s | bulk CPU ms/GiB | small frames/s | small CPU ms/100k | bulk runs (ms) | small runs (ms) |",
    "|---|---|---:|---:|---:|---:|---|---|",
    ...rows.map((r) =>
      `| ${r.runtime} | ${r.adapter} | ${r.bulkMiBs} | ${r.bulkCpuMsPerGiB} | ${r.smallFramesPerSec} | ${r.smallCpuMsPer100k} | ${
        r.bulkRuns.join(", ")
      } | ${r.smallRuns.join(", ")} |`
    ),
    "",
  ];
  process.stdout.write(lines.join("\n"));
  const outDir = join(ROOT, "bench", "out");
  await mkdir(outDir, { recursive: true });
  await writeFile(
    join(outDir, "io_paths.json"),
    JSON.stringify({ date: new Date().toISOString(), size, small, runs, rows }, null, 2) + "\n",
  );
  return 0;
}

process.exit(await main());
