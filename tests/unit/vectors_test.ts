/**
 * Checks docs/vectors.json against the codec, and docs/PROTOCOL.md against
 * docs/vectors.json: every valid vector decodes to its message and its
 * message encodes to its bytes, every invalid vector is rejected with its
 * code, every frame type has a vector, and the spec's hex dumps and tables
 * match the code.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ERROR_CODES, ProtocolError } from "../../src/errors.ts";
import {
  DEFAULT_MAX_FRAME_SIZE,
  type Frame,
  FRAME_HEADER_SIZE,
  FrameDecoder,
} from "../../src/framing/mod.ts";
import { AUTH_CONTEXT, FrameType, MAGIC, PROTOCOL_VERSION } from "../../src/protocol/constants.ts";
import { decodeMessage, encodeMessage, fromHex, type Message, toHex } from "../../src/protocol/messages.ts";
import { authMac } from "../../src/server/auth.ts";
import { buildVectors } from "../../scripts/gen_vectors.ts";
import { sourceKey } from "../../src/client/files.ts";

const docsDir = new URL("../../docs/", import.meta.url);
const vectorsPath = fileURLToPath(new URL("vectors.json", docsDir));
const protocolPath = fileURLToPath(new URL("PROTOCOL.md", docsDir));

interface ValidVector {
  name: string;
  description: string;
  type: string;
  typeByte: number;
  hex: string;
  message: Record<string, unknown>;
}
interface InvalidVector {
  name: string;
  description: string;
  hex: string;
  maxFrameSize: number;
  validFramesBefore: number;
  error: string;
  errorNumber: number;
}
interface AuthExample {
  name: string;
  token: string;
  tokenUtf8: string;
  nonce: string;
  hmacInput: string;
  mac: string;
}
interface VectorFile {
  protocolVersion: number;
  magic: string;
  defaultMaxFrameSize: number;
  vectors: ValidVector[];
  invalid: InvalidVector[];
  auth_examples: AuthExample[];
  example_session: Array<{ from: "client" | "server"; vector: string; hex: string }>;
}

const file: VectorFile = JSON.parse(readFileSync(vectorsPath, "utf8"));
const byName = new Map(file.vectors.map((v) => [v.name, v]));
const TYPE_NAME = new Map(Object.entries(FrameType).map(([name, byte]) => [byte as number, name]));
const BYTE_FIELDS = new Set(["nonce", "mac", "sha256", "bytes"]);
const BIGINT_FIELDS = new Set(["token"]);
const LOWER_HEX = /^(?:[0-9a-f]{2})*$/;

/** JSON form → Message: hex strings → bytes, decimal strings → bigint. */
function messageFromJson(json: Record<string, unknown>): Message {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json)) {
    if (BYTE_FIELDS.has(key)) {
      assert.match(value as string, LOWER_HEX, `${key} is lowercase hex`);
      out[key] = fromHex(value as string);
    } else if (BIGINT_FIELDS.has(key)) {
      assert.match(value as string, /^(0|[1-9][0-9]*)$/, `${key} is a decimal string`);
      out[key] = BigInt(value as string);
    } else out[key] = value;
  }
  return out as unknown as Message;
}

/** Decodes a byte stream the way the spec's "Test vectors" section says. */
function decodeStream(
  bytes: Uint8Array,
  maxFrameSize = DEFAULT_MAX_FRAME_SIZE,
): { messages: Message[]; error?: ProtocolError } {
  const decoder = new FrameDecoder({ maxFrameSize });
  const messages: Message[] = [];
  try {
    decoder.push(bytes);
    for (let f = decoder.next(); f; f = decoder.next()) messages.push(decodeMessage(f));
    decoder.end();
  } catch (e) {
    if (e instanceof ProtocolError) return { messages, error: e };
    throw e;
  }
  return { messages };
}

function onlyFrame(bytes: Uint8Array): Frame {
  const decoder = new FrameDecoder();
  decoder.push(bytes);
  const frame = decoder.next();
  assert.ok(frame, "one whole frame");
  assert.equal(decoder.next(), undefined);
  decoder.end();
  return frame;
}

// ---------------------------------------------------------------------------
// The file itself

test("vectors.json: is exactly what scripts/gen_vectors.ts generates (run it after changing either)", () => {
  assert.deepEqual(file, JSON.parse(JSON.stringify(buildVectors())));
});

