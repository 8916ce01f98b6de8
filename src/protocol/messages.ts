/**
 * Typed protocol messages and their exact byte encoding. Every multi-byte
 * integer is big-endian. See docs/PROTOCOL.md for the normative layout.
 *
 * @module
 */
import { ERROR_CODES, type ErrorCode, errorCodeFromNumber, ProtocolError } from "../errors.ts";
import { type Frame, FRAME_HEADER_SIZE, writeFrameHeader } from "../framing/frame.ts";
import { DATA_PREFIX_SIZE, DIGEST_SIZE, FrameType, MAGIC, MAX_SAFE_U64 } from "./constants.ts";

/** Client → server: opens every connection. */
export interface HelloMessage {
  kind: "hello";
  version: number;
  capabilities: number;
  /** Largest frame payload the client accepts. */
  maxFrameSize: number;
}
/** Server → client: answers HELLO. `nonce` is 32 bytes when auth is required, else empty. */
export interface WelcomeMessage {
  kind: "welcome";
  version: number;
  capabilities: number;
  maxFrameSize: number;
  nonce: Uint8Array;
}
/** Client → server: HMAC-SHA256(token, "ferry-auth-v1" || nonce). */
export interface AuthMessage {
  kind: "auth";
  mac: Uint8Array;
}
/** Server → client: the AUTH mac was right. */
export interface AuthOkMessage {
  kind: "auth_ok";
}
/** Either direction: something failed. `id` 0 means the whole connection. */
export interface ErrorMessage {
  kind: "error";
  code: ErrorCode;
  /** The number on the wire; differs from `ERROR_CODES[code]` only for codes this version does not know. */
  wireCode: number;
  id: number;
  message: string;
}
/** Client → server: the header of a file (and the resume offer). */
export interface FileMessage {
  kind: "file";
  id: number;
  flags: number;
  size: number;
  sha256: Uint8Array;
  /** Modification time in ms since the epoch; 0 when unknown. */
  mtimeMs: number;
  /** Relative path with `/` separators. */
  name: string;
  /** MIME type, or "" when not given. */
  mime: string;
}
/** Server → client: send the data of file `id` from `offset` (the resume answer). */
export interface AcceptMessage {
  kind: "accept";
  id: number;
  offset: number;
}
/** Client → server: file bytes at `offset`. */
export interface DataMessage {
  kind: "data";
  id: number;
  offset: number;
  bytes: Uint8Array;
}
/** Client → server: all the bytes of file `id` were sent. */
export interface EndMessage {
  kind: "end";
  id: number;
}
/** Client → server: all the bytes of DIGEST_AT_END file `id` were sent, and this is their SHA-256. */
export interface EndDigestMessage {
  kind: "end_digest";
  id: number;
  sha256: Uint8Array;
}
/** Server → client: file `id` is stored and verified (the ack). */
export interface ReceiptMessage {
  kind: "receipt";
  id: number;
  flags: number;
  size: number;
  /** The hash the receiver computed over the stored bytes. */
  sha256: Uint8Array;
  /** The name the file was stored under, relative to the inbox. */
  storedName: string;
}
/** Either direction: heartbeat probe. */
export interface PingMessage {
  kind: "ping";
  token: bigint;
}
/** Either direction: heartbeat answer echoing the PING token. */
export interface PongMessage {
  kind: "pong";
  token: bigint;
}
/** Client → server: a text message. */
export interface TextMessage {
  kind: "message";
  id: number;
  text: string;
}
/** Server → client: text message `id` is stored. */
export interface MessageAckMessage {
  kind: "message_ack";
  id: number;
}

