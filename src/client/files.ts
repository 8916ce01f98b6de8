import { Buffer } from "node:buffer";
import { createHash, type Hash } from "node:crypto";
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, statSync } from "node:fs";
import { type FileHandle, open, readdir, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { FerryError } from "../errors.ts";
import { DATA_HEADER_SIZE } from "../protocol/messages.ts";

/** One local file and the relative name it is sent under. */
export interface SendItem {
  /** Local path. */
  path: string;
  /** Name on the receiver, `/`-separated. Defaults to the file's base name. */
  name?: string;
}

/** A file ready to offer: its identity as the receiver will check it. */
export interface LocalFile {
  path: string;
  name: string;
  size: number;
  /** Modification time in ms, rounded down. */
  mtimeMs: number;
  /** Device and inode: with the path, size and mtime they make the source key ({@linkcode sourceKey}). */
  dev: number;
  ino: number;
  /**
   * SHA-256 of the content, when it is known before sending: a hash pass ({@linkcode describeFile}) or
   * a small file read once ({@linkcode readWholeFile}). Unset for a file streamed with its digest at
   * the end.
   */
  sha256?: Uint8Array;
  /** The whole content of a small file read once: it is sent from this same buffer. */
  data?: Uint8Array;
  /** `data` with room for the DATA frame header in front, to send the file as one frame buffer. */
  frame?: Uint8Array;
  /**
   * The reusable buffer `frame` is the start of, when `data` was read into one
   * ({@linkcode readWholeFile} with a size limit): give it back with {@linkcode reuseWholeFileBuffer}
   * once no socket holds it.
   */
  pooled?: Uint8Array;
}

/**
 * Buffers of small files already sent, kept for the next small file that fits. A fresh buffer per
 * file cost its zeroing and a page fault per 4 KiB page: measured on 2 vCPUs with 2,000 files of
 * 64 KiB, about a quarter of the sender's CPU.
 */
const wholeFileBuffers: Uint8Array[] = [];
/** Bytes kept at most: 64 buffers of the default 256 KiB limit, more than a window of 32 files holds. */
const WHOLE_FILE_BUFFERS_KEPT_BYTES = 16 * 1024 * 1024;
let wholeFileBytesKept = 0;
/** Kept buffers hold files in steps of 64 KiB, so files of similar sizes share them. */
const WHOLE_FILE_BUFFER_STEP = 64 * 1024;

/**
 * Gives back a {@linkcode LocalFile.pooled} buffer for the next {@linkcode readWholeFile}: only once
 * every byte of it was handed to the OS, since it will be overwritten.
 */
export function reuseWholeFileBuffer(buffer: Uint8Array): void {
  if (wholeFileBytesKept + buffer.length > WHOLE_FILE_BUFFERS_KEPT_BYTES) return;
  wholeFileBuffers.push(buffer);
  wholeFileBytesKept += buffer.length;
}

/** Domain separation of the source key: never equal to the SHA-256 of any content one would send. */
const SOURCE_KEY_CONTEXT = "ferry-source-key-v1";

/** Read size for hashing and sending: large, so the hot path makes few calls. */
export const READ_CHUNK = 1024 * 1024;

/**
 * Expands files and folders into a flat list. A folder `photos` yields
 * `photos/a.jpg`, `photos/2024/b.jpg`, … Symlinks inside folders are skipped
 * (reported through `onSkip`), so a send never leaves the chosen tree.
 *
 * @example
 * ```ts
 * import { expandItems } from "./files.ts";
 * const items = await expandItems(["photo.jpg", "album/"]);
 * ```
 */
export async function expandItems(
  inputs: ReadonlyArray<string | SendItem>,
  onSkip?: (path: string, reason: string) => void,
): Promise<Array<Required<SendItem>>> {
  const out: Array<Required<SendItem>> = [];
  for (const input of inputs) {
    const item = typeof input === "string" ? { path: input } : input;
    let info;
    try {
      info = await stat(item.path);
    } catch (e) {
      throw new FerryError("IO_ERROR", `Cannot read ${item.path}: ${(e as Error).message}`, { cause: e });
    }
    const name = item.name ?? basename(resolve(item.path));
    if (info.isFile()) out.push({ path: item.path, name });
    else if (info.isDirectory()) await walk(item.path, name, out, onSkip);
    else throw new FerryError("IO_ERROR", `Cannot send ${item.path}: not a regular file or folder`);
  }
  return out;
}

async function walk(
  dir: string,
  prefix: string,
  out: Array<Required<SendItem>>,
  onSkip?: (path: string, reason: string) => void,
): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const path = join(dir, entry.name);
    const name = `${prefix}/${entry.name}`;
    if (entry.isSymbolicLink()) onSkip?.(path, "symbolic link");
    else if (entry.isDirectory()) await walk(path, name, out, onSkip);
    else if (entry.isFile()) out.push({ path, name });
    else onSkip?.(path, "not a regular file");
  }
}

