/**
 * Property tests (fast-check) for the framing layer and the message codec:
 * any frames under any chunking decode to exactly those frames, and every
 * valid message survives encode → frame decode → message decode unchanged.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ERROR_CODES, errorCodeFromNumber, ProtocolError } from "../../src/errors.ts";
import {
  encodeFrame,
  type Frame,
  FRAME_HEADER_SIZE,
  FrameDecoder,
  FrameDecoderStream,
  FrameEncoderStream,
} from "../../src/framing/mod.ts";
import { FrameType } from "../../src/protocol/constants.ts";
import { decodeMessage, encodeMessage, fromHex, type Message, toHex } from "../../src/protocol/messages.ts";

// ---------------------------------------------------------------------------
// Helpers

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function encodeAll(frames: Frame[]): Uint8Array {
  return concat(frames.map(encodeFrame));
}

/** Cuts `data` at sorted offsets (duplicates give empty chunks); chunks are copies. */
function cutAt(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [0, ...cuts, data.length];
  const chunks: Uint8Array[] = [];
  for (let i = 1; i < points.length; i++) chunks.push(data.slice(points[i - 1], points[i]));
  return chunks;
}

function show(frames: Frame[]): Array<{ type: number; payload: string }> {
  return frames.map((f) => ({ type: f.type, payload: toHex(f.payload) }));
}

/** Decodes chunks; returns frames and the ProtocolError code that stopped decoding, if any. */
function decodeChunks(chunks: Uint8Array[], maxFrameSize?: number): { frames: Frame[]; error?: string } {
  const decoder = new FrameDecoder({ maxFrameSize });
  const frames: Frame[] = [];
  try {
    // for..of, not spread: frames yielded before an error must be kept.
    for (const chunk of chunks) for (const frame of decoder.decode(chunk)) frames.push(frame);
    decoder.end();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return { frames, error: e.code };
  }
  return { frames };
}

/** The one frame in `bytes` (throws if there is not exactly one). */
function decodeFrame(bytes: Uint8Array): Frame {
  const { frames, error } = decodeChunks([bytes]);
  assert.equal(error, undefined);
  assert.equal(frames.length, 1);
  return frames[0];
}

// ---------------------------------------------------------------------------
// Arbitraries

const payloadArb = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 3000, size: "max" }) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 8 }) },
  { weight: 1, arbitrary: fc.constant(new Uint8Array(0)) },
);
const frameArb: fc.Arbitrary<Frame> = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  payload: payloadArb,
}, {
  noNullPrototype: true,
});
const framesArb = fc.array(frameArb, { maxLength: 8, size: "max" });

/** Sorted cut offsets in 0..total, or every byte on its own. */
function cutsArb(total: number): fc.Arbitrary<number[]> {
  const everyByte = Array.from({ length: Math.max(0, total - 1) }, (_, i) => i + 1);
  return fc.oneof(
    fc.constant(everyByte),
    fc.constant<number[]>([]),
    fc.array(fc.integer({ min: 0, max: total }), { maxLength: 40, size: "max" }).map((c) =>
      c.sort((a, b) => a - b)
    ),
    fc.array(fc.integer({ min: 0, max: total }), { maxLength: 4 }).map((c) => c.sort((a, b) => a - b)),
  );
}

const framesAndCuts = framesArb.chain((frames) =>
  fc.tuple(
    fc.constant(frames),
    cutsArb(FRAME_HEADER_SIZE * frames.length + frames.reduce((n, f) => n + f.payload.length, 0)),
  )
);

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const safeU64 = fc.maxSafeNat();
const digest = fc.uint8Array({ minLength: 32, maxLength: 32 });
/** Well-formed Unicode (no lone surrogates): at most 4 UTF-8 bytes per code point. */
const text = (maxCodePoints: number) =>
  fc.oneof(
    fc.string({ unit: "binary", maxLength: maxCodePoints, size: "max" }),
    fc.string({ unit: "binary", maxLength: 8 }),
    fc.string({ unit: "grapheme", maxLength: 20 }),
  );