/** Any protocol message. */
export type Message =
  | HelloMessage
  | WelcomeMessage
  | AuthMessage
  | AuthOkMessage
  | ErrorMessage
  | FileMessage
  | AcceptMessage
  | DataMessage
  | EndMessage
  | EndDigestMessage
  | ReceiptMessage
  | PingMessage
  | PongMessage
  | TextMessage
  | MessageAckMessage;

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Reads fields from a payload, raising `ProtocolError` on any overrun. */
class Reader {
  #view: DataView;
  #bytes: Uint8Array;
  #pos = 0;
  constructor(bytes: Uint8Array, readonly what: string, readonly code: ErrorCode = "BAD_FRAME") {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  fail(detail: string): never {
    throw new ProtocolError(this.code, `Cannot decode ${this.what} frame: ${detail}`);
  }
  #need(n: number): number {
    if (this.#pos + n > this.#bytes.length) {
      this.fail(`payload of ${this.#bytes.length} bytes is too short`);
    }
    const at = this.#pos;
    this.#pos += n;
    return at;
  }
  u8(): number {
    return this.#view.getUint8(this.#need(1));
  }
  u16(): number {
    return this.#view.getUint16(this.#need(2));
  }
  u32(): number {
    return this.#view.getUint32(this.#need(4));
  }
  u64(field: string): number {
    const value = this.#view.getBigUint64(this.#need(8));
    if (value > BigInt(MAX_SAFE_U64)) this.fail(`${field} ${value} exceeds 2^53-1`);
    return Number(value);
  }
  u64big(): bigint {
    return this.#view.getBigUint64(this.#need(8));
  }
  bytes(n: number): Uint8Array {
    const at = this.#need(n);
    return this.#bytes.subarray(at, at + n);
  }
  rest(): Uint8Array {
    const at = this.#pos;
    this.#pos = this.#bytes.length;
    return this.#bytes.subarray(at);
  }
  text(bytes: Uint8Array, field: string): string {
    try {
      return strictUtf8.decode(bytes);
    } catch (cause) {
      throw new ProtocolError(this.code, `Cannot decode ${this.what} frame: ${field} is not valid UTF-8`, {
        cause,
      });
    }
  }
  str8(field: string): string {
    return this.text(this.bytes(this.u8()), field);
  }
  str16(field: string): string {
    return this.text(this.bytes(this.u16()), field);
  }
  done(): void {
    if (this.#pos !== this.#bytes.length) {
      this.fail(`${this.#bytes.length - this.#pos} unexpected trailing bytes`);
    }
  }
}

/** Builds a frame payload field by field, then writes it into one buffer. */
class Writer {
  #fields: Array<{ size: number; put: (view: DataView, bytes: Uint8Array, at: number) => void }> = [];
  #size = 0;
  #add(size: number, put: (view: DataView, bytes: Uint8Array, at: number) => void): this {
    this.#fields.push({ size, put });
    this.#size += size;
    return this;
  }
  u8(v: number): this {
    checkInt(v, 0xff, "u8");
    return this.#add(1, (d, _b, at) => d.setUint8(at, v));
  }
  u16(v: number): this {
    checkInt(v, 0xffff, "u16");
    return this.#add(2, (d, _b, at) => d.setUint16(at, v));
  }
  u32(v: number): this {
    checkInt(v, 0xffffffff, "u32");
    return this.#add(4, (d, _b, at) => d.setUint32(at, v));
  }
  u64(v: number | bigint): this {
    if (typeof v === "number") checkInt(v, MAX_SAFE_U64, "u64");
    const big = BigInt(v);
    if (big < 0n || big > 0xffffffffffffffffn) throw new RangeError(`Cannot encode u64: ${v} out of range`);
    return this.#add(8, (d, _b, at) => d.setBigUint64(at, big));
  }
  bytes(v: Uint8Array, exactLength?: number): this {
    if (exactLength !== undefined && v.length !== exactLength) {
      throw new RangeError(`Cannot encode field: expected ${exactLength} bytes, got ${v.length}`);
    }
    return this.#add(v.length, (_d, b, at) => b.set(v, at));
  }
  str8(s: string): this {
    const b = utf8.encode(s);
    return this.u8(checkLength(b.length, 0xff)).bytes(b);
  }
  str16(s: string): this {
    const b = utf8.encode(s);
    return this.u16(checkLength(b.length, 0xffff)).bytes(b);
  }
  /** Encodes header + payload as one frame buffer. */
  frame(type: number): Uint8Array {
    const out = new Uint8Array(FRAME_HEADER_SIZE + this.#size);
    writeFrameHeader(out, 0, type, this.#size);
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    let at = FRAME_HEADER_SIZE;
    for (const field of this.#fields) {
      field.put(view, out, at);
      at += field.size;
    }
    return out;
  }
}

function checkInt(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`Cannot encode ${what}: ${v} out of range 0..${max}`);
  }
}
function checkLength(n: number, max: number): number {
  if (n > max) throw new RangeError(`Cannot encode string: ${n} bytes exceeds ${max}`);
  return n;
}