test("vectors.json: header fields match the code", () => {
  assert.equal(file.protocolVersion, PROTOCOL_VERSION);
  assert.equal(file.magic, toHex(MAGIC));
  assert.equal(file.defaultMaxFrameSize, DEFAULT_MAX_FRAME_SIZE);
  const names = [...file.vectors, ...file.invalid, ...file.auth_examples].map((v) => v.name);
  assert.equal(new Set(file.vectors.map((v) => v.name)).size, file.vectors.length, "valid names are unique");
  assert.equal(
    new Set(file.invalid.map((v) => v.name)).size,
    file.invalid.length,
    "invalid names are unique",
  );
  for (const n of names) assert.match(n, /^[a-z0-9_]+$/);
});

test("vectors.json: every FrameType has at least one valid vector", () => {
  for (const [name, byte] of Object.entries(FrameType)) {
    assert.ok(file.vectors.some((v) => v.typeByte === byte && v.type === name), `no vector for ${name}`);
  }
});

// ---------------------------------------------------------------------------
// Valid vectors

for (const v of file.vectors) {
  test(`valid vector ${v.name}: decodes to its message and encodes to its bytes`, () => {
    assert.match(v.hex, LOWER_HEX);
    const bytes = fromHex(v.hex);
    assert.equal(TYPE_NAME.get(v.typeByte), v.type, "type and typeByte agree");
    assert.equal(bytes[4], v.typeByte, "type byte in the header");
    const length = new DataView(bytes.buffer).getUint32(0);
    assert.equal(length, bytes.length - FRAME_HEADER_SIZE, "length prefix is the payload length");

    const expected = messageFromJson(v.message);
    assert.deepStrictEqual(decodeMessage(onlyFrame(bytes)), expected);
    assert.equal(toHex(encodeMessage(expected)), v.hex);
  });
}

// ---------------------------------------------------------------------------
// Invalid vectors

for (const v of file.invalid) {
  test(`invalid vector ${v.name}: rejected with ${v.error}`, () => {
    assert.equal(
      ERROR_CODES[v.error as keyof typeof ERROR_CODES],
      v.errorNumber,
      "error and errorNumber agree",
    );
    const { messages, error } = decodeStream(fromHex(v.hex), v.maxFrameSize);
    assert.ok(error, "the stream must be rejected");
    assert.equal(error.code, v.error, error.message);
    assert.equal(error.wireCode, v.errorNumber);
    assert.equal(messages.length, v.validFramesBefore, "frames decoded before the error");
  });
}

test("invalid vectors cover every decoder and codec error code", () => {
  const seen = new Set(file.invalid.map((v) => v.error));
  for (
    const code of [
      "FRAME_TOO_LARGE",
      "TRUNCATED_FRAME",
      "UNKNOWN_FRAME_TYPE",
      "BAD_MAGIC",
      "BAD_HEADER",
      "BAD_FRAME",
    ]
  ) {
    assert.ok(seen.has(code), `no invalid vector for ${code}`);
  }
});

// ---------------------------------------------------------------------------
// Auth examples

for (const ex of file.auth_examples) {
  test(`auth example ${ex.name}: mac = HMAC-SHA256(UTF-8 token, "ferry-auth-v1" || nonce)`, () => {
    const nonce = fromHex(ex.nonce);
    assert.equal(nonce.length, 32);
    assert.equal(ex.tokenUtf8, toHex(new TextEncoder().encode(ex.token)));
    assert.equal(ex.hmacInput, toHex(new TextEncoder().encode("ferry-auth-v1")) + ex.nonce);
    assert.equal(AUTH_CONTEXT, "ferry-auth-v1");
    const mac = createHmac("sha256", fromHex(ex.tokenUtf8)).update(fromHex(ex.hmacInput)).digest("hex");
    assert.equal(mac, ex.mac);
    assert.equal(toHex(authMac(ex.token, nonce)), ex.mac, "the server's authMac agrees");
  });
}

test("auth example s3cret is the one the welcome_auth and auth vectors use", () => {
  const ex = file.auth_examples.find((e) => e.name === "s3cret")!;
  assert.equal(ex.token, "s3cret");
  assert.equal(ex.nonce, toHex(Uint8Array.from({ length: 32 }, (_, i) => i)));
  assert.equal(byName.get("welcome_auth")!.message.nonce, ex.nonce);
  assert.equal(byName.get("auth")!.message.mac, ex.mac);
});

// ---------------------------------------------------------------------------
// Example session

