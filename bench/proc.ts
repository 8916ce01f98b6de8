/**
 * Benchmark process helpers: spawn a command, time it from spawn to exit, and
 * track its peak RSS from `/proc/<pid>/status` (Linux only).
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect, createServer } from "node:net";

/** How often the peak RSS is sampled. VmHWM is itself a high-water mark, so a sample misses nothing but the last interval before exit. */
const RSS_POLL_MS = 20;

/** Peak resident set (VmHWM) of a live process, in bytes; 0 once it is gone. */
export function peakRss(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Clock ticks per second of /proc/<pid>/stat times; 100 on every Linux build that matters. */
const CLK_TCK = 100;

/** CPU time (user + system, all threads) a live process has used, in ms; 0 once it is gone. */
export function cpuTime(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** A spawned process under measurement. */
export interface Proc {
  child: ChildProcess;
  /** `performance.now()` just before spawn. */
  startedAt: number;
  /** Highest VmHWM seen so far, in bytes. */
  peakRss(): number;
  /** CPU time used, in ms, as last sampled (at most one poll interval before exit). */
  cpuMs(): number;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first later stdout or stderr line matching `re`. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves at exit with the code (or signal name) and the wall time since spawn. */
  exited: Promise<{ code: number | string; ms: number }>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Spawns `cmd args`, sampling its peak RSS until it exits.
 *
 * @example Time a command
 * ```ts
 * import { start } from "./proc.ts";
 * const p = start("true", []);
 * const { code, ms } = await p.exited;
 * ```
 */
export function start(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; keepStdout?: boolean } = {},
): Proc {
  const startedAt = performance.now();
  const child = spawn(cmd, args, {
    cwd: options.cwd,
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  let peak = 0;
  let cpu = 0;
  const keep = options.keepStdout ?? true;
  const waiters: Array<{ re: RegExp; resolve: (line: string) => void }> = [];
  const tails = { out: "", err: "" };
  const scan = (which: "out" | "err", d: string) => {
    const lines = (tails[which] + d).split("\n");
    tails[which] = lines.pop()!;
    for (const line of lines) {
      for (const w of [...waiters]) {
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  };
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    if (keep) out += d;
    if (waiters.length) scan("out", d);
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    if (err.length < 64 * 1024) err += d;
    if (waiters.length) scan("err", d);
  });
  const sample = () => {
    if (child.pid === undefined) return;
    peak = Math.max(peak, peakRss(child.pid));
    cpu = Math.max(cpu, cpuTime(child.pid));
  };
  const timer = setInterval(sample, RSS_POLL_MS);
  const exited = new Promise<{ code: number | string; ms: number }>((resolve, reject) => {
    child.once("error", (e) => {
      clearInterval(timer);
      reject(e);
    });
    child.once("exit", (code, signal) => {
      const ms = performance.now() - startedAt;
      clearInterval(timer);
      resolve({ code: code ?? signal ?? -1, ms });
    });
  });
  exited.catch(() => {});
  return {
    child,
    startedAt,
    peakRss: () => {
      sample();
      return peak;
    },
    cpuMs: () => {
      sample();
      return cpu;
    },
    stdout: () => out,
    stderr: () => err,
    waitForLine(re, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(new Error(`Timed out waiting for ${re} from ${cmd}:\n${out}\n${err}`));
        }, timeoutMs);
        waiters.push({
          re,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        exited.then(({ code }) => {
          clearTimeout(timer);
          reject(new Error(`${cmd} exited (${code}) before printing ${re}:\n${out}\n${err}`));
        });
      });
    },
    exited,
    async kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** Runs a command to completion; throws with its output if it fails. */
export async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ ms: number; peakRss: number; cpuMs: number; stdout: string; stderr: string }> {
  const p = start(cmd, args, options);
  const { code, ms } = await p.exited;
  if (code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${code}):\n${p.stdout()}\n${p.stderr()}`);
  }
  return { ms, peakRss: p.peakRss(), cpuMs: p.cpuMs(), stdout: p.stdout(), stderr: p.stderr() };
}

/** Resolves once something accepts TCP connections on `port` (polls: the daemon has no ready signal). */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: "127.0.0.1", port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (performance.now() > deadline) throw new Error(`Nothing listens on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A TCP port that was free a moment ago (for tools that cannot listen on port 0 and report it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
