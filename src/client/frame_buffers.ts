/**
 * Reusable read buffers for outgoing DATA frames.
 *
 * A fresh buffer per 256 KiB chunk costs its zeroing and a page fault per 4 KiB page on first
 * touch, in the sender and again in the thread that reads the file into it: measured on 2 vCPUs,
 * 17–30 % of a sender's CPU (perf, 1 GiB over loopback). A buffer is refilled only once the
 * transport reports every byte of it handed to the OS ({@linkcode Connection.bytesFlushed}); a
 * transport that does not report that gets a fresh buffer every time.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { Connection } from "../runtime/transport.ts";

/** Buffers one connection keeps in flight for reuse: the transport's queue plus the socket's, and read-ahead. */
const RING_LIMIT = 8;
/**
 * Flushed buffers kept for the next connection of this process: 4 MiB of 256 KiB frames, which a
 * process that has sent files keeps for as long as it runs.
 */
const IDLE_LIMIT = 16;
/** Flushed buffers no connection holds, all of one size (the most recent ring's). */
const idle: Uint8Array[] = [];

/**
 * The frame buffers of one connection, oldest use first.
 *
 * @example
 * ```ts ignore
 * const buffers = new FrameBuffers(conn, DATA_HEADER_SIZE + 256 * 1024);
 * const buffer = buffers.take(); // read file bytes into it after the header room, then:
 * const sending = channel.sendDataFrame(id, offset, buffer);
 * buffers.sent(buffer); // at once: the frame's end is the connection's bytesQueued now
 * await sending;
 * buffers.retire(); // the connection is done: flushed buffers go to the next one
 * ```
 */
export class FrameBuffers {
  /** Buffers written to the connection, each with the stream offset its frame ends at. */
  #ring: Array<{ buffer: Uint8Array; until: number }> = [];
  #conn: Connection;
  /** Bytes per buffer. */
  readonly size: number;

  constructor(conn: Connection, size: number) {
    this.#conn = conn;
    this.size = size;
  }

  /** A buffer of `size` bytes that no transport holds; its old content is garbage. */
  take(): Uint8Array {
    const oldest = this.#ring[0];
    if (oldest && oldest.until <= (this.#conn.bytesFlushed ?? -1)) {
      this.#ring.shift();
      return oldest.buffer;
    }
    if (idle.length > 0 && idle[idle.length - 1].length === this.size) return idle.pop()!;
    // Not zeroed: only bytes read from the file are ever sent from it.
    return Buffer.allocUnsafeSlow(this.size);
  }

  /** `buffer` was just written to the connection: its frame ends at the current `bytesQueued`. */
  sent(buffer: Uint8Array): void {
    const until = this.#conn.bytesQueued;
    if (until === undefined || this.#conn.bytesFlushed === undefined) return;
    this.#ring.push({ buffer, until });
    // Bounded: a transport holding many buffers makes fresh ones, not a growing ring.
    if (this.#ring.length > RING_LIMIT) this.#ring.shift();
  }

  /** A buffer taken but never written (its chunk was not sent): free at once. Once per buffer. */
  giveBack(buffer: Uint8Array): void {
    if (this.#ring.some((entry) => entry.buffer === buffer)) return;
    this.#ring.unshift({ buffer, until: 0 });
  }

  /** The connection is done: its flushed buffers go to the process's idle list, the rest are dropped. */
  retire(): void {
    const flushed = this.#conn.bytesFlushed ?? -1;
    if (idle.length > 0 && idle[0].length !== this.size) idle.length = 0;
    for (const { buffer, until } of this.#ring) {
      if (until <= flushed && idle.length < IDLE_LIMIT) idle.push(buffer);
    }
    this.#ring = [];
  }
}
