/**
 * The transport on Deno's own sockets (`Deno.listen` / `Deno.connect`),
 * without the `node:net` compatibility layer. TLS is delegated to
 * {@linkcode nodeNetRuntime}: certificate pinning needs the peer certificate,
 * which `Deno.connectTls` does not expose.
 *
 * Nothing here runs at import time, so the module loads on Bun too.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { FerryError } from "../errors.ts";
import { joinBytes } from "../framing/frame.ts";
import { nodeNetRuntime } from "./node_net.ts";
import { SlabPool } from "./slab_pool.ts";
import type { Connection, Listener, Runtime } from "./transport.ts";

/** Largest read. Large reads keep per-op overhead low on bulk data. */
const MAX_READ = 256 * 1024;
/** First and smallest read: an idle connection's pending read holds only this much. */
const MIN_READ = 16 * 1024;
/** Queued parts smaller than this are joined into one buffer (up to this size): one write op for many small frames. */
const COALESCE_LIMIT = 64 * 1024;
/**
 * Small frames of at most this many bytes in all, queued just before a large one, are copied in front of
 * it so both leave in one send. Deno's sockets have no writev, and on loopback each send also runs the
 * receiver's TCP input and wakes it: sending 2,000 files of 64 KiB took 5,357 sends (a FILE header and an
 * END apart from each DATA frame) where node:net on Bun made 2,095.
 */
const PREFIX_JOIN_MAX = 4 * 1024;
/** Largest frame copied that way (a small file's DATA frame); larger ones, a big file's chunks, go alone. */
const JOIN_FRAME_MAX = 128 * 1024 + 64;
/** Longest a close() waits for the last few queued small frames to be written. */
const CLOSE_LINGER_MS = 1_000;
/**
 * Queued but unwritten bytes above which `write()` waits until the queue is back under it. A DATA
 * frame of 256 KiB plus its header is above it on its own, so its `write()` resolves once the OS has
 * taken it: the kernel's socket buffer does the buffering, and every frame queued here is a buffer
 * the sender cannot reuse yet (with 1 MiB, a process sending 50 files at once used 12 % more CPU).
 */
const WRITE_HIGH_WATER = 256 * 1024;
/**
 * Read buffers free for reuse, shared by all connections: handed back by the reader
 * ({@linkcode Connection.release}), or kept after a small read was copied out. Shared and
 * bounded, so idle connections hold none and many busy ones do not each keep a few.
 */
const spares: ArrayBuffer[] = [];
/**
 * At most 512 spares: enough for every read of 200 busy connections, so a server that has been that busy
 * keeps up to about 50 MiB of 256 KiB buffers (128 MiB at the very most). Every new buffer is fresh memory,
 * and the first touch of a page costs about 20 µs on the 2-vCPU VMs we measure on: with 64 spares, 200
 * senders × 4 MiB cost the server 27,500-28,000 page faults and 2.6-2.9 s of CPU; with 512, 21,700-24,900
 * and 2.2-2.3 s (wall 2.97-3.42 → 2.65-3.15 s, 3 interleaved runs). With 8, 1,240 new read buffers were
 * allocated per 800 MiB; with 64, 850.
 */
const MAX_SPARES = 512;
/**
 * Reads of {@linkcode MAX_READ} bytes go into a pool of up to 128 MiB in 8 MiB slabs that the kernel may back
 * with 2 MiB pages (`src/runtime/slab_pool.ts`). Each connection in full flow keeps one such read pending and
 * one or two more held until its frames are whole, so 200 senders × 4 MiB (bench (c)) had 316 of them out at
 * once: 79 MiB faulted in 4 KiB at a time, 62 % of the server's 36,000 page faults. From the pool, 3
 * interleaved runs: 14,000-15,000 faults against 28,000-30,000, server CPU 2.33-2.49 s against 2.49-2.72 s.
 */
const readPool = new SlabPool(MAX_READ, 8 * 1024 * 1024, 128 * 1024 * 1024);
/**
 * Read buffers of the shared pool handed out now: each is held by a reader (a `Channel`) until it
 * hands the chunk back. For tests and diagnostics: once every connection has ended it is back to what
 * it was before.
 *
 * @example
 * ```ts ignore
 * const before = readPoolInUse();
 * // … serve connections until they have all ended …
 * console.assert(readPoolInUse() === before);
 * ```
 */
