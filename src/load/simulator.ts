/**
 * The load simulator behind `bench/load.ts`: many concurrent senders, each
 * offering its own random files (and messages) to one server, optionally at a
 * fixed rate and with connections cut mid-file to force resumes. When it owns
 * the server it checks every stored byte afterwards.
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes, randomFillSync } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, open, readdir, readFile, rm } from "node:fs/promises";
import { isIP } from "node:net";
import process from "node:process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { send, type SendEvent } from "../client/sender.ts";
import { formatTarget, parseTarget, type SendTarget } from "../client/target.ts";
import { FerryError } from "../errors.ts";
import { nodeNetRuntime } from "../runtime/node_net.ts";
import { serve, type ServerHandle } from "../server/server.ts";
import { type CutMode, tapRuntime } from "./tap.ts";

/** Where the load goes. */
export type LoadServer =
  | { kind: "in-process" }
  | { kind: "spawn"; runtime: "deno" | "bun" }
  | { kind: "target"; target: string | SendTarget };

/** Options for {@linkcode runLoad}. Every limit has a default. */
export interface LoadOptions {
  /** Concurrent simulated clients. Default 100. */
  clients?: number;
  /** Files each client sends. Default 10. */
  files?: number;
  /** Bytes per file (random content, distinct per file). Default 64 KiB. */
  fileSize?: number;
  /** Text messages each client sends. Default 0. */
  messages?: number;
  /** Bytes per message. Default 100. */
  messageSize?: number;
  /**
   * Items (files, then messages) per second per client; each item is then its
   * own connection. 0 sends everything at once over one connection. Default 0.
   */
  rate?: number;
  /** Probability, per file, that its connection is cut part-way through it. Default 0. */
  disconnect?: number;
  /** How cuts end the connection (see {@linkcode CutMode}). Default "fin". */
  cutMode?: CutMode;
  /** Hard cap on the sending phase; unfinished items count as `TIMED_OUT`. Default 120 s. */
  durationMs?: number;
  /** Refuse plans whose files add up to more than this. Default 2 GiB. */
  maxTotalBytes?: number;
  /** Default: an in-process `serve()` on a temp inbox. */
  server?: LoadServer;
  /** Shared token. With an owned server, the server is started with it. */
  token?: string;
  /** DATA frame size; default: the sender's. */
  chunkSize?: number;
  /** FILE headers sent ahead; default: the sender's. */
  window?: number;
  /** Reconnect attempts per send. Default 8. */
  retries?: number;
  /** First reconnect delay. Default 100 ms. */
  backoffBaseMs?: number;
  /** Longest reconnect delay. Default 2 s. */
  backoffMaxMs?: number;
  /** Seed for the cut and pacing decisions. Default: random. */
  seed?: number;
  /** Where the temp folder goes. Default: the OS temp dir. */
  workDir?: string;
  /** Keep the temp folder (sources and inbox) for inspection. Default false. */
  keep?: boolean;
  /** Called as items finish. */
  onProgress?: (finished: number, planned: number) => void;
}

