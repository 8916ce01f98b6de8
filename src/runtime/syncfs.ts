/**
 * `syncfs(2)`: one call that makes everything written to a filesystem durable, data and metadata,
 * with one drive cache flush. The inbox uses it to store many small files with one flush instead of
 * an fsync each ({@linkcode "../store/group_sync.ts"}).
 *
 * Linux (glibc) only, through each runtime's FFI: Deno's `Deno.dlopen` with a nonblocking symbol
 * (it runs on its own thread and returns a promise; needs `--allow-ffi`, checked without a prompt),
 * Bun's `bun:ffi` in a worker thread (its calls block the caller). Anywhere else, or when the
 * library cannot be loaded, there is none and every file gets its own fsync.
 *
 * @module
 */
import process from "node:process";
import { Worker } from "node:worker_threads";

/**
 * Runs `syncfs(fd)`: resolves to 0 when everything written to the filesystem holding `fd` is on
 * stable storage and no writeback error was recorded on it since `fd` was opened, to -1 otherwise
 * (the caller then fsyncs each of its files, which says which one failed and why).
 */
export type SyncFs = (fd: number) => Promise<number>;

let loaded: SyncFs | null | undefined;

/**
 * The runtime's `syncfs(2)`, loaded once; undefined where there is none (see the module doc).
 *
 * @example
 * ```ts ignore
 * const syncfs = loadSyncFs();
 * if (syncfs && (await syncfs(fd)) === 0) console.log("every file on fd's filesystem is durable");
 * ```
 */
export function loadSyncFs(): SyncFs | undefined {
  if (loaded === undefined) {
    try {
      loaded = process.platform === "linux" ? (onBun() ? bunSyncFs() : denoSyncFs()) ?? null : null;
    } catch {
      loaded = null;
    }
  }
  return loaded ?? undefined;
}

function onBun(): boolean {
  return typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
}

function denoSyncFs(): SyncFs | undefined {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
  const lib = Deno.dlopen("libc.so.6", {
    syncfs: { parameters: ["i32"], result: "i32", nonblocking: true },
  });
  return (fd) => lib.symbols.syncfs(fd);
}

/**
 * The worker's whole source: CommonJS evaluated in place, so the compiled single binary needs no
 * extra file. It answers `[id, fd]` with `[id, result]`.
 */
const BUN_WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { dlopen, FFIType } = require("bun:ffi");
const lib = dlopen("libc.so.6", { syncfs: { args: [FFIType.i32], returns: FFIType.i32 } });
parentPort.on("message", ([id, fd]) => parentPort.postMessage([id, lib.symbols.syncfs(fd)]));
`;

function bunSyncFs(): SyncFs {
  let worker: Worker | undefined;
  let nextId = 0;
  const waiting = new Map<number, (result: number) => void>();
  const failAll = () => {
    worker = undefined;
    for (const resolve of waiting.values()) resolve(-1);
    waiting.clear();
  };
  return (fd) => {
    if (!worker) {
      const w = new Worker(BUN_WORKER_SOURCE, { eval: true });
      w.on("message", ([id, result]: [number, number]) => {
        waiting.get(id)?.(result);
        waiting.delete(id);
        // Idle, the worker must not keep the process alive.
        if (waiting.size === 0) w.unref();
      });
      // A worker that cannot load or dies answers -1 to all: each file is then fsynced on its own.
      w.on("error", failAll);
      w.on("exit", failAll);
      worker = w;
    }
    const id = nextId++;
    worker.ref();
    worker.postMessage([id, fd]);
    return new Promise((resolve) => waiting.set(id, resolve));
  };
}
