/**
 * The sending side: connects, authenticates, pipelines file headers, streams
 * data with backpressure, and on a dropped connection reconnects with backoff
 * and resumes from the receiver's durable offset.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { open } from "node:fs/promises";
import { FerryError, ProtocolError, RemoteError } from "../errors.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "../framing/frame.ts";
import { Channel } from "../protocol/channel.ts";
import {
  Capability,
  DATA_PREFIX_SIZE,
  FileFlag,
  PROTOCOL_VERSION,
  ReceiptFlag,
} from "../protocol/constants.ts";
import { Heartbeat } from "../protocol/heartbeat.ts";
import { DATA_HEADER_SIZE, type Message, toHex } from "../protocol/messages.ts";
import { defaultRuntime } from "../runtime/select.ts";
import type { Connection, Runtime, TlsClientOptions } from "../runtime/transport.ts";
import { authMac } from "../server/auth.ts";
import { backoffDelay } from "./backoff.ts";
import { FrameBuffers } from "./frame_buffers.ts";
import {
  describeFile,
  expandItems,
  fileChanged,
  hashRange,
  type LocalFile,
  READ_CHUNK,
  readWholeFile,
  reuseWholeFileBuffer,
  type SendItem,
  sourceKey,
  statFile,
} from "./files.ts";
import { parseTarget, type SendTarget } from "./target.ts";

/** Options for {@linkcode send}. */
export interface SendOptions {
  /** Shared token, when the server requires auth. */
  token?: string;
  /** Use TLS (with optional CA or pin). */
  tls?: TlsClientOptions;
  /** Text messages to deliver (after the files). */
  messages?: string[];
  /** Bytes per DATA frame, capped by the server's max frame size. Default 256 KiB. */
  chunkSize?: number;
  /**
   * Hash every file before sending it and declare the SHA-256 in its header (the pre-DIGEST_AT_END
   * behaviour). Costs a full read of each large file before its first byte is sent, but a file the
   * server already has is skipped before any byte moves. Default false: a file larger than one chunk
   * is streamed at once and hashed while it is sent (when the server supports DIGEST_AT_END), so
   * an identical re-send is recognised only at its end, after its bytes were sent. Files up to one
   * chunk are always read once, hashed and offered with their hash.
   */
  hashFirst?: boolean;
  /** FILE headers sent ahead of the file being streamed. Default 32. */
  window?: number;
  /**
   * Reconnect attempts in a row that make no progress (no higher resume offset, receipt or ack)
   * before giving up; 0 disables resume. Default 8.
   */
  retries?: number;
  /** First backoff delay. Default 250 ms; doubles up to `backoffMaxMs`, with jitter. */
  backoffBaseMs?: number;
  /** Longest backoff delay. Default 10 s. */
  backoffMaxMs?: number;
  /** PING interval. Default 5 s. */
  heartbeatIntervalMs?: number;
  /** Silent intervals before the server is declared dead. Default 3. */
  heartbeatMisses?: number;
  /** Time allowed to connect and complete the handshake. Default 10 s. */
  connectTimeoutMs?: number;
  /** Receives progress and lifecycle events. */
  onEvent?: (event: SendEvent) => void;
  /** Cancels the send. */
  signal?: AbortSignal;
  /** Socket runtime; defaults to the faster path measured for this runtime (src/runtime/select.ts). */
  runtime?: Runtime;
}

/** What the receiver confirmed for one file. */
export interface SendReceipt {
  /** Local path. */
  path: string;
  /** Name it was offered under. */
  name: string;
  /** Name it was stored under (differs on a collision). */
  storedName: string;
  size: number;
  /** The receiver's SHA-256 of the stored bytes, lowercase hex. */
  sha256: string;
  /** The same file was already there; nothing was sent. */
  duplicate: boolean;
}

/** A file the receiver refused or failed to store. */
export interface SendFailure {
  path: string;
  name: string;
  error: FerryError;
}

/** The outcome of {@linkcode send}. */
export interface SendResult {
  receipts: SendReceipt[];
  failures: SendFailure[];
  /** Ids of the acknowledged messages, in order. */
  messagesAcked: number;
  /** DATA bytes written to sockets, resent bytes included. */
  bytesSent: number;
  /** How many times the connection was re-established. */
  reconnects: number;
}

