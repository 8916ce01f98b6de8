/**
 * Helpers shared by the end-to-end tests: random files, NDJSON parsing, a
 * free port, polling an external process's files, and a TCP proxy that can
 * hold a transfer at a chosen point so crash and shutdown tests are
 * deterministic.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, stat, utimes, writeFile } from "node:fs/promises";
import * as net from "node:net";
import { dirname, join, relative } from "node:path";
import { CURRENT_RUNTIME, type RuntimeName, type ServerProcess } from "../helpers/process.ts";

/** The runtime that is not running this test file. */
export const OTHER_RUNTIME: RuntimeName = CURRENT_RUNTIME === "deno" ? "bun" : "deno";

/** Writes `size` random bytes to `path` (parents created) and sets its mtime. */
export async function writeRandomFile(path: string, size: number, mtimeMs?: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, randomBytes(size));
  if (mtimeMs !== undefined) await utimes(path, new Date(mtimeMs), new Date(mtimeMs));
}

/** Parses NDJSON output; a line that is not JSON fails with the whole output shown. */
export function jsonLines(text: string): Array<Record<string, unknown>> {
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => {
    try {
      return JSON.parse(l);
    } catch (cause) {
      throw new Error(`Not a JSON line: ${JSON.stringify(l)}\nin output:\n${text}`, { cause });
    }
  });
}

/** A port nothing listens on: bound, then closed again. */
export function closedPort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** True when a socket can listen on `host` (e.g. "::1" on a host without IPv6). */
export function canListen(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(0, host, () => server.close(() => resolve(true)));
  });
}

/**
 * Polls `check` until it returns a value other than undefined. Only for
 * state of another process (its files), which sends no events we could await.
 */
export async function pollUntil<T>(
  what: string,
  check: () => Promise<T | undefined>,
  { timeoutMs = 20_000, intervalMs = 20 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Every regular file under `dir`, relative, `/`-separated, sorted; `.ferry/` left out. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      if (e.isDirectory()) {
        if (d === dir && e.name === ".ferry") continue;
        await walk(full);
      } else out.push(relative(dir, full).split("\\").join("/"));
    }
  };
  await walk(dir);
  return out.sort();
}

/** Names in the inbox's `.ferry/partial/` folder, sorted. */
export async function partialEntries(inbox: string): Promise<string[]> {
  return (await readdir(join(inbox, ".ferry", "partial"))).sort();
}

/** Size of a file, or undefined if it does not exist. */
export async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

/** A frame seen by {@linkcode GateProxy} on its way from the server to the client. */
export type FrameHook = (type: number) => void | Promise<void>;

/**
 * A TCP proxy between a sender and a server. Client→server bytes can be held
 * after a byte count (the transfer stalls mid-file until `releaseUp()`), and
 * each server→client frame can be held by an async hook (e.g. hold ACCEPT
 * while the test fills the disk).
 *
 * @example Stall a transfer after 1 MiB
 * ```ts ignore
 * const proxy = await GateProxy.start({ host: "127.0.0.1", port: server.port });
 * const reached = proxy.holdUpAfter(1 << 20);
 * // … start a sender against proxy.port, then:
 * await reached;
 * proxy.releaseUp();
 * ```
 */
export class GateProxy {
  readonly port: number;
  readonly host = "127.0.0.1";
  /** Client→server bytes forwarded so far, over all connections. */
  upBytes = 0;
  /** Awaited before each server→client frame is forwarded. */
  onServerFrame?: FrameHook;
  #server: net.Server;
  #sockets = new Set<net.Socket>();
  #limit: number | undefined;
  #held: Array<{ upstream: net.Socket; client: net.Socket; chunk: Uint8Array }> = [];
  #reached?: () => void;

  private constructor(server: net.Server, port: number) {
    this.#server = server;
    this.port = port;
  }

