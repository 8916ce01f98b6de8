/**
 * ferry benchmarks, side by side with rsync and a raw socat pipe.
 *
 *     deno run -A bench/run.ts [--quick] [--runs N] [--size 1G] [--only a,b,c,d]
 *     deno task bench | npm run bench
 *
 * Cases (each timed from process start to "receiver done: file stored"):
 *   a  one random file (default 1 GiB) over loopback: ferry on Deno and on
 *      Bun (server and sender on the same runtime) vs rsync to an rsync
 *      daemon vs socat (the physical limit).
 *   b  many small files (default 2,000 x 64 KiB) in one send vs rsync.
 *   c  many concurrent senders (default 200 x 4 MiB, spread over a few worker
 *      processes that each run send() per file on its own connection).
 *   d  server peak RSS receiving one big file (default 4 GiB), once per runtime.
 * Peak RSS (VmHWM) of server and sender is recorded in every case.
 *
 * A full run rewrites the generated part of bench/RESULTS.md and
 * bench/results.svg; `--quick` (CI smoke) only writes bench/out/.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { cpus, freemem, loadavg, release, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { parseCount, parseSize } from "../src/cli/units.ts";
import { freePort, type Proc, run, start, waitForPort } from "./proc.ts";
import { type BenchResults, type CaseResult, renderMarkdown, renderSvg, type Sample } from "./report.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(ROOT, "node_modules", ".bin");
const MiB = 1024 * 1024;
type Rt = "deno" | "bun";
/** A ferry configuration under test: runtime, and optionally a forced socket path (bench/ferry_io.ts). */
interface Variant {
  name: string;
  rt: Rt;
  /** Force this socket path instead of the CLI's default (src/runtime/select.ts). */
  io?: "native" | "node";
  /** Another checkout to run ferry from (--baseline), for before/after comparisons. */
  root?: string;
  /** Runtime flags, e.g. Bun's --smol. */
  flags?: string[];
}

const HELP = `bench/run.ts: ferry vs rsync vs socat on loopback.

Options:
  --quick             Small sizes, 1 run (CI smoke; < 60 s)
  --runs N            Timed runs per tool and case; medians are reported (default 3)
  --size SIZE         Case a file size (default 1G)
  --big-size SIZE     Case d file size (default 4G)
  --files N           Case b file count (default 2000)
  --file-size SIZE    Case b file size (default 64K)
  --clients N         Case c concurrent senders (default 200)
  --client-size SIZE  Case c bytes per sender (default 4M)
  --workers LIST      Case c: how many processes the senders are spread over, one row per entry;
                      the first is the one the (c) target reads (default 1,4)
  --only LIST         Cases to run, e.g. a,b (default a,b,c,d)
  --runtimes LIST     deno,bun (default both)
  --io-paths          Also run ferry on Deno with the socket path the default does not use
                      (ferry-deno-node-net: node:net instead of Deno.listen/Deno.connect)
  --baseline DIR      Also run ferry from another checkout DIR (ferry-<rt>-baseline), interleaved run by run
  --bun-smol          Also run ferry on \`bun --smol\` (GC more often, less memory): ferry-bun-smol
  --work DIR          Scratch directory, deleted afterwards (default bench/out/work)
  --no-write          Do not update bench/RESULTS.md and bench/results.svg
  -h, --help
`;