/**
 * Encodes a message as one whole frame (header + payload).
 *
 * @example
 * ```ts
 * import { encodeMessage } from "./messages.ts";
 * encodeMessage({ kind: "ping", token: 1n });
 * // 00 00 00 08 20 00 00 00 00 00 00 00 01
 * ```
 */
export function encodeMessage(message: Message): Uint8Array {
  const w = new Writer();
  switch (message.kind) {
    case "hello":
      return w.bytes(MAGIC).u16(message.version).u32(message.capabilities).u32(message.maxFrameSize)
        .frame(FrameType.HELLO);
    case "welcome":
      if (message.nonce.length !== 0 && message.nonce.length !== DIGEST_SIZE) {
        throw new RangeError(`Cannot encode WELCOME: nonce must be 0 or ${DIGEST_SIZE} bytes`);
      }
      return w.u16(message.version).u32(message.capabilities).u32(message.maxFrameSize)
        .u8(message.nonce.length).bytes(message.nonce).frame(FrameType.WELCOME);
    case "auth":
      return w.bytes(message.mac, DIGEST_SIZE).frame(FrameType.AUTH);
    case "auth_ok":
      return w.frame(FrameType.AUTH_OK);
    case "error":
      return w.u16(message.wireCode ?? ERROR_CODES[message.code]).u32(message.id).str16(
        truncateUtf8(message.message, 1024),
      ).frame(FrameType.ERROR);
    case "file":
      return w.u32(message.id).u8(message.flags).u64(message.size).bytes(message.sha256, DIGEST_SIZE)
        .u64(message.mtimeMs).str16(message.name).str8(message.mime).frame(FrameType.FILE);
    case "accept":
      return w.u32(message.id).u64(message.offset).frame(FrameType.ACCEPT);
    case "data": {
      const out = new Uint8Array(FRAME_HEADER_SIZE + DATA_PREFIX_SIZE + message.bytes.length);
      out.set(encodeDataHeader(message.id, message.offset, message.bytes.length));
      out.set(message.bytes, FRAME_HEADER_SIZE + DATA_PREFIX_SIZE);
      return out;
    }
    case "end":
      return w.u32(message.id).frame(FrameType.END);
    case "end_digest":
      return w.u32(message.id).bytes(message.sha256, DIGEST_SIZE).frame(FrameType.END_DIGEST);
    case "receipt":
      return w.u32(message.id).u8(message.flags).u64(message.size).bytes(message.sha256, DIGEST_SIZE)
        .str16(message.storedName).frame(FrameType.RECEIPT);
    case "ping":
      return w.u64(message.token).frame(FrameType.PING);
    case "pong":
      return w.u64(message.token).frame(FrameType.PONG);
    case "message": {
      const text = utf8.encode(message.text);
      return w.u32(message.id).bytes(text).frame(FrameType.MESSAGE);
    }
    case "message_ack":
      return w.u32(message.id).frame(FrameType.MESSAGE_ACK);
  }
}

/**
 * Encodes the frame header plus the id/offset prefix of a DATA frame (17
 * bytes). The file bytes follow in a separate write, so the hot path never
 * copies them.
 *
 * @example
 * ```ts
 * import { encodeDataHeader } from "./messages.ts";
 * const head = encodeDataHeader(1, 0, 65536);
 * // socket.write([head, chunk]) sends one DATA frame without copying chunk
 * ```
 */