/**
 * Stats a file, without reading it.
 *
 * @example
 * ```ts
 * import { statFile } from "./files.ts";
 * const file = await statFile({ path: "big.iso", name: "big.iso" });
 * file.size; file.sha256; // undefined: not read
 * ```
 */
export async function statFile(item: Required<SendItem>): Promise<LocalFile> {
  // Synchronous: a few µs per file, where the async call is a thread-pool round trip (2,000 files
  // are all stat'ed before the first byte is sent).
  const info = statSync(item.path);
  if (!info.isFile()) throw new FerryError("IO_ERROR", `Cannot send ${item.path}: not a regular file`);
  return await Promise.resolve(identity(item, info));
}

function identity(
  item: Required<SendItem>,
  info: { size: number; mtimeMs: number; dev: number; ino: number },
): LocalFile {
  return {
    path: item.path,
    name: item.name,
    size: info.size,
    mtimeMs: Math.max(0, Math.floor(info.mtimeMs)),
    dev: info.dev,
    ino: info.ino,
  };
}

/**
 * Reads a (small) file once into memory and hashes it: the buffer is what gets
 * sent, so the file is never read twice and the hash always matches the bytes.
 *
 * @example
 * ```ts
 * import { readWholeFile } from "./files.ts";
 * const file = await readWholeFile({ path: "note.txt", name: "note.txt" });
 * file.data!.length === file.size; // true
 * ```
 */