interface Options {
  quick: boolean;
  runs: number;
  size: number;
  bigSize: number;
  files: number;
  fileSize: number;
  clients: number;
  clientSize: number;
  workers: number[];
  only: Set<string>;
  runtimes: Rt[];
  variants: Variant[];
  work: string;
  write: boolean;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      runs: { type: "string" },
      size: { type: "string" },
      "big-size": { type: "string" },
      files: { type: "string" },
      "file-size": { type: "string" },
      clients: { type: "string" },
      "client-size": { type: "string" },
      workers: { type: "string" },
      only: { type: "string" },
      runtimes: { type: "string" },
      work: { type: "string" },
      "no-write": { type: "boolean", default: false },
      "io-paths": { type: "boolean", default: false },
      baseline: { type: "string" },
      "bun-smol": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return undefined;
  }
  const q = values.quick!;
  const only = new Set((values.only ?? "a,b,c,d").split(",").map((s) => s.trim()).filter(Boolean));
  for (const c of only) {
    if (!["a", "b", "c", "d"].includes(c)) {
      throw new TypeError(`Invalid value for --only: unknown case "${c}"`);
    }
  }
  const runtimes = (values.runtimes ?? "deno,bun").split(",").map((s) => s.trim()) as Rt[];
  for (const r of runtimes) {
    if (r !== "deno" && r !== "bun") throw new TypeError(`Invalid value for --runtimes: "${r}"`);
  }
  return {
    quick: q,
    runs: values.runs ? parseCount(values.runs, "--runs", 1) : q ? 1 : 3,
    size: parseSize(values.size ?? (q ? "32M" : "1G"), "--size"),
    bigSize: parseSize(values["big-size"] ?? (q ? "64M" : "4G"), "--big-size"),
    files: values.files ? parseCount(values.files, "--files", 1) : q ? 100 : 2000,
    fileSize: parseSize(values["file-size"] ?? "64K", "--file-size"),
    clients: values.clients ? parseCount(values.clients, "--clients", 1) : q ? 20 : 200,
    clientSize: parseSize(values["client-size"] ?? (q ? "1M" : "4M"), "--client-size"),
    // Distinct counts: each names a row ("ferry-deno ×4"), and two rows of one name would mix their runs.
    workers: [
      ...new Set(
        (values.workers ?? (q ? "1,2" : "1,4")).split(",").map((w) => parseCount(w, "--workers", 1)),
      ),
    ],
    only,
    runtimes,
    variants: [
      ...runtimes.map((rt) => ({ name: `ferry-${rt}`, rt })),
      ...(values["io-paths"] && runtimes.includes("deno")
        ? [{ name: "ferry-deno-node-net", rt: "deno" as Rt, io: "node" as const }]
        : []),
      ...(values["bun-smol"] && runtimes.includes("bun")
        ? [{ name: "ferry-bun-smol", rt: "bun" as Rt, flags: ["--smol"] }]
        : []),
      ...(values.baseline
        ? runtimes.map((rt) => ({
          name: `ferry-${rt}-baseline`,
          rt,
          root: resolve(values.baseline!),
        }))
        : []),
    ],
    work: resolve(values.work ?? join(ROOT, "bench", "out", "work")),
    write: !q && !values["no-write"],
  };
}

function log(line: string): void {
  process.stderr.write(line + "\n");
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch {
    return "";
  }
}

function has(cmd: string): boolean {
  return sh("sh", ["-c", `command -v ${cmd}`]) !== "";
}

/** Installs rsync and socat with apt-get when missing (`apt-get update` once). */
function ensureBaselines(): { rsync: boolean; socat: boolean } {
  const missing = ["rsync", "socat"].filter((c) => !has(c));
  if (missing.length > 0) {
    const root = process.getuid?.() === 0;
    const sudo = root ? [] : has("sudo") ? ["sudo"] : undefined;
    if (sudo && has("apt-get")) {
      log(`bench: installing ${missing.join(" ")} with apt-get`);
      const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
      // Other jobs on the machine may hold the dpkg lock: wait for it instead of failing.
      const apt = (args: string[]) =>
        execFileSync(sudo.length ? "sudo" : "apt-get", [
          ...(sudo.length ? ["apt-get"] : []),
          "-o",
          "DPkg::Lock::Timeout=300",
          ...args,
        ], { stdio: ["ignore", "ignore", "inherit"], env });
      try {
        apt(["update", "-qq"]);
        apt(["install", "-y", "-qq", "--no-install-recommends", ...missing]);
      } catch (e) {
        log(`bench: apt-get failed (${(e as Error).message}); running without ${missing.join(", ")}`);
      }
    } else {
      log(`bench: ${missing.join(", ")} missing and cannot be installed; skipping those baselines`);
    }
  }
  return { rsync: has("rsync"), socat: has("socat") };
}

