/**
 * A seeded mutation fuzzer for the frame decoder and the message codec.
 *
 * Starts from valid encodings of every message kind and of frame sequences,
 * applies bit flips, byte inserts/deletes, length-field and type overwrites,
 * truncations and splices, and feeds the result through FrameDecoder (under
 * several chunkings and limits) and decodeMessage. Asserts that:
 *
 * - the only errors ever thrown are `ProtocolError`s with the expected codes
 *   (never a TypeError/RangeError from DataView or TextDecoder);
 * - the decoder allocates nothing larger than the frames it returns, and so
 *   never more than its limit;
 * - the outcome does not depend on how the bytes were chunked;
 * - whatever decodes re-encodes to exactly the same bytes.
 *
 * Deterministic: the seed is printed; set FERRY_FUZZ_SEED to replay or to
 * explore another seed, FERRY_FUZZ_CASES to run more cases.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { type ErrorCode, ProtocolError } from "../../src/errors.ts";
import {
  DEFAULT_MAX_FRAME_SIZE,
  encodeFrame,
  type Frame,
  FRAME_HEADER_SIZE,
  FrameDecoder,
} from "../../src/framing/mod.ts";
import { FrameType } from "../../src/protocol/constants.ts";
import { decodeMessage, encodeMessage, type Message, toHex } from "../../src/protocol/messages.ts";

const DEFAULT_SEED = 20240601;
const DEFAULT_CASES = 8000;

function envInt(name: string): number | undefined {
  let raw: string | undefined;
  try {
    raw = process.env[name];
  } catch {
    return undefined; // no env permission
  }
  if (raw === undefined || raw.trim() === "") return undefined;
  const n = Number(raw.trim());
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${raw}`);
  return n;
}

const SEED = (envInt("FERRY_FUZZ_SEED") ?? DEFAULT_SEED) >>> 0;
const CASES = envInt("FERRY_FUZZ_CASES") ?? DEFAULT_CASES;

// ---------------------------------------------------------------------------
// Deterministic PRNG (mulberry32)

class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * n);
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.int(256));
  }
  /** A safe integer biased towards interesting values. */
  safe(): number {
    return this.pick([
      0,
      1,
      6,
      255,
      65536,
      0xffffffff,
      2 ** 32,
      Number.MAX_SAFE_INTEGER,
      this.u32(),
      this.u32() * 1024,
    ]);
  }
  text(maxCodePoints: number): string {
    const pool = [
      "a",
      "Z",
      "0",
      "/",
      " ",
      ".",
      "é",
      "ß",
      "写",
      "真",
      "☕",
      "👋",
      "\u{10ffff}",
      "\ufeff",
      "\0",
      "\n",
    ];
    let s = "";
    const n = this.int(maxCodePoints + 1);
    for (let i = 0; i < n; i++) s += this.pick(pool);
    return s;
  }
}

// ---------------------------------------------------------------------------
// Seed corpus: every message kind, fixed and random, plus sequences

function fixedMessages(): Message[] {
  const sha = new Uint8Array(32).fill(0xab);
  return [
    { kind: "hello", version: 1, capabilities: 0xb, maxFrameSize: DEFAULT_MAX_FRAME_SIZE },
    {
      kind: "welcome",
      version: 1,
      capabilities: 0xb,
      maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
      nonce: new Uint8Array(0),
    },
    {
      kind: "welcome",
      version: 1,
      capabilities: 0xf,
      maxFrameSize: 65536,
      nonce: new Uint8Array(32).fill(7),
    },
    { kind: "auth", mac: sha },
    { kind: "auth_ok" },
    { kind: "error", code: "HASH_MISMATCH", wireCode: 26, id: 1, message: "hello.txt: hash mismatch" },
    { kind: "error", code: "AUTH_FAILED", wireCode: 9, id: 0, message: "" },
    {
      kind: "file",
      id: 1,
      flags: 1,
      size: 6,
      sha256: sha,
      mtimeMs: 1_700_000_000_000,
      name: "Café/写真.txt",
      mime: "text/plain",
    },
    { kind: "file", id: 2, flags: 0, size: 0, sha256: sha, mtimeMs: 0, name: "a", mime: "" },
    { kind: "accept", id: 1, offset: 0 },
    { kind: "accept", id: 7, offset: 8 * 1024 * 1024 },
    { kind: "data", id: 1, offset: 0, bytes: new TextEncoder().encode("hello\n") },
    { kind: "data", id: 1, offset: 6, bytes: new Uint8Array(0) },
    { kind: "end", id: 1 },
    { kind: "end_digest", id: 1, sha256: sha },
    { kind: "receipt", id: 1, flags: 0, size: 6, sha256: sha, storedName: "hello (1).txt" },
    { kind: "receipt", id: 2, flags: 1, size: 0, sha256: sha, storedName: "" },
    { kind: "ping", token: 1n },
    { kind: "pong", token: 0xffff_ffff_ffff_ffffn },
    { kind: "message", id: 1, text: "Hello 👋 Grüße" },
    { kind: "message", id: 2, text: "" },
    { kind: "message_ack", id: 1 },
  ];
}