export function readPoolInUse(): number {
  return readPool.inUse;
}

/** Pause after an accept error such as EMFILE, so the loop does not spin. */
const ACCEPT_RETRY_MS = 50;

/** Errors that mean "the peer went away", which reads report as end of stream. */
function isBenignClose(e: unknown): boolean {
  const D = Deno.errors;
  return e instanceof D.ConnectionReset || e instanceof D.BrokenPipe || e instanceof D.BadResource ||
    e instanceof D.Interrupted || e instanceof D.NotConnected;
}

function stripV4Mapped(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/** Gives Deno's error the errno-style `code` the node adapter's errors carry (the CLI maps it to an exit code). */
function withCode(e: unknown): unknown {
  if (!(e instanceof Error) || (e as { code?: string }).code) return e;
  const D = Deno.errors;
  const code = e instanceof D.AddrInUse
    ? "EADDRINUSE"
    : e instanceof D.PermissionDenied
    ? "EACCES"
    : e instanceof D.ConnectionRefused
    ? "ECONNREFUSED"
    : e instanceof D.AddrNotAvailable
    ? "EADDRNOTAVAIL"
    : undefined;
  if (code) Object.defineProperty(e, "code", { value: code });
  return e;
}

class DenoConnection implements Connection {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly closed: Promise<void>;
  bytesRead = 0;
  bytesWritten = 0;
  #conn: Deno.TcpConn;
  /** Current read size: grows while reads fill the buffer, shrinks when they come back nearly empty. */
  #readSize = MIN_READ;
  #readEnded = false;
  #writeEnded = false;
  #isClosed = false;
  #resolveClosed!: () => void;
  #pending: Uint8Array[] = [];
  /** Where a large frame and the small ones around it are joined (see PREFIX_JOIN_MAX). */
  #scratch?: Uint8Array;
  #flushing: Promise<void> | undefined;
  #drainWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  #queued = 0;
  #writeError: unknown;
  /** A flush of the queued small frames is scheduled for the end of this turn. */
  #flushArmed = false;

  readonly #flushSoon = (): void => {
    this.#flushArmed = false;
    if (this.#pending.length > 0 && !this.#isClosed) this.#flushing ??= this.#flush();
  };

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    const addr = conn.remoteAddr as Deno.NetAddr;
    this.remoteAddress = stripV4Mapped(addr.hostname);
    this.remotePort = addr.port;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    try {
      conn.setNoDelay(true);
      conn.setKeepAlive(true);
    } catch {
      // Already reset by the peer: the first read reports it.
    }
  }

  get bytesQueued(): number {
    return this.bytesWritten + this.#queued;
  }
  /** `Deno.Conn.write` has copied what it reports written: those buffers are free. */
  get bytesFlushed(): number {
    return this.bytesWritten;
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#readEnded || this.#isClosed) return null;
    // A fresh buffer unless one came back: the decoder keeps views of what we return.
    const buffer = this.#buffer(this.#readSize);
    let n: number | null;
    try {
      n = await this.#conn.read(buffer);
    } catch (e) {
      if (this.#isClosed || isBenignClose(e)) n = null;
      else {
        this.release(buffer);
        throw e;
      }
    }
    if (n === null) {
      this.release(buffer);
      this.#readEnded = true;
      this.#closeIfDone();
      return null;
    }
    this.bytesRead += n;
    if (n === buffer.length) this.#readSize = Math.min(MAX_READ, this.#readSize * 4);
    else if (n < buffer.length / 8) this.#readSize = Math.max(MIN_READ, this.#readSize / 4);
    if (n < buffer.length / 8) {
      // Copied out, so the buffer is reused instead of pinned by a few bytes.
      this.release(buffer);
      return buffer.slice(0, n);
    }
    return buffer.subarray(0, n);
  }

  /** Takes back a chunk `read()` returned: its buffer is ours, and reused by a later read. */
  release(chunk: Uint8Array): void {
    if (readPool.owns(chunk)) readPool.give(chunk);
    else this.#keep(chunk.buffer as ArrayBuffer);
  }

  #buffer(size: number): Uint8Array<ArrayBuffer> {
    if (size === MAX_READ) {
      const slot = readPool.take();
      if (slot) return slot;
    }
    for (let i = spares.length - 1; i >= 0; i--) {
      if (spares[i].byteLength === size) return new Uint8Array(spares.splice(i, 1)[0]);
    }
    return new Uint8Array(size);
  }

  #keep(buffer: ArrayBuffer): void {
    if (spares.includes(buffer)) return;
    spares.push(buffer);
    if (spares.length > MAX_SPARES) spares.shift();
  }

  write(parts: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.#isClosed || this.#writeEnded || this.#writeError !== undefined) {
      return Promise.reject(
        new FerryError("IO_ERROR", "Cannot write: connection is closed", { cause: this.#writeError }),
      );
    }
    if (parts instanceof Uint8Array) {
      this.#pending.push(parts);
      this.#queued += parts.length;
    } else {
      for (const part of parts) {
        this.#pending.push(part);
        this.#queued += part.length;
      }
    }
    if (this.#flushing === undefined && !this.#flushArmed) {
      // Wait for the end of this turn of the event loop, so the frames it produces leave in as few
      // sends as possible (see #flush): the RECEIPTs every I/O completion in it produces, or a sender's
      // DATA frame with the END after it and the next file's FILE header.
      this.#flushArmed = true;
      setImmediate(this.#flushSoon);
    }
    if (this.#queued <= WRITE_HIGH_WATER) return Promise.resolve();
    return new Promise((resolve, reject) => this.#drainWaiters.push({ resolve, reject }));
  }

  /**
   * Writes everything queued, in as few sends as it can without copying large payloads: small parts
   * (headers, control frames) are joined, up to {@linkcode COALESCE_LIMIT}; a large frame of at most
   * {@linkcode JOIN_FRAME_MAX} goes with the small ones around it, up to {@linkcode PREFIX_JOIN_MAX}
   * of them, copied into the scratch buffer; larger frames go as they are.
   */
  async #flush(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending;
        this.#pending = [];
        let group: Uint8Array[] = [];
        let groupBytes = 0;
        /** The large frame in `group`, if any (at most one). */
        let large: Uint8Array | undefined;
        const send = async () => {
          if (group.length === 0) return;
          const chunk = group.length === 1
            ? group[0]
            : large
            ? this.#joinInScratch(group, groupBytes)
            : joinBytes(group, groupBytes);
          group = [];
          groupBytes = 0;
          large = undefined;
          await this.#writeAll(chunk);
        };
        for (const part of batch) {
          if (part.length >= COALESCE_LIMIT) {
            if (part.length > JOIN_FRAME_MAX) {
              await send();
              await this.#writeAll(part);
              continue;
            }
            if (large || groupBytes > PREFIX_JOIN_MAX) await send();
            large = part;
          } else if (groupBytes + part.length > (large ? large.length + PREFIX_JOIN_MAX : COALESCE_LIMIT)) {
            await send();
          }
          group.push(part);
          groupBytes += part.length;
        }
        await send();
        if (this.#queued <= WRITE_HIGH_WATER) {
          for (const w of this.#drainWaiters.splice(0)) w.resolve();
        }
      }
    } catch (e) {
      this.#writeError = e;
      const error = new FerryError("IO_ERROR", "Cannot write: connection closed", { cause: e });
      for (const w of this.#drainWaiters.splice(0)) w.reject(error);
      // Like a node socket's 'error': the reader sees the end instead of waiting forever.
      this.close();
    } finally {
      this.#flushing = undefined;
    }
  }

  /**
   * `parts` (one large frame and small ones around it) copied one after another into this connection's
   * scratch buffer, made on first use and reused: each write is awaited before the next join.
   */
  #joinInScratch(parts: Uint8Array[], length: number): Uint8Array {
    this.#scratch ??= new Uint8Array(PREFIX_JOIN_MAX + JOIN_FRAME_MAX);
    const out = this.#scratch.subarray(0, length);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  async #writeAll(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length;) {
      const n = await this.#conn.write(at === 0 ? chunk : chunk.subarray(at));
      at += n;
      this.bytesWritten += n;
      this.#queued -= n;
    }
  }

  async closeWrite(): Promise<void> {
    if (this.#pending.length > 0 && !this.#isClosed) this.#flushing ??= this.#flush();
    while (this.#flushing) await this.#flushing;
    if (this.#isClosed || this.#writeEnded) return;
    this.#writeEnded = true;
    try {
      await this.#conn.closeWrite();
    } catch {
      // The peer is gone already; nothing left to flush.
    }
    this.#closeIfDone();
  }

  close(): void {
    if (this.#isClosed) return;
    // A few small frames still queued (a RECEIPT written just before the close, waiting for the end
    // of the turn) leave first: the socket is closed once they are written, or after CLOSE_LINGER_MS
    // if the peer does not read. Anything larger is dropped, as a hard close does.
    const flushFirst = this.#writeError === undefined && this.#queued > 0 && this.#queued <= COALESCE_LIMIT;
    if (flushFirst) this.#flushing ??= this.#flush();
    const flushing = this.#flushing;
    this.#isClosed = true;
    const error = new FerryError("IO_ERROR", "Cannot write: connection closed");
    for (const w of this.#drainWaiters.splice(0)) w.reject(error);
    const closeNow = () => {
      try {
        this.#conn.close();
      } catch {
        // Already closed.
      }
      this.#resolveClosed();
    };
    if (!flushFirst || flushing === undefined) return closeNow();
    const timer = setTimeout(closeNow, CLOSE_LINGER_MS);
    flushing.finally(() => {
      clearTimeout(timer);
      closeNow();
    });
  }

  /** Both directions finished: release the socket, as node does with allowHalfOpen. */
  #closeIfDone(): void {
    if (this.#readEnded && this.#writeEnded) this.close();
  }
}

/**
 * The Deno-native runtime adapter. Plain TCP uses `Deno.listen` and
 * `Deno.connect`; TLS goes through `node:tls` (see {@linkcode nodeNetRuntime}).
 * Only usable on Deno.
 *
 * @example Echo server on an ephemeral port
 * ```ts
 * import { denoNativeRuntime } from "./deno_native.ts";
 * const listener = await denoNativeRuntime.listen({ hostname: "127.0.0.1", port: 0 }, async (conn) => {
 *   for (let c = await conn.read(); c; c = await conn.read()) await conn.write(c);
 *   conn.close();
 * });
 * const conn = await denoNativeRuntime.connect({ hostname: "127.0.0.1", port: listener.port });
 * await conn.write(new TextEncoder().encode("hi"));
 * await conn.read(); // "hi"
 * conn.close();
 * await listener.close();
 * ```
 */
export const denoNativeRuntime: Runtime = {
  name: "deno",

  listen(options, onConnection) {
    if (options.tls) return nodeNetRuntime.listen(options, onConnection);
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
    } catch (e) {
      return Promise.reject(withCode(e));
    }
    let closing = false;
    (async () => {
      while (!closing) {
        let conn: Deno.TcpConn;
        try {
          conn = await listener.accept();
        } catch (e) {
          if (closing || e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) return;
          await new Promise((r) => setTimeout(r, ACCEPT_RETRY_MS));
          continue;
        }
        onConnection(new DenoConnection(conn));
      }
    })();
    const addr = listener.addr as Deno.NetAddr;
    return Promise.resolve(
      {
        hostname: addr.hostname,
        port: addr.port,
        close: () => {
          if (!closing) {
            closing = true;
            try {
              listener.close();
            } catch {
              // Already closed.
            }
          }
          return Promise.resolve();
        },
      } satisfies Listener,
    );
  },

  async connect(options) {
    if (options.tls) return nodeNetRuntime.connect(options);
    try {
      return new DenoConnection(await Deno.connect({ hostname: options.hostname, port: options.port }));
    } catch (e) {
      throw withCode(e);
    }
  },
};