export function encodeDataHeader(id: number, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(DATA_HEADER_SIZE);
  writeDataHeader(out, id, offset, length);
  return out;
}

/** Frame header plus DATA prefix: the bytes in front of a DATA frame's file bytes. */
export const DATA_HEADER_SIZE = FRAME_HEADER_SIZE + DATA_PREFIX_SIZE;

/**
 * Writes a DATA frame's first {@linkcode DATA_HEADER_SIZE} bytes (frame header, id, offset) into
 * the start of `target`, for a frame carrying `length` file bytes. A sender that reads file bytes
 * into a buffer at offset `DATA_HEADER_SIZE` can then send the whole frame as that one buffer.
 *
 * @example
 * ```ts
 * import { DATA_HEADER_SIZE, writeDataHeader } from "./messages.ts";
 * const frame = new Uint8Array(DATA_HEADER_SIZE + 3);
 * frame.set([1, 2, 3], DATA_HEADER_SIZE);
 * writeDataHeader(frame, 1, 0, 3); // frame is now one whole DATA frame
 * ```
 */
export function writeDataHeader(target: Uint8Array, id: number, offset: number, length: number): void {
  checkInt(id, 0xffffffff, "id");
  checkInt(offset, MAX_SAFE_U64, "offset");
  writeFrameHeader(target, 0, FrameType.DATA, DATA_PREFIX_SIZE + length);
  const view = new DataView(target.buffer, target.byteOffset, DATA_HEADER_SIZE);
  view.setUint32(FRAME_HEADER_SIZE, id);
  view.setBigUint64(FRAME_HEADER_SIZE + 4, BigInt(offset));
}

/**
 * Decodes a frame into a typed message. Throws `ProtocolError` with
 * `UNKNOWN_FRAME_TYPE`, `BAD_MAGIC`, `BAD_HEADER` or `BAD_FRAME`.
 *
 * @example
 * ```ts
 * import { decodeMessage } from "./messages.ts";
 * decodeMessage({ type: 0x13, payload: new Uint8Array([0, 0, 0, 7]) });
 * // { kind: "end", id: 7 }
 * ```
 */
