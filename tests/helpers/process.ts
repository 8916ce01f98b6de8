/**
 * Test helpers: start real server and sender processes on either runtime,
 * make temp dirs, and hash files independently.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export type RuntimeName = "deno" | "bun";
export const RUNTIMES: RuntimeName[] = ["deno", "bun"];

/** The runtime executing this test file. */
export const CURRENT_RUNTIME: RuntimeName = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined"
  ? "bun"
  : "deno";

/** Path of a runtime binary from node_modules/.bin. */
export function runtimeBin(runtime: RuntimeName): string {
  return join(ROOT, "node_modules", ".bin", runtime);
}

/** The argv that runs `script` (repo-relative) on `runtime`. */
export function scriptCommand(runtime: RuntimeName, script: string, denoPermissions = ["-A"]): string[] {
  const path = join(ROOT, script);
  return runtime === "deno"
    ? [runtimeBin("deno"), "run", ...denoPermissions, path]
    : [runtimeBin("bun"), path];
}

/** A fresh temp dir, removed by the returned cleanup. */
export async function tempDir(
  prefix = "ferry-test-",
): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/** SHA-256 of a file, hex, by streaming it (independent of ferry's code). */
export function sha256File(path: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const hash = createHash("sha256");
    createReadStream(path).on("data", (d) => hash.update(d)).on("error", reject).on(
      "end",
      () => resolvePromise(hash.digest("hex")),
    );
  });
}

/** A running server process. */
export interface ServerProcess {
  child: ChildProcess;
  port: number;
  host: string;
  /** Everything it printed on stdout so far. */
  output(): string;
  /** Everything it printed on stderr so far. */
  errorOutput(): string;
  /** Resolves with the first stdout line matching `re` (waits for it). */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends a signal and waits for exit; returns the exit code (or signal). */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  /** Sends a signal without waiting. */
  kill(signal: NodeJS.Signals): void;
  exited: Promise<number | string>;
}

/**
 * Starts `server.ts` on `runtime` with `--port 0 --log-json` and waits for its
 * listening line. `logJson: false` leaves out `--log-json` (human-readable log);
 * `command` runs another argv instead of the script (e.g. `[binary, "serve"]`).
 */
export async function startServer(
  runtime: RuntimeName,
  args: string[],
  options: {
    env?: Record<string, string>;
    denoPermissions?: string[];
    script?: string;
    logJson?: boolean;
    command?: string[];
  } = {},
): Promise<ServerProcess> {
  const [cmd, ...rest] = options.command ??
    scriptCommand(runtime, options.script ?? "server.ts", options.denoPermissions);
  const logJson = options.logJson ?? true;
  const child = spawn(cmd, [...rest, "--port", "0", ...(logJson ? ["--log-json"] : []), ...args], {
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  const lineWaiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
    for (const w of [...lineWaiters]) {
      const line = stdout.split("\n").find((l) => w.re.test(l));
      if (line) {
        lineWaiters.splice(lineWaiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => stderr += d);
  const exited = new Promise<number | string>((r) =>
    child.on("exit", (code, signal) => r(code ?? signal ?? -1))
  );
  const waitForLine = (re: RegExp, timeoutMs = 20_000) =>
    new Promise<string>((resolveLine, reject) => {
      const existing = stdout.split("\n").find((l) => re.test(l));
      if (existing) return resolveLine(existing);
      const timer = setTimeout(
        () => reject(new Error(`Timed out waiting for ${re} in server output:\n${stdout}\n${stderr}`)),
        timeoutMs,
      );
      const waiter = {
        re,
        resolve: (l: string) => {
          clearTimeout(timer);
          resolveLine(l);
        },
      };
      lineWaiters.push(waiter);
      exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`Server exited (${code}) before printing ${re}:\n${stdout}\n${stderr}`));
      });
    });
  const listening = logJson
    ? JSON.parse(await waitForLine(/"event":"listening"/))
    : parseListeningLine(await waitForLine(/ listening on /));
  return {
    child,
    port: listening.port,
    host: listening.host,
    output: () => stdout,
    errorOutput: () => stderr,
    waitForLine,
    exited,
    kill: (signal: NodeJS.Signals) => signalChild(child, signal),
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      signalChild(child, signal);
      return await exited;
    },
  };
}

/**
 * Signals a child that is still running. process.kill, not child.kill: Deno's
 * child.kill makes a later clean exit (code 0 after a handled SIGTERM) report
 * as killed by that signal.
 */
function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(child.pid, signal);
  } catch {
    // Exited in the meantime.
  }
}

/** Host and port from the human-readable "listening on [::1]:9000, inbox …" line. */
function parseListeningLine(line: string): { host: string; port: number } {
  const m = / listening on (\[[^\]]+\]|[^\s:]+):(\d+)/.exec(line);
  if (!m) throw new Error(`Cannot parse listening line: ${line}`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** The result of a finished process. */
export interface RunResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** Runs a script to completion on `runtime`. */
export function runScript(
  runtime: RuntimeName,
  script: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; denoPermissions?: string[] } =
    {},
): Promise<RunResult> {
  const [cmd, ...rest] = scriptCommand(runtime, script, options.denoPermissions);
  return runCommand(cmd, [...rest, ...args], options);
}

/** Runs any command to completion. */
export function runCommand(
  cmd: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, {
      cwd: options.cwd,
      env: { ...process.env, NO_COLOR: "1", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => stdout += d);
    child.stderr.setEncoding("utf8").on("data", (d: string) => stderr += d);
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")} timed out\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolveRun({ code: code ?? signal ?? -1, stdout, stderr });
    });
  });
}

/** Runs `send.ts` on `runtime` against a server. */
export function runSender(
  runtime: RuntimeName,
  args: string[],
  server: { host: string; port: number },
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  const host = server.host.includes(":") ? `[${server.host}]` : server.host;
  return runScript(runtime, "send.ts", [...args, `${host}:${server.port}`], options);
}
