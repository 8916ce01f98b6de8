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
 * 2.78-2.98 s (Deno) and 2.77-3.37 s against 3.15-3.55 s (Bun). The budget's buffers come from slabs of
 * 2 MiB pages where the system allows ({@linkcode SlabPool}): 12,300-12,700 page faults against 15,500 (Deno).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { SlabPool } from "../runtime/slab_pool.ts";
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
 * anyway. That bounds the stall when every buffer is pinned (peers that stopped reading, a count
 * that leaked); it does not avoid it.
 */
export const BUDGET_WAIT_MS = 100;
/**
 * While connections wait, how often the rings are looked at again. A flush is seen by no one as it
 * happens (transports only count it), so besides {@linkcode FrameBuffers.progress} a short timer
 * looks; one scan of every ring per tick, whatever the number of waiters.
 */
const POLL_MS = 1;
/**
 * The budget's buffers come from a pool of huge-page slabs, one per buffer size (`src/runtime/slab_pool.ts`):
 * faulted in once, in 2 MiB pages. A buffer dropped while its transport may still hold it stays out of the
 * pool for good; past the pool, buffers are allocated as before.
 */
const pools = new Map<number, SlabPool>();
/** Buffers allocated and not yet dropped, counted against {@linkcode PROCESS_BUDGET}. */
let allocated = 0;
/** Every connection's buffers, to borrow a flushed one from when the budget is used up. */
const live = new Set<FrameBuffers>();
/** Connections waiting for a buffer, oldest first. */
const waiters: Array<{ buffers: FrameBuffers; deadline: number; resolve: (buffer: Uint8Array) => void }> = [];
let pollTimer: ReturnType<typeof setTimeout> | undefined;

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
   * Some connection of this process finished sending something, so a buffer may have been flushed or
   * freed: connections waiting for one get what there is now (the poll timer catches the rest).
   */
  static progress(): void {
    if (waiters.length > 0) FrameBuffers.#serveWaiters();
  }

  /** Buffers counted against the process budget now (for tests and diagnostics). */
  static get inUse(): number {
    return allocated;
  }

  /**
   * A buffer of `size` bytes that no transport holds; its old content is garbage. Waits only when the
   * process's budget is used up and no connection has a flushed buffer to spare (see the module doc).
   */
  take(): Promise<Uint8Array> {
    // A retired connection (its sender is finishing after a failure) never waits.
    const ready = this.#takeNow() ?? (this.#retired ? this.#allocate() : undefined);
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve) => {
      waiters.push({ buffers: this, deadline: performance.now() + BUDGET_WAIT_MS, resolve });
      pollTimer ??= setTimeout(FrameBuffers.#serveWaiters, POLL_MS);
    });
  }

  /** A buffer at once, if there is one to reuse or the budget has room; never waits. */
  #takeNow(): Uint8Array | undefined {
    const own = this.#takeFlushed();
    if (own) return own;
    if (idle.length > 0 && idle[idle.length - 1].length === this.size) return idle.pop()!;
    if (allocated < PROCESS_BUDGET) return this.#allocate();
    return this.#borrow();
  }

  #allocate(): Uint8Array {
    allocated++;
    let pool = pools.get(this.size);
    if (!pool) {
      pools.set(this.size, pool = new SlabPool(this.size, 8 * 1024 * 1024, PROCESS_BUDGET * this.size));
    }
    // Not zeroed: only bytes read from the file are ever sent from it.
    return pool.take() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** `buffer` is dropped; back to its pool if no transport holds it (`flushed`), else lost to it. */
  static #drop(buffer: Uint8Array, flushed: boolean): void {
    if (flushed) {
      const pool = pools.get(buffer.length);
      if (pool?.owns(buffer)) pool.give(buffer);
    }
    FrameBuffers.#release(1);
  }

  /**
   * Serves waiting connections in order while buffers can be found, allocates for those waiting past
   * their deadline, and looks again after {@linkcode POLL_MS} while any still wait.
   */
  static #serveWaiters(): void {
    if (pollTimer !== undefined) {
      clearTimeout(pollTimer);
      pollTimer = undefined;
    }
    // In order: the first that finds nothing means no ring has a flushed buffer of its size.
    while (waiters.length > 0) {
      const buffer = waiters[0].buffers.#takeNow();
      if (!buffer) break;
      waiters.shift()!.resolve(buffer);
    }
    const now = performance.now();
    for (let i = 0; i < waiters.length;) {
      if (waiters[i].deadline > now) i++;
      else {
        const w = waiters.splice(i, 1)[0];
        w.resolve(w.buffers.#allocate());
      }
    }
    if (waiters.length > 0) pollTimer = setTimeout(FrameBuffers.#serveWaiters, POLL_MS);
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
      FrameBuffers.#drop(buffer, false);
      return;
    }
    this.#ring.push({ buffer, until });
    // Bounded: a transport holding many buffers makes fresh ones, not a growing ring.
    if (this.#ring.length > RING_LIMIT) {
      const oldest = this.#ring.shift()!;
      FrameBuffers.#drop(oldest.buffer, oldest.until <= (this.#conn.bytesFlushed ?? -1));
    }
  }

  /** `n` buffers dropped: the budget has room again for connections waiting. */
  static #release(n: number): void {
    allocated -= n;
    FrameBuffers.progress();
  }

  /** A buffer taken but never written (its chunk was not sent): free at once. Once per buffer. */
  giveBack(buffer: Uint8Array): void {
    if (this.#ring.some((entry) => entry.buffer === buffer)) return;
    if (this.#retired) {
      FrameBuffers.#drop(buffer, true);
      return;
    }
    this.#ring.unshift({ buffer, until: 0 });
    FrameBuffers.progress();
  }

  /** The connection is done: its flushed buffers go to the process's idle list, the rest are dropped. */
  retire(): void {
    this.#retired = true;
    live.delete(this);
    const flushed = this.#conn.bytesFlushed ?? -1;
    const dropped: Array<[Uint8Array, boolean]> = [];
    if (idle.length > 0 && idle[0].length !== this.size) {
      for (const buffer of idle) dropped.push([buffer, true]);
      idle.length = 0;
    }
    for (const { buffer, until } of this.#ring) {
      if (until <= flushed && idle.length < IDLE_LIMIT) idle.push(buffer);
      else dropped.push([buffer, until <= flushed]);
    }
    this.#ring = [];
    // The idle buffers, and room in the budget, may serve connections waiting for one.
    for (const [buffer, isFlushed] of dropped) FrameBuffers.#drop(buffer, isFlushed);
    if (dropped.length === 0) FrameBuffers.progress();
  }
}