export function decodeMessage(frame: Frame): Message {
  const p = frame.payload;
  switch (frame.type) {
    case FrameType.HELLO: {
      const r = new Reader(p, "HELLO");
      const magic = r.bytes(4);
      if (!magic.every((b, i) => b === MAGIC[i])) {
        throw new ProtocolError("BAD_MAGIC", "Cannot decode HELLO frame: magic is not FRRY");
      }
      const m: HelloMessage = {
        kind: "hello",
        version: r.u16(),
        capabilities: r.u32(),
        maxFrameSize: r.u32(),
      };
      r.done();
      return m;
    }
    case FrameType.WELCOME: {
      const r = new Reader(p, "WELCOME");
      const version = r.u16();
      const capabilities = r.u32();
      const maxFrameSize = r.u32();
      const nonceLength = r.u8();
      if (nonceLength !== 0 && nonceLength !== DIGEST_SIZE) {
        r.fail(`nonce length ${nonceLength} is not 0 or 32`);
      }
      const m: WelcomeMessage = {
        kind: "welcome",
        version,
        capabilities,
        maxFrameSize,
        nonce: r.bytes(nonceLength),
      };
      r.done();
      return m;
    }
    case FrameType.AUTH: {
      const r = new Reader(p, "AUTH");
      const m: AuthMessage = { kind: "auth", mac: r.bytes(DIGEST_SIZE) };
      r.done();
      return m;
    }
    case FrameType.AUTH_OK:
      new Reader(p, "AUTH_OK").done();
      return { kind: "auth_ok" };
    case FrameType.ERROR: {
      const r = new Reader(p, "ERROR");
      const wireCode = r.u16();
      const m: ErrorMessage = {
        kind: "error",
        code: errorCodeFromNumber(wireCode),
        wireCode,
        id: r.u32(),
        message: r.str16("message"),
      };
      r.done();
      return m;
    }
    case FrameType.FILE: {
      const r = new Reader(p, "FILE", "BAD_HEADER");
      const m: FileMessage = {
        kind: "file",
        id: r.u32(),
        flags: r.u8(),
        size: r.u64("size"),
        sha256: r.bytes(DIGEST_SIZE),
        mtimeMs: r.u64("mtime"),
        name: r.str16("name"),
        mime: r.str8("mime"),
      };
      r.done();
      return m;
    }
    case FrameType.ACCEPT: {
      const r = new Reader(p, "ACCEPT");
      const m: AcceptMessage = { kind: "accept", id: r.u32(), offset: r.u64("offset") };
      r.done();
      return m;
    }
    case FrameType.DATA: {
      const r = new Reader(p, "DATA");
      return { kind: "data", id: r.u32(), offset: r.u64("offset"), bytes: r.rest() };
    }
    case FrameType.END: {
      const r = new Reader(p, "END");
      const m: EndMessage = { kind: "end", id: r.u32() };
      r.done();
      return m;
    }
    case FrameType.END_DIGEST: {
      const r = new Reader(p, "END_DIGEST");
      const m: EndDigestMessage = { kind: "end_digest", id: r.u32(), sha256: r.bytes(DIGEST_SIZE) };
      r.done();
      return m;
    }
    case FrameType.RECEIPT: {
      const r = new Reader(p, "RECEIPT");
      const m: ReceiptMessage = {
        kind: "receipt",
        id: r.u32(),
        flags: r.u8(),
        size: r.u64("size"),
        sha256: r.bytes(DIGEST_SIZE),
        storedName: r.str16("stored name"),
      };
      r.done();
      return m;
    }
    case FrameType.PING:
    case FrameType.PONG: {
      const r = new Reader(p, frame.type === FrameType.PING ? "PING" : "PONG");
      const token = r.u64big();
      r.done();
      return { kind: frame.type === FrameType.PING ? "ping" : "pong", token };
    }
    case FrameType.MESSAGE: {
      const r = new Reader(p, "MESSAGE");
      const id = r.u32();
      return { kind: "message", id, text: r.text(r.rest(), "text") };
    }
    case FrameType.MESSAGE_ACK: {
      const r = new Reader(p, "MESSAGE_ACK");
      const m: MessageAckMessage = { kind: "message_ack", id: r.u32() };
      r.done();
      return m;
    }
    default:
      throw new ProtocolError(
        "UNKNOWN_FRAME_TYPE",
        `Cannot decode frame: unknown type 0x${frame.type.toString(16).padStart(2, "0")}`,
      );
  }
}

/** Cuts `s` so that its UTF-8 encoding fits `maxBytes`, never splitting a character. */
function truncateUtf8(s: string, maxBytes: number): string {
  if (s.length * 3 <= maxBytes) return s;
  const b = utf8.encode(s);
  if (b.length <= maxBytes) return s;
  let end = maxBytes;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(b.subarray(0, end));
}

const HEX_BYTE = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lowercase hex of bytes. (A table lookup per byte: it runs for every file header and receipt.) */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += HEX_BYTE[bytes[i]];
  return s;
}

/** Value of a hex digit's char code, or -1. */
function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 97 && c <= 102) return c - 87; // a-f
  if (c >= 65 && c <= 70) return c - 55; // A-F
  return -1;
}

/** Bytes of a hex string (whitespace ignored). Throws `TypeError` on bad input. */
export function fromHex(hex: string): Uint8Array {
  const clean = /\s/.test(hex) ? hex.replace(/\s+/g, "") : hex;
  if (clean.length % 2 !== 0) throw new TypeError(`Cannot parse hex: ${hex}`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = hexDigit(clean.charCodeAt(i * 2));
    const lo = hexDigit(clean.charCodeAt(i * 2 + 1));
    if (hi < 0 || lo < 0) throw new TypeError(`Cannot parse hex: ${hex}`);
    out[i] = hi * 16 + lo;
  }
  return out;
}
