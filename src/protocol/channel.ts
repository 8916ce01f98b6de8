import { FrameDecoder } from "../framing/decoder.ts";
import { FRAME_HEADER_SIZE, type FrameParts, joinBytes } from "../framing/frame.ts";
import type { Connection } from "../runtime/transport.ts";
import { DATA_PREFIX_SIZE, FrameType } from "./constants.ts";
import {
  DATA_HEADER_SIZE,
  type DataMessage,
  decodeMessage,
  encodeDataHeader,
  encodeMessage,
  type Message,
  writeDataHeader,
} from "./messages.ts";

/**
 * A received DATA frame whose file bytes are left in the pieces they arrived
 * in: views of the received chunks, never joined. Usually one part; none when
 * the frame carries no bytes. On a transport with
 * {@linkcode Connection.compactPending} (Bun), the start of a frame that
 * spans reads is copied once, into a buffer of the channel's own, before the
 * next read.
 */
export interface DataParts {
  kind: "data";
  id: number;
  offset: number;
  /** The file bytes, in order. */
  parts: Uint8Array[];
  /** Total bytes in `parts`. */
  length: number;
}

/** What {@linkcode Channel.receiveParts} returns: a message, with DATA as {@linkcode DataParts}. */
export type Incoming = Exclude<Message, DataMessage> | DataParts;

/**
 * Buffers of the channel's own that hold the start of a frame not yet whole, for transports whose
 * reads are costly to keep ({@linkcode Connection.compactPending}). By size, powers of two from
 * 64 KiB; free ones are shared by every channel of the process, up to {@linkcode CARRY_POOL_BYTES}.
 */
const carries = new Map<number, ArrayBuffer[]>();
const carryBuffers = new WeakSet<ArrayBuffer>();
let carryPoolBytes = 0;
/**
 * Free carry buffers kept for reuse: 32 MiB. Most carries are in use at any time (200 connections each
 * hold the start of a frame); this is what a burst of finished frames gives back.
 */
const CARRY_POOL_BYTES = 32 * 1024 * 1024;

/** A carry of at least `n` bytes: a power of two from 64 KiB, but no more than `cap` (a whole frame) unless `n` is. */
function takeCarry(n: number, cap: number): Uint8Array {
  let size = 64 * 1024;
  while (size < n) size *= 2;
  size = Math.max(n, Math.min(size, cap));
  const free = carries.get(size)?.pop();
  if (free) {
    carryPoolBytes -= size;
    return new Uint8Array(free);
  }
  const buffer = new ArrayBuffer(size);
  carryBuffers.add(buffer);
  return new Uint8Array(buffer);
}

function isCarry(chunk: Uint8Array): boolean {
  return carryBuffers.has(chunk.buffer as ArrayBuffer);
}

function giveCarry(chunk: Uint8Array): void {
  const buffer = chunk.buffer as ArrayBuffer;
  if (carryPoolBytes + buffer.byteLength > CARRY_POOL_BYTES) return;
  let free = carries.get(buffer.byteLength);
  if (!free) carries.set(buffer.byteLength, free = []);
  if (free.includes(buffer)) throw new Error("internal: a carry buffer was given back twice");
  free.push(buffer);
  carryPoolBytes += buffer.byteLength;
}

/**
 * Messages over a {@linkcode Connection}: decodes incoming frames, however
 * TCP split them, and encodes outgoing messages. Used by both server and
 * client.
 *
 * @example
 * ```ts
 * import { Channel } from "./channel.ts";
 * import type { Connection } from "../runtime/transport.ts";
 * declare const conn: Connection;
 * const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
 * await channel.send({ kind: "ping", token: 1n });
 * const reply = await channel.receive(); // e.g. { kind: "pong", token: 1n }
 * ```
 */
export class Channel {
  readonly conn: Connection;
  #decoder: FrameDecoder;
  /** `performance.now()` when bytes last arrived; the heartbeat reads it. */
  lastReceivedAt: number = performance.now();
  /** Called with the number of bytes each time bytes arrive. */
  onBytes?: (n: number) => void;
  /** Room for a DATA prefix that arrived split across chunks. */
  #prefix = new Uint8Array(DATA_PREFIX_SIZE);
  /**
   * Chunks the decoder is done with, handed back to the transport at the next `receive()` or
   * `receiveParts()` (what the last one returned may still use them) or at {@linkcode dispose}.
   */
  #consumed: Uint8Array[] = [];
  /** Whether the reader is `receiveParts()`, whose DATA parts may stay views across reads. */
  #readingParts = false;

  /** Largest carry needed: a whole frame with its header. */
  readonly #carryCap: number;