function randomMessage(r: Rng): Message {
  const id = r.chance(0.5) ? r.range(0, 10) : r.u32();
  switch (r.int(15)) {
    case 0:
      return { kind: "hello", version: r.int(0x10000), capabilities: r.u32(), maxFrameSize: r.u32() };
    case 1:
      return {
        kind: "welcome",
        version: r.int(0x10000),
        capabilities: r.u32(),
        maxFrameSize: r.u32(),
        nonce: r.bytes(r.chance(0.5) ? 0 : 32),
      };
    case 2:
      return { kind: "auth", mac: r.bytes(32) };
    case 3:
      return { kind: "auth_ok" };
    case 4: {
      const wireCode = r.pick([1, 2, 9, 20, 26, 40, 50, 51]);
      const codes: Record<number, ErrorCode> = {
        1: "BAD_FRAME",
        2: "FRAME_TOO_LARGE",
        9: "AUTH_FAILED",
        20: "BAD_NAME",
        26: "HASH_MISMATCH",
        40: "MESSAGE_TOO_LARGE",
        50: "INTERNAL",
        51: "IO_ERROR",
      };
      return { kind: "error", code: codes[wireCode], wireCode, id, message: r.text(40) };
    }
    case 5:
      return {
        kind: "file",
        id,
        flags: r.int(256),
        size: r.safe(),
        sha256: r.bytes(32),
        mtimeMs: r.safe(),
        name: r.text(40),
        mime: r.text(20),
      };
    case 6:
      return { kind: "accept", id, offset: r.safe() };
    case 7:
      return { kind: "data", id, offset: r.safe(), bytes: r.bytes(r.chance(0.8) ? r.int(64) : r.int(3000)) };
    case 8:
      return { kind: "end", id };
    case 9:
      return {
        kind: "receipt",
        id,
        flags: r.int(256),
        size: r.safe(),
        sha256: r.bytes(32),
        storedName: r.text(40),
      };
    case 10:
      return { kind: "ping", token: (BigInt(r.u32()) << 32n) | BigInt(r.u32()) };
    case 11:
      return { kind: "pong", token: BigInt(r.u32()) };
    case 12:
      return { kind: "message", id, text: r.text(60) };
    case 13:
      return { kind: "end_digest", id, sha256: r.bytes(32) };
    default:
      return { kind: "message_ack", id };
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One starting input: a message, a sequence of messages, or random frames. */
function seedInput(r: Rng, fixed: Uint8Array[]): Uint8Array {
  switch (r.int(6)) {
    case 0:
    case 1:
      return r.pick(fixed);
    case 2:
      return encodeMessage(randomMessage(r));
    case 3:
    case 4: {
      const n = r.range(2, 5);
      const parts: Uint8Array[] = [];
      for (let i = 0; i < n; i++) parts.push(r.chance(0.5) ? r.pick(fixed) : encodeMessage(randomMessage(r)));
      return concat(parts);
    }
    default: {
      const n = r.range(1, 3);
      const parts: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        const type = r.chance(0.7) ? r.pick(Object.values(FrameType)) : r.int(256);
        parts.push(encodeFrame({ type, payload: r.bytes(r.int(80)) }));
      }
      return concat(parts);
    }
  }
}

// ---------------------------------------------------------------------------
// Mutations

/** Offsets of the frame headers that a well-behaved parse of `data` would see. */
function headerOffsets(data: Uint8Array): number[] {
  const offsets: number[] = [];
  let at = 0;
  while (at + FRAME_HEADER_SIZE <= data.length && offsets.length < 64) {
    offsets.push(at);
    const len = ((data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]) >>> 0;
    at += FRAME_HEADER_SIZE + len;
  }
  return offsets;
}

function writeU32(data: Uint8Array, at: number, v: number): void {
  for (let i = 0; i < 4 && at + i < data.length; i++) data[at + i] = (v >>> (24 - 8 * i)) & 0xff;
}

const INTERESTING_U32 = [0, 1, 3, 4, 5, 7, 8, 11, 12, 13, 31, 32, 33, 45, 47, 53, 56, 255, 256, 65535, 65536];
const INTERESTING_U64 = [
  [0x00000000, 0x00000000],
  [0x001fffff, 0xffffffff], // 2^53 - 1
  [0x00200000, 0x00000000], // 2^53
  [0x7fffffff, 0xffffffff],
  [0x80000000, 0x00000000],
  [0xffffffff, 0xffffffff],
];

type Mutation = (r: Rng, data: Uint8Array, donor: Uint8Array, max: number) => Uint8Array;

const MUTATIONS: Record<string, Mutation> = {
  bitFlip(r, d) {
    if (d.length === 0) return d;
    const out = d.slice();
    const n = r.range(1, 4);
    for (let i = 0; i < n; i++) out[r.int(out.length)] ^= 1 << r.int(8);
    return out;
  },
  byteSet(r, d) {
    if (d.length === 0) return d;
    const out = d.slice();
    out[r.int(out.length)] = r.chance(0.5)
      ? r.pick([0x00, 0x01, 0x7f, 0x80, 0xc0, 0xed, 0xef, 0xf4, 0xff])
      : r.int(256);
    return out;
  },
  insert(r, d) {
    const at = r.int(d.length + 1);
    return concat([d.subarray(0, at), r.bytes(r.range(1, 8)), d.subarray(at)]);
  },
  delete(r, d) {
    if (d.length === 0) return d;
    const at = r.int(d.length);
    return concat([d.subarray(0, at), d.subarray(Math.min(d.length, at + r.range(1, 8)))]);
  },
  lengthOverwrite(r, d, _donor, max) {
    const heads = headerOffsets(d);
    if (heads.length === 0) return d;
    const out = d.slice();
    const at = r.pick(heads);
    const current = ((d[at] << 24) | (d[at + 1] << 16) | (d[at + 2] << 8) | d[at + 3]) >>> 0;
    writeU32(
      out,
      at,
      r.pick([
        ...INTERESTING_U32,
        current - 1,
        current + 1,
        current + r.range(2, 40),
        Math.max(0, current - r.range(2, 40)),
        max,
        max + 1,
        DEFAULT_MAX_FRAME_SIZE,
        DEFAULT_MAX_FRAME_SIZE + 1,
        0x7fffffff,
        0x80000000,
        0xfffffffb,
        0xffffffff,
        r.u32(),
      ]) >>> 0,
    );
    return out;
  },
  typeOverwrite(r, d) {
    const heads = headerOffsets(d);
    if (heads.length === 0) return d;
    const out = d.slice();
    out[r.pick(heads) + 4] = r.chance(0.8) ? r.pick(Object.values(FrameType)) : r.int(256);
    return out;
  },
  fieldOverwrite(r, d) {
    // Inner length fields (str8/str16, nonceLength) and u64 fields live at arbitrary offsets.
    if (d.length < 2) return d;
    const out = d.slice();
    const at = r.int(d.length);
    switch (r.int(3)) {
      case 0:
        out[at] = r.pick([0, 1, 31, 32, 33, 0x7f, 0xff]);
        break;
      case 1: {
        const v = r.pick([0, 1, 0x00ff, 0x0100, 0x7fff, 0xffff, r.int(0x10000)]);
        out[at] = v >>> 8;
        if (at + 1 < out.length) out[at + 1] = v & 0xff;
        break;
      }
      default: {
        const [hi, lo] = r.pick(INTERESTING_U64);
        writeU32(out, at, hi);
        writeU32(out, at + 4, lo);
      }
    }
    return out;
  },
  truncate(r, d) {
    return d.subarray(0, r.int(d.length + 1)).slice();
  },
  duplicate(r, d) {
    if (d.length === 0) return d;
    const from = r.int(d.length);
    const piece = d.subarray(from, Math.min(d.length, from + r.range(1, 40)));
    const at = r.int(d.length + 1);
    return concat([d.subarray(0, at), piece, d.subarray(at)]);
  },
  splice(r, d, donor) {
    const cut = r.int(d.length + 1);
    const from = r.int(donor.length + 1);
    return concat([d.subarray(0, cut), donor.subarray(from)]);
  },
};
const MUTATION_NAMES = Object.keys(MUTATIONS);

// ---------------------------------------------------------------------------
// Harness

const DECODER_CODES = new Set<string>(["FRAME_TOO_LARGE", "TRUNCATED_FRAME"]);
const MESSAGE_CODES = new Set<string>(["UNKNOWN_FRAME_TYPE", "BAD_MAGIC", "BAD_HEADER", "BAD_FRAME"]);

interface Outcome {
  frames: Frame[];
  /** Decoder error code, if decoding stopped. */
  error?: string;
  /** Largest `new Uint8Array(n)` made while decoding. */
  largestAllocation: number;
}

/** Splits `data` into chunks according to a chunking plan. */
function chunk(r: Rng, data: Uint8Array, plan: "whole" | "bytes" | "random" | "header"): Uint8Array[] {
  if (plan === "whole") return [data.slice()];
  if (plan === "bytes") return Array.from(data, (b) => Uint8Array.of(b));
  const chunks: Uint8Array[] = [];
  let at = 0;
  while (at < data.length) {
    const n = plan === "header" ? r.range(1, 6) : r.range(0, 64);
    chunks.push(data.slice(at, at + n));
    at += n;
  }
  return chunks;
}

/** Runs the decoder over `chunks`, counting allocations; rethrows anything that is not a ProtocolError. */
function runDecoder(chunks: Uint8Array[], maxFrameSize: number): Outcome {
  const decoder = new FrameDecoder({ maxFrameSize });
  const g = globalThis as unknown as { Uint8Array: Uint8ArrayConstructor };
  const Original = g.Uint8Array;
  let largestAllocation = 0;
  const frames: Frame[] = [];
  let error: string | undefined;
  g.Uint8Array = new Proxy(Original, {
    construct(target, args, newTarget) {
      if (typeof args[0] === "number") largestAllocation = Math.max(largestAllocation, args[0]);
      return Reflect.construct(target, args, newTarget);
    },
  });
  try {
    for (const c of chunks) {
      decoder.push(c);
      for (let f = decoder.next(); f; f = decoder.next()) frames.push(f);
    }
    decoder.end();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    error = e.code;
  } finally {
    g.Uint8Array = Original;
  }
  return { frames, error, largestAllocation };
}

function describe(frames: Frame[], error?: string): string {
  return JSON.stringify({ frames: frames.map((f) => [f.type, toHex(f.payload)]), error });
}

const utf8 = new TextEncoder();

test(`fuzz: mutated frames only ever raise ProtocolError (seed ${SEED}, ${CASES} cases)`, {
  timeout: Math.max(60_000, CASES * 5),
}, () => {
  console.log(`ferry fuzz: seed ${SEED}, ${CASES} cases (replay or explore with FERRY_FUZZ_SEED=<n>)`);
  const r = new Rng(SEED);
  const fixed = fixedMessages().map(encodeMessage);
  const stats = new Map<string, number>();
  const count = (key: string) => stats.set(key, (stats.get(key) ?? 0) + 1);

  for (let i = 0; i < CASES; i++) {
    let data = seedInput(r, fixed);
    const donor = seedInput(r, fixed);
    const maxFrameSize = r.chance(0.75) ? DEFAULT_MAX_FRAME_SIZE : r.pick([0, r.int(100), r.range(50, 4000)]);
    const applied: string[] = [];
    const mutations = r.chance(0.05) ? 0 : r.range(1, 4);
    for (let m = 0; m < mutations; m++) {
      const name = r.pick(MUTATION_NAMES);
      applied.push(name);
      data = MUTATIONS[name](r, data, donor, maxFrameSize);
    }
    if (r.chance(0.02)) data = r.bytes(r.int(200)); // pure garbage now and then

    const where = () =>
      `seed ${SEED}, case ${i}, maxFrameSize ${maxFrameSize}, mutations [${applied.join(", ")}], input ${
        toHex(data.subarray(0, 256))
      }${data.length > 256 ? "…" : ""}`;
    const fail = (what: string, e?: unknown): never => {
      throw new assert.AssertionError({
        message: `${what}\n  at ${where()}${e instanceof Error ? `\n  ${e.stack}` : ""}`,
      });
    };

    // Reference run in one chunk, then the same bytes under another chunking.
    let reference: Outcome;
    let other: Outcome;
    const plan = r.pick(["bytes", "random", "header"] as const);
    try {
      reference = runDecoder(chunk(r, data, "whole"), maxFrameSize);
      other = runDecoder(
        chunk(r, data, data.length > 3000 && plan === "bytes" ? "random" : plan),
        maxFrameSize,
      );
    } catch (e) {
      return fail(`decoder threw a non-ProtocolError: ${String(e)}`, e);
    }
    for (const out of [reference, other]) {
      if (out.error !== undefined && !DECODER_CODES.has(out.error)) {
        fail(`decoder raised unexpected ${out.error}`);
      }
      const largestFrame = Math.max(0, ...out.frames.map((f) => f.payload.length));
      if (out.largestAllocation > Math.max(largestFrame, FRAME_HEADER_SIZE)) {
        fail(
          `decoder allocated ${out.largestAllocation} bytes but returned frames of at most ${largestFrame}`,
        );
      }
      if (out.largestAllocation > Math.max(maxFrameSize, FRAME_HEADER_SIZE)) {
        fail(`decoder allocated ${out.largestAllocation} bytes, over its limit ${maxFrameSize}`);
      }
      for (const f of out.frames) {
        if (f.payload.length > maxFrameSize) fail(`frame of ${f.payload.length} > limit`);
      }
    }
    if (describe(reference.frames, reference.error) !== describe(other.frames, other.error)) {
      fail(
        `outcome depends on chunking (${plan}): ${describe(reference.frames, reference.error)} vs ${
          describe(other.frames, other.error)
        }`,
      );
    }
    count(`decoder:${reference.error ?? "ok"}`);

    for (const frame of reference.frames) {
      let message: Message;
      try {
        message = decodeMessage(frame);
      } catch (e) {
        if (!(e instanceof ProtocolError)) fail(`decodeMessage threw a non-ProtocolError: ${String(e)}`, e);
        const code = (e as ProtocolError).code;
        if (!MESSAGE_CODES.has(code)) fail(`decodeMessage raised unexpected ${code}`);
        count(`message:${code}`);
        continue;
      }
      count(`message:ok`);
      // What decodes is canonical: it re-encodes to the same bytes (ERROR texts over 1024 bytes are truncated).
      if (message.kind === "error" && utf8.encode(message.message).length > 1024) continue;
      let again: Uint8Array;
      try {
        again = encodeMessage(message);
      } catch (e) {
        return fail(`encodeMessage threw on a decoded ${message.kind}: ${String(e)}`, e);
      }
      if (toHex(again) !== toHex(encodeFrame(frame))) {
        fail(`${message.kind} re-encodes differently: ${toHex(again)} vs ${toHex(encodeFrame(frame))}`);
      }
    }
  }

  const summary = [...stats].sort().map(([k, v]) => `${k}=${v}`).join(" ");
  console.log(`ferry fuzz: ${summary}`);
  // The fuzzer must actually reach every error path and also produce valid frames.
  for (
    const key of [
      "decoder:ok",
      "decoder:FRAME_TOO_LARGE",
      "decoder:TRUNCATED_FRAME",
      "message:ok",
      "message:UNKNOWN_FRAME_TYPE",
      "message:BAD_MAGIC",
      "message:BAD_HEADER",
      "message:BAD_FRAME",
    ]
  ) {
    assert.ok((stats.get(key) ?? 0) > 0, `the fuzzer never produced ${key} (seed ${SEED})`);
  }
});

test("fuzz: every hostile length prefix, whatever follows, allocates nothing", { timeout: 60_000 }, () => {
  const r = new Rng(SEED ^ 0x9e3779b9);
  for (let i = 0; i < 2000; i++) {
    const max = r.pick([0, 1, 100, DEFAULT_MAX_FRAME_SIZE]);
    const length = r.range(max + 1, Math.min(0xffffffff, max + 1 + r.pick([0, 1, 1000, 0xffffffff])));
    const header = Uint8Array.of(
      length >>> 24,
      (length >>> 16) & 0xff,
      (length >>> 8) & 0xff,
      length & 0xff,
      r.int(256),
    );
    const tail = r.bytes(r.int(300));
    const data = concat([header, tail]);
    const out = runDecoder(chunk(r, data, r.pick(["whole", "header", "random"] as const)), max);
    assert.equal(out.error, "FRAME_TOO_LARGE", `length ${length}, max ${max}`);
    assert.equal(out.frames.length, 0);
    assert.ok(
      out.largestAllocation <= FRAME_HEADER_SIZE,
      `allocated ${out.largestAllocation} for length ${length}`,
    );
  }
});
