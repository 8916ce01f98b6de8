/**
 * Generates docs/vectors.json, the wire-format test vectors, and refreshes
 * the annotated hex blocks of docs/PROTOCOL.md (each code block that follows
 * a `<!-- vector: NAME -->` marker).
 *
 * Deterministic: every value is fixed, so running it twice gives the same
 * files. Runs on Deno and Bun:
 *
 * ```sh
 * deno run --allow-read=docs --allow-write=docs scripts/gen_vectors.ts
 * bun scripts/gen_vectors.ts
 * deno run --allow-read=docs scripts/gen_vectors.ts --check   # exit 1 if stale
 * ```
 *
 * @module
 */
import { createHash, createHmac } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { ERROR_CODES, type ErrorCode } from "../src/errors.ts";
import { DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_SIZE, writeFrameHeader } from "../src/framing/frame.ts";
import {
  AUTH_CONTEXT,
  Capability,
  FileFlag,
  FrameType,
  MAGIC,
  PROTOCOL_VERSION,
  ReceiptFlag,
} from "../src/protocol/constants.ts";
import { encodeMessage, type Message, toHex } from "../src/protocol/messages.ts";

const utf8 = new TextEncoder();

/** Name of each frame type byte, e.g. 0x10 → "FILE". */
const TYPE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(FrameType).map(([name, byte]) => [byte, name]),
);

/** Fields of a message that are bytes (hex in JSON) or a bigint (decimal string in JSON). */
const BYTE_FIELDS = new Set(["nonce", "mac", "sha256", "bytes"]);
const BIGINT_FIELDS = new Set(["token"]);

function sha256(data: Uint8Array | string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/** The AUTH mac: HMAC-SHA256(key = UTF-8 of token, msg = "ferry-auth-v1" || nonce). */
export function authMac(token: string, nonce: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", utf8.encode(token)).update(authInput(nonce)).digest());
}

function authInput(nonce: Uint8Array): Uint8Array {
  const context = utf8.encode(AUTH_CONTEXT);
  const out = new Uint8Array(context.length + nonce.length);
  out.set(context);
  out.set(nonce, context.length);
  return out;
}

function bytesOf(text: string): Uint8Array {
  return utf8.encode(text);
}

function range(n: number, start = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff);
}

function u64Hex(v: bigint): string {
  return v.toString(16).padStart(16, "0");
}

function u32Hex(v: number): string {
  return v.toString(16).padStart(8, "0");
}

function frameHex(type: number, payloadHex: string): string {
  const header = new Uint8Array(FRAME_HEADER_SIZE);
  writeFrameHeader(header, 0, type, payloadHex.length / 2);
  return toHex(header) + payloadHex;
}