async function randomFile(path: string, size: number): Promise<void> {
  const fh = await open(path, "w");
  try {
    const block = new Uint8Array(Math.min(size, 4 * MiB));
    for (let done = 0; done < size;) {
      const n = Math.min(block.length, size - done);
      randomFillSync(block.subarray(0, n));
      await fh.write(block, 0, n, done);
      done += n;
    }
  } finally {
    await fh.close();
  }
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const hash = createHash("sha256");
    createReadStream(path, { highWaterMark: 4 * MiB }).on("data", (d) => hash.update(d)).on("error", reject)
      .on("end", () => resolvePromise(hash.digest("hex")));
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function scriptArgv(rt: Rt, script: string, root = ROOT, flags: string[] = []): [string, string[]] {
  const path = join(root, script);
  return rt === "deno"
    ? [join(BIN, "deno"), ["run", "-A", ...flags, path]]
    : [join(BIN, "bun"), [...flags, path]];
}

interface FerryServer {
  proc: Proc;
  port: number;
  /** Resolves when the server has logged `n` stored files. */
  stored(n: number, timeoutMs?: number): Promise<void>;
  /** Stops the server; returns its peak RSS and the CPU time it used since `markCpu()`. */
  stop(): Promise<{ rss: number; cpuMs: number }>;
  /** Starts the server's CPU clock for this run (excludes its startup). */
  markCpu(): void;
}

async function startFerryServer(v: Variant, dir: string): Promise<FerryServer> {
  const [cmd, args] = scriptArgv(v.rt, v.io ? "bench/ferry_io.ts" : "server.ts", v.root, v.flags);
  // File lines are counted to know everything landed.
  const proc = start(
    cmd,
    v.io
      ? [...args, v.io, "serve", dir]
      : [...args, "--dir", dir, "--port", "0", "--host", "127.0.0.1", "--log-json"],
  );
  const listening = JSON.parse(await proc.waitForLine(/"event":"listening"/));
  let cpu0 = 0;
  let stopped: { rss: number; cpuMs: number } | undefined;
  return {
    proc,
    port: listening.port,
    markCpu() {
      cpu0 = proc.cpuMs();
    },
    async stored(n, timeoutMs = 60_000) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const count = proc.stdout().split('"event":"file"').length - 1;
        if (count >= n) return;
        if (performance.now() > deadline) throw new Error(`Server stored ${count} of ${n} files`);
        await proc.waitForLine(/"event":"file"/, Math.max(1, deadline - performance.now())).catch(() => {});
      }
    },
    async stop() {
      stopped ??= { rss: proc.peakRss(), cpuMs: proc.cpuMs() - cpu0 };
      await proc.kill("SIGTERM");
      return stopped;
    },
  };
}