/** Events for progress displays and `--json` output. */
export type SendEvent =
  | { type: "start"; files: number; bytes: number; messages: number }
  | { type: "connected"; attempt: number; server: string }
  | { type: "file"; name: string; size: number; offset: number }
  | { type: "progress"; name: string; sent: number; size: number; totalSent: number; totalBytes: number }
  | { type: "done"; receipt: SendReceipt }
  | { type: "error"; name: string; code: string; message: string }
  | { type: "message"; index: number }
  | { type: "reconnect"; attempt: number; delayMs: number; reason: string; code: string; bytesSent: number }
  | { type: "rtt"; ms: number };

/** A local file could not be read: that file fails, the connection goes on. */
class LocalFileError extends FerryError {}

/** Remote per-file codes that are worth another try after a reconnect. */
// SERVER_BUSY per file: more files in flight than the server allows on one connection.
const RETRIABLE_FILE_CODES = new Set(["FILE_BUSY", "SHUTTING_DOWN", "SERVER_BUSY"]);
/** Connection-level codes after which reconnecting cannot help. */
const FATAL_CONNECTION_CODES = new Set([
  "AUTH_FAILED",
  "AUTH_REQUIRED",
  "RATE_LIMITED",
  "UNSUPPORTED_VERSION",
  "BAD_MAGIC",
  "TLS_MISMATCH",
]);

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** A file's progress across connections. */
interface FileJob {
  item: Required<SendItem>;
  file?: LocalFile;
  done: boolean;
  sent: number;
  /** Highest offset the receiver confirmed holding (from ACCEPT): the proof of durable progress. */
  accepted: number;
}

/** Default bytes per DATA frame; files up to this size are read once into memory. */
const DEFAULT_CHUNK = 256 * 1024;

/** File bytes to send; `frame`, when present, is the same bytes with room for the DATA header in front. */
interface Chunk {
  payload: Uint8Array;
  frame?: Uint8Array;
  /** The reusable buffer `frame` is a view of ({@linkcode FrameBuffers}). */
  buffer?: Uint8Array;
}

/** A FILE sent on one connection, waiting for its answer. */
interface Offered {
  id: number;
  job: FileJob;
  answer: Deferred<Answer>;
  finished: Deferred<void>;
  /** Offered with the DIGEST_AT_END flag: the header held a source key. */
  digestAtEnd: boolean;
  /** With `digestAtEnd`: the SHA-256 computed while streaming, sent in END_DIGEST. */
  digest?: Uint8Array;
  /** The server answered ACCEPT: it holds the file open until its RECEIPT or ERROR. */
  heldOpen?: boolean;
  /** A small file sent as its one read buffer: the connection's `bytesQueued` at the end of that frame. */
  wholeUntil?: number;
}

/**
 * Bytes sent so far over all files (each counted up to its size), kept as a running total: a
 * progress event per small file must not sum over every file (quadratic in the file count).
 */
class Progress {
  readonly totalBytes: number;
  #jobs: FileJob[];
  #sent = 0;

  constructor(jobs: FileJob[], totalBytes: number) {
    this.#jobs = jobs;
    this.totalBytes = totalBytes;
  }

  get totalSent(): number {
    return this.#sent;
  }

  /** Sets `job.sent`, keeping the total. */
  setSent(job: FileJob, sent: number): void {
    const size = job.file?.size ?? 0;
    this.#sent += Math.min(sent, size) - Math.min(job.sent, size);
    job.sent = sent;
  }

  /** Sums from scratch (a file's size may have changed since it was last described). */
  recount(): void {
    this.#sent = this.#jobs.reduce((n, j) => n + (j.file ? Math.min(j.sent, j.file.size) : 0), 0);
  }
}

/** The answer to a FILE frame on one connection. */
type Answer = { kind: "accept"; offset: number } | { kind: "finished" };

/**
 * Sends files, folders and messages to a ferry server, reconnecting and
 * resuming if the connection drops. Per-file refusals are reported in
 * `failures`; a connection that cannot be (re)established throws
 * `FerryError` with code `CONNECTION_FAILED` (or the server's fatal code).
 *
 * @example Send two files and a message
 * ```ts
 * import { send } from "../../mod.ts";
 * const result = await send("127.0.0.1:9000", ["photo.jpg", "album/"], {
 *   messages: ["here you go"],
 *   onEvent: (e) => e.type === "done" && console.log("stored", e.receipt.storedName),
 * });
 * console.log(result.receipts.length, "files delivered");
 * ```
 */