/** Latency percentiles in milliseconds, FILE header written → RECEIPT received. */
export interface LatencySummary {
  /** Files measured. */
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** What {@linkcode runLoad} measured. */
export interface LoadReport {
  /** No errors, nothing unfinished, and (when owned) every stored byte verified. */
  ok: boolean;
  /** "in-process", "spawned deno", "spawned bun" or "existing server". */
  server: string;
  target: string;
  seed: number;
  clients: number;
  filesPerClient: number;
  fileSize: number;
  messagesPerClient: number;
  rate: number;
  disconnectProbability: number;
  cutMode: CutMode;
  /** Sending phase, first connect to last answer. */
  elapsedMs: number;
  /** The duration cap ended the run. */
  timedOut: boolean;
  files: { planned: number; delivered: number; duplicates: number; failed: number };
  messages: { planned: number; acked: number };
  bytes: { delivered: number; sent: number };
  throughput: { filesPerSec: number; mbPerSec: number };
  latencyMs: LatencySummary | null;
  reconnects: number;
  /** Connections the simulator cut on purpose. */
  cuts: number;
  /** Files continued from a non-zero offset after a reconnect. */
  resumes: number;
  /** Items that did not arrive, by code (`TIMED_OUT`: the duration cap was reached). */
  errors: Record<string, number>;
  /** Present when the simulator owned the server and could read its inbox. */
  verify: {
    filesChecked: number;
    filesOk: number;
    mismatched: number;
    missing: number;
    /** Regular files in the inbox beyond those receipted (e.g. a resume stored twice). */
    extraFiles: number;
    messagesMissing: number;
    messagesDuplicated: number;
  } | null;
  /** Up to 20 specific problems, for humans. */
  problems: string[];
}

interface PlannedFile {
  client: number;
  path: string;
  name: string;
  size: number;
  sha256: string;
}

interface Outcome {
  storedName: string;
  duplicate: boolean;
  latencyMs: number;
}

const MAX_PROBLEMS = 20;

/**
 * Refuses anything but a loopback address: this project's load tools only
 * ever talk to the local machine. `localhost` is mapped to `127.0.0.1` so no
 * resolver can send it elsewhere.
 *
 * @example
 * ```ts
 * import { loopbackTarget } from "./simulator.ts";
 * loopbackTarget("localhost:9000"); // { hostname: "127.0.0.1", port: 9000 }
 * loopbackTarget("192.0.2.1:9000"); // throws TypeError
 * ```
 */
export function loopbackTarget(target: string | SendTarget): SendTarget {
  const t = typeof target === "string" ? parseTarget(target) : target;
  const host = t.hostname.toLowerCase();
  if (host === "localhost") return { hostname: "127.0.0.1", port: t.port };
  const v = isIP(host);
  const ok = (v === 4 && host.startsWith("127.")) ||
    (v === 6 && (/^(0{0,4}:){2,7}0{0,3}1$/.test(host) || /^::ffff:127\.\d+\.\d+\.\d+$/.test(host)));
  if (!ok) {
    throw new TypeError(
      `Cannot target ${
        formatTarget(t)
      }: the load simulator only connects to loopback addresses (127.0.0.0/8, ::1, localhost)`,
    );
  }
  return t;
}

function positive(name: string, value: number, min: number): number {
  if (!Number.isFinite(value) || value < min) {
    throw new RangeError(`Cannot run load: ${name} must be ≥ ${min}`);
  }
  return value;
}

/** A small seeded PRNG (mulberry32): reproducible cut and pacing decisions. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Nearest-rank percentiles of `values` (sorted in place). */
export function summarizeLatency(values: number[]): LatencySummary | null {
  if (values.length === 0) return null;
  values.sort((a, b) => a - b);
  const at = (p: number) =>
    values[Math.min(values.length - 1, Math.max(0, Math.ceil(p * values.length) - 1))];
  const round = (n: number) => Math.round(n * 100) / 100;
  return {
    count: values.length,
    p50: round(at(0.5)),
    p90: round(at(0.9)),
    p99: round(at(0.99)),
    max: round(values[values.length - 1]),
    mean: round(values.reduce((s, v) => s + v, 0) / values.length),
  };
}

/**
 * Runs one load test to the end and reports what happened. Resolves even when
 * items fail (see `report.ok`); rejects only when the run cannot start
 * (bad options, a server that does not come up).
 *
 * @example 50 clients × 4 files of 16 KiB, one connection in ten cut mid-file
 * ```ts
 * import { runLoad } from "./simulator.ts";
 * const report = await runLoad({ clients: 50, files: 4, fileSize: 16 * 1024, disconnect: 0.1 });
 * console.log(report.throughput.filesPerSec, report.latencyMs?.p99, report.errors);
 * ```
 */
export async function runLoad(options: LoadOptions = {}): Promise<LoadReport> {
  const clients = positive("clients", options.clients ?? 100, 1);
  const filesPerClient = positive("files", options.files ?? 10, 0);
  const fileSize = positive("fileSize", options.fileSize ?? 64 * 1024, 0);
  const messagesPerClient = positive("messages", options.messages ?? 0, 0);
  const messageSize = positive("messageSize", options.messageSize ?? 100, 16);
  const rate = positive("rate", options.rate ?? 0, 0);
  const disconnect = options.disconnect ?? 0;
  if (!(disconnect >= 0 && disconnect <= 1)) {
    throw new RangeError("Cannot run load: disconnect must be in 0..1");
  }
  const cutMode = options.cutMode ?? "fin";
  if (cutMode !== "fin" && cutMode !== "reset") {
    throw new RangeError("Cannot run load: cutMode must be fin or reset");
  }
  const durationMs = positive("durationMs", options.durationMs ?? 120_000, 1);
  const maxTotalBytes = options.maxTotalBytes ?? 2 * 1024 ** 3;
  for (const [k, v] of [["clients", clients], ["files", filesPerClient], ["messages", messagesPerClient]]) {
    if (!Number.isInteger(v)) throw new RangeError(`Cannot run load: ${k} must be a whole number`);
  }
  if (clients * filesPerClient * fileSize > maxTotalBytes) {
    throw new RangeError(
      `Cannot run load: ${clients} clients × ${filesPerClient} files × ${fileSize} bytes exceeds the limit of ${maxTotalBytes} bytes (raise maxTotalBytes / --max-total)`,
    );
  }
  if (clients * (filesPerClient + messagesPerClient) === 0) {
    throw new RangeError("Cannot run load: nothing to send (files and messages are both 0)");
  }
  const serverChoice: LoadServer = options.server ?? { kind: "in-process" };
  const externalTarget = serverChoice.kind === "target" ? loopbackTarget(serverChoice.target) : undefined;
  const seed = options.seed ?? (randomBytes(4).readUInt32BE(0));
  const random = seededRandom(seed);

  const work = await mkdtemp(join(options.workDir ?? tmpdir(), "ferry-load-"));
  const inboxDir = join(work, "inbox");
  let owned: OwnedServer | undefined;
  try {
    const plan = await writeSources(join(work, "src"), clients, filesPerClient, fileSize);
    const messageTexts = Array.from(
      { length: clients },
      (_, c) =>
        Array.from({ length: messagesPerClient }, (_, k) => {
          const head = `c${c}-m${k} `;
          return head + "x".repeat(Math.max(0, messageSize - head.length));
        }),
    );
    const connLimit = Math.max(512, clients * 2);
    if (serverChoice.kind === "in-process") {
      owned = await startInProcess(inboxDir, options.token, connLimit);
    } else if (serverChoice.kind === "spawn") {
      owned = await startSpawned(serverChoice.runtime, inboxDir, options.token, connLimit);
    }
    const target = externalTarget ?? owned!.target;

    // Shared measurement state; names are unique across clients.
    const headerAt = new Map<string, number>();
    const cutAt = new Map<string, number | null>();
    const outcomes = new Map<string, Outcome>();
    const errors: Record<string, number> = {};
    const problems: string[] = [];
    const note = (text: string) => problems.length < MAX_PROBLEMS && problems.push(text);
    const count = { reconnects: 0, cuts: 0, resumes: 0, acked: 0, sent: 0, failed: 0, finished: 0 };
    const planned = clients * (filesPerClient + messagesPerClient);
    const finishItems = (n: number) => {
      count.finished += n;
      options.onProgress?.(count.finished, planned);
    };

    const abort = new AbortController();
    const runtime = tapRuntime(nodeNetRuntime, () => ({
      onFile(file) {
        if (!headerAt.has(file.name)) headerAt.set(file.name, performance.now());
        if (!cutAt.has(file.name)) {
          const cut = file.size > 1 && random() < disconnect;
          cutAt.set(file.name, cut ? 1 + Math.floor(random() * (file.size - 1)) : null);
        }
      },
      cutData(file, offset, length) {
        const at = file ? cutAt.get(file.name) : null;
        if (at === null || at === undefined || at < offset || at >= offset + length) return undefined;
        cutAt.set(file!.name, null); // once per file, so every file finishes
        count.cuts++;
        return at - offset;
      },
    }), { signal: abort.signal, mode: cutMode });

    const onEvent = (e: SendEvent) => {
      if (e.type === "reconnect") count.reconnects++;
      else if (e.type === "file" && e.offset > 0) count.resumes++;
      else if (e.type === "message") {
        count.acked++;
        finishItems(1);
      } else if (e.type === "done") {
        const start = headerAt.get(e.receipt.name);
        outcomes.set(e.receipt.name, {
          storedName: e.receipt.storedName,
          duplicate: e.receipt.duplicate,
          latencyMs: start === undefined ? 0 : performance.now() - start,
        });
        finishItems(1);
      }
    };
    const addError = (code: string, n: number) => {
      if (n > 0) errors[code] = (errors[code] ?? 0) + n;
    };

    /** One send(): files, then messages. Never throws; what did not arrive is counted by code. */
    const sendBatch = async (files: PlannedFile[], messages: string[]) => {
      let acked = 0;
      try {
        const result = await send(target, files.map((f) => ({ path: f.path, name: f.name })), {
          token: options.token,
          messages,
          runtime,
          signal: abort.signal,
          onEvent: (e) => {
            if (e.type === "message") acked++;
            onEvent(e);
          },
          chunkSize: options.chunkSize,
          window: options.window,
          retries: options.retries ?? 8,
          backoffBaseMs: options.backoffBaseMs ?? 100,
          backoffMaxMs: options.backoffMaxMs ?? 2_000,
        });
        count.sent += result.bytesSent;
        for (const f of result.failures) {
          addError(f.error.code, 1);
          if (f.path !== "") count.failed++;
          finishItems(1);
          note(`${f.name}: ${f.error.code}: ${f.error.message}`);
        }
      } catch (e) {
        const code = abort.signal.aborted ? "TIMED_OUT" : e instanceof FerryError ? e.code : "INTERNAL";
        const lost = files.filter((f) => !outcomes.has(f.name)).length + messages.length - acked;
        addError(code, lost);
        finishItems(lost);
        if (!abort.signal.aborted) note(`a send failed: ${code}: ${(e as Error).message}`);
      }
    };

    const runClient = async (c: number) => {
      const files = plan.filter((f) => f.client === c);
      const texts = messageTexts[c];
      if (rate === 0) return await sendBatch(files, texts);
      // One connection per item, on a fixed schedule with a random phase.
      const items: Array<PlannedFile | string> = [...files, ...texts];
      const start = performance.now() + random() * (1000 / rate);
      for (let k = 0; k < items.length; k++) {
        await sleepUntil(start + k * (1000 / rate), abort.signal);
        if (abort.signal.aborted) {
          addError("TIMED_OUT", items.length - k);
          finishItems(items.length - k);
          return;
        }
        const item = items[k];
        await sendBatch(typeof item === "string" ? [] : [item], typeof item === "string" ? [item] : []);
      }
    };

    const timer = setTimeout(
      () => abort.abort(new FerryError("CONNECTION_FAILED", "Duration cap reached")),
      durationMs,
    );
    const t0 = performance.now();
    try {
      await Promise.all(Array.from({ length: clients }, (_, c) => runClient(c)));
    } finally {
      clearTimeout(timer);
    }
    const elapsedMs = performance.now() - t0;

    const latencies: number[] = [];
    let deliveredBytes = 0;
    let duplicates = 0;
    for (const f of plan) {
      const o = outcomes.get(f.name);
      if (!o) continue;
      latencies.push(o.latencyMs);
      deliveredBytes += f.size;
      if (o.duplicate) duplicates++;
    }

    let verify: LoadReport["verify"] = null;
    if (owned) {
      // Let the server finish writing its logs and indexes before reading them.
      await owned.stop();
      owned = undefined;
      verify = await verifyInbox(inboxDir, plan, outcomes, messageTexts, count.acked, note);
    }
    const delivered = outcomes.size;
    const seconds = elapsedMs / 1000;
    const allDelivered = delivered === plan.length;
    const report: LoadReport = {
      ok: false,
      server: serverChoice.kind === "in-process"
        ? "in-process"
        : serverChoice.kind === "spawn"
        ? `spawned ${serverChoice.runtime}`
        : "existing server",
      target: formatTarget(target),
      seed,
      clients,
      filesPerClient,
      fileSize,
      messagesPerClient,
      rate,
      disconnectProbability: disconnect,
      cutMode,
      elapsedMs: Math.round(elapsedMs),
      timedOut: abort.signal.aborted,
      files: { planned: plan.length, delivered, duplicates, failed: count.failed },
      messages: { planned: clients * messagesPerClient, acked: count.acked },
      bytes: { delivered: deliveredBytes, sent: count.sent },
      throughput: {
        filesPerSec: Math.round((delivered / seconds) * 10) / 10,
        mbPerSec: Math.round((deliveredBytes / 1e6 / seconds) * 100) / 100,
      },
      latencyMs: summarizeLatency(latencies),
      reconnects: count.reconnects,
      cuts: count.cuts,
      resumes: count.resumes,
      errors,
      verify,
      problems,
    };
    report.ok = Object.keys(errors).length === 0 && allDelivered &&
      count.acked === report.messages.planned &&
      (verify === null ||
        (verify.filesOk === plan.length && verify.extraFiles === 0 && verify.messagesMissing === 0));
    return report;
  } finally {
    await owned?.stop().catch(() => {});
    if (!options.keep) await rm(work, { recursive: true, force: true });
  }
}

function sleepUntil(at: number, signal: AbortSignal): Promise<void> {
  const ms = at - performance.now();
  if (ms <= 0 || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Writes every client's random files; returns them with their hashes. */
async function writeSources(
  dir: string,
  clients: number,
  files: number,
  size: number,
): Promise<PlannedFile[]> {
  const plan: PlannedFile[] = [];
  const chunk = new Uint8Array(Math.min(size, 1024 * 1024));
  for (let c = 0; c < clients; c++) {
    const clientDir = join(dir, `c${c}`);
    await mkdir(clientDir, { recursive: true });
    for (let k = 0; k < files; k++) {
      const path = join(clientDir, `f${k}.bin`);
      const hash = createHash("sha256");
      const handle = await open(path, "w");
      try {
        for (let written = 0; written < size;) {
          const part = chunk.subarray(0, Math.min(chunk.length, size - written));
          randomFillSync(part);
          hash.update(part);
          await handle.write(part, 0, part.length, written);
          written += part.length;
        }
      } finally {
        await handle.close();
      }
      plan.push({ client: c, path, name: `c${c}-f${k}.bin`, size, sha256: hash.digest("hex") });
    }
  }
  return plan;
}

/** SHA-256 of a file on disk, read in large chunks. */
async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  const handle = await open(path, "r");
  try {
    const buffer = new Uint8Array(1024 * 1024);
    for (let position = 0;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      position += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return hash.digest("hex");
}

/** Counts regular files under `dir`, skipping the server's `.ferry` state folder. */
async function countFiles(dir: string, top = true): Promise<number> {
  let n = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (top && entry.name === ".ferry") continue;
    if (entry.isDirectory()) n += await countFiles(join(dir, entry.name), false);
    else if (entry.isFile()) n++;
  }
  return n;
}

async function verifyInbox(
  inboxDir: string,
  plan: PlannedFile[],
  outcomes: Map<string, Outcome>,
  messageTexts: string[][],
  acked: number,
  note: (text: string) => void,
): Promise<NonNullable<LoadReport["verify"]>> {
  const v = {
    filesChecked: 0,
    filesOk: 0,
    mismatched: 0,
    missing: 0,
    extraFiles: 0,
    messagesMissing: 0,
    messagesDuplicated: 0,
  };
  const stored = new Set<string>();
  for (const f of plan) {
    const o = outcomes.get(f.name);
    if (!o) continue;
    v.filesChecked++;
    stored.add(o.storedName);
    let actual: string;
    try {
      actual = await hashFile(join(inboxDir, o.storedName));
    } catch (e) {
      v.missing++;
      note(`${f.name}: receipted as ${o.storedName} but not readable: ${(e as Error).message}`);
      continue;
    }
    if (actual === f.sha256) v.filesOk++;
    else {
      v.mismatched++;
      note(`${f.name}: stored bytes hash to ${actual}, sent ${f.sha256}`);
    }
  }
  v.extraFiles = Math.max(0, (await countFiles(inboxDir)) - stored.size);
  if (v.extraFiles > 0) note(`${v.extraFiles} file(s) in the inbox without a receipt`);
  if (acked > 0) {
    const seen = new Map<string, number>();
    const log = await readFile(join(inboxDir, ".ferry", "messages.ndjson"), "utf8").catch(() => "");
    for (const line of log.split("\n")) {
      if (line === "") continue;
      const text = (JSON.parse(line) as { text: string }).text;
      seen.set(text, (seen.get(text) ?? 0) + 1);
    }
    for (const text of messageTexts.flat()) {
      const n = seen.get(text) ?? 0;
      if (n > 1) v.messagesDuplicated++;
    }
    // Only acked messages must be there; which ones were acked is known per client by count.
    const present = messageTexts.flat().filter((t) => seen.has(t)).length;
    v.messagesMissing = Math.max(0, acked - present);
    if (v.messagesMissing > 0) note(`${v.messagesMissing} acknowledged message(s) missing from the inbox`);
  }
  return v;
}

/** A server the simulator started and must stop. */
interface OwnedServer {
  target: SendTarget;
  stop(): Promise<void>;
}

async function startInProcess(dir: string, token: string | undefined, limit: number): Promise<OwnedServer> {
  const server: ServerHandle = await serve({
    dir,
    hostname: "127.0.0.1",
    port: 0,
    token,
    maxConnections: limit,
    maxConnectionsPerIp: limit,
    minFreeBytes: 0,
  });
  let stopped: Promise<void> | undefined;
  return {
    target: { hostname: server.hostname, port: server.port },
    stop: () => stopped ??= server.close({ graceMs: 2_000 }),
  };
}

/** Repo root, for server.ts and node_modules/.bin. */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

async function startSpawned(
  runtime: "deno" | "bun",
  dir: string,
  token: string | undefined,
  limit: number,
): Promise<OwnedServer> {
  const local = join(ROOT, "node_modules", ".bin", runtime);
  const bin = existsSync(local) ? local : runtime;
  const script = join(ROOT, "server.ts");
  const args = [
    ...(runtime === "deno" ? ["run", "-A", script] : [script]),
    ...["--dir", dir, "--host", "127.0.0.1", "--port", "0", "--log-json", "--quiet"],
    ...["--max-connections", String(limit), "--max-connections-per-ip", String(limit), "--min-free", "0"],
  ];
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: "1" };
  if (token !== undefined) env.FERRY_TOKEN = token;
  else delete env.FERRY_TOKEN;
  const child: ChildProcess = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => stderr = (stderr + d).slice(-8192));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    let settled = false;
    const timer = setTimeout(() => fail("no listening line within 30 s"), 30_000);
    function fail(why: string) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new FerryError("CONNECTION_FAILED", `Cannot start the ${runtime} server: ${why}\n${stderr}`));
    }
    child.once("error", (e) => fail(e.message));
    exited.then(() => fail(`it exited with ${child.exitCode ?? child.signalCode}`));
    // Keep reading stdout after the listening line so the server never blocks on a full pipe.
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      if (settled) return;
      out += d;
      const line = out.split("\n").find((l) => l.includes('"event":"listening"'));
      if (!line) return;
      settled = true;
      clearTimeout(timer);
      resolve((JSON.parse(line) as { port: number }).port);
    });
  });
  let stopped: Promise<void> | undefined;
  return {
    target: { hostname: "127.0.0.1", port },
    stop: () =>
      stopped ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      })(),
  };
}