  constructor(conn: Connection, options: { maxFrameSize: number }) {
    this.conn = conn;
    this.#carryCap = options.maxFrameSize + FRAME_HEADER_SIZE;
    const onConsumed = conn.release && ((chunk: Uint8Array) => this.#consumed.push(chunk));
    this.#decoder = new FrameDecoder({ maxFrameSize: options.maxFrameSize, onConsumed });
  }

  /**
   * The next message, or `null` at a clean end of stream (between frames).
   * Throws `ProtocolError` for malformed input, `TRUNCATED_FRAME` when the
   * stream ends inside a frame.
   *
   * What it returns may be kept, with one exception: a DATA message's
   * `bytes` may share a socket chunk that the next `receive()` or
   * {@linkcode receiveParts} call hands back to the transport, so they are
   * valid until that call. Other messages are decoded from a copy.
   */
  async receive(): Promise<Message | null> {
    this.#releaseConsumed();
    this.#readingParts = false;
    for (;;) {
      const frame = this.#decoder.next();
      if (frame) {
        // Control frames are small: a copy keeps their byte fields (a FILE's hash, an AUTH mac)
        // valid even when the chunk they came from is released by a later receiveParts().
        if (frame.type === FrameType.DATA) return decodeMessage(frame);
        return decodeMessage({ type: frame.type, payload: frame.payload.slice() });
      }
      if (!(await this.#fill())) return null;
    }
  }

  /**
   * Like {@linkcode receive}, but a DATA frame's bytes come as parts
   * ({@linkcode DataParts}) instead of one joined buffer, which costs an
   * allocation and a copy whenever a frame spans socket reads. Other
   * messages, and every error, are exactly as from `receive()`.
   *
   * What it returns is valid only until the next call: the caller must be
   * done with the message, its parts and any view of them by then (a part
   * kept longer may come to hold another connection's bytes). That
   * call hands the socket chunks the previous messages came from back to
   * the transport ({@linkcode Connection.release}), which reuses or frees
   * them at once.
   */
  async receiveParts(): Promise<Incoming | null> {
    this.#releaseConsumed();
    this.#readingParts = true;
    for (;;) {
      const frame = this.#decoder.nextParts();
      if (!frame) {
        if (!(await this.#fill())) return null;
        continue;
      }
      if (frame.type === FrameType.DATA && frame.length >= DATA_PREFIX_SIZE) return this.#dataParts(frame);
      // A short DATA frame fails to decode here, with the error receive() would give.
      const m = decodeMessage({ type: frame.type, payload: joinBytes(frame.parts, frame.length) });
      return m.kind === "data"
        ? { kind: "data", id: m.id, offset: m.offset, parts: [m.bytes], length: m.bytes.length }
        : m;
    }
  }

  /** Reads one chunk into the decoder; false at a clean end of stream. */
  async #fill(): Promise<boolean> {
    if (
      this.#readingParts && this.conn.compactPending && this.conn.release && this.#decoder.bufferedBytes > 0
    ) {
      // The start of a frame is all that is left of the reads so far, and the next read may come many
      // event-loop turns later: it moves into a buffer of ours, and the reads are released now. Safe:
      // the frame returned last is dead by the contract of receiveParts(), and this one is not out yet.
      this.#decoder.compact((n) => takeCarry(n, this.#carryCap), isCarry);
      this.#releaseConsumed();
    }
    const chunk = await this.conn.read();
    if (chunk === null) {
      this.#decoder.end();
      return false;
    }
    this.lastReceivedAt = performance.now();
    this.onBytes?.(chunk.length);
    this.#decoder.push(chunk);
    return true;
  }

  /**
   * The channel will not be read again: every chunk it still holds (the start of a frame the stream
   * ended inside, reads whose messages were the last ones) goes back to the transport, whose pooled
   * read buffers would otherwise stay out of its pool for good. Call it once no `receive()` or
   * `receiveParts()` is pending and nothing they returned is used any more.
   */
  dispose(): void {
    this.#decoder.discard();
    this.#releaseConsumed();
  }

  #releaseConsumed(): void {
    if (this.#consumed.length === 0) return;
    for (const chunk of this.#consumed) this.#releaseChunk(chunk);
    this.#consumed.length = 0;
  }

  /** Hands a consumed chunk back: a carry buffer to the pool, a read to the transport. */
  #releaseChunk(chunk: Uint8Array): void {
    if (isCarry(chunk)) giveCarry(chunk);
    else this.conn.release!(chunk);
  }

  /** Splits the 12-byte id/offset prefix off a DATA frame and decodes it as `decodeMessage` would. */
  #dataParts(frame: FrameParts): DataParts {
    const parts = frame.parts;
    let prefix: Uint8Array;
    if (parts[0].length >= DATA_PREFIX_SIZE) {
      prefix = parts[0].subarray(0, DATA_PREFIX_SIZE);
      if (parts[0].length === DATA_PREFIX_SIZE) parts.shift();
      else parts[0] = parts[0].subarray(DATA_PREFIX_SIZE);
    } else {
      prefix = this.#prefix;
      let filled = 0;
      while (filled < DATA_PREFIX_SIZE) {
        const take = Math.min(DATA_PREFIX_SIZE - filled, parts[0].length);
        prefix.set(parts[0].subarray(0, take), filled);
        filled += take;
        if (take === parts[0].length) parts.shift();
        else parts[0] = parts[0].subarray(take);
      }
    }
    const head = decodeMessage({ type: FrameType.DATA, payload: prefix }) as DataMessage;
    return { kind: "data", id: head.id, offset: head.offset, parts, length: frame.length - DATA_PREFIX_SIZE };
  }

  /** Sends one message. Resolves when the transport can take more. */
  send(message: Message): Promise<void> {
    return this.conn.write(encodeMessage(message));
  }

  /** Sends a DATA frame without copying `bytes`. */
  sendData(id: number, offset: number, bytes: Uint8Array): Promise<void> {
    return this.conn.write([encodeDataHeader(id, offset, bytes.length), bytes]);
  }

  /**
   * Sends a DATA frame built in place: `frame` is {@linkcode DATA_HEADER_SIZE} bytes of room
   * followed by the file bytes. The header is written into that room and the frame leaves as one
   * buffer, so no runtime has to join a header part and a payload part (Bun's writev copies both).
   */
  sendDataFrame(id: number, offset: number, frame: Uint8Array): Promise<void> {
    writeDataHeader(frame, id, offset, frame.length - DATA_HEADER_SIZE);
    return this.conn.write(frame);
  }
}
