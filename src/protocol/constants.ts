/**
 * Protocol constants: magic, version, frame types and capability bits.
 * docs/PROTOCOL.md is the normative description of each.
 *
 * @module
 */

/** The 4 magic bytes that open the HELLO frame: ASCII "FRRY". */
export const MAGIC: Uint8Array = new Uint8Array([0x46, 0x52, 0x52, 0x59]);

/** The protocol version this implementation speaks. */
export const PROTOCOL_VERSION = 1;

/** Frame type bytes. */
export const FrameType = {
  HELLO: 0x01,
  WELCOME: 0x02,
  AUTH: 0x03,
  AUTH_OK: 0x04,
  ERROR: 0x0f,
  FILE: 0x10,
  ACCEPT: 0x11,
  DATA: 0x12,
  END: 0x13,
  RECEIPT: 0x14,
  END_DIGEST: 0x15,
  PING: 0x20,
  PONG: 0x21,
  MESSAGE: 0x30,
  MESSAGE_ACK: 0x31,
} as const;

/** Capability bits carried in HELLO and WELCOME. */
export const Capability = {
  /** The peer resumes partial files from a durable offset. */
  RESUME: 0x1,
  /** The peer handles MESSAGE / MESSAGE_ACK. */
  MESSAGES: 0x2,
  /** In WELCOME: the server requires AUTH before anything else. */
  AUTH: 0x4,
  /** The peer answers PING with PONG. */
  HEARTBEAT: 0x8,
  /**
   * The peer handles FILE with the DIGEST_AT_END flag and the END_DIGEST frame: the sender may
   * stream a file before it knows its SHA-256 and give the hash at the end.
   */
  DIGEST_AT_END: 0x10,
} as const;

/** Flag bits of a FILE frame. */
export const FileFlag = {
  /** The sender can continue from a non-zero offset. */
  RESUME: 0x1,
  /**
   * The `sha256` field holds a source key, not the file's hash; the file ends with END_DIGEST
   * (which carries the hash) instead of END. Only with the DIGEST_AT_END capability on both sides.
   */
  DIGEST_AT_END: 0x2,
} as const;

/** Flag bits of a RECEIPT frame. */
export const ReceiptFlag = {
  /** The file was already stored with this name and hash; nothing was written. */
  DUPLICATE: 0x1,
} as const;

/** Length of a SHA-256 digest, of a server nonce, and of an AUTH mac. */
export const DIGEST_SIZE = 32;

/** Bytes of a DATA frame payload before the file bytes: id u32 + offset u64. */
export const DATA_PREFIX_SIZE = 12;

/** The context string that starts the HMAC input of AUTH. */
export const AUTH_CONTEXT = "ferry-auth-v1";

/** Largest safe integer on the wire for sizes and offsets: 2^53 - 1. */
export const MAX_SAFE_U64 = Number.MAX_SAFE_INTEGER;
