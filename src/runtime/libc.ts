/**
 * Two libc calls that neither runtime's `node:fs` has, through each runtime's FFI. Linux (glibc) only:
 * Deno's `Deno.dlopen` with nonblocking symbols (each call runs on its own thread and returns a
 * promise; needs `--allow-ffi`, checked without a prompt), Bun's `bun:ffi` in a worker thread (its
 * calls block the caller). Where the library cannot be loaded there is neither, and callers do without.
 *
 * - `syncfs(2)`: one call that makes everything written to a filesystem durable, data and metadata,
 *   with one drive cache flush. The inbox uses it to store many small files with one flush instead
 *   of an fsync each ({@linkcode "../store/group_sync.ts"}), only where it is as safe as an fsync per
 *   file ({@linkcode syncFsFor}): Linux 5.8 or later (before, syncfs did not report writeback errors),
 *   on ext4, XFS or btrfs (whose syncfs flushes the drive's cache), with `node:fs` descriptors that are
 *   the kernel's own (checked once on Deno).
 * - `posix_fadvise(2)` `POSIX_FADV_DONTNEED`: drops a stretch of a file that is already on disk from
 *   the page cache ({@linkcode dropCacheFor}), so that a large upload reuses the same few MiB of
 *   memory instead of filling the cache with data nobody reads back.
 * - `madvise(2)` `MADV_HUGEPAGE`: lets the kernel back a long-lived buffer pool with 2 MiB pages
 *   ({@linkcode hugePageMemory}). Synchronous on the calling thread (it only marks the range).
 *
 * @module
 */
import * as fs from "node:fs";
import { release } from "node:os";
import * as path from "node:path";
import process from "node:process";
import { Worker } from "node:worker_threads";

/**
 * Runs `syncfs(fd)`: resolves to 0 when everything written to the filesystem holding `fd` is on
 * stable storage and (Linux 5.8+) no writeback error was recorded on it since `fd` was opened, to -1 otherwise
 * (the caller then fsyncs each of its files, which says which one failed and why).
 */
export type SyncFs = (fd: number) => Promise<number>;

/**
 * Drops the whole pages of `fd`'s file from `offset` for `length` bytes (0 = to the end) from the page
 * cache if they are clean (written back); dirty pages stay, and the call starts their writeback.
 * Resolves to 0, or -1 if the call failed (the pages then simply stay cached).
 */
export type DropCache = (fd: number, offset: number, length: number) => Promise<number>;

interface Libc {
  syncfs: SyncFs;
  dropCache: DropCache;
}

let loaded: Libc | null | undefined;
/** Deno only: checks that a `node:fs` descriptor is the kernel's (see {@linkcode syncFsFor}). */
let probeDescriptor: ((fd: number, size: number) => boolean) | undefined;
let descriptorsChecked: boolean | undefined;

/** statfs(2) magic numbers of ext2/3/4, XFS and btrfs, whose syncfs writes everything and flushes the drive cache. */
const SYNCFS_FILESYSTEMS = new Set([0xef53, 0x58465342, 0x9123683e]);

/**
 * The runtime's `syncfs(2)` if it may replace an fsync per file for files in `dir`: see the module
 * doc. `dir` must be writable: on Deno a probe file is created and removed there once per process.
 *
 * @example
 * ```ts ignore
 * const syncfs = syncFsFor("./inbox/.ferry/partial"); // undefined: fsync each file
 * ```
 */
export function syncFsFor(dir: string): SyncFs | undefined {
  const syncfs = loadSyncFs();
  if (!syncfs || !kernelReportsErrors()) return undefined;
  try {
    if (!SYNCFS_FILESYSTEMS.has(Number(fs.statfsSync(dir).type))) return undefined;
  } catch {
    return undefined;
  }
  return descriptorsAreKernels(dir) ? syncfs : undefined;
}

/**
 * The runtime's `posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED)` for files in `dir`, if it has
 * one and `node:fs` descriptors are the kernel's (as for {@linkcode syncFsFor}); any filesystem but
 * tmpfs and ramfs, where the cached pages are the files and nothing would be dropped (dropping clean
 * pages loses nothing). `dir` must be writable (the same once-per-process probe).
 *
 * @example
 * ```ts ignore
 * const drop = dropCacheFor("./inbox/.ferry/partial");
 * await file.datasync();
 * await drop?.(file.fd, 0, 32 * 1024 * 1024); // its first 32 MiB leave the page cache
 * ```
 */
export function dropCacheFor(dir: string): DropCache | undefined {
  const libc = loadLibc();
  if (!libc) return undefined;
  try {
    if (MEMORY_FILESYSTEMS.has(Number(fs.statfsSync(dir).type))) return undefined;
  } catch {
    return undefined;
  }
  return descriptorsAreKernels(dir) ? libc.dropCache : undefined;
}

