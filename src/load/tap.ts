/**
 * A wiretap for the sending side, used by the load simulator: it watches the
 * frames a client writes (without copying payloads) to time each file from
 * its FILE header, and can cut the connection in the middle of a file so the
 * sender has to reconnect and resume.
 *
 * @module
 */
import { FerryError } from "../errors.ts";
import { FRAME_HEADER_SIZE } from "../framing/frame.ts";
import { DATA_PREFIX_SIZE, FrameType } from "../protocol/constants.ts";
import { decodeMessage, type FileMessage } from "../protocol/messages.ts";
import type { Connection, Runtime } from "../runtime/transport.ts";

/** FILE frames larger than this are passed through without being decoded. */
const MAX_TAPPED_FILE_FRAME = 64 * 1024;

/** What a tap reports and decides. Both hooks are optional. */
export interface TapHooks {
  /** A FILE frame is about to be written. */
  onFile?(file: FileMessage): void;
  /**
   * A DATA frame for `file` covering `[offset, offset + length)` is about to
   * be written. Return `n` to let only its first `n` payload bytes through
   * and then cut the connection; return `undefined` to let it pass.
   */
  cutData?(file: FileMessage | undefined, offset: number, length: number): number | undefined;
}

/** The outcome of {@linkcode OutgoingFrameTap.process}. */
export interface TapResult {
  /** The bytes to write: the input parts, or a prefix of them when `cut`. */
  forward: Uint8Array[];
  /** The connection must be torn down after `forward` is written. */
  cut: boolean;
}

/**
 * Follows the outgoing frame stream of one connection, however writes split
 * it. Only frame headers, DATA prefixes and FILE frames are copied; DATA
 * payloads are skipped over by length.
 *
 * @example Time FILE frames and cut a file half-way
 * ```ts
 * import { OutgoingFrameTap } from "./tap.ts";
 * const tap = new OutgoingFrameTap({
 *   onFile: (file) => console.log("offered", file.name),
 *   cutData: (_file, offset, length) => offset === 0 ? Math.floor(length / 2) : undefined,
 * });
 * declare const written: Uint8Array[];
 * const { forward, cut } = tap.process(written);
 * ```
 */
export class OutgoingFrameTap {
  #hooks: TapHooks;
  /** FILE headers seen on this connection, by id. */
  #files = new Map<number, FileMessage>();
  /** Frame header plus DATA prefix being gathered. */
  #head = new Uint8Array(FRAME_HEADER_SIZE + DATA_PREFIX_SIZE);
  #headHave = 0;
  #state: "head" | "prefix" | "file" | "body" = "head";
  #type = 0;
  /** Payload bytes of the current frame not yet consumed. */
  #remaining = 0;
  /** Payload bytes of the current DATA frame still allowed before a cut. */
  #allowed: number | undefined;
  #fileFrame: Uint8Array | undefined;
  #fileHave = 0;
  #cut = false;

  constructor(hooks: TapHooks) {
    this.#hooks = hooks;
  }

  /** True once a cut was decided; everything after it is dropped. */
  get cut(): boolean {
    return this.#cut;
  }

