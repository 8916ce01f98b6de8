/**
 * The inbox store: the disk side of the receiver.
 *
 * Uploads are written to `<inbox>/.ferry/partial/<key>.part`, next to a
 * `<key>.json` sidecar recording how many bytes are durable, so a dropped
 * connection can resume. A finished, verified file is placed under its final
 * name atomically and recorded in `<inbox>/.ferry/receipts.ndjson`. Text
 * messages go to `<inbox>/.ferry/messages.ndjson`.
 *
 * Only `node:` builtins are used, so the same code runs on both runtimes.
 *
 * @module
 */

import * as fs from "node:fs/promises";
import * as fss from "node:fs";
import * as path from "node:path";
import { createHash, type Hash } from "node:crypto";
import process from "node:process";
import { FerryError } from "../errors.ts";
import { collisionName, escapeForDisplay, validateRelativePath } from "../names/names.ts";
import { joinBytes } from "../framing/frame.ts";
import { handlePartial, openPartial, type PartialFile, writeAll } from "../runtime/files.ts";
import { type DropCache, dropCacheFor, type SyncFs, syncFsFor } from "../runtime/libc.ts";
import { GroupSync, type GroupSyncStats } from "./group_sync.ts";

/**
 * What happens when a file with the final name already exists: `"rename"`
 * keeps both, `"overwrite"` replaces it, `"reject"` fails with `NAME_EXISTS`.
 *
 * @example
 * ```ts
 * import type { CollisionPolicy } from "./inbox.ts";
 * const policy: CollisionPolicy = "rename"; // a second photo.jpg becomes "photo (1).jpg"
 * ```
 */
export type CollisionPolicy = "rename" | "overwrite" | "reject";

/**
 * How finished files are made durable: `"batch"` lets files finishing together share one
 * `syncfs(2)`, `"file"` fsyncs each on its own (see {@linkcode InboxOptions.syncMode}).
 *
 * @example
 * ```ts
 * import type { SyncMode } from "./inbox.ts";
 * const mode: SyncMode = "file"; // an fsync per file, never a whole-filesystem sync
 * ```
 */
export type SyncMode = "batch" | "file";

/**
 * Options for {@linkcode Inbox.open}.
 *
 * @example
 * ```ts
 * import type { InboxOptions } from "./inbox.ts";
 * const options: InboxOptions = { dir: "./inbox", onCollision: "reject", maxFileSize: 1 << 30 };
 * ```
 */
export interface InboxOptions {
  /** The inbox directory; created if missing. */
  dir: string;
  /** Default `"rename"`: keep both, the new file becomes `photo (1).jpg`. */
  onCollision?: CollisionPolicy;
  /** Default 24 h: partial files untouched for longer are deleted by `open()` and `sweep()`. */
  partialTtlMs?: number;
  /** Default 32 MiB: fsync the partial and advance its durable offset at least this often. */
  syncEveryBytes?: number;
  /**
   * Default 1 MiB on Linux, 0 = off (the default elsewhere): after this many bytes of a partial, start
   * an fdatasync that the data path does not wait for, so its pages go to disk while the rest arrives
   * and the fsync that stores the file has little left to write ({@linkcode DEFAULT_FLUSH_AHEAD_BYTES}).
   */
  flushAheadBytes?: number;
  /**
   * Default false: once a stretch of a partial is on disk (after a checkpoint or flush-ahead, and the
   * rest of a file that had one once the file is stored), it is dropped from the page cache
   * (`posix_fadvise` `DONTNEED`, where the runtime can call it: {@linkcode dropCacheFor}). A large upload
   * then cycles through the same few MiB of memory instead of filling the cache with data nobody reads
   * back, evicting other programs' files; on a VM whose host takes freed memory back, fresh page-cache
   * pages are also the largest cost of receiving ({@linkcode DEFAULT_FLUSH_AHEAD_BYTES}). True keeps
   * everything cached, as a plain write would.
   */
  keepPageCache?: boolean;
  /** The call that drops written stretches from the page cache; default the runtime's (`dropCacheFor()`). */
  dropCache?: DropCache;
  /**
   * Default `"batch"`: files that finish while another is being synced share one `syncfs(2)` where that is
   * as safe as an fsync per file (`syncFsFor()`, {@linkcode GroupSync}); `"file"`: an fsync per file.
   */
  syncMode?: SyncMode;
  /** The `syncfs(2)` that `"batch"` uses; default the runtime's, where it is safe (`syncFsFor()`). */
  syncfs?: SyncFs;
  /** Called once if a syncfs fails, after which every file gets its own fsync until the inbox is opened again. */
  onSyncFallback?: () => void;
  /** Default 64 MiB: free space that must remain after storing the declared size. */
  minFreeBytes?: number;
  /** Default 0 = unlimited; larger files are refused with `FILE_TOO_LARGE`. */
  maxFileSize?: number;
  /**
   * Checks a complete, hash-verified file before it is placed: returns image
   * metadata for the receipt, undefined for a plain file, or throws a
   * `FerryError` to refuse it (the partial is then deleted).
   */
  inspect?: (tempPath: string, header: FileHeader) => Promise<ReceiptImage | undefined>;
}

/**
 * What a receipt records about an image, from its content.
 *
 * @example
 * ```ts
 * import type { ReceiptImage } from "./inbox.ts";
 * const image: ReceiptImage = { format: "jpeg", width: 4032, height: 3024, takenAt: "2024-05-01T12:34:56" };
 * ```
 */
export interface ReceiptImage {
  /** `"jpeg"`, `"png"`, `"gif"`, `"webp"`, `"avif"` or `"heic"`. */
  format: string;
  width: number;
  height: number;
  /** EXIF DateTimeOriginal, ISO 8601 local time with the offset when known. */
  takenAt?: string;
}

/**
 * What a sender declares about a file before sending its bytes. Every field
 * is untrusted; {@linkcode Inbox.begin} validates them.
 *
 * @example
 * ```ts
 * import type { FileHeader } from "./inbox.ts";
 * const header: FileHeader = {
 *   name: "photos/cat.jpg", size: 0, sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
 *   mtimeMs: 0, mime: "image/jpeg", sender: "192.0.2.1:50000", resume: true,
 * };
 * ```
 */
export interface FileHeader {
  /** Relative path requested by the sender (untrusted). */
  name: string;
  /** Size in bytes. */
  size: number;
  /**
   * SHA-256 of the content, lowercase hex; with `digestAtEnd`, the sender's source key (64 hex
   * digits too), and the content's hash is given to {@linkcode Upload.finish} instead.
   */
  sha256: string;
  /** Modification time in ms since the epoch; 0 = unknown. */
  mtimeMs: number;
  /** Declared media type. */
  mime: string;
  /** The peer, `"ip:port"`. */
  sender: string;
  /** The sender can continue from a non-zero offset. */
  resume: boolean;
  /**
   * The sender streams before it knows the hash (protocol flag DIGEST_AT_END): `sha256` is a source
   * key that only identifies the partial, and the hash comes with {@linkcode Upload.finish}. A
   * duplicate is then found at the end, not by `begin()`. Default false.
   */
  digestAtEnd?: boolean;
}

/**
 * A stored file, as recorded (one JSON line each) in `.ferry/receipts.ndjson`.
 *
 * @example
 * ```ts
 * import { Inbox, type Receipt } from "./inbox.ts";
 * const inbox = await Inbox.open({ dir: "./inbox" });
 * const renamed: Receipt[] = inbox.receipts().filter((r) => r.name !== r.requestedName);
 * ```
 */
export interface Receipt {
  /** Relative path the file was stored under (may differ from `requestedName` after a rename). */
  name: string;
  /** The validated (NFC) name the sender asked for. */
  requestedName: string;
  size: number;
  sha256: string;
  mtimeMs: number;
  mime: string;
  sender: string;
  /** ISO 8601 time the file was committed. */
  receivedAt: string;
  /** Set when the content is an image. */
  image?: ReceiptImage;
  /** Set on the copy returned for a duplicate upload; never written to disk. */
  duplicate?: boolean;
}

/**
 * A text message as stored in `.ferry/messages.ndjson`.
 *
 * @example
 * ```ts
 * import type { StoredMessage } from "./inbox.ts";
 * const m: StoredMessage = { receivedAt: "2024-05-01T12:00:00.000Z", sender: "192.0.2.1:50000", text: "hi" };
 * ```
 */
export interface StoredMessage {
  receivedAt: string;
  sender: string;
  text: string;
}

/**
 * The result of {@linkcode Inbox.begin}: the file is already stored, or an
 * upload to feed.
 *
 * @example
 * ```ts
 * import type { BeginResult } from "./inbox.ts";
 * function startOffset(r: BeginResult): number | undefined {
 *   return r.kind === "upload" ? r.upload.offset : undefined; // undefined: nothing to send
 * }
 * ```
 */
export type BeginResult = { kind: "duplicate"; receipt: Receipt } | { kind: "upload"; upload: Upload };

const MiB = 1024 * 1024;
/**
 * Default bytes between checkpoints of a partial (server flag `--sync-every`). Each one is an fdatasync
 * plus a sidecar written, fsynced and renamed; at 8 MiB they made a 1 GiB upload about 10 % slower
 * (bench/RESULTS.md), while a crash loses at most twice this much of an upload.
 */
export const DEFAULT_SYNC_EVERY_BYTES = 32 * MiB;
/**
 * Default bytes of a partial after which a background fdatasync starts (server flag `--flush-ahead`).
 * The kernel starts writing dirty pages back only after 30 s or at 10 % of memory, so without it the
 * data of many files arriving at once reached the disk only when each file was stored, and their final
 * fsyncs all waited on it together. 200 senders × 4 MiB, 3 interleaved runs (bench/RESULTS.md): Deno
 * 2.21-2.68 → 2.09-2.14 s, Bun 2.65-2.70 → 2.14-2.29 s; one 1 GiB file unchanged. Capping the flushes
 * running at once at 4 or 16 lost most of it on Bun: the files not flushed still wait at the end.
 * Off by default except on Linux, measured only there: on macOS both runtimes' fdatasync is an
 * F_FULLFSYNC, which empties the drive's whole cache, every MiB of every file.
 */