export function readWholeFile(item: Required<SendItem>, maxSize = Infinity): Promise<LocalFile> {
  // Synchronous calls: for a file of at most a chunk they take microseconds, where each async call
  // costs a thread-pool round trip (open, fstat, read, close: most of the sender's time per small file).
  try {
    // O_NONBLOCK: a path swapped for a FIFO since the stat must not block the event loop at open.
    const fd = openSync(item.path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
    let info;
    try {
      info = fstatSync(fd);
      if (!info.isFile()) throw new FerryError("IO_ERROR", `Cannot send ${item.path}: not a regular file`);
      if (info.size <= maxSize) {
        // Room for the DATA frame header in front (the file leaves as one buffer), and one byte more
        // than the size: a file that grew since the stat is noticed. Not zeroed: only bytes read are
        // used. With a size limit, a kept buffer (see wholeFileBuffers).
        const end = DATA_HEADER_SIZE + info.size + 1;
        const pooled = Number.isFinite(maxSize)
          ? takeWholeFileBuffer(end, DATA_HEADER_SIZE + maxSize + 1)
          : undefined;
        const buffer: Uint8Array = pooled ?? Buffer.allocUnsafeSlow(end);
        let got = 0;
        for (;;) {
          const at = DATA_HEADER_SIZE + got;
          const bytesRead = readSync(fd, buffer, at, end - at, got);
          if (bytesRead === 0) break;
          got += bytesRead;
          if (got === info.size + 1) break;
        }
        if (got !== info.size) {
          throw new FerryError("IO_ERROR", `Cannot send ${item.path}: it changed while being read`);
        }
        const data = buffer.subarray(DATA_HEADER_SIZE, DATA_HEADER_SIZE + got);
        return Promise.resolve({
          ...identity(item, info),
          data,
          frame: buffer.subarray(0, DATA_HEADER_SIZE + got),
          pooled,
          sha256: new Uint8Array(createHash("sha256").update(data).digest()),
        });
      }
    } finally {
      closeSync(fd);
    }
    // It grew past the limit since it was stat'ed: hashed in a pass like any large file, not read whole.
    return describeFile(item);
  } catch (e) {
    return Promise.reject(e);
  }
}

/** A kept buffer of at least `need` bytes, else a new one: `need` rounded up to a step, at most `max`. */
function takeWholeFileBuffer(need: number, max: number): Uint8Array {
  for (let i = wholeFileBuffers.length - 1; i >= 0; i--) {
    if (wholeFileBuffers[i].length >= need) {
      const [kept] = wholeFileBuffers.splice(i, 1);
      wholeFileBytesKept -= kept.length;
      return kept;
    }
  }
  // The file's bytes rounded up to a step, plus the header room and the extra byte: 64 KiB files fit
  // in 64 KiB + 10 bytes, not 128 KiB.
  const room = DATA_HEADER_SIZE + 1;
  const size = Math.min(
    max,
    Math.ceil((need - room) / WHOLE_FILE_BUFFER_STEP) * WHOLE_FILE_BUFFER_STEP + room,
  );
  return Buffer.allocUnsafeSlow(Math.max(need, size));
}

/**
 * The source key of a file streamed with its digest at the end: SHA-256 over
 * a context string, the absolute path, device, inode, size and modification
 * time. It goes where the SHA-256 would, so the receiver can recognise the
 * partial of an unchanged file after a reconnect or a restart of the sender.
 *
 * @example
 * ```ts
 * import { sourceKey, statFile } from "./files.ts";
 * const key = sourceKey(await statFile({ path: "big.iso", name: "big.iso" })); // 32 bytes
 * ```
 */
export function sourceKey(file: LocalFile): Uint8Array {
  const fields = [SOURCE_KEY_CONTEXT, resolve(file.path), file.dev, file.ino, file.size, file.mtimeMs];
  return new Uint8Array(createHash("sha256").update(fields.join("\0")).digest());
}

/**
 * Hashes `[0, end)` of an open file into `hash` (large reads, the next one
 * overlapping the hashing of the current one). Throws if the file is shorter.
 */
export async function hashRange(handle: FileHandle, end: number, hash: Hash, path: string): Promise<void> {
  if (end === 0) return;
  let buffer = new Uint8Array(Math.min(READ_CHUNK, end));
  let spare = new Uint8Array(buffer.length);
  let position = 0;
  let reading = handle.read(buffer, 0, buffer.length, 0);
  while (position < end) {
    const { bytesRead } = await reading;
    if (bytesRead === 0) throw new FerryError("IO_ERROR", `Cannot send ${path}: it shrank while being read`);
    const chunk = buffer.subarray(0, Math.min(bytesRead, end - position));
    position += chunk.length;
    if (position < end) reading = handle.read(spare, 0, Math.min(spare.length, end - position), position);
    hash.update(chunk);
    [buffer, spare] = [spare, buffer];
  }
}

/**
 * Stats and hashes a file (SHA-256 over large reads): the hash pass of `--hash-first`.
 *
 * @example
 * ```ts
 * import { describeFile } from "./files.ts";
 * const file = await describeFile({ path: "photo.jpg", name: "photo.jpg" });
 * file.size; file.sha256; // 32 bytes
 * ```
 */
export async function describeFile(item: Required<SendItem>): Promise<LocalFile> {
  const hash = createHash("sha256");
  const handle = await open(item.path, "r");
  try {
    // Two buffers: the next chunk is read (off the main thread) while this one is hashed.
    let buffer = new Uint8Array(READ_CHUNK);
    let spare = new Uint8Array(READ_CHUNK);
    let position = 0;
    let reading = handle.read(buffer, 0, buffer.length, 0);
    for (;;) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      position += bytesRead;
      reading = handle.read(spare, 0, spare.length, position);
      hash.update(buffer.subarray(0, bytesRead));
      [buffer, spare] = [spare, buffer];
    }
    const after = await handle.stat();
    if (after.size !== position || after.mtimeMs !== (await stat(item.path)).mtimeMs) {
      throw new FerryError("IO_ERROR", `Cannot send ${item.path}: it changed while being read`);
    }
    return { ...identity(item, after), sha256: new Uint8Array(hash.digest()) };
  } finally {
    await handle.close();
  }
}

/** True if the file on disk no longer matches what was offered (size or mtime). */
export async function fileChanged(file: LocalFile): Promise<boolean> {
  try {
    const info = await stat(file.path);
    return info.size !== file.size || Math.floor(info.mtimeMs) !== file.mtimeMs;
  } catch {
    return true;
  }
}