/** One warm-up transfer per runtime, so Deno's transpile cache is filled before timing. */
async function warmUp(v: Variant, work: string): Promise<void> {
  const dir = join(work, `warm-${v.name}`);
  await mkdir(dir, { recursive: true });
  const file = join(dir, "warm.bin");
  await randomFile(file, 64 * 1024);
  const server = await startFerryServer(v, join(dir, "inbox"));
  try {
    await run(...senderArgv(v, file, server.port));
    const [wcmd, wargs] = scriptArgv(v.rt, "bench/sender_worker.ts", v.root, v.flags);
    await run(wcmd, [
      ...wargs,
      ...(v.io ? [`--io=${v.io}`] : []),
      `127.0.0.1:${server.port}`,
      join(dir, "warm.bin"),
    ]);
  } finally {
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function senderArgv(v: Variant, source: string, port: number): [string, string[]] {
  const [cmd, args] = scriptArgv(v.rt, v.io ? "bench/ferry_io.ts" : "send.ts", v.root, v.flags);
  return [
    cmd,
    v.io
      ? [...args, v.io, "send", source, `127.0.0.1:${port}`]
      : [...args, "-q", source, `127.0.0.1:${port}`],
  ];
}

/** Times `send.ts SOURCE` against a fresh server; returns the sample. */
async function ferrySend(v: Variant, source: string, inbox: string, expectFiles: number): Promise<Sample> {
  await rm(inbox, { recursive: true, force: true }); // nothing there unless a case reuses its inbox
  const server = await startFerryServer(v, inbox);
  try {
    server.markCpu();
    const sent = await run(...senderArgv(v, source, server.port));
    await server.stored(expectFiles, 5_000);
    const { rss, cpuMs } = await server.stop();
    return {
      ms: sent.ms,
      senderRss: sent.peakRss,
      serverRss: rss,
      serverCpuMs: cpuMs,
      senderCpuMs: sent.cpuMs,
    };
  } finally {
    await server.stop();
  }
}

interface Rsyncd {
  port: number;
  dir: string;
  stop(): Promise<void>;
}

async function startRsyncd(work: string): Promise<Rsyncd> {
  const dir = join(work, "rsyncd");
  const data = join(dir, "mod");
  await mkdir(data, { recursive: true });
  const port = await freePort();
  const conf = join(dir, "rsyncd.conf");
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  await writeFile(
    conf,
    [
      "use chroot = no",
      `uid = ${uid}`,
      `gid = ${gid}`,
      `log file = ${join(dir, "rsyncd.log")}`,
      "[mod]",
      `path = ${data}`,
      "read only = no",
      "",
    ].join("\n"),
  );
  const proc = start("rsync", [
    "--daemon",
    "--no-detach",
    "--address",
    "127.0.0.1",
    "--port",
    String(port),
    "--config",
    conf,
  ]);
  await waitForPort(port);
  return { port, dir: data, stop: () => proc.kill("SIGTERM") };
}

const RSYNC_FSYNC = () => sh("rsync", ["--help"]).includes("--fsync");

/** rsync into the module, or into a new folder `into` of it (created by the receiver). */
async function rsyncSend(d: Rsyncd, source: string, fsync: boolean, into?: string): Promise<Sample> {
  if (into === undefined) {
    await rm(d.dir, { recursive: true, force: true });
    await mkdir(d.dir);
  }
  const r = await run("rsync", [
    "-a",
    "--whole-file",
    ...(fsync ? ["--fsync"] : []),
    source,
    `rsync://127.0.0.1:${d.port}/mod/${into === undefined ? "" : into + "/"}`,
  ]);
  return { ms: r.ms, senderRss: r.peakRss, senderCpuMs: r.cpuMs };
}

/** socat TCP-LISTEN into a file, fed by socat from the file: the physical limit. */
async function socatPipe(source: string, out: string): Promise<{ ms: number; fsyncMs: number }> {
  await rm(out, { force: true });
  const block = String(256 * 1024);
  const recv = start("socat", [
    "-d",
    "-d",
    "-b",
    block,
    "-u",
    "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr",
    `OPEN:${out},creat,trunc`,
  ]);
  const line = await recv.waitForLine(/listening on/);
  const port = Number(/:(\d+)\s*$/.exec(line)![1]);
  const t0 = performance.now();
  const sender = start("socat", ["-b", block, "-u", `OPEN:${source}`, `TCP:127.0.0.1:${port}`]);
  const [r] = await Promise.all([recv.exited, sender.exited]);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`socat receiver failed (${r.code}): ${recv.stderr()}`);
  // coreutils `sync FILE` fsyncs that file: the same durability ferry and rsync --fsync give.
  await run("sync", [out]);
  return { ms, fsyncMs: performance.now() - t0 };
}

/**
 * Deletes a case's received copies once the case is done, never between its runs. On ext4 without a
 * journal (this machine's root filesystem) creating a file skips every inode of its block group freed
 * in the last 5 s, or in the last 5 min while that inode's table block is dirty, checking them one by
 * one: after 2,000 deletions, creating 2,000 empty files in the same folder took 850 ms of kernel time
 * against 42 ms in a clean group. Deleting each run's 2,000 copies before the next run made that the
 * largest cost of (b) for every tool, rsync included, and its size depended on which tool ran after
 * which. `sync` writes the freed inodes' blocks out, so the next case starts from clean blocks.
 */
async function deleteReceived(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  execFileSync("sync");
}

function rotate<T>(xs: T[], n: number): T[] {
  const k = n % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

async function caseA(o: Options, tools: { rsync: boolean; socat: boolean }): Promise<CaseResult> {
  const dir = join(o.work, "a");
  await mkdir(dir, { recursive: true });
  const source = join(dir, "random.bin");
  log(`bench a: writing ${o.size} random bytes`);
  await randomFile(source, o.size);
  const expected = await sha256File(source);
  const samples: Record<string, Sample[]> = {};
  const rsyncd = tools.rsync ? await startRsyncd(o.work) : undefined;
  const fsync = tools.rsync && RSYNC_FSYNC();
  try {
    const names = [
      ...o.variants.map((v) => v.name),
      ...(rsyncd ? ["rsync"] : []),
      ...(tools.socat ? ["socat", "socat+fsync"] : []),
    ];
    for (const n of names) samples[n] = [];
    const jobs = [
      ...o.variants.map((v) => v.name),
      ...(rsyncd ? ["rsync"] : []),
      ...(tools.socat ? ["socat"] : []),
    ];
    for (let i = 0; i < o.runs; i++) {
      for (const job of rotate(jobs, i)) {
        const v = o.variants.find((x) => x.name === job);
        if (v) {
          const inbox = join(dir, `inbox-${v.name}`);
          const s = await ferrySend(v, source, inbox, 1);
          const stored = join(inbox, "random.bin");
          if ((await stat(stored)).size !== o.size) throw new Error(`${v.name} stored a wrong size`);
          if (i === 0 && await sha256File(stored) !== expected) {
            throw new Error(`${v.name} stored wrong bytes`);
          }
          await rm(inbox, { recursive: true, force: true });
          samples[job].push(s);
        } else if (job === "rsync") {
          const s = await rsyncSend(rsyncd!, source, fsync);
          const stored = join(rsyncd!.dir, "random.bin");
          if ((await stat(stored)).size !== o.size) throw new Error("rsync stored a wrong size");
          samples.rsync.push(s);
          await rm(stored, { force: true });
        } else {
          const out = join(dir, "socat.out");
          const s = await socatPipe(source, out);
          if ((await stat(out)).size !== o.size) throw new Error("socat stored a wrong size");
          await rm(out, { force: true });
          samples.socat.push({ ms: s.ms });
          samples["socat+fsync"].push({ ms: s.fsyncMs });
        }
        log(`bench a: run ${i + 1}/${o.runs} ${job}: ${Math.round(samples[job].at(-1)!.ms)} ms`);
      }
    }
  } finally {
    await rsyncd?.stop();
    await rm(dir, { recursive: true, force: true });
  }
  return summarize("a", o.size, 1, samples, { rsyncFsync: fsync });
}

async function caseB(o: Options, tools: { rsync: boolean }): Promise<CaseResult> {
  const dir = join(o.work, "b");
  const source = join(dir, "many");
  await mkdir(source, { recursive: true });
  log(`bench b: writing ${o.files} files of ${o.fileSize} bytes`);
  for (let i = 0; i < o.files; i++) {
    await randomFile(join(source, `f${String(i).padStart(5, "0")}.bin`), o.fileSize);
  }
  const samples: Record<string, Sample[]> = {};
  const rsyncd = tools.rsync ? await startRsyncd(o.work) : undefined;
  const fsync = tools.rsync && RSYNC_FSYNC();
  try {
    const jobs = [...o.variants.map((v) => v.name), ...(rsyncd ? ["rsync"] : [])];
    for (const j of jobs) samples[j] = [];
    for (let i = 0; i < o.runs; i++) {
      for (const job of rotate(jobs, i)) {
        const v = o.variants.find((x) => x.name === job);
        // Every run receives into a new folder and nothing is deleted until the case ends: see
        // deleteReceived().
        if (!v) {
          samples.rsync.push(await rsyncSend(rsyncd!, source, fsync, `run-${i}`));
          const got = (await readdir(join(rsyncd!.dir, `run-${i}`, "many"))).length;
          if (got !== o.files) throw new Error(`rsync stored ${got} of ${o.files} files`);
        } else {
          const inbox = join(dir, `inbox-${v.name}-${i}`);
          samples[job].push(await ferrySend(v, source, inbox, o.files));
          const got = (await readdir(join(inbox, "many"))).length;
          if (got !== o.files) throw new Error(`${v.name} stored ${got} of ${o.files} files`);
        }
        log(`bench b: run ${i + 1}/${o.runs} ${job}: ${Math.round(samples[job].at(-1)!.ms)} ms`);
      }
    }
  } finally {
    await rsyncd?.stop();
    if (rsyncd) await rm(rsyncd.dir, { recursive: true, force: true });
    await deleteReceived(dir);
  }
  return summarize("b", o.files * o.fileSize, o.files, samples, { rsyncFsync: fsync });
}

async function caseC(o: Options): Promise<CaseResult> {
  const dir = join(o.work, "c");
  const src = join(dir, "src");
  await mkdir(src, { recursive: true });
  log(`bench c: writing ${o.clients} files of ${o.clientSize} bytes`);
  const files: string[] = [];
  for (let i = 0; i < o.clients; i++) {
    const f = join(src, `c${String(i).padStart(4, "0")}.bin`);
    await randomFile(f, o.clientSize);
    files.push(f);
  }
  // One row per variant and process count: "ferry-deno" for the first count, "ferry-deno ×4" for others.
  const rows = o.workers.flatMap((w, k) =>
    o.variants.map((v) => {
      const workers = Math.min(w, o.clients);
      const name = k === 0 ? v.name : `${v.name} ×${workers}`;
      return {
        ...v,
        name,
        slices: Array.from({ length: workers }, (_, j) => files.filter((_, i) => i % workers === j)),
      };
    })
  );
  const samples: Record<string, Sample[]> = {};
  try {
    for (const v of rows) samples[v.name] = [];
    for (let i = 0; i < o.runs; i++) {
      for (const v of rotate(rows, i)) {
        // 200 files, each deleted after its run: too few freed inodes to matter (see deleteReceived()),
        // where keeping every run's 800 MiB made later runs slower as the page cache filled.
        const inbox = join(dir, `inbox-${v.name}`);
        await rm(inbox, { recursive: true, force: true });
        const server = await startFerryServer(v, inbox);
        try {
          const [cmd, args] = scriptArgv(v.rt, "bench/sender_worker.ts", v.root, v.flags);
          const flags = v.io ? [`--io=${v.io}`] : [];
          server.markCpu();
          const t0 = performance.now();
          const procs = v.slices.map((slice) =>
            start(cmd, [...args, ...flags, `127.0.0.1:${server.port}`, ...slice])
          );
          const exits = await Promise.all(procs.map((p) => p.exited));
          const ms = performance.now() - t0;
          exits.forEach((e, w) => {
            if (e.code !== 0) {
              throw new Error(`worker ${w} failed (${e.code}): ${procs[w].stdout()} ${procs[w].stderr()}`);
            }
          });
          await server.stored(o.clients, 5_000);
          const rss = procs.map((p) => p.peakRss());
          const stopped = await server.stop();
          samples[v.name].push({
            ms,
            senderRss: Math.max(...rss),
            senderRssTotal: rss.reduce((a, b) => a + b, 0),
            serverRss: stopped.rss,
            serverCpuMs: stopped.cpuMs,
            senderCpuMs: procs.reduce((n, p) => n + p.cpuMs(), 0),
          });
        } finally {
          await server.stop();
          await rm(inbox, { recursive: true, force: true });
        }
        log(`bench c: run ${i + 1}/${o.runs} ${v.name}: ${Math.round(samples[v.name].at(-1)!.ms)} ms`);
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return summarize("c", o.clients * o.clientSize, o.clients, samples, { workers: o.workers });
}

async function caseD(o: Options): Promise<CaseResult> {
  const dir = join(o.work, "d");
  await mkdir(dir, { recursive: true });
  const source = join(dir, "big.bin");
  log(`bench d: writing ${o.bigSize} random bytes`);
  await randomFile(source, o.bigSize);
  const samples: Record<string, Sample[]> = {};
  try {
    for (const v of o.variants) {
      const inbox = join(dir, `inbox-${v.name}`);
      samples[v.name] = [await ferrySend(v, source, inbox, 1)];
      if ((await stat(join(inbox, "big.bin"))).size !== o.bigSize) {
        throw new Error(`${v.name} stored a wrong size`);
      }
      await rm(inbox, { recursive: true, force: true });
      log(`bench d: ${v.name}: ${Math.round(samples[v.name][0].ms)} ms`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return summarize("d", o.bigSize, 1, samples, {});
}

function summarize(
  id: string,
  bytes: number,
  files: number,
  samples: Record<string, Sample[]>,
  notes: Record<string, unknown>,
): CaseResult {
  const tools: CaseResult["tools"] = {};
  for (const [tool, xs] of Object.entries(samples)) {
    if (xs.length === 0) continue;
    const pick = (k: keyof Sample) => {
      const v = xs.map((s) => s[k]).filter((x): x is number => typeof x === "number");
      return v.length ? median(v) : undefined;
    };
    tools[tool] = {
      runs: xs.map((s) => Math.round(s.ms)),
      medianMs: median(xs.map((s) => s.ms)),
      serverRss: pick("serverRss"),
      senderRss: pick("senderRss"),
      senderRssTotal: pick("senderRssTotal"),
      serverCpuMs: pick("serverCpuMs"),
      senderCpuMs: pick("senderCpuMs"),
    };
  }
  return { id, bytes, files, tools, notes };
}

function versions(): BenchResults["machine"] {
  const cpu = cpus();
  const model = sh("sh", ["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]) || cpu[0]?.model || "?";
  return {
    nproc: Number(sh("nproc", [])) || cpu.length,
    cpu: model.trim(),
    ramGiB: Math.round(totalmem() / 1024 ** 3 * 10) / 10,
    freeGiB: Math.round(freemem() / 1024 ** 3 * 10) / 10,
    kernel: release(),
    loadAvg: loadavg().map((x) => Math.round(x * 100) / 100),
    deno: sh(join(BIN, "deno"), ["--version"]).split("\n")[0] ?? "?",
    bun: sh(join(BIN, "bun"), ["--version"]),
    rsync: sh("rsync", ["--version"]).split("\n")[0] ?? "",
    socat: (sh("socat", ["-V"]).split("\n").find((l) => l.startsWith("socat version")) ?? "").trim(),
    fs: sh("sh", ["-c", "df -T . | awk 'NR==2 {print $2}'"]),
  };
}

async function main(): Promise<number> {
  let o: Options | undefined;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (e) {
    log(`bench: ${(e as Error).message}\n${HELP}`);
    return 2;
  }
  if (!o) return 0;
  const t0 = performance.now();
  const tools = o.only.has("a") || o.only.has("b") ? ensureBaselines() : { rsync: false, socat: false };
  await rm(o.work, { recursive: true, force: true });
  await mkdir(o.work, { recursive: true });
  const cases: CaseResult[] = [];
  const machine = versions();
  try {
    for (const v of o.variants) await warmUp(v, o.work);
    if (o.only.has("a")) cases.push(await caseA(o, tools));
    if (o.only.has("b")) cases.push(await caseB(o, tools));
    if (o.only.has("c")) cases.push(await caseC(o));
    if (o.only.has("d")) cases.push(await caseD(o));
  } finally {
    await rm(o.work, { recursive: true, force: true });
  }
  machine.loadAvgEnd = loadavg().map((x) => Math.round(x * 100) / 100);
  const results: BenchResults = {
    date: new Date().toISOString(),
    quick: o.quick,
    runs: o.runs,
    machine,
    cases,
    totalSeconds: Math.round((performance.now() - t0) / 1000),
  };
  const outDir = join(ROOT, "bench", "out");
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, "results.json"), JSON.stringify(results, null, 2) + "\n");
  const md = renderMarkdown(results);
  await writeFile(join(outDir, "results.md"), md);
  process.stdout.write(md);
  if (o.write) {
    const resultsPath = join(ROOT, "bench", "RESULTS.md");
    const begin = "<!-- bench:begin (generated by bench/run.ts) -->";
    const end = "<!-- bench:end -->";
    let doc = await readFile(resultsPath, "utf8").catch(() => `# Benchmark results\n\n${begin}\n${end}\n`);
    const i = doc.indexOf(begin);
    const j = doc.indexOf(end);
    doc = i >= 0 && j > i
      ? doc.slice(0, i + begin.length) + "\n" + md + doc.slice(j)
      : doc + `\n${begin}\n${md}${end}\n`;
    await writeFile(resultsPath, doc);
    // Keep the file as `deno fmt --check` (CI) wants it: the generated tables are not aligned.
    sh(join(BIN, "deno"), ["fmt", "--quiet", resultsPath]);
    await writeFile(join(ROOT, "bench", "results.svg"), renderSvg(results));
    log("bench: updated bench/RESULTS.md and bench/results.svg");
  }
  log(`bench: done in ${results.totalSeconds} s`);
  return 0;
}

process.exit(await main());