export async function send(
  target: string | SendTarget,
  items: ReadonlyArray<string | SendItem>,
  options: SendOptions = {},
): Promise<SendResult> {
  const to = typeof target === "string" ? parseTarget(target) : target;
  const emit = options.onEvent ?? (() => {});
  const expanded = await expandItems(items);
  const jobs: FileJob[] = expanded.map((item) => ({ item, done: false, sent: 0, accepted: 0 }));
  const messages = (options.messages ?? []).map((text) => ({ text, acked: false }));
  const result: SendResult = { receipts: [], failures: [], messagesAcked: 0, bytesSent: 0, reconnects: 0 };
  const retries = options.retries ?? 8;
  const runtime = options.runtime ?? defaultRuntime();
  const small = smallFileLimit(options);
  // Sizes come from stat: files are read (and small ones hashed) only when they are offered, except
  // large ones with --hash-first, which get their hash pass here, before anything is sent.
  const describe = async (item: Required<SendItem>): Promise<LocalFile> => {
    const file = await statFile(item);
    return options.hashFirst && file.size > small ? await describeFile(item) : file;
  };

  let totalBytes = 0;
  for (const job of jobs) {
    try {
      job.file = await describe(job.item);
      totalBytes += job.file.size;
    } catch (e) {
      fail(job, e instanceof FerryError ? e : new FerryError("IO_ERROR", String(e), { cause: e }));
    }
  }
  emit({ type: "start", files: jobs.length, bytes: totalBytes, messages: messages.length });

  function fail(job: FileJob, error: FerryError): void {
    job.done = true;
    if (job.file) job.file.data = job.file.frame = job.file.pooled = undefined;
    result.failures.push({ path: job.item.path, name: job.item.name, error });
    emit({ type: "error", name: job.item.name, code: error.code, message: error.message });
  }

  const progress = new Progress(jobs, totalBytes);

  // Grows only when the receiver confirms something new: a higher resume offset, a receipt, an ack.
  const progressMark = () =>
    jobs.reduce((n, j) => n + j.accepted, 0) + result.receipts.length + result.failures.length +
    result.messagesAcked;

  for (let attempt = 0;; attempt++) {
    if (jobs.every((j) => j.done) && messages.every((m) => m.acked)) break;
    options.signal?.throwIfAborted();
    let conn: Connection | undefined;
    const markBefore = progressMark();
    try {
      conn = await connectWithTimeout(runtime, to, options);
      progress.recount(); // files may have been described again since the last connection
      const session = new ClientSession(conn, options, emit, result, fail, progress);
      await session.handshake();
      emit({ type: "connected", attempt, server: `${to.hostname}:${to.port}` });
      await session.run(jobs, messages);
      attempt = -1; // progress was made on this connection: the next drop starts a fresh backoff
    } catch (e) {
      conn?.close();
      const error = toConnectionError(e);
      if (FATAL_CONNECTION_CODES.has(error.code) || options.signal?.aborted) throw error;
      // `retries` bounds consecutive fruitless attempts: a connection that moved the transfer on
      // starts a fresh series, so a long transfer over a flaky link is not abandoned.
      if (progressMark() > markBefore) attempt = 0;
      if (attempt + 1 > retries) {
        throw new FerryError(
          "CONNECTION_FAILED",
          `Cannot reach ${to.hostname}:${to.port} after ${attempt + 1} attempts: ${error.message}`,
          { cause: error },
        );
      }
      const delayMs = backoffDelay(attempt, options.backoffBaseMs ?? 250, options.backoffMaxMs ?? 10_000);
      emit({
        type: "reconnect",
        attempt: attempt + 1,
        delayMs,
        reason: error.message,
        code: error.code,
        bytesSent: result.bytesSent,
      });
      result.reconnects++;
      await sleep(delayMs, options.signal);
      // A source that changed while we were away gets a new identity (hash or source key), so old and
      // new bytes are never spliced.
      for (const job of jobs) {
        if (!job.done && job.file && await fileChanged(job.file)) {
          try {
            job.file = await describe(job.item);
            job.accepted = 0;
          } catch (err) {
            fail(job, err instanceof FerryError ? err : new FerryError("IO_ERROR", String(err)));
          }
        }
      }
      continue;
    } finally {
      conn?.close();
    }
  }
  return result;
}