/** Converts a message into its JSON form: bytes → lowercase hex, bigint → decimal string. */
export function messageToJson(message: Message): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(message)) {
    if (BYTE_FIELDS.has(key)) out[key] = toHex(value as Uint8Array);
    else if (BIGINT_FIELDS.has(key)) out[key] = (value as bigint).toString();
    else out[key] = value;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Fixed values

const HELLO_CONTENT = "hello\n";
const HELLO_SHA = sha256(HELLO_CONTENT);
const EMPTY_SHA = sha256("");
const ABC_SHA = sha256("abc");
/** 1 700 000 000 000 ms = 2023-11-14T22:13:20Z. */
const MTIME = 1_700_000_000_000;
const NONCE = range(32);
const TOKEN = "s3cret";
const CAPS = Capability.RESUME | Capability.MESSAGES | Capability.HEARTBEAT;
const NON_ASCII_NAME = "Café/résumé 写真.txt";
/**
 * The source key ferry's sender puts in a DIGEST_AT_END FILE for /home/ann/hello.txt (device 2049,
 * inode 131073, 6 bytes, MTIME): SHA-256 of the fields joined with NUL bytes (PROTOCOL.md §12).
 */
const SOURCE_KEY_INPUT = ["ferry-source-key-v1", "/home/ann/hello.txt", "2049", "131073", "6", String(MTIME)]
  .join("\0");
const HELLO_SOURCE_KEY = sha256(SOURCE_KEY_INPUT);
if (NON_ASCII_NAME !== NON_ASCII_NAME.normalize("NFC")) throw new Error("NON_ASCII_NAME must be NFC");

function error(code: ErrorCode, id: number, message: string): Message {
  return { kind: "error", code, wireCode: ERROR_CODES[code], id, message };
}

/** Valid vectors: each encodes to one frame and decodes back to the same message. */
const VALID: Array<{ name: string; description: string; message: Message }> = [
  {
    name: "hello",
    description: "Client HELLO: version 1, capabilities RESUME|MESSAGES|HEARTBEAT, accepts 1 MiB payloads.",
    message: {
      kind: "hello",
      version: PROTOCOL_VERSION,
      capabilities: CAPS,
      maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
    },
  },
  {
    name: "hello_digest_at_end",
    description:
      "Client HELLO also announcing DIGEST_AT_END (0x10): it may offer files with the DIGEST_AT_END flag and end them with END_DIGEST. ferry's sender sends this one.",
    message: {
      kind: "hello",
      version: PROTOCOL_VERSION,
      capabilities: CAPS | Capability.DIGEST_AT_END,
      maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
    },
  },
  {
    name: "welcome_digest_at_end",
    description:
      "Server WELCOME without auth, announcing DIGEST_AT_END: it accepts files whose SHA-256 comes at the end. ferry's server sends this one.",
    message: {
      kind: "welcome",
      version: PROTOCOL_VERSION,
      capabilities: CAPS | Capability.DIGEST_AT_END,
      maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
      nonce: new Uint8Array(0),
    },
  },
  {
    name: "welcome",
    description: "Server WELCOME without auth: no AUTH capability, nonce length 0.",
    message: {
      kind: "welcome",
      version: PROTOCOL_VERSION,
      capabilities: CAPS,
      maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
      nonce: new Uint8Array(0),
    },
  },
  {
    name: "welcome_auth",
    description: "Server WELCOME requiring auth: AUTH capability set, 32-byte nonce 00 01 .. 1f.",
    message: {
      kind: "welcome",
      version: PROTOCOL_VERSION,
      capabilities: CAPS | Capability.AUTH,
      maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
      nonce: NONCE,
    },
  },
  {
    name: "auth",
    description:
      'AUTH answering welcome_auth with token "s3cret": mac = HMAC-SHA256("s3cret", "ferry-auth-v1" || nonce).',
    message: { kind: "auth", mac: authMac(TOKEN, NONCE) },
  },
  { name: "auth_ok", description: "AUTH_OK: empty payload.", message: { kind: "auth_ok" } },
  {
    name: "error_auth_failed",
    description: "Connection-level ERROR (id 0) AUTH_FAILED; the server closes after it.",
    message: error("AUTH_FAILED", 0, "Authentication failed: wrong token"),
  },
  {
    name: "error_unsupported_version",
    description: "Connection-level ERROR UNSUPPORTED_VERSION naming the supported versions.",
    message: error(
      "UNSUPPORTED_VERSION",
      0,
      "Protocol version 2 is not supported; this server speaks version 1",
    ),
  },
  {
    name: "error_hash_mismatch",
    description: "Per-file ERROR HASH_MISMATCH for file id 1; the connection stays open.",
    message: error(
      "HASH_MISMATCH",
      1,
      'Cannot store "hello.txt": SHA-256 of the received bytes does not match',
    ),
  },
  {
    name: "error_unknown_code",
    description:
      "ERROR with a wire code this version does not know (1000): decodes as code INTERNAL with wireCode 1000, and is fatal for id 3.",
    message: { kind: "error", code: "INTERNAL", wireCode: 1000, id: 3, message: "Something new went wrong" },
  },
  {
    name: "file_hello_txt",
    description: 'FILE id 1: "hello.txt", 6 bytes "hello\\n", RESUME flag, mtime and MIME type given.',
    message: {
      kind: "file",
      id: 1,
      flags: FileFlag.RESUME,
      size: 6,
      sha256: HELLO_SHA,
      mtimeMs: MTIME,
      name: "hello.txt",
      mime: "text/plain",
    },
  },
  {
    name: "file_empty_no_mtime_no_mime",
    description: 'FILE id 2: empty file, no flags, mtime 0 (unknown), MIME "" (none).',
    message: {
      kind: "file",
      id: 2,
      flags: 0,
      size: 0,
      sha256: EMPTY_SHA,
      mtimeMs: 0,
      name: "empty.bin",
      mime: "",
    },
  },
  {
    name: "file_nested_path",
    description: 'FILE id 3: nested relative path "docs/notes/abc.txt" holding "abc".',
    message: {
      kind: "file",
      id: 3,
      flags: FileFlag.RESUME,
      size: 3,
      sha256: ABC_SHA,
      mtimeMs: MTIME,
      name: "docs/notes/abc.txt",
      mime: "text/plain",
    },
  },
  {
    name: "file_non_ascii_nfc",
    description:
      'FILE id 4: non-ASCII NFC name "Café/résumé 写真.txt" (é is the single code point U+00E9), holding "hello\\n".',
    message: {
      kind: "file",
      id: 4,
      flags: FileFlag.RESUME,
      size: 6,
      sha256: HELLO_SHA,
      mtimeMs: MTIME,
      name: NON_ASCII_NAME,
      mime: "text/plain; charset=utf-8",
    },
  },
  {
    name: "file_max_size",
    description:
      "FILE id 5 declaring the largest legal size, 2^53-1 (the receiver will refuse it, but it decodes).",
    message: {
      kind: "file",
      id: 5,
      flags: 0,
      size: Number.MAX_SAFE_INTEGER,
      sha256: new Uint8Array(32),
      mtimeMs: 0,
      name: "huge.bin",
      mime: "application/octet-stream",
    },
  },
  {
    name: "file_digest_at_end",
    description:
      'FILE id 1 for "hello.txt" with the flags RESUME|DIGEST_AT_END: the 32-byte field is the sender\'s source key, not the hash; the hash follows in END_DIGEST.',
    message: {
      kind: "file",
      id: 1,
      flags: FileFlag.RESUME | FileFlag.DIGEST_AT_END,
      size: 6,
      sha256: HELLO_SOURCE_KEY,
      mtimeMs: MTIME,
      name: "hello.txt",
      mime: "text/plain",
    },
  },
  {
    name: "accept_fresh",
    description: "ACCEPT id 1 at offset 0: send the whole file.",
    message: { kind: "accept", id: 1, offset: 0 },
  },
  {
    name: "accept_resume",
    description:
      "ACCEPT id 7 at offset 8 MiB: the receiver already holds 8388608 durable bytes; continue there.",
    message: { kind: "accept", id: 7, offset: 8 * 1024 * 1024 },
  },
  {
    name: "data_hello",
    description: 'DATA id 1 at offset 0 carrying the 6 bytes "hello\\n".',
    message: { kind: "data", id: 1, offset: 0, bytes: bytesOf(HELLO_CONTENT) },
  },
  {
    name: "data_resumed",
    description: 'DATA id 1 at offset 4 carrying "o\\n" (the rest of "hello\\n" after ACCEPT offset 4).',
    message: { kind: "data", id: 1, offset: 4, bytes: bytesOf("o\n") },
  },
  { name: "end", description: "END id 1.", message: { kind: "end", id: 1 } },
  {
    name: "end_digest",
    description: 'END_DIGEST id 1: all bytes of DIGEST_AT_END file 1 were sent; their SHA-256 ("hello\\n").',
    message: { kind: "end_digest", id: 1, sha256: HELLO_SHA },
  },
  {
    name: "receipt",
    description: 'RECEIPT id 1: "hello.txt" stored and verified, 6 bytes, receiver-computed SHA-256.',
    message: { kind: "receipt", id: 1, flags: 0, size: 6, sha256: HELLO_SHA, storedName: "hello.txt" },
  },
  {
    name: "receipt_keep_both",
    description:
      'RECEIPT id 3: the name was taken, so policy "keep both" stored it as "docs/notes/abc (1).txt".',
    message: {
      kind: "receipt",
      id: 3,
      flags: 0,
      size: 3,
      sha256: ABC_SHA,
      storedName: "docs/notes/abc (1).txt",
    },
  },
  {
    name: "receipt_duplicate",
    description: "RECEIPT id 2 with the DUPLICATE flag: same name and hash already stored, nothing to send.",
    message: {
      kind: "receipt",
      id: 2,
      flags: ReceiptFlag.DUPLICATE,
      size: 0,
      sha256: EMPTY_SHA,
      storedName: "empty.bin",
    },
  },
  { name: "ping", description: "PING with token 1.", message: { kind: "ping", token: 1n } },
  {
    name: "ping_max_token",
    description: "PING with token 2^64-1: tokens use the full u64 range.",
    message: { kind: "ping", token: 0xffff_ffff_ffff_ffffn },
  },
  { name: "pong", description: "PONG echoing token 1.", message: { kind: "pong", token: 1n } },
  {
    name: "message",
    description: "MESSAGE id 1 with UTF-8 text (2-, 3- and 4-byte sequences).",
    message: { kind: "message", id: 1, text: "Hello from ferry 👋 — Grüße" },
  },
  {
    name: "message_empty",
    description: "MESSAGE id 2 with empty text.",
    message: { kind: "message", id: 2, text: "" },
  },
  { name: "message_ack", description: "MESSAGE_ACK id 1.", message: { kind: "message_ack", id: 1 } },
];

/** Invalid inputs: a byte stream that must be rejected with `error`. */
interface InvalidVector {
  name: string;
  description: string;
  hex: string;
  maxFrameSize: number;
  /** Frames that decode successfully before the error. */
  validFramesBefore: number;
  error: ErrorCode;
  errorNumber: number;
}

function invalid(
  name: string,
  description: string,
  hex: string,
  error: ErrorCode,
  opts: { maxFrameSize?: number; validFramesBefore?: number } = {},
): InvalidVector {
  return {
    name,
    description,
    hex,
    maxFrameSize: opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
    validFramesBefore: opts.validFramesBefore ?? 0,
    error,
    errorNumber: ERROR_CODES[error],
  };
}

function validHex(name: string): string {
  const v = VALID.find((x) => x.name === name);
  if (!v) throw new Error(`no valid vector ${name}`);
  return toHex(encodeMessage(v.message));
}

/** Payload hex of a valid vector (its frame minus the 5-byte header). */
function payloadHex(name: string): string {
  return validHex(name).slice(FRAME_HEADER_SIZE * 2);
}

function fileHex(size: bigint, name: Uint8Array, trailing = ""): string {
  const p = u32Hex(9) + "00" + u64Hex(size) + toHex(HELLO_SHA) + u64Hex(0n) +
    name.length.toString(16).padStart(4, "0") + toHex(name) + "00" + trailing;
  return frameHex(FrameType.FILE, p);
}

const INVALID: InvalidVector[] = [
  invalid(
    "frame_too_large_u32_max",
    "Length prefix 0xFFFFFFFF with the default 1 MiB limit: rejected as soon as the 5 header bytes arrive, before any payload is read or allocated.",
    "ffffffff12",
    "FRAME_TOO_LARGE",
  ),
  invalid(
    "frame_too_large_limit_plus_one",
    "Length prefix 1048577 (default limit + 1), header only.",
    "0010000112",
    "FRAME_TOO_LARGE",
  ),
  invalid(
    "frame_too_large_custom_limit",
    "A receiver configured with maxFrameSize 16 gets a DATA frame with a 17-byte payload: FRAME_TOO_LARGE on the header, even though the payload follows.",
    frameHex(FrameType.DATA, u32Hex(1) + u64Hex(0n) + "6162636465"),
    "FRAME_TOO_LARGE",
    { maxFrameSize: 16 },
  ),
  invalid("unknown_frame_type", "Type byte 0x7f is not a frame type.", "000000007f", "UNKNOWN_FRAME_TYPE"),
  invalid(
    "unknown_frame_type_zero",
    "Type byte 0x00 (with a 3-byte payload) is not a frame type.",
    "0000000300010203",
    "UNKNOWN_FRAME_TYPE",
  ),
  invalid(
    "hello_bad_magic",
    'HELLO whose magic is "FRRZ".',
    frameHex(FrameType.HELLO, "4652525a" + payloadHex("hello").slice(8)),
    "BAD_MAGIC",
  ),
  invalid(
    "hello_http_request",
    'Someone speaks HTTP: "GET / HTTP/1.1\\r\\n" read as a frame header is a length of 1195725856 bytes.',
    toHex(bytesOf("GET / HTTP/1.1\r\n")),
    "FRAME_TOO_LARGE",
  ),
  invalid(
    "hello_short",
    "HELLO with a 10-byte payload (maxFrameSize missing).",
    frameHex(FrameType.HELLO, payloadHex("hello").slice(0, 20)),
    "BAD_FRAME",
  ),
  invalid(
    "hello_trailing_byte",
    "HELLO with one byte after maxFrameSize.",
    frameHex(FrameType.HELLO, payloadHex("hello") + "00"),
    "BAD_FRAME",
  ),
  invalid(
    "welcome_bad_nonce_length",
    "WELCOME whose nonceLength is 16 (must be 0 or 32).",
    frameHex(FrameType.WELCOME, payloadHex("welcome").slice(0, 20) + "10" + toHex(range(16))),
    "BAD_FRAME",
  ),
  invalid(
    "auth_short_mac",
    "AUTH with a 31-byte mac.",
    frameHex(FrameType.AUTH, payloadHex("auth").slice(0, 62)),
    "BAD_FRAME",
  ),
  invalid("auth_ok_with_payload", "AUTH_OK with a 1-byte payload.", "0000000104" + "00", "BAD_FRAME"),
  invalid(
    "error_invalid_utf8",
    "ERROR whose message is the single byte 0xff (not UTF-8).",
    frameHex(FrameType.ERROR, "0009" + u32Hex(0) + "0001" + "ff"),
    "BAD_FRAME",
  ),
  invalid(
    "file_size_u64_max",
    "FILE declaring size 2^64-1, above 2^53-1.",
    fileHex(0xffff_ffff_ffff_ffffn, bytesOf("x")),
    "BAD_HEADER",
  ),
  invalid(
    "file_size_2_53",
    "FILE declaring size 2^53, one above the largest legal size.",
    fileHex(1n << 53n, bytesOf("x")),
    "BAD_HEADER",
  ),
  invalid(
    "file_name_overlong_utf8",
    'FILE whose name bytes are "a" c0 af "b" (an overlong encoding of "/"): not valid UTF-8.',
    fileHex(6n, Uint8Array.of(0x61, 0xc0, 0xaf, 0x62)),
    "BAD_HEADER",
  ),
  invalid(
    "file_trailing_byte",
    "FILE with one byte after the mime field.",
    fileHex(6n, bytesOf("x"), "00"),
    "BAD_HEADER",
  ),
  invalid(
    "file_mime_overrun",
    "FILE whose mime length (10) runs past the end of the payload.",
    frameHex(FrameType.FILE, payloadHex("file_hello_txt").slice(0, -22) + "0a" + toHex(bytesOf("tex"))),
    "BAD_HEADER",
  ),
  invalid(
    "accept_offset_2_53",
    "ACCEPT with offset 2^53, above 2^53-1.",
    frameHex(FrameType.ACCEPT, u32Hex(1) + u64Hex(1n << 53n)),
    "BAD_FRAME",
  ),
  invalid(
    "data_short_prefix",
    "DATA with an 11-byte payload: the 12-byte id/offset prefix is incomplete.",
    frameHex(FrameType.DATA, u32Hex(1) + "00000000000000"),
    "BAD_FRAME",
  ),
  invalid(
    "end_trailing_byte",
    "END with 5 payload bytes (id + one extra byte).",
    "0000000513" + "0000000100",
    "BAD_FRAME",
  ),
  invalid("end_empty", "END with an empty payload.", "0000000013", "BAD_FRAME"),
  invalid(
    "end_digest_short_hash",
    "END_DIGEST with a 35-byte payload: the SHA-256 is one byte short.",
    frameHex(FrameType.END_DIGEST, payloadHex("end_digest").slice(0, -2)),
    "BAD_FRAME",
  ),
  invalid(
    "end_digest_trailing_byte",
    "END_DIGEST with 37 payload bytes (id + SHA-256 + one extra byte).",
    frameHex(FrameType.END_DIGEST, payloadHex("end_digest") + "00"),
    "BAD_FRAME",
  ),
  invalid(
    "end_digest_id_only",
    "END_DIGEST with only the 4-byte id, as if it were END.",
    frameHex(FrameType.END_DIGEST, u32Hex(1)),
    "BAD_FRAME",
  ),
  invalid(
    "receipt_surrogate_name",
    "RECEIPT whose stored name is ed a0 80 (an encoded UTF-16 surrogate): not valid UTF-8.",
    frameHex(FrameType.RECEIPT, u32Hex(1) + "00" + u64Hex(6n) + toHex(HELLO_SHA) + "0003" + "eda080"),
    "BAD_FRAME",
  ),
  invalid("ping_short", "PING with a 7-byte token.", "0000000720" + "00000000000001", "BAD_FRAME"),
  invalid(
    "pong_trailing_byte",
    "PONG with 9 payload bytes.",
    "0000000921" + "000000000000000100",
    "BAD_FRAME",
  ),
  invalid(
    "message_invalid_utf8",
    "MESSAGE whose text is 68 69 ff (0xff is never valid UTF-8).",
    frameHex(FrameType.MESSAGE, u32Hex(1) + "6869ff"),
    "BAD_FRAME",
  ),
  invalid(
    "message_truncated_utf8",
    'MESSAGE whose text ends in the middle of "€" (e2 82 without ac).',
    frameHex(FrameType.MESSAGE, u32Hex(1) + "e282"),
    "BAD_FRAME",
  ),
  invalid("message_ack_short", "MESSAGE_ACK with a 2-byte payload.", "0000000231" + "0001", "BAD_FRAME"),
  invalid(
    "truncated_header",
    "The stream ends after 3 bytes of a frame header.",
    "000000",
    "TRUNCATED_FRAME",
  ),
  invalid(
    "truncated_payload",
    "The stream ends after 2 of END's 4 payload bytes.",
    "0000000413" + "0000",
    "TRUNCATED_FRAME",
  ),
  invalid(
    "truncated_after_valid_frame",
    "A whole PING, then a DATA frame cut off after 10 of its 18 payload bytes: one frame decodes, then EOF is an error.",
    validHex("ping") +
      frameHex(FrameType.DATA, u32Hex(1) + u64Hex(0n) + toHex(bytesOf(HELLO_CONTENT))).slice(0, 30),
    "TRUNCATED_FRAME",
    { validFramesBefore: 1 },
  ),
];

const AUTH_EXAMPLES = [
  {
    name: "s3cret",
    description: 'The AUTH example of docs/PROTOCOL.md: token "s3cret", nonce 00 01 .. 1f.',
    token: TOKEN,
    nonce: NONCE,
  },
  {
    name: "utf8_token",
    description: "A non-ASCII token: the key is the token's UTF-8 bytes. Nonce ff fe .. e0.",
    token: "pässwörd 🔑",
    nonce: Uint8Array.from({ length: 32 }, (_, i) => 0xff - i),
  },
];

const SESSION: Array<{ from: "client" | "server"; vector: string }> = [
  { from: "client", vector: "hello" },
  { from: "server", vector: "welcome" },
  { from: "client", vector: "file_hello_txt" },
  { from: "server", vector: "accept_fresh" },
  { from: "client", vector: "data_hello" },
  { from: "client", vector: "end" },
  { from: "server", vector: "receipt" },
];

/** The same file sent with its digest at the end (PROTOCOL.md §18). */
const SESSION_DIGEST_AT_END: Array<{ from: "client" | "server"; vector: string }> = [
  { from: "client", vector: "hello_digest_at_end" },
  { from: "server", vector: "welcome_digest_at_end" },
  { from: "client", vector: "file_digest_at_end" },
  { from: "server", vector: "accept_fresh" },
  { from: "client", vector: "data_hello" },
  { from: "client", vector: "end_digest" },
  { from: "server", vector: "receipt" },
];

/** Builds the whole vectors document (what docs/vectors.json holds). */
export function buildVectors(): Record<string, unknown> {
  const vectors = VALID.map(({ name, description, message }) => {
    const hex = toHex(encodeMessage(message));
    const typeByte = parseInt(hex.slice(8, 10), 16);
    return {
      name,
      description,
      type: TYPE_NAMES.get(typeByte),
      typeByte,
      hex,
      message: messageToJson(message),
    };
  });
  for (const [name, byte] of Object.entries(FrameType)) {
    if (!vectors.some((v) => v.typeByte === byte)) throw new Error(`no vector for frame type ${name}`);
  }
  return {
    description:
      "Test vectors for the ferry wire protocol, version 1. Generated by scripts/gen_vectors.ts; see docs/PROTOCOL.md, section 'Test vectors'.",
    protocolVersion: PROTOCOL_VERSION,
    magic: toHex(MAGIC),
    defaultMaxFrameSize: DEFAULT_MAX_FRAME_SIZE,
    conventions: {
      hex: "Whole frame, including the 5-byte header, lowercase hex.",
      message:
        "Decoded fields. Byte fields (nonce, mac, sha256, bytes) are lowercase hex; PING/PONG tokens are decimal strings; ERROR carries both the code name and its wireCode.",
      invalid:
        "Feed hex as one byte stream to a frame decoder limited to maxFrameSize, decode each frame's payload, then signal end of stream. Exactly validFramesBefore frames decode; then the stream must be rejected with error/errorNumber.",
    },
    vectors,
    invalid: INVALID,
    auth_examples: AUTH_EXAMPLES.map(({ name, description, token, nonce }) => ({
      name,
      description,
      token,
      tokenUtf8: toHex(utf8.encode(token)),
      nonce: toHex(nonce),
      hmacInput: toHex(authInput(nonce)),
      mac: toHex(authMac(token, nonce)),
    })),
    example_session: SESSION.map(({ from, vector }) => ({ from, vector, hex: validHex(vector) })),
    example_session_digest_at_end: SESSION_DIGEST_AT_END.map(({ from, vector }) => ({
      from,
      vector,
      hex: validHex(vector),
    })),
    source_key_example: {
      description:
        "The source key of file_digest_at_end: SHA-256 over these fields joined with NUL (00) bytes: context, absolute path, device, inode, size, mtimeMs (decimal).",
      fields: SOURCE_KEY_INPUT.split("\0"),
      input: toHex(utf8.encode(SOURCE_KEY_INPUT)),
      key: toHex(HELLO_SOURCE_KEY),
    },
  };
}

// ---------------------------------------------------------------------------
// Annotated hex for docs/PROTOCOL.md

const BYTES_PER_LINE = 16;
const ANNOTATION_COLUMN = BYTES_PER_LINE * 3 + 1;

function spaced(hex: string): string[] {
  const pairs = hex.match(/../g) ?? [];
  const lines: string[] = [];
  for (let i = 0; i < pairs.length; i += BYTES_PER_LINE) {
    lines.push(pairs.slice(i, i + BYTES_PER_LINE).join(" "));
  }
  return lines;
}

function quote(s: string): string {
  return JSON.stringify(s);
}

function capsText(caps: number): string {
  const names = Object.entries(Capability).filter(([, bit]) => caps & bit).map(([n]) => n);
  return `0x${caps.toString(16)}${names.length ? ` (${names.join("|")})` : ""}`;
}

/** Splits a message's frame into [hex, annotation] fields, in wire order. */
function fields(message: Message): Array<[string, string]> {
  const str16 = (label: string, s: string): Array<[string, string]> => {
    const b = utf8.encode(s);
    return [[b.length.toString(16).padStart(4, "0"), `${label} length ${b.length}`], [
      toHex(b),
      `${label} ${quote(s)}`,
    ]];
  };
  const str8 = (label: string, s: string): Array<[string, string]> => {
    const b = utf8.encode(s);
    return [[b.length.toString(16).padStart(2, "0"), `${label} length ${b.length}`], [
      toHex(b),
      `${label} ${quote(s)}`,
    ]];
  };
  const u16 = (v: number) => v.toString(16).padStart(4, "0");
  const u8 = (v: number) => v.toString(16).padStart(2, "0");
  switch (message.kind) {
    case "hello":
      return [
        [toHex(MAGIC), 'magic "FRRY"'],
        [u16(message.version), `version ${message.version}`],
        [u32Hex(message.capabilities), `capabilities ${capsText(message.capabilities)}`],
        [u32Hex(message.maxFrameSize), `maxFrameSize ${message.maxFrameSize}`],
      ];
    case "welcome":
      return [
        [u16(message.version), `version ${message.version}`],
        [u32Hex(message.capabilities), `capabilities ${capsText(message.capabilities)}`],
        [u32Hex(message.maxFrameSize), `maxFrameSize ${message.maxFrameSize}`],
        [u8(message.nonce.length), `nonceLength ${message.nonce.length}`],
        [toHex(message.nonce), "nonce"],
      ];
    case "auth":
      return [[toHex(message.mac), 'mac = HMAC-SHA256(token, "ferry-auth-v1" || nonce)']];
    case "auth_ok":
      return [];
    case "error":
      return [
        [u16(message.wireCode), `code ${message.wireCode} (${message.code})`],
        [u32Hex(message.id), `id ${message.id}${message.id === 0 ? " (connection)" : ""}`],
        ...str16("message", message.message),
      ];
    case "file": {
      const flagNames = Object.entries(FileFlag).filter(([, bit]) => message.flags & bit).map(([n]) => n);
      const atEnd = (message.flags & FileFlag.DIGEST_AT_END) !== 0;
      return [
        [u32Hex(message.id), `id ${message.id}`],
        [
          u8(message.flags),
          `flags 0x${u8(message.flags)}${flagNames.length ? ` (${flagNames.join("|")})` : ""}`,
        ],
        [u64Hex(BigInt(message.size)), `size ${message.size}`],
        [toHex(message.sha256), atEnd ? "sha256 field: the source key (DIGEST_AT_END)" : "sha256"],
        [
          u64Hex(BigInt(message.mtimeMs)),
          `mtimeMs ${message.mtimeMs}${message.mtimeMs === 0 ? " (unknown)" : ""}`,
        ],
        ...str16("name", message.name),
        ...str8("mime", message.mime),
      ];
    }
    case "accept":
      return [[u32Hex(message.id), `id ${message.id}`], [
        u64Hex(BigInt(message.offset)),
        `offset ${message.offset}`,
      ]];
    case "data":
      return [
        [u32Hex(message.id), `id ${message.id}`],
        [u64Hex(BigInt(message.offset)), `offset ${message.offset}`],
        [toHex(message.bytes), `bytes (${message.bytes.length})`],
      ];
    case "end":
    case "message_ack":
      return [[u32Hex(message.id), `id ${message.id}`]];
    case "end_digest":
      return [[u32Hex(message.id), `id ${message.id}`], [
        toHex(message.sha256),
        "sha256 of the whole file (computed by the sender)",
      ]];
    case "receipt":
      return [
        [u32Hex(message.id), `id ${message.id}`],
        [
          u8(message.flags),
          `flags 0x${u8(message.flags)}${message.flags & ReceiptFlag.DUPLICATE ? " (DUPLICATE)" : ""}`,
        ],
        [u64Hex(BigInt(message.size)), `size ${message.size}`],
        [toHex(message.sha256), "sha256 (computed by the receiver)"],
        ...str16("storedName", message.storedName),
      ];
    case "ping":
    case "pong":
      return [[u64Hex(message.token), `token ${message.token}`]];
    case "message":
      return [[u32Hex(message.id), `id ${message.id}`], [
        toHex(utf8.encode(message.text)),
        `text ${quote(message.text)}`,
      ]];
  }
}

/** The annotated hex dump of a valid vector, as shown in docs/PROTOCOL.md. */
export function annotatedHex(name: string): string {
  const v = VALID.find((x) => x.name === name);
  if (!v) throw new Error(`Cannot annotate: no valid vector named ${name}`);
  const frame = encodeMessage(v.message);
  const length = frame.length - FRAME_HEADER_SIZE;
  const all: Array<[string, string]> = [
    [
      toHex(frame.subarray(0, FRAME_HEADER_SIZE)),
      `header: length ${length}, type 0x${toHex(frame.subarray(4, 5))} ${TYPE_NAMES.get(frame[4])}`,
    ],
    ...fields(v.message),
  ];
  if (all.map(([h]) => h).join("") !== toHex(frame)) {
    throw new Error(`annotation of ${name} does not match its encoding`);
  }
  const lines: string[] = [];
  for (const [hex, note] of all) {
    if (hex === "") continue;
    spaced(hex).forEach((line, i) => lines.push(i === 0 ? line.padEnd(ANNOTATION_COLUMN) + note : line));
  }
  return lines.map((l) => l.trimEnd()).join("\n");
}

/** A `<!-- vector: NAME -->` marker and the code block after it (deno fmt puts a blank line between). */
const VECTOR_BLOCK = /(<!-- vector: ([a-z0-9_]+) -->\n+```text\n)([\s\S]*?)(\n```)/g;

/** Rewrites each code block after a `<!-- vector: NAME -->` marker with NAME's annotated hex. */
export function refreshProtocolDoc(doc: string): string {
  const markers = doc.match(/<!-- vector: /g)?.length ?? 0;
  let blocks = 0;
  const out = doc.replace(VECTOR_BLOCK, (_all, open: string, name: string, _body: string, close: string) => {
    blocks++;
    return open + annotatedHex(name) + close;
  });
  if (blocks !== markers) {
    throw new Error(`PROTOCOL.md: ${markers} vector markers but ${blocks} blocks after them`);
  }
  return out;
}

function main(args: string[]): void {
  const jsonPath = fileURLToPath(new URL("../docs/vectors.json", import.meta.url));
  const docPath = fileURLToPath(new URL("../docs/PROTOCOL.md", import.meta.url));
  const json = JSON.stringify(buildVectors(), null, 2) + "\n";
  let doc: string | undefined;
  try {
    doc = readFileSync(docPath, "utf8");
  } catch {
    doc = undefined;
  }
  const newDoc = doc === undefined ? undefined : refreshProtocolDoc(doc);
  if (args.includes("--check")) {
    let current = "";
    try {
      current = readFileSync(jsonPath, "utf8");
    } catch { /* missing counts as stale */ }
    const staleJson = JSON.stringify(JSON.parse(current || "null")) !== JSON.stringify(JSON.parse(json));
    const staleDoc = doc !== newDoc;
    if (staleJson) console.error("docs/vectors.json is out of date: run scripts/gen_vectors.ts");
    if (staleDoc) console.error("docs/PROTOCOL.md vector blocks are out of date: run scripts/gen_vectors.ts");
    process.exit(staleJson || staleDoc ? 1 : 0);
  }
  writeFileSync(jsonPath, json);
  console.log(`wrote ${jsonPath}`);
  if (newDoc !== undefined && newDoc !== doc) {
    writeFileSync(docPath, newDoc);
    console.log(`refreshed vector blocks in ${docPath}`);
  }
}

if (import.meta.main) main(process.argv.slice(2));