  /** Feeds the parts of one write; returns what to forward. */
  process(parts: Uint8Array | readonly Uint8Array[]): TapResult {
    const list = parts instanceof Uint8Array ? [parts] : parts;
    if (this.#cut) return { forward: [], cut: true };
    for (let i = 0; i < list.length; i++) {
      const stop = this.#consume(list[i]);
      if (stop !== undefined) {
        this.#cut = true;
        return { forward: [...list.slice(0, i), list[i].subarray(0, stop)], cut: true };
      }
    }
    return { forward: [...list], cut: false };
  }

  /** Consumes one part; returns the index to cut at, if a cut is due inside it. */
  #consume(part: Uint8Array): number | undefined {
    let at = 0;
    while (at < part.length) {
      switch (this.#state) {
        case "head": {
          at += this.#gather(part, at, FRAME_HEADER_SIZE);
          if (this.#headHave < FRAME_HEADER_SIZE) break;
          const view = new DataView(this.#head.buffer);
          this.#remaining = view.getUint32(0);
          this.#type = this.#head[4];
          if (this.#type === FrameType.DATA && this.#remaining >= DATA_PREFIX_SIZE) {
            this.#state = "prefix";
          } else if (this.#type === FrameType.FILE && this.#remaining <= MAX_TAPPED_FILE_FRAME) {
            this.#fileFrame = new Uint8Array(this.#remaining);
            this.#fileHave = 0;
            this.#state = "file";
            if (this.#remaining === 0) this.#fileDone();
          } else {
            this.#state = "body";
            this.#allowed = undefined;
            if (this.#remaining === 0) this.#frameDone();
          }
          break;
        }
        case "prefix": {
          at += this.#gather(part, at, FRAME_HEADER_SIZE + DATA_PREFIX_SIZE);
          if (this.#headHave < FRAME_HEADER_SIZE + DATA_PREFIX_SIZE) break;
          const prefix = this.#head.subarray(FRAME_HEADER_SIZE);
          const data = decodeMessage({ type: FrameType.DATA, payload: prefix });
          const length = this.#remaining - DATA_PREFIX_SIZE;
          this.#remaining = length;
          this.#state = "body";
          this.#allowed = undefined;
          if (data.kind === "data" && this.#hooks.cutData) {
            const n = this.#hooks.cutData(this.#files.get(data.id), data.offset, length);
            if (n !== undefined) this.#allowed = Math.max(0, Math.min(n, length));
          }
          if (this.#allowed === 0) return at;
          if (length === 0) this.#frameDone();
          break;
        }
        case "file": {
          const n = Math.min(this.#remaining - this.#fileHave, part.length - at);
          this.#fileFrame!.set(part.subarray(at, at + n), this.#fileHave);
          this.#fileHave += n;
          at += n;
          if (this.#fileHave === this.#remaining) this.#fileDone();
          break;
        }
        case "body": {
          const n = Math.min(this.#remaining, part.length - at);
          if (this.#allowed !== undefined && n >= this.#allowed) return at + this.#allowed;
          if (this.#allowed !== undefined) this.#allowed -= n;
          this.#remaining -= n;
          at += n;
          if (this.#remaining === 0) this.#frameDone();
          break;
        }
      }
    }
    return undefined;
  }

  /** Copies header bytes until `#headHave` reaches `want`; returns how many were taken. */
  #gather(part: Uint8Array, at: number, want: number): number {
    const n = Math.min(want - this.#headHave, part.length - at);
    this.#head.set(part.subarray(at, at + n), this.#headHave);
    this.#headHave += n;
    return n;
  }

  #fileDone(): void {
    const frame = this.#fileFrame!;
    this.#fileFrame = undefined;
    let file: FileMessage | undefined;
    try {
      const m = decodeMessage({ type: FrameType.FILE, payload: frame });
      if (m.kind === "file") file = m;
    } catch {
      // A frame the tap cannot read is still forwarded; the server will judge it.
    }
    if (file) {
      this.#files.set(file.id, file);
      this.#hooks.onFile?.(file);
    }
    this.#frameDone();
  }

  #frameDone(): void {
    this.#state = "head";
    this.#headHave = 0;
    this.#remaining = 0;
    this.#allowed = undefined;
  }
}

/**
 * How a cut ends the connection. `"fin"`: the bytes before the cut are
 * flushed and a FIN follows, so the receiver sees a frame cut short and keeps
 * what came before it (exercising resume offsets). `"reset"`: the socket is
 * destroyed at once, as a dropped network would; unread data can make it an
 * RST, and the receiver may lose bytes it had not read yet.
 */
export type CutMode = "fin" | "reset";

/** How long a `"fin"` cut waits for the peer to close before destroying the socket. */
const FIN_LINGER_MS = 5_000;

/**
 * Wraps a runtime so that every connection it makes is watched by a fresh
 * {@linkcode OutgoingFrameTap}. On a cut the write fails with
 * `CONNECTION_FAILED` and reads end, as on a dropped network; the socket is
 * then ended as `mode` says. When `signal` aborts, every open connection is
 * closed and no new one is made.
 *
 * @example Count FILE headers sent by `send()`
 * ```ts
 * import { tapRuntime } from "./tap.ts";
 * import { nodeNetRuntime } from "../runtime/node_net.ts";
 * let offered = 0;
 * const runtime = tapRuntime(nodeNetRuntime, () => ({ onFile: () => offered++ }));
 * // send(target, files, { runtime })
 * ```
 */
export function tapRuntime(
  inner: Runtime,
  hooks: () => TapHooks,
  options: { signal?: AbortSignal; mode?: CutMode } = {},
): Runtime {
  const { signal, mode = "fin" } = options;
  const open = new Set<Connection>();
  signal?.addEventListener("abort", () => {
    for (const conn of open) conn.close();
  }, { once: true });
  return {
    name: inner.name,
    listen: (listenOptions, onConnection) => inner.listen(listenOptions, onConnection),
    async connect(connectOptions) {
      const conn = await inner.connect(connectOptions);
      if (signal?.aborted) {
        conn.close();
        throw new FerryError("CONNECTION_FAILED", "Connection abandoned: the run was stopped");
      }
      open.add(conn);
      conn.closed.then(() => open.delete(conn), () => open.delete(conn));
      return new TappedConnection(conn, new OutgoingFrameTap(hooks()), mode);
    },
  };
}

class TappedConnection implements Connection {
  #inner: Connection;
  #tap: OutgoingFrameTap;
  #mode: CutMode;
  #cutting = false;
  #onCut: Array<() => void> = [];

  constructor(inner: Connection, tap: OutgoingFrameTap, mode: CutMode) {
    this.#inner = inner;
    this.#tap = tap;
    this.#mode = mode;
  }

  get remoteAddress(): string {
    return this.#inner.remoteAddress;
  }
  get remotePort(): number {
    return this.#inner.remotePort;
  }
  get closed(): Promise<void> {
    return this.#inner.closed;
  }
  get bytesWritten(): number {
    return this.#inner.bytesWritten;
  }
  get bytesRead(): number {
    return this.#inner.bytesRead;
  }
  // Forwarded as they are: write() and the cut hand bytes to the inner connection synchronously.
  get bytesQueued(): number | undefined {
    return this.#inner.bytesQueued;
  }
  get bytesFlushed(): number | undefined {
    return this.#inner.bytesFlushed;
  }
  read(): Promise<Uint8Array | null> {
    if (this.#cutting) return Promise.resolve(null);
    // A read pending when the cut happens ends too: the sender must see the drop.
    return Promise.race([this.#inner.read(), new Promise<null>((r) => this.#onCut.push(() => r(null)))]);
  }
  closeWrite(): Promise<void> {
    return this.#cutting ? Promise.resolve() : this.#inner.closeWrite();
  }
  close(): void {
    // After a cut the socket is ended by #cut(), in its own time.
    if (!this.#cutting) this.#inner.close();
  }

  async write(parts: Uint8Array | readonly Uint8Array[]): Promise<void> {
    if (this.#cutting) throw new FerryError("CONNECTION_FAILED", "Connection cut by the load simulator");
    const { forward, cut } = this.#tap.process(parts);
    if (!cut) return await this.#inner.write(forward);
    this.#cutting = true;
    for (const wake of this.#onCut.splice(0)) wake();
    this.#cut(forward).catch(() => {});
    throw new FerryError("CONNECTION_FAILED", "Connection cut by the load simulator");
  }

  async #cut(forward: Uint8Array[]): Promise<void> {
    const inner = this.#inner;
    try {
      if (forward.some((p) => p.length > 0)) await inner.write(forward);
      if (this.#mode === "fin") {
        await inner.closeWrite();
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([inner.closed, new Promise((r) => timer = setTimeout(r, FIN_LINGER_MS))]);
        clearTimeout(timer);
      }
    } finally {
      inner.close();
    }
  }
}