/** Files up to this size are read once into memory, hashed, and offered with their hash. */
function smallFileLimit(options: SendOptions): number {
  return Math.max(1, Math.min(options.chunkSize ?? DEFAULT_CHUNK, READ_CHUNK));
}

function toConnectionError(e: unknown): FerryError {
  if (e instanceof FerryError) return e;
  const err = e as Error & { code?: string };
  return new FerryError("CONNECTION_FAILED", err?.message ?? String(e), { cause: e });
}

async function connectWithTimeout(
  runtime: Runtime,
  to: SendTarget,
  options: SendOptions,
): Promise<Connection> {
  const ms = options.connectTimeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new FerryError("CONNECTION_FAILED", `Cannot connect to ${to.hostname}:${to.port} in ${ms} ms`),
        ),
      ms,
    );
  });
  const connecting = runtime.connect({ hostname: to.hostname, port: to.port, tls: options.tls });
  try {
    return await Promise.race([connecting, timeout]);
  } catch (e) {
    connecting.then((c) => c.close(), () => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** One connection's worth of the send. */
class ClientSession {
  #conn: Connection;
  #channel: Channel;
  #o: SendOptions;
  #emit: (e: SendEvent) => void;
  #result: SendResult;
  #fail: (job: FileJob, error: FerryError) => void;
  #progress: Progress;
  #serverMaxFrame = DEFAULT_MAX_FRAME_SIZE;
  #buffers?: FrameBuffers;
  /** The server announced DIGEST_AT_END: large files may be streamed before they are hashed. */
  #digestAtEnd = false;
  #answers = new Map<number, Offered>();
  #acks = new Map<number, Deferred<boolean>>();
  #broken = deferred<never>();
  #heartbeat?: Heartbeat;
  #nextId = 1;
  /** A file the server asked us to offer again later (FILE_BUSY, SHUTTING_DOWN). */
  #retryLater?: FerryError;
  /**
   * Files offered and not yet answered that the server takes at once on this connection (its
   * `--max-open-files`), learnt from a per-file SERVER_BUSY: the files it held open right then.
   */
  #openLimit = Infinity;
  /** Files refused with SERVER_BUSY, offered again on this connection once others are answered. */
  #refused: FileJob[] = [];
  /** Resolved when an offered file is answered (RECEIPT or ERROR), so another may be offered. */
  #answered = deferred<void>();

  constructor(
    conn: Connection,
    options: SendOptions,
    emit: (e: SendEvent) => void,
    result: SendResult,
    fail: (job: FileJob, error: FerryError) => void,
    progress: Progress,
  ) {
    this.#conn = conn;
    this.#o = options;
    this.#emit = emit;
    this.#result = result;
    this.#fail = fail;
    this.#progress = progress;
    this.#channel = new Channel(conn, { maxFrameSize: DEFAULT_MAX_FRAME_SIZE });
  }

  async handshake(): Promise<void> {
    const ms = this.#o.connectTimeoutMs ?? 10_000;
    const timer = setTimeout(() => this.#conn.close(), ms);
    try {
      await this.#channel.send({
        kind: "hello",
        version: PROTOCOL_VERSION,
        capabilities: Capability.RESUME | Capability.MESSAGES | Capability.HEARTBEAT |
          Capability.DIGEST_AT_END,
        maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
      });
      const welcome = await this.#expect("welcome");
      this.#serverMaxFrame = welcome.maxFrameSize;
      this.#digestAtEnd = (welcome.capabilities & Capability.DIGEST_AT_END) !== 0;
      if (welcome.capabilities & Capability.AUTH) {
        if (this.#o.token === undefined) {
          throw new FerryError(
            "AUTH_REQUIRED",
            "Server requires a token: pass --token-file or set FERRY_TOKEN",
          );
        }
        await this.#channel.send({ kind: "auth", mac: authMac(this.#o.token, welcome.nonce) });
        await this.#expect("auth_ok");
      }
    } catch (e) {
      this.#channel.dispose(); // nothing reads this connection any more
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  async #expect<K extends Message["kind"]>(kind: K): Promise<Extract<Message, { kind: K }>> {
    const m = await this.#channel.receive();
    if (m === null) {
      throw new FerryError("CONNECTION_FAILED", `Connection closed while waiting for ${kind.toUpperCase()}`);
    }
    if (m.kind === "error") throw new RemoteError(m.code, m.message, m.id);
    if (m.kind !== kind) {
      throw new ProtocolError(
        "UNEXPECTED_FRAME",
        `Expected ${kind.toUpperCase()}, got ${m.kind.toUpperCase()}`,
      );
    }
    return m as Extract<Message, { kind: K }>;
  }

  async run(jobs: FileJob[], messages: Array<{ text: string; acked: boolean }>): Promise<void> {
    const reading = this.#readLoop();
    this.#heartbeat = new Heartbeat({
      intervalMs: this.#o.heartbeatIntervalMs ?? 5_000,
      misses: this.#o.heartbeatMisses ?? 3,
      lastReceivedAt: () => this.#channel.lastReceivedAt,
      sendPing: (token) => {
        this.#channel.send({ kind: "ping", token }).catch(() => {});
      },
      onDead: (silentMs) => {
        this.#broken.reject(
          new FerryError("PEER_DEAD", `Server sent nothing for ${Math.round(silentMs)} ms`),
        );
        this.#conn.close();
      },
      onRtt: (ms) => this.#emit({ type: "rtt", ms: Math.round(ms * 10) / 10 }),
    });
    this.#heartbeat.start();
    // Cancelling stops the transfer in flight, not only the next reconnect.
    const signal = this.#o.signal;
    const onAbort = () => {
      this.#broken.reject(signal?.reason ?? new Error("aborted"));
      this.#conn.close();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await Promise.race([this.#sendAll(jobs, messages), this.#broken.promise]);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#heartbeat.stop();
      this.#conn.close();
      await reading.catch(() => {});
      this.#buffers?.retire();
    }
  }

  async #sendAll(jobs: FileJob[], messages: Array<{ text: string; acked: boolean }>): Promise<void> {
    const todo = jobs.filter((j) => !j.done && j.file);
    const window = Math.max(1, this.#o.window ?? 32);
    const entries: Offered[] = [];
    let headersSent = 0;
    const sendHeadersUpTo = async (streaming: number, n: number) => {
      for (; headersSent < Math.min(n, todo.length); headersSent++) {
        while (this.#answers.size >= this.#openLimit) {
          // Offered files not streamed yet go first; more offers wait until the server answers one.
          if (headersSent > streaming) return;
          await this.#answered.promise;
        }
        const job = todo[headersSent];
        const id = this.#nextId++;
        const entry: Offered = {
          id,
          job,
          answer: deferred<Answer>(),
          finished: deferred<void>(),
          digestAtEnd: false,
        };
        entries.push(entry);
        let field: Uint8Array;
        try {
          field = await this.#prepare(entry);
        } catch (e) {
          // The local file cannot be read: it fails alone, before anything was offered.
          this.#fail(job, e instanceof FerryError ? e : new FerryError("IO_ERROR", String(e), { cause: e }));
          entry.answer.resolve({ kind: "finished" });
          entry.finished.resolve();
          continue;
        }
        const file = job.file!;
        this.#answers.set(id, entry);
        await this.#channel.send({
          kind: "file",
          id,
          flags: FileFlag.RESUME | (entry.digestAtEnd ? FileFlag.DIGEST_AT_END : 0),
          size: file.size,
          sha256: field,
          mtimeMs: file.mtimeMs,
          name: file.name,
          mime: "",
        });
      }
    };
    for (let i = 0; i < todo.length || this.#refused.length > 0; i++) {
      // Files refused with SERVER_BUSY go again after the rest. Each refusal is queued before its answer
      // resolves, and answers are awaited in order, so none is missed when the loop reaches the end.
      for (const job of this.#refused) todo.push(job);
      this.#refused.length = 0;
      await sendHeadersUpTo(i, i + window);
      const entry = entries[i];
      const answer = await entry.answer.promise;
      if (answer.kind === "accept") {
        try {
          await this.#stream(entry, answer.offset);
        } catch (e) {
          if (!(e instanceof LocalFileError)) throw e;
          // Our own file failed, not the connection: abandon just this file (the server drops its
          // partial) and go on with the others.
          this.#answers.delete(entry.id);
          await this.#channel.send({
            kind: "error",
            code: e.code,
            wireCode: e.wireCode,
            id: entry.id,
            message: e.message,
          });
          this.#fail(entry.job, e);
          entry.finished.resolve();
        }
      }
    }
    // Messages go after the files; each waits for its own ack below.
    const pendingAcks: Promise<void>[] = [];
    for (const [index, m] of messages.entries()) {
      if (m.acked) continue;
      // The server would close the whole connection for a frame above its limit: refuse it here.
      const bytes = new TextEncoder().encode(m.text).length;
      if (4 + bytes > this.#serverMaxFrame) {
        m.acked = true;
        const error = new FerryError(
          "MESSAGE_TOO_LARGE",
          `Message of ${bytes} bytes exceeds the server's frame limit of ${this.#serverMaxFrame} bytes`,
        );
        this.#result.failures.push({ path: "", name: "(message)", error });
        this.#emit({ type: "error", name: "(message)", code: error.code, message: error.message });
        continue;
      }
      const id = this.#nextId++;
      const ack = deferred<boolean>();
      this.#acks.set(id, ack);
      await this.#channel.send({ kind: "message", id, text: m.text });
      pendingAcks.push(ack.promise.then((stored) => {
        m.acked = true;
        if (!stored) return;
        this.#result.messagesAcked++;
        this.#emit({ type: "message", index });
      }));
    }
    await Promise.all([...entries.map((e) => e.finished.promise), ...pendingAcks]);
    if (this.#retryLater) throw this.#retryLater;
  }

  /**
   * Decides how a file is offered on this connection and returns the header's 32-byte field: a large
   * file (more than one chunk) goes with DIGEST_AT_END and its source key when the server supports it
   * and `hashFirst` is off; any other file with its SHA-256, which for a small file comes from reading
   * it once into memory (the buffer it is then sent from).
   */
  async #prepare(entry: Offered): Promise<Uint8Array> {
    const job = entry.job;
    let file = job.file!;
    if (file.sha256 === undefined && file.size > smallFileLimit(this.#o) && this.#digestAtEnd) {
      entry.digestAtEnd = true;
      return sourceKey(file);
    }
    if (file.sha256 === undefined) {
      // A small file is read now, once; a large one for a server without DIGEST_AT_END gets a hash pass.
      file = job.file = file.size <= smallFileLimit(this.#o)
        ? await readWholeFile(job.item, smallFileLimit(this.#o))
        : await describeFile(job.item);
    }
    return file.sha256!;
  }

  async #stream(entry: Offered, offset: number): Promise<void> {
    const { id, job } = entry;
    const file = job.file!;
    if (offset > file.size) {
      throw new ProtocolError("BAD_OFFSET", `Server asked for offset ${offset} past the end`);
    }
    this.#emit({ type: "file", name: file.name, size: file.size, offset });
    const chunkSize = Math.max(
      1,
      Math.min(this.#o.chunkSize ?? DEFAULT_CHUNK, this.#serverMaxFrame - DATA_PREFIX_SIZE, READ_CHUNK),
    );
    this.#progress.setSent(job, offset);
    const readError = (e: Error): never => {
      throw new LocalFileError("IO_ERROR", `Cannot read ${file.path}: ${e.message}`, { cause: e });
    };
    // A small file read once is sent from its buffer; anything else is read from disk as it goes.
    const data = file.data;
    const handle = data ? undefined : await open(file.path, "r").catch(readError);
    // DIGEST_AT_END: hash exactly the bytes sent; on a resume, first the bytes the receiver kept.
    let hash: Hash | undefined;
    const frameSize = DATA_HEADER_SIZE + chunkSize;
    if (this.#buffers?.size !== frameSize) {
      this.#buffers?.retire();
      this.#buffers = new FrameBuffers(this.#conn, frameSize);
    }
    const buffers = this.#buffers;
    // The next chunk is read while the current one is sent, so disk and socket work overlap.
    const readAt = (at: number): Promise<Chunk> => {
      const length = Math.min(chunkSize, file.size - at);
      if (data) {
        // A small file read with room for the header in front leaves as that one buffer, once: the
        // header is written in place, and after a reconnect the old socket may still hold the buffer.
        const whole = at === 0 && length === data.length ? file.frame : undefined;
        file.frame = undefined;
        return Promise.resolve({ payload: data.subarray(at, at + length), frame: whole });
      }
      // A buffer the socket no longer holds, with room for the frame header in front so the frame
      // leaves as one buffer.
      const reading = buffers.take().then(async (buffer): Promise<Chunk> => {
        try {
          const { bytesRead } = await handle!.read(buffer, DATA_HEADER_SIZE, length, at);
          return {
            payload: buffer.subarray(DATA_HEADER_SIZE, DATA_HEADER_SIZE + bytesRead),
            frame: buffer.subarray(0, DATA_HEADER_SIZE + bytesRead),
            buffer,
          };
        } catch (e) {
          buffers.giveBack(buffer); // never sent: free again, and still counted once
          return readError(e as Error);
        }
      });
      reading.catch(() => {}); // awaited in the loop; must not count as unhandled meanwhile
      return reading;
    };
    let next: Promise<Chunk> | undefined;
    try {
      if (entry.digestAtEnd) {
        hash = createHash("sha256");
        // If the source changed under the same size and mtime, the receiver's running hash (over its
        // kept bytes) will differ from ours: HASH_MISMATCH, never a silent splice.
        await hashRange(handle!, offset, hash, file.path).catch((e: Error) => {
          throw e instanceof LocalFileError ? e : new LocalFileError("IO_ERROR", e.message, { cause: e });
        });
      }
      next = offset < file.size ? readAt(offset) : undefined;
      let position = offset;
      let lastEmit = 0;
      // A refusal mid-file (DISK_FULL, …) marks the job done: stop sending bytes the server drops.
      while (next && !job.done) {
        const { payload: chunk, frame, buffer } = await next;
        const bytesRead = chunk.length;
        if (bytesRead === 0) {
          throw new LocalFileError("IO_ERROR", `Cannot send ${file.path}: it shrank while being sent`);
        }
        next = position + bytesRead < file.size ? readAt(position + bytesRead) : undefined;
        const sending = frame
          ? this.#channel.sendDataFrame(id, position, frame)
          : this.#channel.sendData(id, position, chunk);
        if (buffer) buffers.sent(buffer);
        else if (frame) entry.wholeUntil = this.#conn.bytesQueued;
        // Hashed while the socket takes the same buffer: no copy, and the two overlap.
        hash?.update(chunk);
        await sending;
        // The transport took more: buffers of this or another connection may be free for refilling.
        FrameBuffers.progress();
        position += bytesRead;
        this.#progress.setSent(job, position);
        this.#result.bytesSent += bytesRead;
        const now = performance.now();
        if (now - lastEmit > 100 || position === file.size) {
          lastEmit = now;
          this.#emit({
            type: "progress",
            name: file.name,
            sent: position,
            size: file.size,
            totalSent: this.#progress.totalSent,
            totalBytes: this.#progress.totalBytes,
          });
        }
      }
      if (hash && !job.done) {
        // Bytes sent from a file that was being rewritten meanwhile would not be the file: refuse them.
        const after = await handle!.stat().catch(readError);
        if (after.size !== file.size || Math.max(0, Math.floor(after.mtimeMs)) !== file.mtimeMs) {
          throw new LocalFileError("IO_ERROR", `Cannot send ${file.path}: it changed while being sent`);
        }
      }
    } finally {
      // A chunk read but never sent (the file ended early, the job was refused, a send failed): its
      // buffer is free again.
      const unsent = await next?.catch(() => undefined);
      if (unsent?.buffer) buffers.giveBack(unsent.buffer);
      await handle?.close();
    }
    if (job.done) return;
    if (hash) {
      entry.digest = new Uint8Array(hash.digest());
      await this.#channel.send({ kind: "end_digest", id, sha256: entry.digest });
    } else {
      await this.#channel.send({ kind: "end", id });
    }
  }

  /** An offered file was answered: a sender waiting under the open-file limit may offer another. */
  #wakeOffers(): void {
    // Nobody waits before a limit is known: no new promise per file then.
    if (this.#openLimit === Infinity) return;
    this.#answered.resolve();
    this.#answered = deferred<void>();
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const m = await this.#channel.receive();
        if (m === null) {
          throw new FerryError("CONNECTION_FAILED", "Server closed the connection");
        }
        await this.#onMessage(m);
      }
    } catch (e) {
      this.#broken.reject(e);
    } finally {
      this.#channel.dispose();
    }
  }

  async #onMessage(m: Message): Promise<void> {
    switch (m.kind) {
      case "accept": {
        const entry = this.#answers.get(m.id);
        if (entry) entry.heldOpen = true;
        if (entry && m.offset > entry.job.accepted) entry.job.accepted = m.offset;
        entry?.answer.resolve({ kind: "accept", offset: m.offset });
        return;
      }
      case "receipt": {
        const entry = this.#answers.get(m.id);
        if (!entry) return;
        this.#answers.delete(m.id);
        this.#wakeOffers();
        const file = entry.job.file!;
        const sha256 = toHex(m.sha256);
        entry.job.done = true;
        this.#progress.setSent(entry.job, file.size);
        // The receiver has every byte, so only a transport that still holds the buffer keeps it from
        // reuse; a buffer never sent (an empty file, a duplicate: `frame` is cleared once sent) no
        // transport ever held.
        const flushed = this.#conn.bytesFlushed;
        const neverSent = file.frame !== undefined;
        const sentAndFlushed = entry.wholeUntil !== undefined && flushed !== undefined &&
          flushed >= entry.wholeUntil;
        if (file.pooled && (neverSent || sentAndFlushed)) reuseWholeFileBuffer(file.pooled);
        file.data = file.frame = file.pooled = undefined;
        // Our own hash: from before the offer, or (DIGEST_AT_END) computed while streaming.
        const ours = entry.digestAtEnd ? entry.digest : file.sha256;
        if (ours === undefined || sha256 !== toHex(ours) || m.size !== file.size) {
          this.#fail(
            entry.job,
            new FerryError("HASH_MISMATCH", `Receiver's hash of ${file.name} does not match the local file`),
          );
        } else {
          const receipt: SendReceipt = {
            path: file.path,
            name: file.name,
            storedName: m.storedName,
            size: m.size,
            sha256,
            duplicate: (m.flags & ReceiptFlag.DUPLICATE) !== 0,
          };
          this.#result.receipts.push(receipt);
          this.#emit({ type: "done", receipt });
        }
        entry.answer.resolve({ kind: "finished" });
        entry.finished.resolve();
        return;
      }
      case "error": {
        if (m.id === 0) throw new RemoteError(m.code, m.message);
        const entry = this.#answers.get(m.id);
        if (entry) {
          this.#answers.delete(m.id);
          this.#wakeOffers();
          let held = 0;
          for (const e of this.#answers.values()) if (e.heldOpen) held++;
          // Only a refused offer tells the limit; a SERVER_BUSY for a file already accepted (which another
          // receiver might send) does not.
          if (m.code === "SERVER_BUSY" && !entry.heldOpen && held > 0) {
            // The server had as many files open as it allows on a connection: those it accepted and
            // has not answered (it answers in order). Offer no more at once, and this one again here
            // once one of them is answered, instead of reconnecting.
            this.#openLimit = Math.min(this.#openLimit, held);
            this.#refused.push(entry.job);
            entry.answer.resolve({ kind: "finished" });
            entry.finished.resolve();
            return;
          }
          if (RETRIABLE_FILE_CODES.has(m.code)) {
            // Leave the job open for the next connection, but let the files already streaming on
            // this one finish (a draining server completes them); run() then reports the retry.
            entry.answer.resolve({ kind: "finished" });
            entry.finished.resolve();
            this.#retryLater ??= new RemoteError(m.code, m.message, m.id);
            return;
          }
          this.#fail(entry.job, new RemoteError(m.code, m.message, m.id));
          entry.answer.resolve({ kind: "finished" });
          entry.finished.resolve();
          return;
        }
        const ack = this.#acks.get(m.id);
        if (ack) {
          this.#acks.delete(m.id);
          // A refused message is final: report it and count it as handled.
          this.#emit({ type: "error", name: "(message)", code: m.code, message: m.message });
          this.#result.failures.push({
            path: "",
            name: "(message)",
            error: new RemoteError(m.code, m.message, m.id),
          });
          ack.resolve(false);
        }
        return;
      }
      case "message_ack": {
        const ack = this.#acks.get(m.id);
        this.#acks.delete(m.id);
        ack?.resolve(true);
        return;
      }
      case "ping":
        await this.#channel.send({ kind: "pong", token: m.token });
        return;
      case "pong":
        this.#heartbeat?.pong(m.token);
        return;
      default:
        throw new ProtocolError(
          "UNEXPECTED_FRAME",
          `Unexpected ${m.kind.toUpperCase()} frame from the server`,
        );
    }
  }
}