const wireCode = fc.oneof(fc.constantFrom(...Object.values(ERROR_CODES)), u16);

/** Plain-object records (fast-check may otherwise build null-prototype objects). */
function rec<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record(model, { noNullPrototype: true });
}

const messageArb: fc.Arbitrary<Message> = fc.oneof(
  rec({ kind: fc.constant("hello" as const), version: u16, capabilities: u32, maxFrameSize: u32 }),
  rec({
    kind: fc.constant("welcome" as const),
    version: u16,
    capabilities: u32,
    maxFrameSize: u32,
    nonce: fc.oneof(fc.constant(new Uint8Array(0)), digest),
  }),
  rec({ kind: fc.constant("auth" as const), mac: digest }),
  fc.constant({ kind: "auth_ok" as const }),
  // ≤ 250 code points = ≤ 1000 UTF-8 bytes, within the 1024-byte ERROR text limit.
  rec({ wireCode, id: u32, message: text(250) }).map((r): Message => ({
    kind: "error",
    code: errorCodeFromNumber(r.wireCode),
    ...r,
  })),
  rec({
    kind: fc.constant("file" as const),
    id: u32,
    flags: u8,
    size: safeU64,
    sha256: digest,
    mtimeMs: safeU64,
    name: text(300),
    mime: text(63), // ≤ 252 bytes fits str8
  }),
  rec({ kind: fc.constant("accept" as const), id: u32, offset: safeU64 }),
  rec({ kind: fc.constant("data" as const), id: u32, offset: safeU64, bytes: payloadArb }),
  rec({ kind: fc.constant("end" as const), id: u32 }),
  rec({ kind: fc.constant("end_digest" as const), id: u32, sha256: digest }),
  rec({
    kind: fc.constant("receipt" as const),
    id: u32,
    flags: u8,
    size: safeU64,
    sha256: digest,
    storedName: text(300),
  }),
  rec({ kind: fc.constant("ping" as const), token: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
  rec({ kind: fc.constant("pong" as const), token: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
  rec({ kind: fc.constant("message" as const), id: u32, text: text(500) }),
  rec({ kind: fc.constant("message_ack" as const), id: u32 }),
);

const TYPE_OF_KIND: Record<Message["kind"], number> = {
  hello: FrameType.HELLO,
  welcome: FrameType.WELCOME,
  auth: FrameType.AUTH,
  auth_ok: FrameType.AUTH_OK,
  error: FrameType.ERROR,
  file: FrameType.FILE,
  accept: FrameType.ACCEPT,
  data: FrameType.DATA,
  end: FrameType.END,
  end_digest: FrameType.END_DIGEST,
  receipt: FrameType.RECEIPT,
  ping: FrameType.PING,
  pong: FrameType.PONG,
  message: FrameType.MESSAGE,
  message_ack: FrameType.MESSAGE_ACK,
};

/** Generous per-test timeout: Bun's default of 5 s is tight on a loaded CI machine. */
const SLOW = { timeout: 60_000 };

// ---------------------------------------------------------------------------
// Framing properties

test("property: any frames under any chunking decode to exactly those frames", SLOW, () => {
  fc.assert(
    fc.property(framesAndCuts, ([frames, cuts]) => {
      const data = encodeAll(frames);
      const { frames: got, error } = decodeChunks(cutAt(data, cuts));
      assert.equal(error, undefined);
      assert.deepEqual(show(got), show(frames));
    }),
    { numRuns: 150 },
  );
});

test("property: encode ∘ decode is the identity on byte streams, decode ∘ encode on frames", SLOW, () => {
  fc.assert(
    fc.property(framesAndCuts, ([frames, cuts]) => {
      const data = encodeAll(frames);
      const { frames: got } = decodeChunks(cutAt(data, cuts));
      assert.equal(toHex(encodeAll(got)), toHex(data));
      assert.deepEqual(show(decodeChunks([encodeAll(got)]).frames), show(frames));
    }),
    { numRuns: 100 },
  );
});

test(
  "property: a stream cut anywhere yields the whole frames before the cut, then TRUNCATED_FRAME",
  SLOW,
  () => {
    const arb = framesArb.filter((f) => f.length > 0).chain((frames) => {
      const total = encodeAll(frames).length;
      return fc.tuple(fc.constant(frames), fc.integer({ min: 0, max: total - 1 }), cutsArb(total));
    });
    fc.assert(
      fc.property(arb, ([frames, cutAtByte, cuts]) => {
        const data = encodeAll(frames).subarray(0, cutAtByte);
        const whole: Frame[] = [];
        let end = 0;
        for (const f of frames) {
          end += FRAME_HEADER_SIZE + f.payload.length;
          if (end <= cutAtByte) whole.push(f);
        }
        const atBoundary = cutAtByte === 0 ||
          whole.reduce((n, f) => n + FRAME_HEADER_SIZE + f.payload.length, 0) === cutAtByte;
        const { frames: got, error } = decodeChunks(cutAt(data, cuts.filter((c) => c <= cutAtByte)));
        assert.deepEqual(show(got), show(whole));
        assert.equal(error, atBoundary ? undefined : "TRUNCATED_FRAME");
      }),
      { numRuns: 150 },
    );
  },
);

test(
  "property: with any maxFrameSize, frames up to the limit pass and the first larger one is FRAME_TOO_LARGE",
  SLOW,
  () => {
    const arb = framesAndCuts.chain(([frames, cuts]) =>
      fc.tuple(fc.constant(frames), fc.constant(cuts), fc.integer({ min: 0, max: 3001 }))
    );
    fc.assert(
      fc.property(arb, ([frames, cuts, max]) => {
        const firstTooBig = frames.findIndex((f) => f.payload.length > max);
        const expected = firstTooBig === -1 ? frames : frames.slice(0, firstTooBig);
        const { frames: got, error } = decodeChunks(cutAt(encodeAll(frames), cuts), max);
        assert.deepEqual(show(got), show(expected));
        assert.equal(error, firstTooBig === -1 ? undefined : "FRAME_TOO_LARGE");
        for (const f of got) assert.ok(f.payload.length <= max);
      }),
      { numRuns: 150 },
    );
  },
);

test(
  "property: nextParts() under any chunking, cut and limit gives what next() gives, as views of the chunks",
  SLOW,
  () => {
    const arb = framesAndCuts.chain(([frames, cuts]) => {
      const total = encodeAll(frames).length;
      return fc.tuple(
        fc.constant(frames),
        fc.constant(cuts),
        fc.integer({ min: 0, max: total }),
        fc.integer({ min: 0, max: 3001 }),
      );
    });
    fc.assert(
      fc.property(arb, ([frames, cuts, cutAtByte, max]) => {
        const chunks = cutAt(encodeAll(frames).subarray(0, cutAtByte), cuts.filter((c) => c <= cutAtByte));
        const reference = decodeChunks(chunks, max);
        const consumed: Uint8Array[] = [];
        const decoder = new FrameDecoder({ maxFrameSize: max, onConsumed: (c) => consumed.push(c) });
        const got: Frame[] = [];
        let error: string | undefined;
        try {
          for (const chunk of chunks) {
            decoder.push(chunk);
            for (let f = decoder.nextParts(); f; f = decoder.nextParts()) {
              let length = 0;
              for (const part of f.parts) {
                assert.ok(part.length > 0);
                assert.ok(chunks.some((c) => c.buffer === part.buffer), "a part is a view of a pushed chunk");
                length += part.length;
              }
              assert.equal(length, f.length);
              got.push({ type: f.type, payload: concat(f.parts) });
            }
          }
          decoder.end();
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
          error = e.code;
        }
        assert.deepEqual(show(got), show(reference.frames));
        assert.equal(error, reference.error);
        // Every chunk reported consumed was pushed, once, in order, and with no bytes left pending.
        const pushed = chunks.filter((c) => c.length > 0);
        assert.deepEqual(consumed, pushed.slice(0, consumed.length));
        if (error === undefined) {
          assert.equal(consumed.length, pushed.length, "a clean end consumed everything");
        }
      }),
      { numRuns: 200 },
    );
  },
);

test(
  "property: compact() between reads (as a channel on Bun does) changes no frame, and frees every read at once",
  SLOW,
  () => {
    fc.assert(
      fc.property(framesAndCuts, ([frames, cuts]) => {
        // Small carries (16 bytes at least, doubling), reused once given back, so appending, moving to a
        // larger carry and reuse all happen; everything given back is overwritten at once, as another
        // connection would, so a buffer still in use that was given back shows up as wrong bytes.
        const free: ArrayBuffer[] = [];
        const carries = new WeakSet<ArrayBuffer>();
        const into = (n: number) => {
          const reused = free.findIndex((b) => b.byteLength >= n);
          if (reused >= 0) return new Uint8Array(free.splice(reused, 1)[0]);
          let size = 16;
          while (size < n) size *= 2;
          const buffer = new ArrayBuffer(size);
          carries.add(buffer);
          return new Uint8Array(buffer);
        };
        const isOwn = (c: Uint8Array) => carries.has(c.buffer as ArrayBuffer);
        const givenBack = new Set<ArrayBufferLike>();
        let consumed: Uint8Array[] = [];
        const decoder = new FrameDecoder({ onConsumed: (c) => consumed.push(c) });
        /** What a channel does at its next call: hand back what was consumed, then it is reused. */
        const handBack = () => {
          for (const c of consumed) {
            assert.ok(!givenBack.has(c.buffer), "a buffer is handed back once");
            givenBack.add(c.buffer);
            new Uint8Array(c.buffer).fill(0xee);
            if (isOwn(c)) {
              free.push(c.buffer as ArrayBuffer);
              givenBack.delete(c.buffer); // may come back again after its reuse
            }
          }
          consumed = [];
        };
        const reads = cutAt(encodeAll(frames), cuts).filter((c) => c.length > 0);
        const out: Frame[] = [];
        for (const read of reads) {
          decoder.push(read);
          for (let f = decoder.nextParts(); f; f = decoder.nextParts()) {
            out.push({ type: f.type, payload: concat(f.parts) }); // used before the next call
            handBack();
          }
          // About to wait for the next read: nothing pending may stay in a read.
          decoder.compact(into, isOwn);
          assert.ok(
            consumed.includes(read) || givenBack.has(read.buffer),
            "the read goes back before the next",
          );
          handBack();
        }
        decoder.end();
        assert.deepEqual(show(out), show(frames));
      }),
      { numRuns: 300 },
    );
  },
);

test("property: Web Streams round-trip under random re-chunking", SLOW, async () => {
  await fc.assert(
    fc.asyncProperty(framesAndCuts, async ([frames, cuts]) => {
      const data = encodeAll(frames);
      const chunks = cutAt(data, cuts);
      const source = new ReadableStream<Frame>({
        start(c) {
          for (const f of frames) c.enqueue(f);
          c.close();
        },
      });
      // Encode through the stream, then split the bytes at the generated cuts and decode.
      const encoded: Uint8Array[] = [];
      const reader1 = source.pipeThrough(new FrameEncoderStream()).getReader();
      for (let r = await reader1.read(); !r.done; r = await reader1.read()) encoded.push(r.value);
      assert.equal(toHex(concat(encoded)), toHex(data));
      const bytes = new ReadableStream<Uint8Array>({
        start(c) {
          for (const chunk of chunks) c.enqueue(chunk);
          c.close();
        },
      });
      const got: Frame[] = [];
      const reader2 = bytes.pipeThrough(new FrameDecoderStream()).getReader();
      for (let r = await reader2.read(); !r.done; r = await reader2.read()) got.push(r.value);
      assert.deepEqual(show(got), show(frames));
    }),
    { numRuns: 40 },
  );
});

// ---------------------------------------------------------------------------
// Message properties

test("property: decodeMessage(decodeFrame(encodeMessage(m))) deep-equals m, for every kind", SLOW, () => {
  const seen = new Set<string>();
  fc.assert(
    fc.property(messageArb, (m) => {
      seen.add(m.kind);
      const bytes = encodeMessage(m);
      const frame = decodeFrame(bytes);
      assert.equal(frame.type, TYPE_OF_KIND[m.kind]);
      assert.equal(frame.payload.length, bytes.length - FRAME_HEADER_SIZE);
      assert.deepStrictEqual(decodeMessage(frame), m);
    }),
    { numRuns: 700 },
  );
  assert.deepEqual([...seen].sort(), Object.keys(TYPE_OF_KIND).sort(), "every kind was generated");
});

test("property: message frames split anywhere still decode to the same messages", SLOW, () => {
  const arb = fc.array(messageArb, { minLength: 1, maxLength: 6, size: "max" }).chain((ms) => {
    const total = concat(ms.map(encodeMessage)).length;
    return fc.tuple(fc.constant(ms), cutsArb(total));
  });
  fc.assert(
    fc.property(arb, ([ms, cuts]) => {
      const { frames, error } = decodeChunks(cutAt(concat(ms.map(encodeMessage)), cuts));
      assert.equal(error, undefined);
      assert.deepStrictEqual(frames.map(decodeMessage), ms);
    }),
    { numRuns: 100 },
  );
});

test(
  "property: decodeMessage on any payload returns a canonical message or throws ProtocolError",
  SLOW,
  () => {
    const known = Object.values(FrameType) as number[];
    const arb = fc.record({
      type: fc.oneof(fc.constantFrom(...known), fc.integer({ min: 0, max: 255 })),
      payload: fc.oneof(
        fc.uint8Array({ maxLength: 80 }),
        // Valid payloads with a random suffix, prefix cut or byte changed.
        fc.tuple(messageArb, fc.integer({ min: -3, max: 3 }), fc.uint8Array({ maxLength: 3 })).map(
          ([m, delta, extra]) => {
            const p = encodeMessage(m).subarray(FRAME_HEADER_SIZE);
            return delta < 0
              ? p.slice(0, Math.max(0, p.length + delta))
              : concat([p, extra.subarray(0, delta)]);
          },
        ),
      ),
    });
    fc.assert(
      fc.property(arb, (frame) => {
        let m: Message;
        try {
          m = decodeMessage(frame);
        } catch (e) {
          assert.ok(e instanceof ProtocolError, `non-ProtocolError: ${String(e)}`);
          return;
        }
        // Whatever decodes re-encodes to the very same bytes (ERROR texts over 1024 bytes aside).
        if (m.kind === "error" && new TextEncoder().encode(m.message).length > 1024) return;
        assert.equal(toHex(encodeMessage(m)), toHex(encodeFrame(frame)));
      }),
      { numRuns: 1000 },
    );
  },
);

test("hex: toHex is lowercase two digits per byte, fromHex inverts it and refuses bad digits", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const hex = toHex(bytes);
      assert.equal(hex, Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""));
      assert.deepEqual(fromHex(hex), bytes);
      assert.deepEqual(fromHex(hex.toUpperCase()), bytes);
    }),
    { numRuns: 500 },
  );
  assert.deepEqual(fromHex(" 0a ff\n10 "), new Uint8Array([0x0a, 0xff, 0x10]));
  for (const bad of ["0", "0g", "g0", "zz", "0x10", "1-"]) assert.throws(() => fromHex(bad), TypeError, bad);
});