export const DEFAULT_FLUSH_AHEAD_BYTES: number = process.platform === "linux" ? 1 * MiB : 0;
const DEFAULTS = {
  onCollision: "rename" as CollisionPolicy,
  partialTtlMs: 24 * 60 * 60 * 1000,
  syncEveryBytes: DEFAULT_SYNC_EVERY_BYTES,
  flushAheadBytes: DEFAULT_FLUSH_AHEAD_BYTES,
  keepPageCache: false,
  syncMode: "batch" as SyncMode,
  minFreeBytes: 64 * MiB,
  maxFileSize: 0,
};
const STATE_DIR = ".ferry";
/** Drops start at a multiple of this: the largest page size there is (arm64 with 64 KiB pages). */
const DROP_ALIGN = 64 * 1024;
const MAX_COLLISIONS = 9999;
const REHASH_CHUNK = 4 * MiB;
const TAIL_SCAN_CHUNK = 64 * 1024;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** Closes the descriptors of an inbox that was dropped without {@linkcode Inbox.close}. */
const fdReaper = typeof FinalizationRegistry === "function"
  ? new FinalizationRegistry<Set<number>>((fds) => {
    for (const fd of fds) {
      try {
        fss.closeSync(fd);
      } catch {
        // already gone
      }
    }
  })
  : undefined;

/** Opening a folder for fsync: read-only, and never through a symlink in the last component. */
const DIR_OPEN_FLAGS = (fss.constants?.O_RDONLY ?? 0) | (fss.constants?.O_DIRECTORY ?? 0) |
  (fss.constants?.O_NOFOLLOW ?? 0);
/** How long a free-space reading is reused (minus the sizes accepted since) before statfs runs again. */
const FREE_SPACE_TTL_MS = 1000;
/** Directories kept open per inbox for their group-committed fsyncs. */
const MAX_DIR_HANDLES = 32;
/**
 * A partial created ahead of need in `.ferry/fresh/` by earlier versions (no longer: see
 * `openPartial()`); one left by a crash is deleted by `open()`.
 */
const FRESH_NAME = /^[0-9a-f]{32}\.fresh$/;
/** Relative directories remembered as checked (plain directories, no symlink) per inbox. */
const MAX_CHECKED_DIRS = 4096;

// Keys of uploads open in this process, as "<real inbox>\0<key>", shared by
// every Inbox on the same directory.
const busyKeys = new Set<string>();

/** A placement folder kept open for fsync; closed once dropped and no fsync uses it. */
interface DirHandle {
  fd: number;
  dev: number;
  ino: number;
  users: number;
  dropped: boolean;
}

/** Sidecar of a partial file: `.ferry/partial/<key>.json`. */
interface Sidecar {
  name: string;
  size: number;
  sha256: string;
  mtimeMs: number;
  /** Present (true) when `sha256` is a source key: a key is never taken for a hash. */
  digestAtEnd?: boolean;
  durableOffset: number;
  updatedAt: string;
}

/**
 * The inbox directory and ferry's state inside it.
 *
 * @example Receive one file
 * ```ts
 * import { Inbox } from "./inbox.ts";
 * import { createHash } from "node:crypto";
 * const bytes = new TextEncoder().encode("hello");
 * const inbox = await Inbox.open({ dir: "./inbox" });
 * const started = await inbox.begin({
 *   name: "hello.txt", size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex"),
 *   mtimeMs: 0, mime: "text/plain", sender: "192.0.2.1:50000", resume: true,
 * });
 * if (started.kind === "upload") {
 *   await started.upload.write(bytes, started.upload.offset);
 *   const receipt = await started.upload.finish(); // receipt.name === "hello.txt"
 * }
 * ```
 */
export class Inbox {
  /** Absolute path of the inbox directory. */
  readonly dir: string;
  readonly #realDir: string;
  readonly #opts: CheckedOptions;
  /** Makes finished files durable, several at once where it can. */
  readonly #groupSync: GroupSync;
  readonly #partialDir: string;
  /** Empty files created ahead of need, renamed into `#partialDir` when an upload begins. */
  readonly #freshDir: string;
  readonly #receiptsPath: string;
  readonly #messagesPath: string;
  #receipts: Receipt[] = [];
  /** Stored name → the latest receipt for it; older ones describe overwritten content. */
  #byStored = new Map<string, Receipt>();
  /** Requested name → receipts, newest last. */
  #byRequested = new Map<string, Receipt[]>();
  /** Serialises appends to the ndjson files. */
  #appendTail: Promise<unknown> = Promise.resolve();
  /** Per ndjson file, the batch of lines waiting for the next group-committed write and fsync. */
  #pendingAppends = new Map<string, { lines: string[]; done: Promise<void> }>();
  /** The ndjson files, kept open for appending (opened on first use, reopened after an error). */
  #appendFds = new Map<string, number>();
  /** Receipt lines written by {@linkcode #appendNow} so far, and the receipts fsync running, if any. */
  #receiptLines = 0;
  #receiptsSync?: { fd: number; upTo: number; done: Promise<void> };
  /** Names and receipt lines waiting to be made durable ({@linkcode close} waits for them). */
  #barriers = new Set<Promise<void>>();
  /** Directories kept open for their fsyncs, with the identity they had when opened. */
  #dirHandles = new Map<string, DirHandle>();
  /**
   * Relative directories ("a/b") whose every component was found to be a plain directory at the
   * last placement in them. Only {@linkcode begin}'s early check trusts this; placement walks again.
   */
  #checkedDirs = new Set<string>();
  /**
   * Every descriptor the two maps above hold, closed by {@linkcode close} or, for an inbox dropped
   * without it, when the inbox is collected. Raw descriptors, not FileHandles: Bun treats a
   * FileHandle collected while open as an error.
   */
  #fds = new Set<number>();
  /** Drops written stretches of partials from the page cache; undefined keeps them (`keepPageCache`). */
  readonly #dropCache?: DropCache;
  /** The last statfs reading and the declared bytes accepted since. */
  #free?: { bytes: number; at: number; reserved: number };

