/**
 * Reusable read buffers for outgoing DATA frames.
 *
 * A fresh buffer per 256 KiB chunk costs its zeroing and a page fault per 4 KiB page on first
 * touch, in the sender and again in the thread that reads the file into it: measured on 2 vCPUs,
 * 17–30 % of a sender's CPU (perf, 1 GiB over loopback). A buffer is refilled only once the
 * transport reports every byte of it handed to the OS ({@linkcode Connection.bytesFlushed}); a
 * transport that does not report that gets a fresh buffer every time.
 *
 * Many connections in one process (the load simulator, bench (c), an application sending to many
 * servers) share a budget of {@linkcode PROCESS_BUDGET} buffers: past it, a connection takes a flushed
 * buffer from another connection's ring, or waits up to {@linkcode BUDGET_WAIT_MS} for one, instead of
 * each growing its own set. The kernel's socket buffers hold far more per connection than a frame, so
 * the links stay busy, while fresh memory is costly: 200 connections in one process (bench (c)) each
 * kept 2-3 buffers in flight, 130-180 MiB touched once, 33-36k page faults and about a fifth of the
 * sender's CPU on a VM where a fault costs 12-20 µs. With the budget, 3 interleaved runs: page faults
 * 15k (Deno) and 21k (Bun), sender peak RSS 95 and 115 MiB against 167-180, wall 2.54-2.77 s against
 * 2.78-2.98 s (Deno) and 2.77-3.37 s against 3.15-3.55 s (Bun).
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
 * Buffers alive in this process before a connection borrows or waits instead of allocating: 16 MiB
 * of 256 KiB frames, eight connections' full rings.
 */
export const PROCESS_BUDGET = 64;
/**
 * The longest a connection waits for a flushed buffer once the budget is used up; then it allocates
 * anyway, so a buffer never given back (a connection that failed mid-send) costs memory, not a stall.
 */
export const BUDGET_WAIT_MS = 100;
/** Buffers allocated and not yet dropped, counted against {@linkcode PROCESS_BUDGET}. */
let allocated = 0;
/** Every connection's buffers, to borrow a flushed one from when the budget is used up. */
const live = new Set<FrameBuffers>();
/** Connections waiting for a flushed buffer, woken by {@linkcode FrameBuffers.progress}. */
const waiters: Array<() => void> = [];

/**
 * The frame buffers of one connection, oldest use first.
 *
 * @example
 * ```ts ignore
 * const buffers = new FrameBuffers(conn, DATA_HEADER_SIZE + 256 * 1024);
 * const buffer = await buffers.take(); // read file bytes into it after the header room, then:
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
  /** After {@linkcode retire}: buffers sent or given back later are dropped, not kept. */
  #retired = false;
  /** Bytes per buffer. */
  readonly size: number;

  constructor(conn: Connection, size: number) {
    this.#conn = conn;
    this.size = size;
    live.add(this);
  }

  /**
   * Some connection of this process finished sending something (its transport took more bytes), so a
   * buffer may have been flushed: connections waiting for one look again.
   */
  static progress(): void {
    // One at a time, oldest first: each frame sent frees about one buffer, and waking every waiter
    // to scan every connection's ring cost more CPU than the buffers saved.
    waiters.shift()?.();
  }

  /**
   * A buffer of `size` bytes that no transport holds; its old content is garbage. Waits only when the
   * process's budget is used up and no connection has a flushed buffer to spare (see the module doc).
   */
  async take(): Promise<Uint8Array> {
    const deadline = performance.now() + BUDGET_WAIT_MS;
    for (;;) {
      const own = this.#takeFlushed();
      if (own) return own;
      if (idle.length > 0 && idle[idle.length - 1].length === this.size) return idle.pop()!;
      if (allocated < PROCESS_BUDGET) break;
      const borrowed = this.#borrow();
      if (borrowed) return borrowed;
      const left = deadline - performance.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          const i = waiters.indexOf(wake);
          if (i >= 0) waiters.splice(i, 1);
          resolve();
        }, left);
        waiters.push(wake);
      });
    }
    allocated++;
    // Not zeroed: only bytes read from the file are ever sent from it.
    return Buffer.allocUnsafeSlow(this.size);
  }

  /** The oldest buffer of this connection's ring, if its transport has flushed it. */
  #takeFlushed(): Uint8Array | undefined {
    const oldest = this.#ring[0];
    if (oldest && oldest.until <= (this.#conn.bytesFlushed ?? -1)) {
      this.#ring.shift();
      return oldest.buffer;
    }
    return undefined;
  }

  /** A flushed buffer of this size from another connection's ring. */
  #borrow(): Uint8Array | undefined {
    for (const other of live) {
      if (other === this || other.size !== this.size) continue;
      const buffer = other.#takeFlushed();
      if (buffer) return buffer;
    }
    return undefined;
  }

  /** `buffer` was just written to the connection: its frame ends at the current `bytesQueued`. */
  sent(buffer: Uint8Array): void {
    const until = this.#conn.bytesQueued;
    // Never reused: the transport cannot say when it lets go of it, or the connection is retired
    // (a send still finishing after the connection failed).
    if (until === undefined || this.#conn.bytesFlushed === undefined || this.#retired) {
      allocated--;
      return;
    }
    this.#ring.push({ buffer, until });
    // Bounded: a transport holding many buffers makes fresh ones, not a growing ring.
    if (this.#ring.length > RING_LIMIT) {
      this.#ring.shift();
      allocated--;
    }
  }

  /** A buffer taken but never written (its chunk was not sent): free at once. Once per buffer. */
  giveBack(buffer: Uint8Array): void {
    if (this.#ring.some((entry) => entry.buffer === buffer)) return;
    if (this.#retired) {
      allocated--;
      return;
    }
    this.#ring.unshift({ buffer, until: 0 });
  }

  /** The connection is done: its flushed buffers go to the process's idle list, the rest are dropped. */
  retire(): void {
    this.#retired = true;
    live.delete(this);
    const flushed = this.#conn.bytesFlushed ?? -1;
    if (idle.length > 0 && idle[0].length !== this.size) {
      allocated -= idle.length;
      idle.length = 0;
    }
    for (const { buffer, until } of this.#ring) {
      if (until <= flushed && idle.length < IDLE_LIMIT) idle.push(buffer);
      else allocated--;
    }
    this.#ring = [];
    FrameBuffers.progress(); // the idle buffers may serve a connection waiting for one
  }
}
