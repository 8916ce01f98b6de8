/**
 * Partial files being received, written the cheapest way for the runtime we
 * are on, and `writeAll` for small whole-buffer writes.
 *
 * Measured earlier (2,048 writes of 256 KiB in two parts to one file, CPU ms,
 * Deno 2.9.6 / Bun 1.4.5 on 2 vCPUs, asynchronous calls):
 *
 * | way                                  | Deno | Bun |
 * | ------------------------------------ | ---: | --: |
 * | one `write` of a whole 256 KiB buffer |  175 | 217 |
 * | `FileHandle.writev` of the two parts  |  612 | 217 |
 * | two `write`s, one after the other     |  250 | 280 |
 * | two `write`s at once                  |  220 | 340 |
 *
 * So Deno writes the parts of a large frame with one positional `write` each,
 * all at once; Bun writes every frame synchronously, its parts in one
 * `writevSync` (see {@linkcode SYNC_WRITE_MAX} for why).
 *
 * @module
 */
import * as fs from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { FerryError } from "../errors.ts";

const onBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

/** Writes all of `bytes` at `position`, continuing after short writes. */
export async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, position + done);
    if (bytesWritten <= 0) throw new FerryError("IO_ERROR", "Cannot write: the file accepted no bytes");
    done += bytesWritten;
  }
}

/**
 * A partial file being received: positional writes, fsync, fdatasync, close. A raw descriptor, not
 * a `FileHandle`: Deno's node:fs `FileHandle` duplicates and closes the descriptor around calls (an
 * `fcntl` and a `close` each) and makes every call a thread-pool hop; on both runtimes the raw
 * descriptor with synchronous small writes cost less CPU per small file (bench (b)).
 */
export interface PartialFile {
  /** The descriptor, for synchronous calls such as `futimesSync`. */
  readonly fd: number;
  /** Counts up in the order partials were opened in this process (see `GroupSync`). */
  readonly serial: number;
  /** Writes `bytes` (a buffer, or parts one after another) at `position`. */
  write(bytes: Uint8Array | readonly Uint8Array[], position: number): Promise<void>;
  /** fsync(2). */
  sync(): Promise<void>;
  /** fdatasync(2). */
  datasync(): Promise<void>;
  /** Closes the file; later calls do nothing. */
  close(): Promise<void>;
}

/**
 * Writes up to this many bytes run synchronously: a 64 KiB pwrite into the page cache takes about
 * 20 µs, less than the main thread spends handing it to the thread pool and taking the answer back.
 * On Deno, larger writes (the 256 KiB frames of a big file) stay asynchronous, overlapping the hashing
 * of the same bytes. On Bun every frame up to the default max frame size (1 MiB) is written
 * synchronously: an asynchronous write keeps its socket chunk alive until the pool thread is done,
 * and with many uploads the allocator hands those pages back to the OS and faults fresh ones in for
 * the next reads (the server's main thread spent most of its time in page faults). Measured on
 * 2 vCPUs, interleaved runs: 200 senders × 4 MiB, server CPU 2.6–2.9 s against 5.7–5.8 s and wall
 * 4.0–4.3 s against 5.7–5.8 s; one 1 GiB file, 2.4–2.5 s against 2.9–3.1 s. Larger frames (a raised
 * `--max-frame-size`) stay asynchronous so one write cannot hold the event loop for long.
 */
const SYNC_WRITE_MAX = onBun ? 1024 * 1024 : 128 * 1024;

/**
 * Creates or opens a partial file (`"w+"`, `"wx+"` or `"r+"`) synchronously. Creating an inode takes
 * 100-300 µs of kernel time on ext4 wherever it runs; done here it needs no thread-pool hop, and it
 * never holds a directory lock that the main thread's own renames and links then spin on (which is
 * what creating partials ahead of need in a pool directory cost: measured per runtime in bench (b)).
 */
export function openPartial(file: string, flags: "w+" | "wx+" | "r+"): PartialFile {
  return new FdPartial(fs.openSync(file, flags, 0o666));
}

/**
 * Wraps an open `FileHandle` as a {@linkcode PartialFile} (it is closed through it); writes go to its
 * descriptor as for {@linkcode openPartial}.
 */
export function handlePartial(fh: FileHandle): PartialFile {
  return {
    fd: fh.fd,
    serial: nextSerial++,
    write: (bytes, position) => writeAt(fh.fd, bytes instanceof Uint8Array ? [bytes] : bytes, position),
    sync: () => fh.sync(),
    datasync: () => fh.datasync(),
    close: () => fh.close(),
  };
}

/**
 * Writes `parts` one after another at `position` of the file `fd`: synchronously up to
 * {@linkcode SYNC_WRITE_MAX} bytes (Bun: the parts in one `writevSync`), else one asynchronous
 * positional write per part, all at once. Continues after short writes.
 */
async function writeAt(fd: number, parts: readonly Uint8Array[], position: number): Promise<void> {
  let length = 0;
  for (const part of parts) length += part.length;
  if (length > SYNC_WRITE_MAX) {
    const writes: Promise<void>[] = [];
    for (const part of parts) {
      writes.push(writeAsyncAt(fd, part, position));
      position += part.length;
    }
    // Every write settled before this returns, failed or not: the caller may reuse the parts then.
    const results = await Promise.allSettled(writes);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return;
  }
  if (onBun && parts.length > 1) {
    let rest = parts.filter((p) => p.length > 0);
    while (rest.length > 0) {
      const n = fs.writevSync(fd, rest as Uint8Array[], position);
      if (n <= 0) throw new FerryError("IO_ERROR", "Cannot write: the file accepted no bytes");
      position += n;
      let skip = n;
      let i = 0;
      while (i < rest.length && skip >= rest[i].length) skip -= rest[i++].length;
      rest = rest.slice(i);
      if (skip > 0) rest[0] = rest[0].subarray(skip);
    }
    return;
  }
  for (const part of parts) {
    for (let done = 0; done < part.length;) {
      const n = fs.writeSync(fd, part, done, part.length - done, position + done);
      if (n <= 0) throw new FerryError("IO_ERROR", "Cannot write: the file accepted no bytes");
      done += n;
    }
    position += part.length;
  }
}

/** One asynchronous positional write of all of `bytes`. */
async function writeAsyncAt(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.write(fd, bytes, done, bytes.length - done, position + done, (e, n) => e ? reject(e) : resolve(n))
    );
    if (n <= 0) throw new FerryError("IO_ERROR", "Cannot write: the file accepted no bytes");
    done += n;
  }
}

/** Serial of the next partial opened. */
let nextSerial = 0;

/** A partial file on a raw descriptor. */
class FdPartial implements PartialFile {
  readonly fd: number;
  readonly serial = nextSerial++;
  #closed = false;
  constructor(fd: number) {
    this.fd = fd;
  }
  write(bytes: Uint8Array | readonly Uint8Array[], position: number): Promise<void> {
    return writeAt(this.fd, bytes instanceof Uint8Array ? [bytes] : bytes, position);
  }
  sync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fsync(this.fd, (e) => e ? reject(e) : resolve()));
  }
  datasync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (e) => e ? reject(e) : resolve()));
  }
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    try {
      fs.closeSync(this.fd);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }
}
