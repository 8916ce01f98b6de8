/**
 * One client connection on the server: handshake, auth, then files,
 * messages and heartbeats until the client leaves.
 *
 * @module
 */
import { FerryError, ProtocolError } from "../errors.ts";
import type { Emitter } from "../events.ts";
import { Channel, type Incoming } from "../protocol/channel.ts";
import { Capability, DIGEST_SIZE, FileFlag, PROTOCOL_VERSION, ReceiptFlag } from "../protocol/constants.ts";
import { Heartbeat } from "../protocol/heartbeat.ts";
import { fromHex, toHex } from "../protocol/messages.ts";
import type { Connection } from "../runtime/transport.ts";
import type { FileHeader, Inbox, Receipt, Upload } from "../store/inbox.ts";
import { ImageSniffer } from "../images/inspect.ts";
import type { AuthGate } from "./auth.ts";
import type { ResolvedServerOptions, ServerEvents } from "./server.ts";

/** A row of the live connection table. */
export interface ConnectionInfo {
  id: number;
  /** "ip:port", IPv6 in brackets. */
  peer: string;
  /** ISO time the connection was accepted. */
  since: string;
  state: "handshake" | "auth" | "idle" | "receiving" | "closing";
  bytesReceived: number;
  /** Receive rate in bytes per second, smoothed over about a second. */
  rate: number;
  /** Last heartbeat round-trip time in ms. */
  rttMs?: number;
  filesReceived: number;
  currentFile?: { name: string; received: number; size: number };
}

interface OpenUpload {
  upload: Upload;
  header: FileHeader;
  /** Looks at the first bytes to refuse a bad image before its body is stored. */
  sniffer: ImageSniffer;
}

/** Failed ids remembered per connection (their in-flight frames are dropped quietly). */
const MAX_FAILED_IDS = 4096;

/** How long a refused or failed connection may take to read our ERROR before we cut it. */
const LINGER_MS = 2_000;
/**
 * Files whose END was read and that are being finished (fsync, place, RECEIPT) while later frames are
 * read. They finish concurrently, so their directory and receipt-index fsyncs are group-committed;
 * their answers (RECEIPT or ERROR) still go out in the order their ENDs arrived. As many as a sender's
 * default window: at 16, a connection sending many small files stopped reading whenever 16 of them
 * waited on fsyncs (2,000 × 64 KiB took 9–12 % longer, 4 interleaved runs per runtime).
 */
const MAX_FINISHING = 32;

/** Server side of one connection. */
export class Session {
  readonly id: number;
  #conn: Connection;
  #channel: Channel;
  #o: ResolvedServerOptions;
  #inbox: Inbox;
  #events: Emitter<ServerEvents>;
  #auth?: AuthGate;
  #peer: string;
  #since = new Date().toISOString();
  #state: ConnectionInfo["state"] = "handshake";
  #uploads = new Map<number, OpenUpload>();
  /** Ids whose file failed: DATA/END still in flight for them is dropped silently. */
  #failed = new Set<number>();
  #heartbeat?: Heartbeat;
  #deadline?: ReturnType<typeof setTimeout>;
  /** When a file or message frame last arrived (for the idle timeout). */
  #lastActivity = 0;
  /** The idle timer is running (armed by {@linkcode #touch}). */
  #idleArmed = false;
  #bytesReceived = 0;
  #rate = 0;
  #rateWindowStart = performance.now();
  #rateWindowBytes = 0;
  #filesReceived = 0;
  #current?: OpenUpload;
  #closing = false;
  /** Graceful shutdown has begun: files in flight finish, new ones are refused. */
  #draining = false;
  /** A message is being handled (the socket is not being read meanwhile). */
  #handling = false;
  /** Why we closed the connection (PEER_DEAD, IDLE_TIMEOUT, …), for the disconnect event. */
  #failure?: FerryError;
  /** Capability bits the client announced in HELLO. */
  #clientCapabilities = 0;
  #drainWaiters: Array<() => void> = [];
  #done?: Promise<void>;
  /** Ids past END whose finish runs in the background; frames for them count as for unknown files. */
  #finishing = new Set<number>();
  /** Background finishes, chained so they complete (and place files) in END order. */
  /** Finishes in progress (each settles without throwing). */
  #finishes = new Set<Promise<void>>();
  /** Settles once the answer to the latest END is sent: answers go out in END order. */
  #answerTail: Promise<void> = Promise.resolve();

