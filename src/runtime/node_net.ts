/**
 * The transport on `node:net` / `node:tls`, which both Deno and Bun implement.
 * This file and its siblings in `src/runtime/` are the only place that
 * touches sockets.
 *
 * @module
 */
import * as net from "node:net";
import * as tls from "node:tls";
import { createHash, X509Certificate } from "node:crypto";
import process from "node:process";
import { setImmediate } from "node:timers";
import { FerryError } from "../errors.ts";
import { joinBytes } from "../framing/frame.ts";
import { encodeMessage } from "../protocol/messages.ts";
import type { Connection, Listener, Runtime, TlsClientOptions } from "./transport.ts";

/** Unread bytes above which the socket is paused. */
const READ_HIGH_WATER = 1024 * 1024;

/** Writes below this size are queued and joined with the other small writes of the same turn. */
const COALESCE_LIMIT = 16 * 1024;

/** `ArrayBuffer.prototype.transfer` (ES2024) frees a buffer's memory without waiting for the GC. */
const canTransfer = typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === "function";

/** Bun's synchronous `Bun.gc(true)`; undefined on other runtimes. */
const bunGc = (globalThis as { Bun?: { gc(sync: boolean): void } }).Bun?.gc;
/** Received bytes (all connections) between two looks at the RSS. */
const GC_CHECK_BYTES = 16 * 1024 * 1024;
/** RSS growth since the last collection that makes the next one. */
const GC_GROWTH = 32 * 1024 * 1024;
let sinceGcCheck = 0;
let rssAfterGc = -1;

/**
 * Bun only: every socket read arrives in a fresh buffer and JavaScriptCore
 * collects garbage late, so with many busy connections the RSS of a server
 * climbs far above what is live (200 senders × 4 MiB: 550–660 MiB). Chunks
 * are freed as soon as they are used ({@linkcode NodeConnection.release});
 * what still piles up (parsed frames, promises, chunks read outside
 * `receiveParts()`) is collected here once the RSS has grown by 32 MiB since
 * the last collection (200 × 4 MiB with senders that stream at once, median
 * of 3: 276 MiB, against 291 MiB with 64 MiB and 578 MiB with neither; no
 * measurable CPU cost). One connection stays far below it and never pays.
 */
function collectIfGrown(received: number): void {
  if (bunGc === undefined || (sinceGcCheck += received) < GC_CHECK_BYTES) return;
  sinceGcCheck = 0;
  const rss = process.memoryUsage.rss();
  if (rssAfterGc < 0) rssAfterGc = rss;
  if (rss < rssAfterGc + GC_GROWTH) return;
  bunGc(true);
  rssAfterGc = process.memoryUsage.rss();
}

class NodeConnection implements Connection {
  /** On Bun (see {@linkcode Connection.compactPending}); other runtimes' allocators keep such pages. */
  readonly compactPending = bunGc !== undefined && canTransfer;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly closed: Promise<void>;
  #socket: net.Socket;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #waiter: ((chunk: Uint8Array | null) => void) | undefined;
  #waiterReject: ((e: Error) => void) | undefined;
  #paused = false;
  /** Small frames waiting to be joined into one socket write (see {@linkcode write}). */
  #out: Uint8Array[] = [];
  #outBytes = 0;
  #flushArmed = false;
  /** The socket's buffer is above its high-water mark: writers wait for 'drain'. */
  #needDrain = false;
  /** Bytes passed to write(), and bytes whose socket write completed (see Connection.bytesFlushed). */
  #bytesQueued = 0;
  #bytesFlushed = 0;