/** statfs(2) magic numbers of tmpfs and ramfs, whose cached pages are the files themselves. */
const MEMORY_FILESYSTEMS = new Set([0x01021994, 0x858458f6]);

/** Whether `node:fs` descriptors are the kernel's; probed once per process (Deno), in `dir`. */
function descriptorsAreKernels(dir: string): boolean {
  try {
    descriptorsChecked ??= probeDescriptor ? probe(dir, probeDescriptor) : true;
  } catch {
    return false;
  }
  return descriptorsChecked;
}

/** Linux 5.8 and later report writeback errors to syncfs. */
function kernelReportsErrors(): boolean {
  const [major, minor] = release().split(".").map((n) => parseInt(n, 10));
  return major > 5 || (major === 5 && minor >= 8);
}

/** Writes a probe file through `node:fs` and asks the kernel, through FFI, how long its descriptor's file is. */
function probe(dir: string, check: (fd: number, size: number) => boolean): boolean {
  const file = path.join(dir, `.syncfs-probe-${process.pid}`);
  const fd = fs.openSync(file, "w+");
  try {
    const size = 4099;
    fs.writeSync(fd, new Uint8Array(size), 0, size, 0);
    return check(fd, size);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

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
  return loadLibc()?.syncfs;
}

function loadLibc(): Libc | undefined {
  if (loaded === undefined) {
    try {
      loaded = process.platform === "linux" ? (onBun() ? bunLibc() : denoLibc()) ?? null : null;
    } catch {
      loaded = null;
    }
  }
  return loaded ?? undefined;
}

/** Linux's value; glibc's `posix_fadvise` takes it as is. */
const POSIX_FADV_DONTNEED = 4;

function onBun(): boolean {
  return typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
}

function denoLibc(): Libc | undefined {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
  const lib = Deno.dlopen("libc.so.6", {
    syncfs: { parameters: ["i32"], result: "i32", nonblocking: true },
    posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32", nonblocking: true },
    lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  });
  // Older Deno releases gave node:fs callers resource ids, not descriptors: syncfs on one would sync
  // whatever the kernel has under that number, perhaps another filesystem, and report success.
  const SEEK_END = 2;
  probeDescriptor = (fd, size) => Number(lib.symbols.lseek(fd, 0n, SEEK_END)) === size;
  return {
    syncfs: (fd) => lib.symbols.syncfs(fd),
    // posix_fadvise returns an error number, not -1 with errno.
    dropCache: async (fd, offset, length) =>
      await lib.symbols.posix_fadvise(fd, BigInt(offset), BigInt(length), POSIX_FADV_DONTNEED) === 0 ? 0 : -1,
  };
}

/**
 * The worker's whole source: CommonJS evaluated in place, so the compiled single binary needs no
 * extra file. It answers `[id, "syncfs", fd]` and `[id, "dropCache", fd, offset, length]` with
 * `[id, result]`, the result 0 or -1 as {@linkcode SyncFs} and {@linkcode DropCache} say.
 */
const BUN_WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { dlopen, FFIType } = require("bun:ffi");
const lib = dlopen("libc.so.6", {
  syncfs: { args: [FFIType.i32], returns: FFIType.i32 },
  posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 },
});
const calls = {
  syncfs: (fd) => lib.symbols.syncfs(fd),
  dropCache: (fd, offset, length) => lib.symbols.posix_fadvise(fd, offset, length, ${POSIX_FADV_DONTNEED}) === 0 ? 0 : -1,
};
parentPort.on("message", ([id, call, ...args]) => parentPort.postMessage([id, calls[call](...args)]));
`;

function bunLibc(): Libc {
  // Two workers: a drop from the page cache never waits behind a syncfs, which can take long.
  const syncfs = workerCalls();
  const drops = workerCalls();
  return {
    syncfs: (fd) => syncfs("syncfs", fd),
    dropCache: (fd, offset, length) => drops("dropCache", fd, offset, length),
  };
}

/** Calls answered one at a time by a worker of its own, started on first use. */
function workerCalls(): (...message: [string, ...number[]]) => Promise<number> {
  let worker: Worker | undefined;
  let nextId = 0;
  /** The library cannot be used here (a worker failed before answering anything): -1 at once. */
  let unusable = false;
  let answered = false;
  const waiting = new Map<number, (result: number) => void>();
  const failAll = (w: Worker) => {
    if (worker !== w) return; // an earlier worker's late exit
    worker = undefined;
    if (!answered) unusable = true;
    for (const resolve of waiting.values()) resolve(-1);
    waiting.clear();
  };
  return (...message) => {
    if (unusable) return Promise.resolve(-1);
    if (!worker) {
      const w = new Worker(BUN_WORKER_SOURCE, { eval: true });
      w.on("message", ([id, result]: [number, number]) => {
        answered = true;
        waiting.get(id)?.(result);
        waiting.delete(id);
        // Idle, the worker must not keep the process alive.
        if (waiting.size === 0) w.unref();
      });
      // A worker that cannot load or dies answers -1 to all: each file is then fsynced on its own,
      // and pages stay cached.
      w.on("error", () => failAll(w));
      w.on("exit", () => failAll(w));
      worker = w;
    }
    const id = nextId++;
    worker.ref();
    worker.postMessage([id, ...message]);
    return new Promise((resolve) => waiting.set(id, resolve));
  };
}

/** Linux's `MADV_HUGEPAGE`. */
const MADV_HUGEPAGE = 14;
/** The size of a transparent huge page on x86-64 and (with 4 KiB base pages) arm64. */
export const HUGE_PAGE = 2 * 1024 * 1024;

/** Where `madvise` can be called: the address of a view's first byte, and the call. */
interface Madvise {
  address(view: Uint8Array): number;
  hugePages(address: number, length: number): boolean;
}
let madvise: Madvise | null | undefined;

/**
 * `bytes` of fresh, zeroed memory that the kernel may back with transparent huge pages: on Linux
 * where the system leaves that to the program (`madvise` in
 * `/sys/kernel/mm/transparent_hugepage/enabled`) and this runtime can call libc (Deno needs
 * `--allow-ffi`), a 2 MiB-aligned view with `madvise(MADV_HUGEPAGE)` given before anything touched
 * it; elsewhere a plain `Uint8Array`, which works the same. For long-lived pools only: the memory is
 * 2 MiB larger than asked, and the whole of it is freed only with the last view of it.
 *
 * Why: on the VMs we measure on, first touching a 4 KiB page costs 12-20 µs, so a pool of 64 MiB of
 * socket buffers costs about 0.25 s of CPU to fault in page by page; 2 MiB pages cost far less per
 * byte (touching 256 MiB: 0.79-1.06 s against 0.03-0.51 s).
 *
 * @example
 * ```ts ignore
 * const slab = hugePageMemory(8 * 1024 * 1024); // slab.byteOffset is where the 2 MiB pages start
 * ```
 */
export function hugePageMemory(bytes: number): Uint8Array<ArrayBuffer> {
  if (madvise === undefined) {
    try {
      madvise = process.platform === "linux" ? (onBun() ? bunMadvise() : denoMadvise()) ?? null : null;
    } catch {
      madvise = null;
    }
  }
  if (madvise === null || bytes < HUGE_PAGE) return new Uint8Array(bytes);
  const memory = new Uint8Array(bytes + HUGE_PAGE);
  const start = (HUGE_PAGE - (madvise.address(memory) % HUGE_PAGE)) % HUGE_PAGE;
  // Whole huge pages only: the tail past the last 2 MiB boundary stays in small pages.
  const advised = Math.floor(bytes / HUGE_PAGE) * HUGE_PAGE;
  madvise.hugePages(madvise.address(memory) + start, advised);
  return memory.subarray(start, start + bytes);
}

const THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled";

/** Only `madvise` mode needs the call; in `always` mode the kernel does it anyway, in `never` it never will. */
function thpIsMadvise(): boolean {
  try {
    return fs.readFileSync(THP_MODE, "utf8").includes("[madvise]");
  } catch {
    return false;
  }
}

function denoMadvise(): Madvise | undefined {
  // Asked without a prompt: a sandboxed server does without.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
  if (Deno.permissions.querySync({ name: "read", path: THP_MODE }).state !== "granted") return undefined;
  if (!thpIsMadvise()) return undefined;
  const lib = Deno.dlopen("libc.so.6", {
    madvise: { parameters: ["usize", "usize", "i32"], result: "i32" },
  });
  return {
    address: (view) => Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view))),
    hugePages: (address, length) => lib.symbols.madvise(BigInt(address), BigInt(length), MADV_HUGEPAGE) === 0,
  };
}

function bunMadvise(): Madvise | undefined {
  if (!thpIsMadvise()) return undefined;
  // On this thread: the call only marks the range, and `ptr` reads this thread's view.
  const { dlopen, FFIType, ptr } = (import.meta as unknown as { require(id: string): BunFfi }).require(
    "bun:ffi",
  );
  const lib = dlopen("libc.so.6", {
    madvise: { args: [FFIType.u64, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  });
  return {
    address: (view) => ptr(view),
    hugePages: (address, length) => lib.symbols.madvise(address, length, MADV_HUGEPAGE) === 0,
  };
}

/** The part of `bun:ffi` used here. */
interface BunFfi {
  dlopen(
    path: string,
    symbols: Record<string, { args: unknown[]; returns: unknown }>,
  ): { symbols: Record<string, (...args: number[]) => number> };
  FFIType: Record<"u64" | "i32", unknown>;
  ptr(view: Uint8Array): number;
}