  /** Listens on 127.0.0.1, port 0, forwarding to `upstream`. */
  static start(upstream: { host: string; port: number }): Promise<GateProxy> {
    return new Promise((resolve, reject) => {
      let proxy: GateProxy;
      const server = net.createServer((client) => proxy.#pair(client, upstream));
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        proxy = new GateProxy(server, (server.address() as net.AddressInfo).port);
        resolve(proxy);
      });
    });
  }

  /** Holds client→server bytes once `limit` have passed; resolves when that point is reached. */
  holdUpAfter(limit: number): Promise<void> {
    this.#limit = limit;
    return new Promise((resolve) => {
      this.#reached = resolve;
      if (this.upBytes >= limit) resolve();
    });
  }

  /** Forwards everything held and stops holding. */
  releaseUp(): void {
    this.#limit = undefined;
    for (const { upstream, client, chunk } of this.#held.splice(0)) {
      this.upBytes += chunk.length;
      if (!upstream.destroyed) upstream.write(chunk);
      client.resume();
    }
  }

  /** Closes the listener and every proxied connection. */
  close(): Promise<void> {
    this.#limit = undefined;
    this.#held.length = 0;
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #pair(client: net.Socket, to: { host: string; port: number }): void {
    const upstream = net.connect({ host: to.host, port: to.port });
    this.#sockets.add(client);
    this.#sockets.add(upstream);
    const teardown = () => {
      client.destroy();
      upstream.destroy();
      this.#sockets.delete(client);
      this.#sockets.delete(upstream);
    };
    client.on("error", teardown).on("close", teardown);
    upstream.on("error", teardown).on("close", teardown);
    // Client→server: count, and hold whatever goes past the limit.
    client.on("data", (chunk: Uint8Array) => {
      if (this.#limit === undefined) {
        this.upBytes += chunk.length;
        upstream.write(chunk);
        return;
      }
      const allowed = Math.max(0, this.#limit - this.upBytes);
      if (allowed > 0) {
        const head = chunk.subarray(0, Math.min(allowed, chunk.length));
        this.upBytes += head.length;
        upstream.write(head);
      }
      if (chunk.length > allowed) {
        this.#held.push({ upstream, client, chunk: chunk.subarray(allowed) });
        client.pause();
      }
      if (this.upBytes >= this.#limit) this.#reached?.();
    });
    client.on("end", () => upstream.end());
    // Server→client: split into frames (u32 length + u8 type + payload) so a hook can hold one.
    let pending = new Uint8Array(0);
    let busy = false;
    let ended = false;
    const drain = async () => {
      busy = true;
      while (pending.length >= 5) {
        const length = new DataView(pending.buffer, pending.byteOffset, 4).getUint32(0);
        if (pending.length < 5 + length) break;
        const frame = pending.subarray(0, 5 + length);
        pending = pending.subarray(5 + length);
        if (this.onServerFrame) {
          upstream.pause();
          await this.onServerFrame(frame[4]);
          upstream.resume();
        }
        if (!client.destroyed) client.write(frame);
      }
      busy = false;
      if (ended) client.end();
    };
    upstream.on("data", (chunk: Uint8Array) => {
      const joined = new Uint8Array(pending.length + chunk.length);
      joined.set(pending);
      joined.set(chunk, pending.length);
      pending = joined;
      if (!busy) drain().catch(teardown);
    });
    upstream.on("end", () => {
      ended = true;
      if (!busy) client.end();
    });
  }
}

/**
 * Resolves once `ready(stdout so far)` is true, checking again on every chunk
 * the server prints (no polling).
 */
export function waitForOutput(
  server: ServerProcess,
  ready: (stdout: string) => boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const stdout = server.child.stdout!;
    const check = () => {
      if (!ready(server.output())) return false;
      stdout.off("data", onData);
      clearTimeout(timer);
      resolve();
      return true;
    };
    // Listeners run after the helper's own, so output() already holds the chunk.
    const onData = () => check();
    const timer = setTimeout(() => {
      stdout.off("data", onData);
      reject(new Error(`Timed out waiting for ${what} in server output:\n${server.output()}`));
    }, timeoutMs);
    stdout.on("data", onData);
    check();
  });
}