  /** `raw` is the TCP socket under a TLS one; it carries the address and TCP options. */
  constructor(socket: net.Socket, raw: net.Socket = socket) {
    this.#socket = socket;
    this.remoteAddress = stripV4Mapped(raw.remoteAddress ?? "");
    this.remotePort = raw.remotePort ?? 0;
    raw.setNoDelay(true);
    raw.setKeepAlive(true, 15_000);
    socket.on("data", (chunk: Uint8Array) => {
      collectIfGrown(chunk.length);
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = this.#waiterReject = undefined;
        w(chunk);
        return;
      }
      this.#queue.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued >= READ_HIGH_WATER && !this.#paused) {
        this.#paused = true;
        socket.pause();
      }
    });
    socket.on("drain", () => this.#needDrain = false);
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", (e: Error) => {
      this.#error ??= e;
      this.#wake();
    });
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.#ended = true;
        this.#wake();
        resolve();
      })
    );
  }

  get bytesWritten(): number {
    return this.#socket.bytesWritten ?? 0;
  }
  get bytesRead(): number {
    return this.#socket.bytesRead ?? 0;
  }
  get bytesQueued(): number {
    return this.#bytesQueued;
  }
  get bytesFlushed(): number {
    return this.#bytesFlushed;
  }

  /**
   * `socket.write` with its completion counted: the callback runs once the socket no longer needs
   * the buffer (written to the OS, or failed), in the order of the writes.
   */
  #socketWrite(bytes: Uint8Array): boolean {
    const n = bytes.length;
    return this.#socket.write(bytes, () => this.#bytesFlushed += n);
  }

  #wake(): void {
    if (!this.#waiter) return;
    const w = this.#waiter;
    const r = this.#waiterReject!;
    this.#waiter = this.#waiterReject = undefined;
    if (this.#error && !isBenignClose(this.#error)) r(this.#error);
    else w(null);
  }

  /**
   * Frees the chunk's memory now (`ArrayBuffer.prototype.transfer(0)` detaches
   * the buffer and drops its contents) when the chunk is the whole of its
   * buffer, as the runtime's socket reads are; a view of a shared pool is
   * left alone. The runtimes allocate a fresh buffer for every read, and
   * JavaScriptCore collects them late: with 200 senders Bun's server held
   * 500–660 MiB, most of it dead read buffers.
   */
  release(chunk: Uint8Array): void {
    const buffer = chunk.buffer as ArrayBuffer;
    if (!canTransfer || chunk.byteOffset !== 0 || buffer.byteLength !== chunk.byteLength) return;
    if (!buffer.detached) buffer.transfer(0);
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.#queue.shift();
    if (chunk) {
      this.#queued -= chunk.length;
      if (this.#paused && this.#queued < READ_HIGH_WATER / 2) {
        this.#paused = false;
        this.#socket.resume();
      }
      return Promise.resolve(chunk);
    }
    if (this.#error && !isBenignClose(this.#error)) return Promise.reject(this.#error);
    if (this.#ended || this.#socket.destroyed) return Promise.resolve(null);
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
    return new Promise((resolve, reject) => {
      this.#waiter = resolve;
      this.#waiterReject = reject;
    });
  }

  /**
   * Small writes (control frames: ACCEPT, RECEIPT, PONG, FILE headers…) are not handed to the socket
   * one by one: each `socket.write` is a send syscall, and on Bun they were 17–22 % of a busy
   * server's main thread. They are queued and joined into one write once the current turn of the
   * event loop is over (`setImmediate`, so the frames of every I/O completion handled in that turn
   * go together), or before anything larger, a `closeWrite()` or a `close()`, so the byte order is
   * the order of the calls. A connection already failed still rejects at once; a failure while
   * flushing reaches the reader as the socket's error, as for any write.
   */
  write(parts: Uint8Array | readonly Uint8Array[]): Promise<void> {
    const socket = this.#socket;
    if (socket.destroyed || this.#error) {
      return Promise.reject(
        new FerryError("IO_ERROR", "Cannot write: connection is closed", { cause: this.#error }),
      );
    }
    let length = 0;
    if (parts instanceof Uint8Array) length = parts.length;
    else for (const part of parts) length += part.length;
    this.#bytesQueued += length;
    if (length < COALESCE_LIMIT && this.#outBytes + length <= COALESCE_LIMIT) {
      if (parts instanceof Uint8Array) this.#out.push(parts);
      else for (const part of parts) this.#out.push(part);
      this.#outBytes += length;
      if (!this.#flushArmed) {
        this.#flushArmed = true;
        setImmediate(this.#flushSoon);
      }
      return this.#needDrain ? this.#drained() : Promise.resolve();
    }
    let ok = true;
    if (this.#out.length > 0 || !(parts instanceof Uint8Array) && parts.length > 1) {
      // cork/uncork turns the parts into one writev: queued frames, header and payload leave together.
      socket.cork();
      this.#flushOut();
      if (parts instanceof Uint8Array) ok = this.#socketWrite(parts);
      else for (const part of parts) ok = this.#socketWrite(part);
      socket.uncork();
    } else {
      ok = this.#socketWrite(parts instanceof Uint8Array ? parts : parts[0]);
    }
    if (ok) return Promise.resolve();
    this.#needDrain = true;
    return this.#drained();
  }

  /** Writes the queued small frames as one buffer. */
  #flushOut(): void {
    const out = this.#out;
    if (out.length === 0) return;
    const joined = joinBytes(out, this.#outBytes);
    this.#out = [];
    this.#outBytes = 0;
    const socket = this.#socket;
    if (socket.destroyed) return;
    if (!this.#socketWrite(joined)) this.#needDrain = true;
  }

  readonly #flushSoon = (): void => {
    this.#flushArmed = false;
    this.#flushOut();
  };

  /** Resolves on the socket's next 'drain', rejects if it closes first. */
  #drained(): Promise<void> {
    const socket = this.#socket;
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        socket.off("drain", onDrain);
        socket.off("close", onClose);
      };
      const onDrain = () => {
        cleanup();
        resolve();
      };
      const onClose = () => {
        cleanup();
        reject(new FerryError("IO_ERROR", "Cannot write: connection closed", { cause: this.#error }));
      };
      socket.on("drain", onDrain);
      socket.on("close", onClose);
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => {
      this.#flushOut();
      if (this.#socket.destroyed || this.#socket.writableEnded) return resolve();
      this.#socket.end(() => resolve());
    });
  }

  close(): void {
    // Frames already queued leave first, as they would have had each gone straight to the socket.
    this.#flushOut();
    this.#socket.destroy();
  }
}

function isBenignClose(e: Error): boolean {
  const code = (e as { code?: string }).code;
  return code === "ECONNRESET" || code === "EPIPE";
}

function stripV4Mapped(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/** First byte of a TLS record carrying a handshake (the ClientHello). */
const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * Starts TLS on an accepted socket. A client that speaks plaintext ferry
 * instead gets a plaintext ERROR frame (TLS_MISMATCH) it can read, rather
 * than a silent hang-up.
 */
function acceptTls(
  raw: net.Socket,
  secureContext: tls.SecureContext,
  timeoutMs: number,
  onConnection: (conn: Connection) => void,
): void {
  const timer = setTimeout(() => raw.destroy(), timeoutMs);
  raw.once("error", () => raw.destroy());
  raw.once("close", () => clearTimeout(timer));
  raw.once("data", (first: Uint8Array) => {
    raw.pause();
    if (first[0] !== TLS_HANDSHAKE_RECORD) {
      clearTimeout(timer);
      const error = new FerryError("TLS_MISMATCH", "This server requires TLS: connect with --tls");
      raw.end(
        encodeMessage({
          kind: "error",
          code: error.code,
          wireCode: error.wireCode,
          id: 0,
          message: error.message,
        }),
      );
      setTimeout(() => raw.destroy(), 2_000).unref?.();
      return;
    }
    raw.unshift(first);
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext });
    socket.once("secure", () => {
      clearTimeout(timer);
      onConnection(new NodeConnection(socket, raw));
    });
    socket.once("error", () => {
      clearTimeout(timer);
      socket.destroy();
      raw.destroy();
    });
    // No raw.resume(): the TLS socket reads the raw one itself; resuming here starves it on Deno and Bun.
  });
}

/** Returns the `sha256:<hex>` fingerprint of a PEM or DER certificate. */
export function certificateFingerprint(cert: string | Uint8Array): string {
  const der = typeof cert === "string" ? new X509Certificate(cert).raw : cert;
  return "sha256:" + createHash("sha256").update(der).digest("hex");
}

function normalizePin(pin: string): string {
  const hex = pin.replace(/^sha256:/i, "").replace(/:/g, "").toLowerCase();
  return "sha256:" + hex;
}

function connectTls(
  options: { hostname: string; port: number; tls: TlsClientOptions },
): Promise<net.Socket> {
  const { pin, ca, serverName } = options.tls;
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: options.hostname,
      port: options.port,
      ca,
      servername: serverName ?? (net.isIP(options.hostname) ? undefined : options.hostname),
      // A pinned certificate is checked below instead of against a CA.
      rejectUnauthorized: !pin,
    });
    socket.once("secureConnect", () => {
      if (pin) {
        const peer = socket.getPeerCertificate();
        const actual = peer?.raw ? certificateFingerprint(peer.raw) : "none";
        if (actual !== normalizePin(pin)) {
          socket.destroy();
          reject(
            new FerryError(
              "TLS_MISMATCH",
              `Cannot trust server: certificate fingerprint ${actual} does not match pin ${
                normalizePin(pin)
              }`,
            ),
          );
          return;
        }
      }
      socket.off("error", reject);
      resolve(socket);
    });
    socket.once(
      "error",
      (e) => reject(new FerryError("TLS_MISMATCH", `Cannot establish TLS: ${e.message}`, { cause: e })),
    );
  });
}

/**
 * The `node:net` runtime adapter.
 *
 * @example Echo server on an ephemeral port
 * ```ts
 * import { nodeNetRuntime } from "./node_net.ts";
 * const listener = await nodeNetRuntime.listen({ hostname: "127.0.0.1", port: 0 }, async (conn) => {
 *   for (let c = await conn.read(); c; c = await conn.read()) await conn.write(c);
 *   conn.close();
 * });
 * await listener.close();
 * ```
 */
export const nodeNetRuntime: Runtime = {
  name: typeof (globalThis as { Bun?: unknown }).Bun !== "undefined"
    ? "bun"
    : typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
    ? "deno"
    : "node",

  listen(options, onConnection) {
    return new Promise((resolve, reject) => {
      const tlsOptions = options.tls;
      const secureContext = tlsOptions
        ? tls.createSecureContext({ cert: tlsOptions.cert, key: tlsOptions.key })
        : undefined;
      // allowHalfOpen: a client that half-closes after END must still get its RECEIPT (or ERROR).
      const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
        if (!secureContext) onConnection(new NodeConnection(socket));
        else acceptTls(socket, secureContext, options.handshakeTimeoutMs ?? 10_000, onConnection);
      });
      server.once("error", reject);
      server.listen({ host: options.hostname, port: options.port }, () => {
        server.off("error", reject);
        // Accept failures (EMFILE, ECONNABORTED) arrive as 'error' on the server: with no listener
        // they would kill the process. The listener keeps accepting once resources free up.
        server.on("error", () => {});
        const address = server.address() as net.AddressInfo;
        resolve(
          {
            hostname: address.address,
            port: address.port,
            // Stop accepting now; node would otherwise wait for every open connection.
            close: () => {
              server.close();
              return Promise.resolve();
            },
          } satisfies Listener,
        );
      });
    });
  },

  async connect(options) {
    let socket: net.Socket;
    if (options.tls) {
      socket = await connectTls({ ...options, tls: options.tls });
    } else {
      socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host: options.hostname, port: options.port });
        s.once("connect", () => {
          s.off("error", reject);
          resolve(s);
        });
        s.once("error", reject);
      });
    }
    return new NodeConnection(socket);
  },
};