  private constructor(
    dir: string,
    realDir: string,
    opts: CheckedOptions,
  ) {
    this.dir = dir;
    this.#realDir = realDir;
    this.#opts = opts;
    this.#partialDir = path.join(dir, STATE_DIR, "partial");
    this.#groupSync = new GroupSync(
      opts.syncMode === "batch" ? opts.syncfs ?? syncFsFor(this.#partialDir) : undefined,
      opts.onSyncFallback,
    );
    this.#dropCache = opts.keepPageCache ? undefined : opts.dropCache ?? dropCacheFor(this.#partialDir);
    this.#freshDir = path.join(dir, STATE_DIR, "fresh");
    this.#receiptsPath = path.join(dir, STATE_DIR, "receipts.ndjson");
    this.#messagesPath = path.join(dir, STATE_DIR, "messages.ndjson");
    fdReaper?.register(this, this.#fds);
  }

  /**
   * How finished files have been made durable so far; `grouping` says whether files finishing
   * together share a `syncfs(2)` (`syncMode` `"batch"` where `syncFsFor()` allows it, until a syncfs fails).
   *
   * @example
   * ```ts ignore
   * const { grouping, groupSyncs, groupedFiles, fileSyncs } = inbox.syncStats;
   * ```
   */
  get syncStats(): GroupSyncStats & { grouping: boolean } {
    return { ...this.#groupSync.stats, grouping: this.#groupSync.grouping };
  }

  /**
   * Whether stretches of large uploads leave the page cache once on disk: false with `keepPageCache`, or
   * where they cannot or need not be dropped (not Linux; Deno without `--allow-ffi`; an inbox on tmpfs).
   *
   * @example
   * ```ts ignore
   * if (!inbox.dropsPageCache) console.log("received data stays in the page cache");
   * ```
   */
  get dropsPageCache(): boolean {
    return this.#dropCache !== undefined;
  }

  /**
   * Opens (creating if needed) an inbox: makes `.ferry/partial/`, deletes
   * stale partials and orphan temp files, and loads the receipts index,
   * dropping a line torn by a crash.
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox", onCollision: "reject" });
   * inbox.receipts().length; // files received so far
   * ```
   */
  static async open(options: InboxOptions): Promise<Inbox> {
    const opts = checkOptions(options);
    const dir = path.resolve(options.dir);
    try {
      await fs.mkdir(dir, { recursive: true });
      const realDir = await fs.realpath(dir);
      // One level at a time: a planted symlink here would redirect our own writes.
      const stateDir = path.join(dir, STATE_DIR);
      for (const p of [stateDir, path.join(stateDir, "partial"), path.join(stateDir, "fresh")]) {
        await fs.mkdir(p).catch((e) => {
          if (errno(e) !== "EEXIST") throw e;
        });
        const st = await fs.lstat(p);
        if (st.isSymbolicLink() || !st.isDirectory()) {
          throw new FerryError("IO_ERROR", `Cannot open inbox: ${p} is not a plain directory`);
        }
      }
      const inbox = new Inbox(dir, realDir, opts);
      await inbox.#sweep(true);
      await inbox.#loadReceipts();
      await dropTornTail(inbox.#messagesPath);
      return inbox;
    } catch (e) {
      throw ioError(`open inbox ${dir}`, e);
    }
  }

  /**
   * Every receipt recorded so far, oldest first.
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox" });
   * for (const r of inbox.receipts()) console.log(r.name, r.size);
   * ```
   */
  receipts(): readonly Receipt[] {
    return this.#receipts.slice();
  }

  /**
   * The latest receipt for a stored name: what is on disk under that name
   * now, if ferry put it there.
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox" });
   * inbox.receipt("photo (1).jpg")?.sha256;
   * ```
   */
  receipt(storedName: string): Receipt | undefined {
    return this.#byStored.get(storedName);
  }

  /**
   * The last `limit` messages from `.ferry/messages.ndjson`, oldest first,
   * read from the end of the file (lines that do not parse are skipped).
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox" });
   * for (const m of await inbox.recentMessages(20)) console.log(m.receivedAt, m.sender, m.text);
   * ```
   */
  async recentMessages(limit: number): Promise<StoredMessage[]> {
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new RangeError(`Cannot read messages: limit ${limit} is not a non-negative integer`);
    }
    let lines: string[];
    try {
      lines = await tailLines(this.#messagesPath, limit);
    } catch (e) {
      throw ioError("read messages", e);
    }
    const out: StoredMessage[] = [];
    for (const line of lines) {
      try {
        const m = JSON.parse(line) as Record<string, unknown>;
        if (typeof m.receivedAt === "string" && typeof m.sender === "string" && typeof m.text === "string") {
          out.push({ receivedAt: m.receivedAt, sender: m.sender, text: m.text });
        }
      } catch {
        // a torn or foreign line: skip it
      }
    }
    return out;
  }

  /**
   * Deletes partial files whose sidecar was last updated more than
   * `partialTtlMs` ago, and orphan files, skipping uploads open in this
   * process. Returns how many partials were deleted.
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox" });
   * setInterval(() => inbox.sweep(), 60 * 60 * 1000);
   * ```
   */
  sweep(): Promise<number> {
    return this.#sweep(false).catch((e) => {
      throw ioError("sweep partial files", e);
    });
  }

  /**
   * Appends one message as a JSON line `{receivedAt, sender, text}` to
   * `.ferry/messages.ndjson` and fsyncs it.
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox" });
   * const { receivedAt } = await inbox.appendMessage({ text: "hi", sender: "192.0.2.1:50000" });
   * ```
   */
  async appendMessage(m: { id?: number; text: string; sender: string }): Promise<{ receivedAt: string }> {
    if (typeof m?.text !== "string" || typeof m.sender !== "string") {
      throw new FerryError("BAD_HEADER", "Cannot store message: text and sender must be strings", {
        id: m?.id,
      });
    }
    const receivedAt = new Date().toISOString();
    const line = JSON.stringify({ receivedAt, sender: m.sender, text: m.text }) + "\n";
    try {
      await this.#append(this.#messagesPath, line);
    } catch (e) {
      throw ioError("store message", e);
    }
    return { receivedAt };
  }

  /**
   * Starts receiving a file. Validates the header, returns the original
   * receipt (marked `duplicate`) if this exact file is already stored, and
   * otherwise an {@linkcode Upload} positioned at 0 or at the durable offset
   * of a matching partial (when `header.resume`).
   *
   * Throws `FerryError`: `BAD_NAME`, `BAD_HEADER`, `FILE_TOO_LARGE`,
   * `NAME_EXISTS` (policy "reject"), `FILE_BUSY`, `INSUFFICIENT_STORAGE`,
   * `DISK_FULL`, `IO_ERROR`.
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox" });
   * const r = await inbox.begin({
   *   name: "a.txt", size: 0, sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
   *   mtimeMs: 0, mime: "text/plain", sender: "192.0.2.1:50000", resume: false,
   * });
   * if (r.kind === "upload") await r.upload.finish();
   * ```
   */
  async begin(header: FileHeader): Promise<BeginResult> {
    const h = checkHeader(header);
    const shownName = escapeForDisplay(h.name);
    const max = this.#opts.maxFileSize;
    if (max > 0 && h.size > max) {
      throw new FerryError(
        "FILE_TOO_LARGE",
        `Cannot accept "${shownName}": ${h.size} bytes exceeds the limit of ${max} bytes`,
      );
    }
    const key = partialKey(h);
    const lock = this.#realDir + "\0" + key;
    // Taken before any await so two connections cannot both pass the check.
    if (busyKeys.has(lock)) {
      throw new FerryError("FILE_BUSY", `Cannot accept "${shownName}": the same file is being received now`);
    }
    busyKeys.add(lock);
    let handle: PartialFile | undefined;
    let createdPartial = false;
    try {
      // With a digest at the end, the hash is not known yet: duplicates are found by finish().
      const dup = h.digestAtEnd ? undefined : this.#findDuplicate(h.name, h.sha256);
      if (dup) {
        busyKeys.delete(lock);
        return { kind: "duplicate", receipt: { ...dup, duplicate: true } };
      }
      // Early refusals; placement re-checks everything at commit time. A directory checked at an
      // earlier placement is not walked again here (placement walks it anyway).
      const slash = h.name.lastIndexOf("/");
      const relDir = slash === -1 ? "" : h.name.slice(0, slash);
      const parent = relDir === ""
        ? this.dir
        : this.#checkedDirs.has(relDir)
        ? path.join(this.dir, relDir)
        : this.#safeParent(h.name, false)?.path;
      if (this.#opts.onCollision === "reject" && parent !== undefined) {
        // With the digest at the end, an identical re-send must still get DUPLICATE from finish(): only
        // a stored file of another size is certain not to be one.
        const maybeDuplicate = h.digestAtEnd === true && this.#storedWithSize(h.name, h.size);
        if (!maybeDuplicate && lstatSyncOrUndefined(path.join(parent, path.basename(h.name)))) {
          throw new FerryError("NAME_EXISTS", `Cannot accept "${shownName}": a file with that name exists`);
        }
      }
      const partPath = path.join(this.#partialDir, key + ".part");
      const sidecarPath = path.join(this.#partialDir, key + ".json");
      let offset = 0;
      let hash = createHash("sha256");
      // Most files are new, and a partial created here exclusively did not exist, so neither does a
      // sidecar (one is written only next to its partial, and deleted before it): no lookup of it.
      // Synchronous: see openPartial() for why not off the main thread or ahead of need.
      handle = createPartialIfNew(partPath);
      createdPartial = handle !== undefined;
      if (!createdPartial) {
        const sidecarOnDisk = fss.existsSync(sidecarPath);
        if (h.resume && sidecarOnDisk) {
          const resumed = await tryResume(partPath, sidecarPath, h);
          if (resumed) {
            ({ handle, hash, offset } = resumed);
          }
        }
        // A sidecar left from an earlier partial that is not resumed must not outlive it: after a
        // crash it would claim bytes of the new partial durable before any were fsynced.
        if (sidecarOnDisk && offset === 0) fss.rmSync(sidecarPath, { force: true });
      }
      await this.#checkFreeSpace(h.size - offset, shownName);
      handle ??= openPartial(partPath, "w+");
      const upload = new Upload({
        header: h,
        handle,
        hash,
        offset,
        partPath,
        sidecarPath,
        sidecarOnDisk: offset > 0,
        release: () => busyKeys.delete(lock),
        commit: (temp, header, image, file) => this.#commit(temp, header, image, file),
        findDuplicate: (name, sha256) => Promise.resolve(this.#findDuplicate(name, sha256)),
        inspect: this.#opts.inspect,
        syncEveryBytes: this.#opts.syncEveryBytes,
        flushAheadBytes: this.#opts.flushAheadBytes,
        dropCache: this.#dropCache,
        durable: (file) => this.#groupSync.sync(file),
      });
      // A fresh upload has nothing durable yet: its sidecar is first written at a checkpoint or
      // suspend (a crash before that leaves a sidecar-less partial, which open() sweeps). Saves an
      // fsync per file.
      if (offset > 0) await writeSidecar(sidecarPath, sidecarFor(h, offset));
      return { kind: "upload", upload };
    } catch (e) {
      await handle?.close().catch(() => {});
      // Refused (e.g. DISK_FULL) after its partial was created: nothing of it stays behind.
      if (createdPartial) await rmForce(path.join(this.#partialDir, key + ".part")).catch(() => {});
      busyKeys.delete(lock);
      throw ioError(`accept "${shownName}"`, e);
    }
  }

  /** Places a verified temp file under its final name; called through {@linkcode Upload.finish}. */
  /**
   * Places the durable partial `temp` under its name and records its receipt. With `file` (the partial,
   * still open) and grouping on, the new name and the receipt line are made durable by one syncfs shared
   * with other files ({@linkcode GroupSync.barrier}); otherwise by an fsync of the folder and one of the
   * receipts file, each group-committed on its own.
   */
  async #commit(
    temp: string,
    header: FileHeader,
    image?: ReceiptImage,
    file?: PartialFile,
  ): Promise<Receipt> {
    const name = header.name;
    const shownName = escapeForDisplay(name);
    const checked = this.#safeParent(name, true);
    if (checked === undefined) throw new FerryError("INTERNAL", `Cannot place "${shownName}": no parent`);
    const parent = checked.path;
    const dirPart = name.includes("/") ? name.slice(0, name.lastIndexOf("/") + 1) : "";
    const policy = this.#opts.onCollision;
    let stored = name;
    if (policy === "overwrite") {
      const target = path.join(parent, path.basename(name));
      const st = lstatSyncOrUndefined(target);
      if (st?.isSymbolicLink()) {
        throw new FerryError("BAD_NAME", `Cannot place "${shownName}": the existing entry is a symlink`);
      }
      if (st?.isDirectory()) {
        throw new FerryError("NAME_EXISTS", `Cannot place "${shownName}": a directory has that name`);
      }
      fss.renameSync(temp, target);
    } else {
      const last = policy === "rename" ? MAX_COLLISIONS : 0;
      let placed = false;
      for (let n = 0; n <= last && !placed; n++) {
        const candidate = n === 0 ? name : collisionName(name, n);
        // collisionName only changes the base name, so the checked parent still holds.
        placed = await linkNoClobber(temp, path.join(parent, candidate.slice(dirPart.length)));
        if (placed) stored = candidate;
      }
      if (!placed) {
        throw new FerryError(
          "NAME_EXISTS",
          policy === "reject"
            ? `Cannot place "${shownName}": a file with that name exists`
            : `Cannot place "${shownName}": ${MAX_COLLISIONS} renamed copies exist already`,
        );
      }
      rmForceSync(temp); // already gone if the no-hard-link fallback renamed it
    }
    const receipt: Receipt = {
      name: stored,
      requestedName: name,
      size: header.size,
      sha256: header.sha256,
      mtimeMs: header.mtimeMs,
      mime: header.mime,
      sender: header.sender,
      receivedAt: new Date().toISOString(),
    };
    if (image) receipt.image = Object.freeze({ ...image });
    const line = JSON.stringify(receipt) + "\n";
    const fsyncParent = () => syncDir(parent, () => this.#fsyncDir(parent, checked.st));
    try {
      if (file && this.#groupSync.grouping) {
        const written = this.#appendNow(this.#receiptsPath, line);
        const durable = this.#groupSync.barrier(file.fd, file.serial, async () => {
          await fsyncParent();
          await this.#syncReceipts(written);
        });
        this.#barriers.add(durable);
        try {
          await durable;
        } finally {
          this.#barriers.delete(durable);
        }
      } else {
        await fsyncParent();
        await this.#append(this.#receiptsPath, line);
      }
    } catch (e) {
      // No receipt, no file: take back the name we just created, so a failure reported to the
      // sender leaves nothing new behind. (An overwrite has already replaced the old file.)
      if (policy !== "overwrite") await rmForce(path.join(parent, path.basename(stored)));
      throw e;
    }
    this.#index(receipt);
    return { ...receipt };
  }

  /** A receipt for `name` (requested or stored) that is current and has this size. */
  #storedWithSize(name: string, size: number): boolean {
    const candidates = [...(this.#byRequested.get(name) ?? []), this.#byStored.get(name)];
    return candidates.some((r) => r !== undefined && r.size === size && this.#byStored.get(r.name) === r);
  }

  #findDuplicate(name: string, sha256: string): Receipt | undefined {
    const candidates = [...(this.#byRequested.get(name) ?? [])];
    const byName = this.#byStored.get(name);
    if (byName) candidates.push(byName);
    for (let i = candidates.length - 1; i >= 0; i--) {
      const r = candidates[i];
      // Only the latest receipt for a stored name describes what is on disk now.
      if (r.sha256 !== sha256 || this.#byStored.get(r.name) !== r) continue;
      let parent: string | undefined;
      try {
        parent = this.#safeParent(r.name, false)?.path;
      } catch {
        continue;
      }
      if (parent === undefined) continue;
      const st = lstatSyncOrUndefined(path.join(parent, path.basename(r.name)));
      if (st?.isFile() && st.size === r.size) return r;
    }
    return undefined;
  }

  /**
   * Walks the parent directories of `relPath` one component at a time with
   * lstat, refusing symlinks and non-directories; with `create`, makes the
   * missing ones. Returns the parent's path, or undefined if it does not
   * exist and `create` is false.
   */
  #safeParent(relPath: string, create: boolean): { path: string; st?: fss.Stats } | undefined {
    // Synchronous: an lstat of a cached inode costs a few µs, an async one a thread-pool round trip.
    const parts = relPath.split("/").slice(0, -1);
    let cur = this.dir;
    let st: fss.Stats | undefined;
    for (const part of parts) {
      cur = path.join(cur, part);
      st = lstatSyncOrUndefined(cur);
      if (!st) {
        if (!create) return undefined;
        try {
          fss.mkdirSync(cur);
        } catch (e) {
          if (errno(e) !== "EEXIST") throw e;
        }
        st = fss.lstatSync(cur);
      }
      if (st.isSymbolicLink() || !st.isDirectory()) {
        this.#checkedDirs.clear();
        throw new FerryError(
          "BAD_NAME",
          `Cannot accept name "${escapeForDisplay(relPath)}": "${
            escapeForDisplay(part)
          }" exists in the inbox ` +
            `and is ${st.isSymbolicLink() ? "a symlink" : "not a directory"}`,
        );
      }
    }
    // No realpath() here: every component below the inbox was just checked with lstat to be a real
    // directory (not a symlink), and the final placement (link/rename) is re-checked at commit time.
    // realpath() cost ~8 readlink calls per file.
    if (parts.length > 0) {
      if (this.#checkedDirs.size >= MAX_CHECKED_DIRS) this.#checkedDirs.clear();
      this.#checkedDirs.add(parts.join("/"));
    }
    return { path: cur, st };
  }

  async #checkFreeSpace(needed: number, shownName: string): Promise<void> {
    // A recent reading, minus the declared sizes accepted since, is enough to accept a file; a refusal
    // is only ever based on a fresh statfs.
    const now = performance.now();
    const last = this.#free;
    if (
      last && now - last.at < FREE_SPACE_TTL_MS &&
      last.bytes - last.reserved - needed >= this.#opts.minFreeBytes
    ) {
      last.reserved += needed;
      return;
    }
    const statfs = (fs as { statfs?: typeof fs.statfs }).statfs;
    if (typeof statfs !== "function") return;
    let free: number;
    try {
      const st = await statfs(this.dir);
      free = Number(st.bavail) * Number(st.bsize);
    } catch {
      return; // not supported here: skip the check rather than refuse every file
    }
    if (!Number.isFinite(free)) return;
    this.#free = { bytes: free, at: now, reserved: 0 };
    if (free - needed < this.#opts.minFreeBytes) {
      throw new FerryError(
        "INSUFFICIENT_STORAGE",
        `Cannot accept "${shownName}": it needs ${needed} bytes, ${free} are free ` +
          `and ${this.#opts.minFreeBytes} must stay free`,
      );
    }
    this.#free.reserved += needed;
  }

  async #sweep(atOpen: boolean): Promise<number> {
    const now = Date.now();
    const ttl = this.#opts.partialTtlMs;
    const entries = await fs.readdir(this.#partialDir);
    const present = new Set(entries);
    const doomed = new Set<string>();
    if (atOpen) {
      // Created ahead of need by a process now gone.
      for (const entry of await fs.readdir(this.#freshDir)) {
        if (FRESH_NAME.test(entry)) await rmForce(path.join(this.#freshDir, entry));
      }
    }
    for (const entry of entries) {
      const key = keyOf(entry);
      if (key === undefined || busyKeys.has(this.#realDir + "\0" + key)) continue;
      const full = path.join(this.#partialDir, entry);
      if (entry.endsWith(".json")) {
        const sidecar = await readSidecar(full);
        let updated = sidecar ? Date.parse(sidecar.updatedAt) : NaN;
        if (!Number.isFinite(updated)) updated = (await lstatOrUndefined(full))?.mtimeMs ?? 0;
        // Without its partial (a crash between the two deletes of an older version) it is doomed too:
        // begin() relies on a sidecar never being there without its partial.
        if (!sidecar || now - updated >= ttl || !present.has(key + ".part")) doomed.add(key);
      } else if (entry.endsWith(".part") && !present.has(key + ".json")) {
        // A partial without a sidecar cannot be resumed: nothing says which bytes are durable.
        if (atOpen || now - ((await lstatOrUndefined(full))?.mtimeMs ?? 0) >= ttl) doomed.add(key);
      } else if (entry.endsWith(".tmp") && atOpen) {
        await rmForce(full); // a sidecar update cut short by a crash
      }
    }
    for (const key of doomed) {
      // Checked again right before deleting: a begin() may have resumed it during the awaits above.
      if (busyKeys.has(this.#realDir + "\0" + key)) continue;
      // Synchronous, in one turn: a begin() of the same key cannot start between the check and the
      // deletes (it would find the old partial, then lose it to an unlink landing afterwards).
      rmForceSync(path.join(this.#partialDir, key + ".json"));
      rmForceSync(path.join(this.#partialDir, key + ".json.tmp"));
      rmForceSync(path.join(this.#partialDir, key + ".part"));
    }
    return doomed.size;
  }

  async #loadReceipts(): Promise<void> {
    await dropTornTail(this.#receiptsPath);
    let text: string;
    try {
      text = await fs.readFile(this.#receiptsPath, "utf8");
    } catch (e) {
      if (errno(e) === "ENOENT") return;
      throw e;
    }
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        continue; // one bad line must not lose the rest of the index
      }
      const r = checkReceipt(parsed);
      if (r) this.#index(r);
    }
  }

  #index(r: Receipt): void {
    Object.freeze(r);
    this.#receipts.push(r);
    this.#byStored.set(r.name, r);
    const list = this.#byRequested.get(r.requestedName);
    if (list) list.push(r);
    else this.#byRequested.set(r.requestedName, [r]);
  }

  /**
   * Fsyncs a placement directory through a handle kept open for it. `st` is the directory's lstat from
   * the walk that just checked it; a handle opened on another inode (the directory was replaced) is
   * closed and the directory opened again.
   */
  async #fsyncDir(dir: string, st: fss.Stats | undefined): Promise<void> {
    let entry = this.#dirHandles.get(dir);
    if (entry && st && (entry.dev !== st.dev || entry.ino !== st.ino)) {
      this.#dropDirHandle(dir, entry);
      entry = undefined;
    }
    try {
      if (!entry) {
        const fd = await openFd(dir, DIR_OPEN_FLAGS);
        this.#fds.add(fd);
        try {
          const now = fss.fstatSync(fd);
          if (!now.isDirectory()) throw new FerryError("IO_ERROR", "Cannot sync the folder: not a directory");
          entry = { fd, dev: now.dev, ino: now.ino, users: 0, dropped: false };
        } catch (e) {
          this.#closeFd(fd);
          throw e;
        }
        this.#dirHandles.set(dir, entry);
        if (this.#dirHandles.size > MAX_DIR_HANDLES) {
          const [oldest, old] = this.#dirHandles.entries().next().value!;
          this.#dropDirHandle(oldest, old);
        }
      }
      entry.users++;
      try {
        await fsyncFd(entry.fd);
      } finally {
        entry.users--;
        if (entry.dropped && entry.users === 0) this.#closeFd(entry.fd);
      }
    } catch {
      // Some platforms (Windows) cannot open or fsync a directory; the rename/link is still atomic.
      if (entry) this.#dropDirHandle(dir, entry);
    }
  }

  /** Forgets a kept-open folder; it is closed once no fsync uses it. */
  #dropDirHandle(dir: string, entry: DirHandle): void {
    if (this.#dirHandles.get(dir) === entry) this.#dirHandles.delete(dir);
    if (entry.dropped) return;
    entry.dropped = true;
    if (entry.users === 0) this.#closeFd(entry.fd);
  }

  /**
   * Closes the files and folders the inbox keeps open (the ndjson indexes, placement folders), once
   * pending appends are done. The inbox stays usable: they are opened again when needed.
   *
   * @example
   * ```ts
   * import { Inbox } from "./inbox.ts";
   * const inbox = await Inbox.open({ dir: "./inbox" });
   * await inbox.close();
   * ```
   */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#barriers]);
    await this.#appendTail;
    for (const fd of this.#appendFds.values()) this.#closeFd(fd);
    this.#appendFds.clear();
    for (const [dir, entry] of [...this.#dirHandles]) this.#dropDirHandle(dir, entry);
  }

  #closeFd(fd: number): void {
    if (!this.#fds.delete(fd)) return;
    try {
      fss.closeSync(fd);
    } catch {
      // already gone
    }
  }

  /**
   * Makes the receipt line `written` durable by an fsync of the receipts file, shared: a line written
   * before a running fsync started waits for that one; its failure fails every line it covered (the
   * kernel reports an error to one fsync only, so a later one would wrongly succeed), and the file is
   * closed, to be opened again for later lines.
   */
  async #syncReceipts(written: { fd: number; line: number }): Promise<void> {
    for (;;) {
      const running = this.#receiptsSync;
      if (running?.fd === written.fd && running.upTo >= written.line) return await running.done;
      if (running) {
        await running.done.catch(() => {});
        continue;
      }
      if (this.#appendFds.get(this.#receiptsPath) !== written.fd) {
        // Closed after a failed write or fsync, which may have lost this line with it.
        throw new FerryError("IO_ERROR", "Cannot record the receipt: the receipts file failed");
      }
      const fd = written.fd;
      const sync: { fd: number; upTo: number; done: Promise<void> } = {
        fd,
        upTo: this.#receiptLines,
        done: fsyncFd(fd).catch((e) => {
          this.#dropAppendFd(this.#receiptsPath, fd);
          throw e;
        }).finally(() => {
          if (this.#receiptsSync === sync) this.#receiptsSync = undefined;
        }),
      };
      this.#receiptsSync = sync;
      return await sync.done;
    }
  }

  /**
   * Writes a receipt line at the end of the receipts file now, not durably (see {@linkcode #commit});
   * returns the kept-open descriptor it went through and the line's number, for
   * {@linkcode #syncReceipts}.
   */
  #appendNow(file: string, line: string): { fd: number; line: number } {
    const fd = this.#appendFd(file);
    try {
      writeAllSync(fd, new TextEncoder().encode(line));
      return { fd, line: ++this.#receiptLines };
    } catch (e) {
      this.#dropAppendFd(file, fd);
      throw e;
    }
  }

  /**
   * The ndjson file `file`, kept open for appending between writes: an open and a close less per batch.
   * Opened synchronously on first use (once per inbox, or after an error).
   */
  #appendFd(file: string): number {
    let fd = this.#appendFds.get(file);
    if (fd === undefined) {
      fd = fss.openSync(file, "a");
      this.#fds.add(fd);
      this.#appendFds.set(file, fd);
    }
    return fd;
  }

  /** After a failed write or fsync: closes `fd`, so the next write opens `file` again. */
  #dropAppendFd(file: string, fd: number): void {
    if (this.#appendFds.get(file) === fd) this.#appendFds.delete(file);
    this.#closeFd(fd);
  }

  /**
   * Appends a line to an ndjson file durably. Group commit: lines queued while an earlier batch is
   * being written and fsynced go out together in the next batch, sharing one write and one fsync; each
   * caller's promise settles only once its own line is fsynced.
   */
  #append(file: string, line: string): Promise<void> {
    let batch = this.#pendingAppends.get(file);
    if (!batch) {
      const lines: string[] = [];
      const done = deferredVoid();
      batch = { lines, done: done.promise };
      this.#pendingAppends.set(file, batch);
      const run = async () => {
        // From here on, new lines start the next batch.
        if (this.#pendingAppends.get(file)?.lines === lines) this.#pendingAppends.delete(file);
        const fd = this.#appendFd(file);
        try {
          // A few hundred bytes into the page cache: cheaper done here than as a thread-pool job.
          writeAllSync(fd, new TextEncoder().encode(lines.join("")));
          await fsyncFd(fd);
        } catch (e) {
          this.#dropAppendFd(file, fd);
          throw e;
        }
      };
      const p = this.#appendTail.then(run, run);
      p.then(done.resolve, done.reject);
      this.#appendTail = p.catch(() => {});
    }
    batch.lines.push(line);
    return batch.done;
  }
}

/** Writes all of `bytes` at the end of the append-mode file `fd`, continuing after short writes. */
function writeAllSync(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) {
    const n = fss.writeSync(fd, bytes, done, bytes.length - done);
    if (n <= 0) throw new FerryError("IO_ERROR", "Cannot write: the file accepted no bytes");
    done += n;
  }
}

function deferredVoid(): { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Internal construction parameters of an {@linkcode Upload}. */
interface UploadInit {
  header: FileHeader;
  handle: PartialFile;
  hash: Hash;
  offset: number;
  partPath: string;
  sidecarPath: string;
  /** A sidecar for this key may exist on disk (it must be deleted when the upload ends). */
  sidecarOnDisk: boolean;
  release: () => void;
  commit: (temp: string, header: FileHeader, image?: ReceiptImage, file?: PartialFile) => Promise<Receipt>;
  findDuplicate: (name: string, sha256: string) => Promise<Receipt | undefined>;
  inspect?: (tempPath: string, header: FileHeader) => Promise<ReceiptImage | undefined>;
  syncEveryBytes: number;
  flushAheadBytes: number;
  dropCache?: DropCache;
  /** Makes the finished partial durable (its fsync, or a share of a group's syncfs). */
  durable: (file: PartialFile) => Promise<void>;
}

/**
 * One file being received, created by {@linkcode Inbox.begin}. Calls are
 * queued, so a `suspend()` issued while a `write()` is in flight runs after it.
 *
 * @example Write, lose the connection, resume
 * ```ts
 * import { Inbox } from "./inbox.ts";
 * import { createHash } from "node:crypto";
 * const bytes = new TextEncoder().encode("hello world");
 * const header = {
 *   name: "h.txt", size: bytes.length, sha256: createHash("sha256").update(bytes).digest("hex"),
 *   mtimeMs: 0, mime: "text/plain", sender: "192.0.2.1:50000", resume: true,
 * };
 * const inbox = await Inbox.open({ dir: "./inbox" });
 * const first = await inbox.begin(header);
 * if (first.kind === "upload") {
 *   await first.upload.write(bytes.subarray(0, 5), 0);
 *   await first.upload.suspend();
 * }
 * const again = await inbox.begin(header);
 * if (again.kind === "upload") {
 *   const { offset } = again.upload; // 5
 *   await again.upload.write(bytes.subarray(offset), offset);
 *   await again.upload.finish();
 * }
 * ```
 */
export class Upload {
  /** Where the sender must continue: 0, or the durable offset of a resumed partial. */
  readonly offset: number;
  /** Declared size in bytes. */
  readonly size: number;
  /** The validated (NFC) requested name. */
  readonly name: string;
  readonly #commit: (
    temp: string,
    header: FileHeader,
    image?: ReceiptImage,
    file?: PartialFile,
  ) => Promise<Receipt>;
  readonly #findDuplicate: (name: string, sha256: string) => Promise<Receipt | undefined>;
  readonly #inspect?: (tempPath: string, header: FileHeader) => Promise<ReceiptImage | undefined>;
  readonly #header: FileHeader;
  readonly #handle: PartialFile;
  #hash: Hash;
  readonly #partPath: string;
  readonly #sidecarPath: string;
  #sidecarOnDisk: boolean;
  readonly #release: () => void;
  readonly #syncEveryBytes: number;
  readonly #flushAheadBytes: number;
  readonly #dropCache?: DropCache;
  /** Where the stretch of the partial not yet dropped from the page cache begins. */
  #cachedFrom = 0;
  /**
   * The drops from the page cache issued so far, one after another; never rejects. Apart from the
   * checkpoint slot, so a slow call delays no write; awaited before the partial's descriptor is
   * closed, since its number could be another file's after that.
   */
  #dropping: Promise<void> = Promise.resolve();
  readonly #durable: (file: PartialFile) => Promise<void>;
  #received: number;
  /** Written since the last checkpoint started. */
  #unsynced = 0;
  /** Written since the last checkpoint or flush started. */
  #unflushed = 0;
  /**
   * The checkpoint or flush running in the background, if any (one at a time). It syncs what was
   * written before it started while later frames keep arriving; the data path waits for it only when
   * the next checkpoint is due.
   */
  #checkpointing?: Promise<void>;
  /** Why a background checkpoint failed; the next write, finish or suspend fails with it. */
  #checkpointError?: FerryError;
  #closed = false;
  /** Finished or discarded: nothing on disk is this upload's any more. */
  #settled = false;
  #tail: Promise<unknown> = Promise.resolve();

  /** Internal: use {@linkcode Inbox.begin}. */
  constructor(init: UploadInit) {
    this.#commit = init.commit;
    this.#findDuplicate = init.findDuplicate;
    this.#inspect = init.inspect;
    this.#header = init.header;
    this.#handle = init.handle;
    this.#hash = init.hash;
    this.offset = init.offset;
    this.#received = init.offset;
    this.size = init.header.size;
    this.name = init.header.name;
    this.#partPath = init.partPath;
    this.#sidecarPath = init.sidecarPath;
    this.#sidecarOnDisk = init.sidecarOnDisk;
    // Releasing twice could drop the lock of a later upload of the same file: once only.
    let released = false;
    this.#release = () => {
      if (released) return;
      released = true;
      init.release();
    };
    this.#syncEveryBytes = init.syncEveryBytes;
    this.#flushAheadBytes = init.flushAheadBytes;
    this.#dropCache = init.dropCache;
    this.#durable = init.durable;
  }

  /** Bytes written so far, counting from 0 (so it includes a resumed offset). */
  get received(): number {
    return this.#received;
  }

  /**
   * Writes `bytes` at `offset`, which must equal {@linkcode received}
   * (`BAD_OFFSET` otherwise; nothing is written and the upload stays usable).
   * `bytes` may be a list of parts, written one after another from `offset`, never joined (e.g. a
   * DATA payload left in the pieces it arrived in).
   * Going past the declared size discards the upload with `SIZE_MISMATCH`;
   * a full disk discards it with `DISK_FULL`. The bytes are neither copied
   * nor kept: the caller may reuse the buffers once the promise settles.
   *
   * @example
   * ```ts ignore
   * await upload.write(chunk, upload.received);
   * ```
   */
  write(bytes: Uint8Array | readonly Uint8Array[], offset: number): Promise<void> {
    return this.#queue(async () => {
      this.#assertOpen();
      let length = 0;
      if (bytes instanceof Uint8Array) length = bytes.length;
      else if (Array.isArray(bytes) && bytes.every((b) => b instanceof Uint8Array)) {
        for (const part of bytes) length += part.length;
      } else throw new FerryError("INTERNAL", "Cannot write: not a Uint8Array");
      if (offset !== this.#received) {
        throw new FerryError(
          "BAD_OFFSET",
          `Cannot write "${this.#shown()}" at offset ${offset}: expected offset ${this.#received}`,
        );
      }
      if (this.#received + length > this.size) {
        await this.#discard();
        throw new FerryError(
          "SIZE_MISMATCH",
          `Cannot write "${this.#shown()}": ${this.#received + length} bytes exceeds the declared ` +
            `size ${this.size}`,
        );
      }
      if (this.#checkpointError !== undefined) await this.#throwIfCheckpointFailed();
      if (length === 0) return;
      // On Deno a large write runs off the main thread while this hashes (a small one, and any on Bun,
      // is done already: see PartialFile.write); a failed write rolls the hash back.
      const before = this.#hash.copy();
      const writing = this.#handle.write(bytes, this.#received);
      if (bytes instanceof Uint8Array) this.#hash.update(bytes);
      else for (const part of bytes) this.#hash.update(part);
      try {
        await writing;
      } catch (e) {
        this.#hash = before;
        const err = ioError(`write "${this.#shown()}"`, e);
        if (err.code === "DISK_FULL") await this.#discard();
        throw err;
      }
      this.#received += length;
      this.#unsynced += length;
      this.#unflushed += length;
      if (this.#unsynced >= this.#syncEveryBytes) {
        // One checkpoint at a time. Waiting here only when the previous one (or a flush) is still
        // running (the disk is slower than the link) keeps what is not yet durable under 2 × syncEvery.
        await this.#throwIfCheckpointFailed();
        this.#checkpoint();
      } else if (
        this.#flushAheadBytes > 0 && this.#unflushed >= this.#flushAheadBytes &&
        this.#checkpointing === undefined && this.#received < this.size
      ) {
        // Never waits: while one runs, the next starts at a later write, covering all written by then.
        // Not after the last byte: finish() fsyncs the file next anyway.
        this.#flushAhead();
      }
    });
  }

  /**
   * Verifies size and SHA-256, then stores the file under its final name and
   * records the receipt. On `SIZE_MISMATCH` or `HASH_MISMATCH` the partial is
   * deleted. Placement can also fail with `BAD_NAME` (a symlink appeared in
   * the path), `NAME_EXISTS` or `DISK_FULL`; the partial is deleted then too.
   *
   * `sha256` (lowercase hex) is the sender's hash of the whole file, given
   * here, and only here, for a `digestAtEnd` upload (`BAD_HEADER` if it is
   * missing, or given for an ordinary upload). If a file with the same
   * requested name and that hash is already stored, the partial is deleted
   * and the original receipt is returned, marked `duplicate`.
   *
   * `options.notAnImage`: the caller looked at the file's first bytes (an
   * image sniffer that decided) and they are not an image, so the
   * `inspect` hook, which would only reach the same verdict, is skipped.
   *
   * @example
   * ```ts ignore
   * const receipt = await upload.finish(); // receipt.name may be "photo (1).jpg"
   * ```
   */
  finish(sha256?: string, options?: { notAnImage?: boolean }): Promise<Receipt> {
    return this.#queue(async () => {
      this.#assertOpen();
      await this.#throwIfCheckpointFailed();
      const atEnd = this.#header.digestAtEnd === true;
      if (atEnd ? typeof sha256 !== "string" || !SHA256_HEX.test(sha256) : sha256 !== undefined) {
        await this.#discard();
        throw new FerryError(
          "BAD_HEADER",
          atEnd
            ? `Cannot store "${this.#shown()}": the SHA-256 must be given at the end (64 lowercase hex digits)`
            : `Cannot store "${this.#shown()}": its SHA-256 was declared in the header, not at the end`,
        );
      }
      if (this.#received !== this.size) {
        await this.#discard();
        throw new FerryError(
          "SIZE_MISMATCH",
          `Cannot store "${this.#shown()}": received ${this.#received} of ${this.size} bytes`,
        );
      }
      const declared = atEnd ? sha256! : this.#header.sha256;
      const digest = this.#hash.digest("hex");
      if (digest !== declared) {
        await this.#discard();
        throw new FerryError(
          "HASH_MISMATCH",
          `Cannot store "${this.#shown()}": SHA-256 is ${digest}, the sender declared ${declared}`,
        );
      }
      // From here on the header carries the verified hash (what the receipt records).
      const header = atEnd ? { ...this.#header, sha256: digest } : this.#header;
      if (atEnd) {
        let dup: Receipt | undefined;
        try {
          dup = await this.#findDuplicate(header.name, digest);
        } catch (e) {
          await this.#discard();
          throw ioError(`store "${this.#shown()}"`, e);
        }
        if (dup) {
          // Already stored under this name with this content: keep nothing new.
          await this.#discard();
          return { ...dup, duplicate: true };
        }
      }
      try {
        // A refusal (e.g. CORRUPT_IMAGE) lands in the catch below, which deletes the partial.
        const image = options?.notAnImage ? undefined : await this.#inspect?.(this.#partPath, header);
        // Without a time from the sender, a photo's EXIF DateTimeOriginal is the next best.
        const taken = image?.takenAt ? Date.parse(image.takenAt) : NaN;
        const mtimeMs = this.#header.mtimeMs > 0 ? this.#header.mtimeMs : taken > 0 ? taken : 0;
        if (mtimeMs > 0) {
          // futimens on the open file: a few µs, where the async call costs a thread-pool hop.
          fss.futimesSync(this.#handle.fd, new Date(), new Date(mtimeMs));
        }
        await this.#durable(this.#handle);
        this.#closed = true;
        // A file large enough to have had stretches dropped: the rest goes too, while the name is placed.
        if (this.#cachedFrom > 0) this.#dropWritten(this.size);
        let receipt: Receipt;
        try {
          // Deleted before the partial (as everywhere): a sidecar on disk always has its partial beside
          // it, which lets begin() skip looking for one. A file that arrived whole before its first
          // checkpoint never had one.
          if (this.#sidecarOnDisk) {
            rmForceSync(this.#sidecarPath);
            this.#sidecarOnDisk = false;
          }
          // Still open: its descriptor serves the syncfs that makes the name and receipt durable.
          receipt = await this.#commit(this.#partPath, header, image, this.#handle);
        } finally {
          await this.#dropping;
          // Stored and recorded, or failed: either way a failed close changes nothing for the sender.
          await this.#handle.close().catch(() => {});
        }
        this.#settled = true;
        this.#release();
        return receipt;
      } catch (e) {
        await this.#discard();
        throw ioError(`store "${this.#shown()}"`, e);
      }
    });
  }

  /**
   * Keeps what was received for a later resume: fsyncs it, records the
   * durable offset in the sidecar and releases the file. Does nothing if the
   * upload is already finished or discarded.
   *
   * @example
   * ```ts ignore
   * socket.on("close", () => upload.suspend());
   * ```
   */
  suspend(): Promise<void> {
    return this.#queue(async () => {
      if (this.#closed) return;
      await this.#throwIfCheckpointFailed();
      this.#closed = true;
      try {
        await this.#handle.datasync();
        this.#sidecarOnDisk = true;
        await writeSidecar(this.#sidecarPath, sidecarFor(this.#header, this.#received));
      } catch (e) {
        throw ioError(`keep partial "${this.#shown()}"`, e);
      } finally {
        await this.#dropping;
        await this.#handle.close().catch(() => {});
        this.#release();
      }
    });
  }

  /**
   * Deletes the partial file and its sidecar and releases the file.
   * Idempotent.
   *
   * @example
   * ```ts ignore
   * await upload.discard();
   * ```
   */
  discard(): Promise<void> {
    return this.#queue(() => this.#discard());
  }

  async #discard(): Promise<void> {
    // After a finish or an earlier discard the partial's name may already belong to a new upload.
    if (this.#settled) return;
    this.#settled = true;
    // A checkpoint still running would write its sidecar after the delete, or use a closed handle.
    await this.#checkpointing;
    await this.#dropping;
    if (!this.#closed) {
      this.#closed = true;
      await this.#handle.close().catch(() => {});
    }
    try {
      // The sidecar first: one never outlives its partial (see finish()).
      if (this.#sidecarOnDisk) await rmForce(this.#sidecarPath);
      await rmForce(this.#partPath);
    } finally {
      this.#release();
    }
  }

  /**
   * Starts a checkpoint in the background: fdatasync, then the sidecar records the bytes written
   * before it started as durable. Awaiting it in the data path stalled the socket for two fsyncs
   * every `syncEvery` bytes; now the next write waits only if this one (or a flush-ahead) is still
   * running when the next `syncEvery` bytes have arrived, and `finish`, `suspend` and `discard` wait
   * for it.
   */
  #checkpoint(): void {
    this.#unsynced = 0;
    this.#startSync(this.#received);
  }

  /**
   * Starts a flush-ahead in the background: an fdatasync that only gets the pages written so far to
   * disk early, recording nothing (the durable offset moves only at checkpoints). It takes the
   * checkpoint's slot, so it is awaited wherever a checkpoint is, and a failure fails the upload the
   * same way: the pages it could not write may be lost even if a later fsync works.
   */
  #flushAhead(): void {
    this.#startSync(undefined);
  }

  /** fdatasync in the background; then, given `durable`, the sidecar records that offset. */
  #startSync(durable: number | undefined): void {
    this.#unflushed = 0;
    const written = this.#received;
    this.#checkpointing = (async () => {
      try {
        await this.#handle.datasync();
        // Everything written before the fdatasync is clean now, so the page cache can let it go.
        this.#dropWritten(written);
        if (durable === undefined) return;
        this.#sidecarOnDisk = true;
        await writeSidecar(this.#sidecarPath, sidecarFor(this.#header, durable));
      } catch (e) {
        this.#checkpointError ??= ioError(`sync "${this.#shown()}"`, e);
      } finally {
        this.#checkpointing = undefined;
      }
    })();
  }

  /**
   * Queues the drop of the partial's bytes before `end`, all on disk, from the page cache (see
   * `InboxOptions.keepPageCache`) on {@linkcode #dropping}. Never fails: where the call fails, the
   * pages just stay cached.
   */
  #dropWritten(end: number): void {
    const drop = this.#dropCache;
    if (drop === undefined || end <= this.#cachedFrom) return;
    // From the start of the page (of any size up to 64 KiB) that the last stretch ended in: the kernel
    // drops only whole pages, and the bytes before are clean too.
    const from = Math.floor(this.#cachedFrom / DROP_ALIGN) * DROP_ALIGN;
    this.#cachedFrom = end;
    const fd = this.#handle.fd;
    this.#dropping = this.#dropping.then(async () => {
      try {
        await drop(fd, from, end - from);
      } catch {
        // The pages stay cached; nothing else depends on it.
      }
    });
  }

  /**
   * Resolves once no checkpoint is running, so the sidecar holds the latest durable offset.
   * Writes never wait for checkpoints; this is for callers (and tests) that want to observe one.
   *
   * @example
   * ```ts ignore
   * await upload.write(bytes, 0); // may start a checkpoint in the background
   * await upload.checkpointed();
   * ```
   */
  async checkpointed(): Promise<void> {
    await this.#checkpointing;
  }

  /** Waits for a background checkpoint; if one failed, deletes the partial and throws its error. */
  async #throwIfCheckpointFailed(): Promise<void> {
    await this.#checkpointing;
    const err = this.#checkpointError;
    if (err === undefined) return;
    // A failed fdatasync can lose written pages while a later one succeeds: nothing of this is kept.
    await this.#discard();
    throw err;
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new FerryError("INTERNAL", `Cannot use upload of "${this.#shown()}": it is already closed`);
    }
  }

  #shown(): string {
    return escapeForDisplay(this.name);
  }

  #queue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#tail.then(fn, fn);
    this.#tail = p.catch(() => {});
    return p;
  }
}

type CheckedOptions =
  & Required<Omit<InboxOptions, "dir" | "inspect" | "syncfs" | "onSyncFallback" | "dropCache">>
  & Pick<InboxOptions, "inspect" | "syncfs" | "onSyncFallback" | "dropCache">;

function checkOptions(o: InboxOptions): CheckedOptions {
  if (typeof o?.dir !== "string" || o.dir === "") {
    throw new FerryError("INTERNAL", "Cannot open inbox: dir must be a non-empty string");
  }
  const onCollision = o.onCollision ?? DEFAULTS.onCollision;
  if (!["rename", "overwrite", "reject"].includes(onCollision)) {
    throw new FerryError("INTERNAL", `Cannot open inbox: unknown collision policy ${String(onCollision)}`);
  }
  const num = (
    k: "partialTtlMs" | "syncEveryBytes" | "flushAheadBytes" | "minFreeBytes" | "maxFileSize",
  ): number => {
    const v = o[k] ?? DEFAULTS[k];
    if (typeof v !== "number" || !(v >= 0)) {
      throw new FerryError("INTERNAL", `Cannot open inbox: ${k} must be a non-negative number`);
    }
    return v;
  };
  const syncMode = o.syncMode ?? DEFAULTS.syncMode;
  if (syncMode !== "batch" && syncMode !== "file") {
    throw new FerryError("INTERNAL", `Cannot open inbox: unknown sync mode ${String(syncMode)}`);
  }
  if (o.syncfs !== undefined && typeof o.syncfs !== "function") {
    throw new FerryError("INTERNAL", "Cannot open inbox: syncfs must be a function");
  }
  if (o.dropCache !== undefined && typeof o.dropCache !== "function") {
    throw new FerryError("INTERNAL", "Cannot open inbox: dropCache must be a function");
  }
  if (o.keepPageCache !== undefined && typeof o.keepPageCache !== "boolean") {
    throw new FerryError("INTERNAL", "Cannot open inbox: keepPageCache must be a boolean");
  }
  if (o.inspect !== undefined && typeof o.inspect !== "function") {
    throw new FerryError("INTERNAL", "Cannot open inbox: inspect must be a function");
  }
  if (o.onSyncFallback !== undefined && typeof o.onSyncFallback !== "function") {
    throw new FerryError("INTERNAL", "Cannot open inbox: onSyncFallback must be a function");
  }
  return {
    onCollision,
    partialTtlMs: num("partialTtlMs"),
    syncEveryBytes: Math.max(1, num("syncEveryBytes")),
    flushAheadBytes: num("flushAheadBytes"),
    syncMode,
    syncfs: o.syncfs,
    onSyncFallback: o.onSyncFallback,
    keepPageCache: o.keepPageCache ?? DEFAULTS.keepPageCache,
    dropCache: o.dropCache,
    minFreeBytes: num("minFreeBytes"),
    maxFileSize: num("maxFileSize"),
    inspect: o.inspect,
  };
}

/** Validates a header from the network and returns a copy with the NFC name. */
function checkHeader(h: FileHeader): FileHeader {
  if (typeof h !== "object" || h === null) {
    throw new FerryError("BAD_HEADER", "Cannot accept file: no header");
  }
  const name = validateRelativePath(h.name);
  const bad = (what: string) =>
    new FerryError("BAD_HEADER", `Cannot accept "${escapeForDisplay(name)}": ${what}`);
  if (!Number.isSafeInteger(h.size) || h.size < 0) throw bad("size must be a non-negative safe integer");
  if (typeof h.sha256 !== "string" || !SHA256_HEX.test(h.sha256)) {
    throw bad("sha256 must be 64 lowercase hex digits");
  }
  if (typeof h.mtimeMs !== "number" || !Number.isFinite(h.mtimeMs) || h.mtimeMs < 0) {
    throw bad("mtimeMs must be a non-negative number");
  }
  if (typeof h.mime !== "string") throw bad("mime must be a string");
  if (typeof h.sender !== "string") throw bad("sender must be a string");
  return {
    name,
    size: h.size,
    sha256: h.sha256,
    mtimeMs: h.mtimeMs,
    mime: h.mime,
    sender: h.sender,
    resume: h.resume === true,
    digestAtEnd: h.digestAtEnd === true,
  };
}

function checkReceipt(v: unknown): Receipt | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const r = v as Record<string, unknown>;
  const strings = ["name", "requestedName", "sha256", "mime", "sender", "receivedAt"] as const;
  if (strings.some((k) => typeof r[k] !== "string")) return undefined;
  if (!Number.isSafeInteger(r.size) || typeof r.mtimeMs !== "number") return undefined;
  try {
    // The file is ours, but a receipt names a path we will lstat: keep it inside the inbox.
    validateRelativePath(r.name as string);
  } catch {
    return undefined;
  }
  return {
    name: r.name as string,
    requestedName: r.requestedName as string,
    size: r.size as number,
    sha256: r.sha256 as string,
    mtimeMs: r.mtimeMs as number,
    mime: r.mime as string,
    sender: r.sender as string,
    receivedAt: r.receivedAt as string,
    ...(checkImage(r.image) ? { image: checkImage(r.image) } : {}),
  };
}

function checkImage(v: unknown): ReceiptImage | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const i = v as Record<string, unknown>;
  if (typeof i.format !== "string" || !Number.isSafeInteger(i.width) || !Number.isSafeInteger(i.height)) {
    return undefined;
  }
  const image: ReceiptImage = { format: i.format, width: i.width as number, height: i.height as number };
  if (typeof i.takenAt === "string") image.takenAt = i.takenAt;
  return Object.freeze(image);
}

/**
 * sha256 hex of `name\0size\0sha256\0mtimeMs` (plus `\0digest-at-end` when `sha256` is a source
 * key, so a key never matches a hash): a changed file gets a new partial.
 */
function partialKey(h: FileHeader): string {
  const identity = `${h.name}\0${h.size}\0${h.sha256}\0${h.mtimeMs}` +
    (h.digestAtEnd ? "\0digest-at-end" : "");
  return createHash("sha256").update(identity).digest("hex");
}

function keyOf(entry: string): string | undefined {
  const m = /^([0-9a-f]{64})\.(part|json|json\.tmp)$/.exec(entry);
  return m ? m[1] : undefined;
}

function sidecarFor(h: FileHeader, durableOffset: number): Sidecar {
  return {
    name: h.name,
    size: h.size,
    sha256: h.sha256,
    mtimeMs: h.mtimeMs,
    ...(h.digestAtEnd ? { digestAtEnd: true } : {}),
    durableOffset,
    updatedAt: new Date().toISOString(),
  };
}

/** Writes the sidecar atomically: a torn sidecar would mean a wrong resume offset. */
async function writeSidecar(file: string, s: Sidecar): Promise<void> {
  const tmp = file + ".tmp";
  const fh = await fs.open(tmp, "w");
  try {
    await writeAll(fh, new TextEncoder().encode(JSON.stringify(s)), 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
}

async function readSidecar(file: string): Promise<Sidecar | undefined> {
  try {
    const s = JSON.parse(await fs.readFile(file, "utf8")) as Sidecar;
    if (typeof s !== "object" || s === null || !Number.isSafeInteger(s.durableOffset)) return undefined;
    return s;
  } catch {
    return undefined;
  }
}

/**
 * Reopens a matching partial at its durable offset: truncates anything past
 * it (those bytes were never fsynced) and rebuilds the hash state from disk.
 */
async function tryResume(
  partPath: string,
  sidecarPath: string,
  h: FileHeader,
): Promise<{ handle: PartialFile; hash: Hash; offset: number } | undefined> {
  const s = await readSidecar(sidecarPath);
  if (
    !s || s.name !== h.name || s.size !== h.size || s.sha256 !== h.sha256 || s.mtimeMs !== h.mtimeMs ||
    (s.digestAtEnd === true) !== (h.digestAtEnd === true) || s.durableOffset < 0 || s.durableOffset > h.size
  ) return undefined;
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(partPath, "r+");
  } catch (e) {
    if (errno(e) === "ENOENT") return undefined;
    throw e;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile() || st.size < s.durableOffset) {
      await handle.close();
      return undefined;
    }
    await handle.truncate(s.durableOffset);
    const hash = createHash("sha256");
    const buf = new Uint8Array(Math.min(REHASH_CHUNK, Math.max(1, s.durableOffset)));
    let pos = 0;
    while (pos < s.durableOffset) {
      const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, s.durableOffset - pos), pos);
      if (bytesRead === 0) {
        await handle.close();
        return undefined;
      }
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    return { handle: handlePartial(handle), hash, offset: s.durableOffset };
  } catch (e) {
    await handle.close().catch(() => {});
    throw e;
  }
}

/** Creates `partPath` with `O_EXCL`; undefined if it exists already. */
function createPartialIfNew(partPath: string): PartialFile | undefined {
  try {
    return openPartial(partPath, "wx+");
  } catch (e) {
    if (errno(e) === "EEXIST") return undefined;
    throw e;
  }
}

/** `link(2)` never replaces an existing entry; returns false on EEXIST. */
async function linkNoClobber(from: string, to: string): Promise<boolean> {
  try {
    fss.linkSync(from, to); // a metadata update of a cached directory: cheaper than a thread-pool hop
    return true;
  } catch (e) {
    const code = errno(e);
    if (code === "EEXIST") return false;
    if (!["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"].includes(code ?? "")) throw e;
  }
  // No hard links on this filesystem: reserve the name with O_EXCL (which
  // never follows a symlink), then atomically replace our empty placeholder.
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(to, "wx");
  } catch (e) {
    if (errno(e) === "EEXIST") return false;
    throw e;
  }
  await fh.close();
  await fs.rename(from, to);
  return true;
}

/** The last `limit` complete lines of a file (none if it does not exist), oldest first. */
async function tailLines(file: string, limit: number): Promise<string[]> {
  if (limit === 0) return [];
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, "r");
  } catch (e) {
    if (errno(e) === "ENOENT") return [];
    throw e;
  }
  try {
    const chunks: Uint8Array[] = [];
    let end = (await fh.stat()).size;
    let newlines = 0;
    // Read backwards until limit + 1 newlines are in hand (the extra one bounds the first line).
    while (end > 0 && newlines <= limit) {
      const start = Math.max(0, end - TAIL_SCAN_CHUNK);
      const buf = new Uint8Array(end - start);
      const { bytesRead } = await fh.read(buf, 0, buf.length, start);
      const got = buf.subarray(0, bytesRead);
      for (let i = got.indexOf(0x0a); i !== -1; i = got.indexOf(0x0a, i + 1)) newlines++;
      chunks.unshift(got);
      end = start;
    }
    const text = new TextDecoder().decode(joinBytes(chunks, chunks.reduce((n, c) => n + c.length, 0)));
    return text.split("\n").filter((l) => l.trim() !== "").slice(-limit);
  } finally {
    await fh.close();
  }
}

/** Drops a last line torn by a crash, so the next append starts on a fresh line. */
async function dropTornTail(file: string): Promise<void> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, "r+");
  } catch (e) {
    if (errno(e) === "ENOENT") return;
    throw e;
  }
  try {
    const size = (await fh.stat()).size;
    if (size === 0) return;
    const buf = new Uint8Array(TAIL_SCAN_CHUNK);
    let end = size;
    let first = true;
    while (end > 0) {
      const start = Math.max(0, end - buf.length);
      const { bytesRead } = await fh.read(buf, 0, end - start, start);
      const nl = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (first && nl === bytesRead - 1) return; // ends with a newline: intact
      first = false;
      if (nl !== -1) {
        await fh.truncate(start + nl + 1);
        await fh.sync();
        return;
      }
      end = start;
    }
    await fh.truncate(0);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Fsyncs a directory. Group commit: callers arriving while a fsync of the same directory runs share
 * the next one (which starts after it, so it covers every entry they made before calling).
 */
function syncDir(dir: string, fsyncNow: () => Promise<void>): Promise<void> {
  let state = dirSyncs.get(dir);
  if (!state) {
    state = { running: undefined, next: undefined };
    dirSyncs.set(dir, state);
  }
  const s = state;
  if (s.next) return s.next;
  const start = (): Promise<void> => {
    s.next = undefined;
    const p = fsyncNow().finally(() => {
      if (s.running === p) s.running = undefined;
      if (!s.running && !s.next && dirSyncs.get(dir) === s) dirSyncs.delete(dir);
    });
    s.running = p;
    return p;
  };
  if (!s.running) return start();
  const next = s.running.then(start);
  s.next = next;
  return next;
}

const dirSyncs = new Map<string, { running?: Promise<void>; next?: Promise<void> }>();

async function lstatOrUndefined(p: string) {
  try {
    return await fs.lstat(p);
  } catch (e) {
    if (errno(e) === "ENOENT" || errno(e) === "ENOTDIR") return undefined;
    throw e;
  }
}

function openFd(p: string, flags: string | number): Promise<number> {
  return new Promise((resolve, reject) => fss.open(p, flags, 0o666, (e, fd) => e ? reject(e) : resolve(fd)));
}

function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fss.fsync(fd, (e) => e ? reject(e) : resolve()));
}

function lstatSyncOrUndefined(p: string): fss.Stats | undefined {
  try {
    // No exception object for the common "not there" answer.
    return fss.lstatSync(p, { throwIfNoEntry: false });
  } catch (e) {
    if (errno(e) === "ENOENT" || errno(e) === "ENOTDIR") return undefined;
    throw e;
  }
}

function rmForceSync(p: string): void {
  try {
    fss.unlinkSync(p);
  } catch (e) {
    if (errno(e) !== "ENOENT") throw e;
  }
}

async function rmForce(p: string): Promise<void> {
  try {
    await fs.unlink(p);
  } catch (e) {
    if (errno(e) !== "ENOENT") throw e;
  }
}

function errno(e: unknown): string | undefined {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" ? code : undefined;
}

/** Passes a FerryError through; maps a full disk to DISK_FULL and anything else to IO_ERROR. */
function ioError(action: string, e: unknown): FerryError {
  if (e instanceof FerryError) return e;
  const code = errno(e);
  const detail = e instanceof Error ? e.message : String(e);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new FerryError("DISK_FULL", `Cannot ${action}: no space left on the device`, { cause: e });
  }
  return new FerryError("IO_ERROR", `Cannot ${action}: ${detail}`, { cause: e });
}