  constructor(
    id: number,
    conn: Connection,
    ctx: { options: ResolvedServerOptions; inbox: Inbox; events: Emitter<ServerEvents>; auth?: AuthGate },
  ) {
    this.id = id;
    this.#conn = conn;
    this.#o = ctx.options;
    this.#inbox = ctx.inbox;
    this.#events = ctx.events;
    this.#auth = ctx.auth;
    this.#peer = conn.remoteAddress.includes(":")
      ? `[${conn.remoteAddress}]:${conn.remotePort}`
      : `${conn.remoteAddress}:${conn.remotePort}`;
    this.#channel = new Channel(conn, { maxFrameSize: this.#o.maxFrameSize });
    this.#channel.onBytes = (n) => this.#countBytes(n);
  }

  info(): ConnectionInfo {
    const info: ConnectionInfo = {
      id: this.id,
      peer: this.#peer,
      since: this.#since,
      state: this.#state,
      bytesReceived: this.#bytesReceived,
      rate: Math.round(this.#currentRate()),
      filesReceived: this.#filesReceived,
    };
    if (this.#heartbeat?.rttMs !== undefined) info.rttMs = Math.round(this.#heartbeat.rttMs * 10) / 10;
    if (this.#current) {
      info.currentFile = {
        name: this.#current.header.name,
        received: this.#current.upload.received,
        size: this.#current.header.size,
      };
    }
    return info;
  }

  /** Refuses the connection with an error frame (server busy, shutting down). */
  refuse(error: FerryError): void {
    this.#state = "closing";
    this.#fail(error).catch(() => {});
  }

  /** Serves the connection until it ends. Never rejects. */
  run(): Promise<void> {
    this.#done ??= this.#serve();
    return this.#done;
  }

  /** Resolves when no file is in flight (for graceful shutdown). */
  drained(): Promise<void> {
    // From now on new files are refused, so a pipelining client cannot keep the grace period busy.
    this.#draining = true;
    if (this.#uploads.size === 0) return Promise.resolve();
    return new Promise((r) => this.#drainWaiters.push(r));
  }

  /** Ends the connection for shutdown; open partials stay resumable. */
  async shutdown(): Promise<void> {
    if (!this.#closing) {
      await this.#fail(new FerryError("SHUTTING_DOWN", "Server is shutting down; resume later"));
    }
    await this.#done;
  }

  async #serve(): Promise<void> {
    let reason: Error | undefined;
    this.#events.emit("connection", this.info());
    try {
      this.#armDeadline(
        this.#o.handshakeTimeoutMs,
        "HANDSHAKE_TIMEOUT",
        "Handshake did not complete in time",
      );
      await this.#handshake();
      this.#state = "idle";
      this.#touch(); // the idle timeout starts now
      this.#startHeartbeat();
      for (;;) {
        // DATA bytes come as parts of the socket reads (on Bun a frame's start is copied once, see
        // Connection.compactPending): never joined on the way to disk.
        const message = await this.#channel.receiveParts();
        if (message === null) break;
        // After a connection-level error only the linger remains: read and drop.
        if (this.#closing) continue;
        // A long local step (re-hashing a resumed partial, a slow fsync) reads nothing from the
        // socket; it must not make the heartbeat think the peer went silent.
        this.#handling = true;
        try {
          await this.#handle(message);
        } finally {
          this.#handling = false;
          this.#channel.lastReceivedAt = Math.max(this.#channel.lastReceivedAt, performance.now());
        }
      }
    } catch (e) {
      reason = e as Error;
      if (e instanceof FerryError && !this.#closing) await this.#fail(e);
    } finally {
      this.#state = "closing";
      this.#heartbeat?.stop();
      clearTimeout(this.#deadline);
      await this.#allFinished();
      await this.#suspendAll();
      // No read is pending and every message is handled: the reads still held go back to the transport.
      this.#channel.dispose();
      this.#conn.close();
      this.#events.emit("disconnect", { ...this.info(), reason: reason ?? this.#failure });
    }
  }

  async #handshake(): Promise<void> {
    const hello = await this.#channel.receive();
    if (hello === null) throw new ProtocolError("UNEXPECTED_FRAME", "Connection closed before HELLO");
    if (hello.kind !== "hello") {
      throw new ProtocolError("UNEXPECTED_FRAME", `Expected HELLO, got ${hello.kind.toUpperCase()}`);
    }
    if (hello.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        "UNSUPPORTED_VERSION",
        `Protocol version ${hello.version} is not supported; this server speaks version ${PROTOCOL_VERSION}`,
      );
    }
    this.#clientCapabilities = hello.capabilities;
    const ip = this.#conn.remoteAddress;
    if (this.#auth?.limited(ip)) {
      throw new FerryError("RATE_LIMITED", "Too many failed authentication attempts; try again later");
    }
    const nonce = this.#auth ? this.#auth.nonce() : new Uint8Array(0);
    await this.#channel.send({
      kind: "welcome",
      version: PROTOCOL_VERSION,
      capabilities: Capability.RESUME | Capability.MESSAGES | Capability.HEARTBEAT |
        (this.#o.hashFirst ? 0 : Capability.DIGEST_AT_END) | (this.#auth ? Capability.AUTH : 0),
      maxFrameSize: this.#o.maxFrameSize,
      nonce,
    });
    if (!this.#auth) return;
    this.#state = "auth";
    const auth = await this.#channel.receive();
    if (auth === null) throw new ProtocolError("AUTH_REQUIRED", "Connection closed before AUTH");
    if (auth.kind !== "auth") {
      throw new ProtocolError("AUTH_REQUIRED", `Authentication required; got ${auth.kind.toUpperCase()}`);
    }
    if (!this.#auth.check(ip, nonce, auth.mac)) {
      throw new FerryError("AUTH_FAILED", "Authentication failed: wrong token");
    }
    await this.#channel.send({ kind: "auth_ok" });
  }

  #startHeartbeat(): void {
    this.#heartbeat = new Heartbeat({
      intervalMs: this.#o.heartbeatIntervalMs,
      misses: this.#o.heartbeatMisses,
      lastReceivedAt: () => this.#handling ? performance.now() : this.#channel.lastReceivedAt,
      sendPing: (token) => {
        this.#channel.send({ kind: "ping", token }).catch(() => {});
      },
      onDead: (silentMs) => {
        this.#fail(
          new FerryError("PEER_DEAD", `Peer sent nothing for ${Math.round(silentMs)} ms; closing`),
        ).catch(() => {});
      },
    });
    this.#heartbeat.start();
  }

  /** (Re)arms the connection deadline; expiry sends the error and closes. */
  #armDeadline(ms: number, code: "HANDSHAKE_TIMEOUT", message: string): void {
    clearTimeout(this.#deadline);
    this.#deadline = setTimeout(() => {
      this.#fail(new FerryError(code, `${message} (${ms} ms)`)).catch(() => {});
    }, ms);
  }

  /** Both sides announced DIGEST_AT_END (the server does not with `hashFirst`). */
  #digestAtEndAgreed(): boolean {
    return !this.#o.hashFirst && (this.#clientCapabilities & Capability.DIGEST_AT_END) !== 0;
  }

  async #handle(m: Incoming): Promise<void> {
    switch (m.kind) {
      case "file": {
        this.#touch();
        const digestAtEnd = (m.flags & FileFlag.DIGEST_AT_END) !== 0;
        if (digestAtEnd && !this.#digestAtEndAgreed()) {
          throw new ProtocolError(
            "BAD_HEADER",
            `FILE id ${m.id} has the DIGEST_AT_END flag, but HELLO and WELCOME did not both announce DIGEST_AT_END`,
          );
        }
        return this.#onFile(m.id, {
          name: m.name,
          size: m.size,
          sha256: toHex(m.sha256),
          mtimeMs: m.mtimeMs,
          mime: m.mime,
          sender: this.#peer,
          resume: (m.flags & FileFlag.RESUME) !== 0,
          digestAtEnd,
        });
      }
      case "data":
        this.#touch();
        return this.#onData(m.id, m.offset, m.parts);
      case "end":
        this.#touch();
        return this.#onEnd(m.id);
      case "end_digest":
        if (!this.#digestAtEndAgreed()) {
          await this.#discardOpen(m.id);
          throw new ProtocolError(
            "UNEXPECTED_FRAME",
            "END_DIGEST, but HELLO and WELCOME did not both announce DIGEST_AT_END",
          );
        }
        this.#touch();
        return this.#onEnd(m.id, toHex(m.sha256));
      case "message":
        this.#touch();
        return this.#onMessage(m.id, m.text);
      case "ping":
        await this.#channel.send({ kind: "pong", token: m.token });
        return;
      case "pong":
        this.#heartbeat?.pong(m.token);
        return;
      case "error":
        // The client gave up on a file: drop its partial bytes.
        if (m.id !== 0) {
          // A file already finishing is committed or about to be: too late to abandon it.
          if (this.#finishing.has(m.id)) return;
          const open = this.#uploads.get(m.id);
          if (open) {
            this.#forget(m.id);
            this.#failed.add(m.id);
            await open.upload.discard();
          }
          return;
        }
        throw new FerryError(m.code, `Client reported: ${m.message}`);
      default:
        throw new ProtocolError("UNEXPECTED_FRAME", `Unexpected ${m.kind.toUpperCase()} frame from a client`);
    }
  }

  /**
   * Marks file or message activity. The idle timer is not re-armed per frame (three timers per small
   * file): it is armed once, and when it fires early because of later activity it waits for the rest.
   */
  #touch(): void {
    this.#lastActivity = performance.now();
    if (this.#idleArmed) return;
    this.#idleArmed = true;
    const check = () => {
      const left = this.#lastActivity + this.#o.idleTimeoutMs - performance.now();
      if (left > 0) {
        this.#deadline = setTimeout(check, left);
        return;
      }
      this.#idleArmed = false;
      const ms = this.#o.idleTimeoutMs;
      this.#fail(new FerryError("IDLE_TIMEOUT", `Connection was idle too long (${ms} ms)`)).catch(() => {});
    };
    clearTimeout(this.#deadline);
    this.#deadline = setTimeout(check, this.#o.idleTimeoutMs);
  }

  async #onFile(id: number, header: FileHeader): Promise<void> {
    this.#failed.delete(id);
    if (id === 0 || this.#uploads.has(id)) {
      // A per-file error could not say which file it means: fail the connection.
      throw new ProtocolError("BAD_HEADER", `File id ${id} is zero or already in use`);
    }
    if (this.#closing || this.#draining) {
      return this.#fileError(id, header.name, new FerryError("SHUTTING_DOWN", "Server is shutting down"));
    }
    if (this.#uploads.size >= this.#o.maxOpenFiles) {
      return this.#fileError(
        id,
        header.name,
        new FerryError(
          "SERVER_BUSY",
          `Cannot accept file: ${this.#o.maxOpenFiles} files already open on this connection`,
        ),
      );
    }
    let begun;
    try {
      begun = await this.#inbox.begin(header);
    } catch (e) {
      return this.#fileError(id, header.name, asFerryError(e));
    }
    if (begun.kind === "duplicate") {
      this.#filesReceived++;
      await this.#sendReceipt(id, begun.receipt, ReceiptFlag.DUPLICATE);
      return;
    }
    const policy = { imagesOnly: this.#o.imagesOnly, maxPixels: this.#o.maxPixels };
    const sniffer = new ImageSniffer(begun.upload.name, header.size, policy, begun.upload.offset);
    const open = { upload: begun.upload, header, sniffer };
    this.#uploads.set(id, open);
    this.#current = open;
    this.#state = "receiving";
    await this.#channel.send({ kind: "accept", id, offset: begun.upload.offset });
  }

  async #onData(id: number, offset: number, parts: Uint8Array[]): Promise<void> {
    if (this.#failed.has(id)) return;
    const open = this.#finishing.has(id) ? undefined : this.#uploads.get(id);
    if (!open) {
      return this.#fileError(
        id,
        "",
        new FerryError("UNKNOWN_FILE", `DATA for file id ${id}, which is not open`),
      );
    }
    this.#current = open;
    try {
      for (let i = 0, at = offset; i < parts.length && !open.sniffer.done; at += parts[i++].length) {
        await open.sniffer.push(parts[i], at);
      }
      await open.upload.write(parts, offset);
    } catch (e) {
      this.#forget(id);
      await open.upload.discard().catch(() => {});
      return this.#fileError(id, open.header.name, asFerryError(e));
    }
  }

  /** END (`digest` undefined) or END_DIGEST (`digest` = the sender's SHA-256, hex). */
  async #onEnd(id: number, digest?: string): Promise<void> {
    if (this.#failed.has(id)) return;
    const frame = digest === undefined ? "END" : "END_DIGEST";
    const open = this.#finishing.has(id) ? undefined : this.#uploads.get(id);
    if (!open) {
      return this.#fileError(
        id,
        "",
        new FerryError("UNKNOWN_FILE", `${frame} for file id ${id}, which is not open`),
      );
    }
    if ((open.header.digestAtEnd === true) !== (digest !== undefined)) {
      // The client broke the protocol for this file: nothing of it is kept, and the connection ends.
      await this.#discardOpen(id);
      throw new ProtocolError(
        "UNEXPECTED_FRAME",
        open.header.digestAtEnd
          ? `END for file id ${id}, which was offered with DIGEST_AT_END: it must end with END_DIGEST`
          : `END_DIGEST for file id ${id}, which was offered with its SHA-256: it must end with END`,
      );
    }
    // Finished in the background, so the next file's frames are read while this one's fsyncs run.
    this.#finishing.add(id);
    const previous = this.#answerTail;
    let answered!: () => void;
    this.#answerTail = new Promise<void>((resolve) => answered = resolve);
    const finishing: Promise<void> = this.#finish(id, open, previous, digest).catch((e) => {
      if (!this.#closing) this.#fail(asFerryError(e)).catch(() => {});
    }).finally(() => {
      answered();
      this.#finishes.delete(finishing);
    });
    this.#finishes.add(finishing);
    while (this.#finishes.size >= MAX_FINISHING) await Promise.race(this.#finishes);
  }

  async #allFinished(): Promise<void> {
    while (this.#finishes.size > 0) await Promise.all(this.#finishes);
  }

  async #finish(id: number, open: OpenUpload, previous: Promise<void>, digest?: string): Promise<void> {
    // Forgotten only once the RECEIPT is out (queued on the socket): a graceful shutdown waits for it.
    let receipt: Receipt;
    try {
      // A head the sniffer saw to be no image needs no second look at the whole file.
      receipt = await open.upload.finish(digest, { notAnImage: open.sniffer.notAnImage });
    } catch (e) {
      await previous;
      this.#finishing.delete(id);
      this.#forget(id);
      return this.#fileError(id, open.header.name, asFerryError(e));
    }
    await previous;
    this.#filesReceived++;
    // A DIGEST_AT_END file can turn out to be a duplicate only now, once its hash is known.
    const sending = this.#sendReceipt(id, receipt, receipt.duplicate ? ReceiptFlag.DUPLICATE : 0);
    // The RECEIPT is queued now: the client may reuse the id as soon as it reads it.
    this.#finishing.delete(id);
    this.#forget(id);
    await sending;
  }

  async #onMessage(id: number, text: string): Promise<void> {
    // Files whose END came first are answered first, as when they were finished one at a time.
    await this.#answerTail;
    const bytes = new TextEncoder().encode(text).length;
    if (bytes > this.#o.maxMessageBytes) {
      return this.#fileError(
        id,
        "",
        new FerryError(
          "MESSAGE_TOO_LARGE",
          `Message of ${bytes} bytes exceeds limit ${this.#o.maxMessageBytes}`,
        ),
      );
    }
    let receivedAt: string;
    try {
      ({ receivedAt } = await this.#inbox.appendMessage({ id, text, sender: this.#peer }));
    } catch (e) {
      return this.#fileError(id, "", asFerryError(e));
    }
    await this.#channel.send({ kind: "message_ack", id });
    this.#events.emit("message", { connection: this.info(), id, text, receivedAt });
  }

  async #sendReceipt(id: number, receipt: Receipt, flags: number): Promise<void> {
    const sha256 = fromHex(receipt.sha256);
    if (sha256.length !== DIGEST_SIZE) throw new FerryError("INTERNAL", "Receipt hash is malformed");
    await this.#channel.send({
      kind: "receipt",
      id,
      flags,
      size: receipt.size,
      sha256,
      storedName: receipt.name,
    });
    this.#events.emit("file", { connection: this.info(), receipt });
  }

  async #fileError(id: number, name: string, error: FerryError): Promise<void> {
    // On the wire id 0 means the whole connection: raise it as such (and close).
    if (id === 0) throw error;
    this.#failed.add(id);
    // A peer naming endless new ids must not grow this set without bound: forget the oldest.
    if (this.#failed.size > MAX_FAILED_IDS) this.#failed.delete(this.#failed.values().next().value!);
    this.#events.emit("fileError", { connection: this.info(), name, error });
    await this.#channel.send({
      kind: "error",
      code: error.code,
      wireCode: error.wireCode,
      id,
      message: error.message,
    });
  }

  /** Deletes the partial of open file `id`, if any (a protocol violation about it). */
  async #discardOpen(id: number): Promise<void> {
    const open = this.#finishing.has(id) ? undefined : this.#uploads.get(id);
    if (!open) return;
    this.#forget(id);
    await open.upload.discard().catch(() => {});
  }

  #forget(id: number): void {
    const open = this.#uploads.get(id);
    this.#uploads.delete(id);
    if (open && this.#current === open) this.#current = undefined;
    if (this.#uploads.size === 0) {
      if (this.#state === "receiving") this.#state = "idle";
      for (const resolve of this.#drainWaiters.splice(0)) resolve();
    }
  }

  /** Keeps every open partial resumable: fsync and record its durable offset. */
  async #suspendAll(): Promise<void> {
    const open = [...this.#uploads.values()];
    this.#uploads.clear();
    this.#current = undefined;
    // An upload with no bytes has nothing to resume; keeping it would let a client
    // litter the inbox with empty partials by opening FILEs and leaving.
    await Promise.all(
      open.map((u) => (u.upload.received === 0 ? u.upload.discard() : u.upload.suspend()).catch(() => {})),
    );
    for (const resolve of this.#drainWaiters.splice(0)) resolve();
  }

  /**
   * Sends a connection-level ERROR, then closes: FIN first, so the peer can
   * read the frame, and a hard close after a short linger.
   */
  async #fail(error: FerryError): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#failure = error;
    this.#state = "closing";
    // Release open uploads now (fsynced, resumable): a peer declared dead may already be
    // reconnecting, and must not get FILE_BUSY for the whole linger.
    const suspended = this.#suspendAll();
    // Armed before writing: a peer that stopped reading must not hold the slot open forever.
    const linger = setTimeout(() => this.#conn.close(), LINGER_MS);
    this.#conn.closed.then(() => clearTimeout(linger));
    try {
      await this.#channel.send({
        kind: "error",
        code: error.code,
        wireCode: error.wireCode,
        id: 0,
        message: error.message,
      });
      await this.#conn.closeWrite();
    } catch {
      // The peer may already be gone; closing is all that is left.
    }
    await suspended;
  }

  #countBytes(n: number): void {
    this.#bytesReceived += n;
    this.#rateWindowBytes += n;
    this.#currentRate();
  }

  #currentRate(): number {
    const now = performance.now();
    const elapsed = now - this.#rateWindowStart;
    if (elapsed >= 1000) {
      this.#rate = (this.#rateWindowBytes * 1000) / elapsed;
      this.#rateWindowStart = now;
      this.#rateWindowBytes = 0;
    }
    return this.#rate;
  }
}

function asFerryError(e: unknown): FerryError {
  if (e instanceof FerryError) return e;
  const code = (e as { code?: string })?.code;
  if (code === "ENOSPC") {
    return new FerryError("DISK_FULL", "No space left on the server's disk", { cause: e });
  }
  return new FerryError("IO_ERROR", `Server I/O failed: ${(e as Error)?.message ?? e}`, { cause: e });
}