test('example session: sends "hello\\n" and every frame is a listed vector', () => {
  const frames = file.example_session.map((s) => {
    assert.equal(s.hex, byName.get(s.vector)?.hex, s.vector);
    return { from: s.from, m: decodeMessage(onlyFrame(fromHex(s.hex))) };
  });
  assert.deepEqual(frames.map((f) => `${f.from}:${f.m.kind}`), [
    "client:hello",
    "server:welcome",
    "client:file",
    "server:accept",
    "client:data",
    "client:end",
    "server:receipt",
  ]);
  const [, , file_, accept, data, end, receipt] = frames.map((f) => f.m);
  assert.ok(file_.kind === "file" && accept.kind === "accept" && data.kind === "data");
  assert.ok(end.kind === "end" && receipt.kind === "receipt");
  const content = new TextDecoder().decode(data.bytes);
  assert.equal(content, "hello\n");
  const sha = createHash("sha256").update(data.bytes).digest("hex");
  assert.equal(toHex(file_.sha256), sha);
  assert.equal(sha, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
  assert.equal(toHex(receipt.sha256), sha);
  assert.equal(file_.size, data.bytes.length);
  assert.equal(receipt.size, file_.size);
  for (const id of [accept.id, data.id, end.id, receipt.id]) assert.equal(id, file_.id);
  assert.equal(data.offset, accept.offset);
});

// ---------------------------------------------------------------------------
// docs/PROTOCOL.md agrees with the vectors and the code

const doc = readFileSync(protocolPath, "utf8");

/** The text of the `## TITLE` section, up to the next `## ` heading. */
function section(title: string): string {
  const start = doc.indexOf(`\n## ${title}\n`);
  assert.ok(start >= 0, `PROTOCOL.md has no section "${title}"`);
  const end = doc.indexOf("\n## ", start + 1);
  return doc.slice(start, end === -1 ? undefined : end);
}

/** Every `<!-- vector: NAME -->` block: its name and the bytes of its hex dump. */
function docVectorBlocks(): Array<{ name: string; hex: string }> {
  const blocks: Array<{ name: string; hex: string }> = [];
  for (const m of doc.matchAll(/<!-- vector: ([a-z0-9_]+) -->\n+```text\n([\s\S]*?)\n```/g)) {
    let hex = "";
    for (const line of m[2].split("\n")) {
      const bytes = /^((?:[0-9a-f]{2} )*[0-9a-f]{2})(?: {2,}.*)?$/.exec(line);
      assert.ok(bytes, `unparsable hex line in block ${m[1]}: ${line}`);
      hex += bytes[1].replaceAll(" ", "");
    }
    blocks.push({ name: m[1], hex });
  }
  assert.equal(
    blocks.length,
    doc.match(/<!-- vector: /g)?.length,
    "every marker is followed by a text block",
  );
  return blocks;
}

test("PROTOCOL.md: every annotated hex dump is byte-exact with its vector", () => {
  const blocks = docVectorBlocks();
  assert.ok(blocks.length > 0);
  for (const b of blocks) assert.equal(b.hex, byName.get(b.name)?.hex, `doc block ${b.name}`);
});

test("PROTOCOL.md: every frame type has an inline hex dump", () => {
  const shown = new Set(docVectorBlocks().map((b) => byName.get(b.name)!.type));
  for (const name of Object.keys(FrameType)) assert.ok(shown.has(name), `no hex dump for ${name}`);
});

test("PROTOCOL.md: the frame type table matches FrameType", () => {
  const rows = new Map<string, number>();
  for (const m of section("5. Frame types").matchAll(/^\|\s*0x([0-9a-f]{2})\s*\|\s*`([A-Z_]+)`\s*\|/gm)) {
    rows.set(m[2], parseInt(m[1], 16));
  }
  assert.deepEqual(Object.fromEntries(rows), { ...FrameType });
});

test("PROTOCOL.md: the error code table lists every ERROR_CODES entry with its number", () => {
  const rows = new Map<string, number>();
  for (const m of section("15. Error codes").matchAll(/^\|\s*(\d+)\s*\|\s*`([A-Z_]+)`\s*\|/gm)) {
    rows.set(m[2], Number(m[1]));
  }
  assert.deepEqual(Object.fromEntries(rows), { ...ERROR_CODES });
});

test("source_key_example: the sender's sourceKey() gives the key of file_digest_at_end", () => {
  const example = (file as unknown as {
    source_key_example: { fields: string[]; input: string; key: string };
  }).source_key_example;
  const [context, path, dev, ino, size, mtimeMs] = example.fields;
  assert.equal(context, "ferry-source-key-v1");
  assert.equal(toHex(new TextEncoder().encode(example.fields.join("\0"))), example.input);
  const key = sourceKey({
    path,
    name: "hello.txt",
    dev: Number(dev),
    ino: Number(ino),
    size: Number(size),
    mtimeMs: Number(mtimeMs),
  });
  assert.equal(toHex(key), example.key);
  const vector = file.vectors.find((v) => v.name === "file_digest_at_end");
  assert.equal((vector?.message as { sha256?: string }).sha256, example.key);
});
