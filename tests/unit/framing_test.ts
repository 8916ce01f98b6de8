/**
 * Unit tests for src/framing: awkward TCP splits, the max frame size limit,
 * EOF inside a frame, the Web Streams wrappers and zero-copy views.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProtocolError } from "../../src/errors.ts";
import {
  DEFAULT_MAX_FRAME_SIZE,
  encodeFrame,
  encodeFrameHeader,
  type Frame,
  FRAME_HEADER_SIZE,
  FrameDecoder,
  FrameDecoderStream,
  FrameEncoderStream,
  MAX_FRAME_SIZE_CEILING,
} from "../../src/framing/mod.ts";
import { toHex } from "../../src/protocol/messages.ts";

// ---------------------------------------------------------------------------
// Helpers

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

/** A payload of `n` distinct-ish bytes starting at `seed`. */
function payload(n: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (seed + i * 7) & 0xff);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function encodeAll(frames: Frame[]): Uint8Array {
  return concat(...frames.map(encodeFrame));
}

/** Cuts `data` at the given offsets; each chunk is a fresh copy with its own buffer. */
function cutAt(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [0, ...cuts, data.length];
  const chunks: Uint8Array[] = [];
  for (let i = 1; i < points.length; i++) chunks.push(data.slice(points[i - 1], points[i]));
  return chunks;
}

function everyByte(data: Uint8Array): Uint8Array[] {
  return Array.from(data, (b) => bytes(b));
}

/** Comparable form of frames: type and payload hex. */
function show(frames: Frame[]): Array<{ type: number; payload: string }> {
  return frames.map((f) => ({ type: f.type, payload: toHex(f.payload) }));
}

/** Throws unless `fn` throws a ProtocolError with `code`. */
function assertProtocolError(fn: () => unknown, code: string): ProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ProtocolError, `expected ProtocolError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code);
  return caught;
}

/**
 * Runs `fn` while counting every `new Uint8Array(n)` made anywhere (the
 * decoder resolves the global `Uint8Array` at call time). Returns the largest
 * `n` seen and what `fn` threw, if anything.
 */
function trackAllocations(fn: () => void): { largest: number; error: unknown } {
  const g = globalThis as unknown as { Uint8Array: Uint8ArrayConstructor };
  const Original = g.Uint8Array;
  let largest = 0;
  g.Uint8Array = new Proxy(Original, {
    construct(target, args, newTarget) {
      if (typeof args[0] === "number") largest = Math.max(largest, args[0]);
      return Reflect.construct(target, args, newTarget);
    },
  });
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  } finally {
    g.Uint8Array = Original;
  }
  return { largest, error };
}

function streamOf<T>(items: T[]): ReadableStream<T> {
  return new ReadableStream<T>({
    start(controller) {
      for (const item of items) controller.enqueue(item);
      controller.close();
    },
  });
}

/** Re-splits a byte stream into pieces of 1, 2, 3, 5, 8, 13 … bytes, cycling. */
function rechunk(): TransformStream<Uint8Array, Uint8Array> {
  const sizes = [1, 2, 3, 5, 8, 13, 21, 4096];
  let next = 0;
  return new TransformStream({
    transform(chunk, controller) {
      let at = 0;
      while (at < chunk.length) {
        const n = sizes[next++ % sizes.length];
        controller.enqueue(chunk.slice(at, at + n));
        at += n;
      }
    },
  });
}

async function readAll<T>(readable: ReadableStream<T>): Promise<{ items: T[]; error: unknown }> {
  const reader = readable.getReader();
  const items: T[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { items, error: undefined };
      items.push(value);
    }
  } catch (error) {
    return { items, error };
  }
}

// ---------------------------------------------------------------------------
// Awkward splits

const A: Frame = { type: 0x12, payload: payload(10) };
const B: Frame = { type: 0x30, payload: payload(3, 100) };
const C: Frame = { type: 0xff, payload: payload(300, 9) };
const EMPTY: Frame = { type: 0x04, payload: new Uint8Array(0) };
const AB_C = encodeAll([A, B, C]);
const lenA = FRAME_HEADER_SIZE + A.payload.length;

interface SplitCase {
  name: string;
  frames: Frame[];
  chunks: (data: Uint8Array) => Uint8Array[];
}

const SPLITS: SplitCase[] = [
  ...[1, 2, 3].map((k): SplitCase => ({
    name: `inside the length prefix at offset ${k}`,
    frames: [A],
    chunks: (d) => cutAt(d, [k]),
  })),
  { name: "between length prefix and type byte", frames: [A], chunks: (d) => cutAt(d, [4]) },
  { name: "header and payload in separate chunks", frames: [A], chunks: (d) => cutAt(d, [5]) },
  { name: "inside the payload", frames: [A], chunks: (d) => cutAt(d, [8]) },
  { name: "prefix split at offsets 1,2,3,4 all at once", frames: [A], chunks: (d) => cutAt(d, [1, 2, 3, 4]) },
  { name: "three frames in one chunk", frames: [A, B, C], chunks: (d) => [d] },
  ...[0, 1, 2, 3, 4, 5].map((k): SplitCase => ({
    name: `three frames, second frame's header cut at offset ${k}`,
    frames: [A, B, C],
    chunks: (d) => cutAt(d, [lenA + k]),
  })),
  {
    name: "first chunk ends one byte into the second frame, last frame cut mid-payload",
    frames: [A, B, C],
    chunks: (d) => cutAt(d, [lenA + 1, AB_C.length - 150]),
  },
  { name: "zero-length payload alone", frames: [EMPTY], chunks: (d) => [d] },
  { name: "zero-length payload split inside its header", frames: [EMPTY], chunks: (d) => cutAt(d, [2]) },
  { name: "three zero-length payloads in one chunk", frames: [EMPTY, EMPTY, EMPTY], chunks: (d) => [d] },
  { name: "zero-length payloads one byte at a time", frames: [EMPTY, EMPTY], chunks: everyByte },
  {
    name: "zero-length payload between two frames, cut right after it",
    frames: [A, EMPTY, B],
    chunks: (d) => cutAt(d, [lenA + FRAME_HEADER_SIZE]),
  },
  { name: "one byte at a time", frames: [A, B, EMPTY, C], chunks: everyByte },
  {
    name: "empty chunks interleaved",
    frames: [A, B],
    chunks: (d) => [new Uint8Array(0), ...cutAt(d, [3, 3, 12]), new Uint8Array(0)],
  },
  { name: "payload of exactly one byte", frames: [{ type: 0x20, payload: bytes(0x42) }], chunks: everyByte },
];

for (const c of SPLITS) {
  test(`splits: ${c.name}`, () => {
    const data = encodeAll(c.frames);
    const chunks = c.chunks(data);
    assert.equal(toHex(concat(...chunks)), toHex(data), "test case must not lose bytes");
    // Byte offset at which each frame becomes complete.
    const ends: number[] = [];
    let end = 0;
    for (const f of c.frames) ends.push(end += FRAME_HEADER_SIZE + f.payload.length);

    const decoder = new FrameDecoder();
    const got: Frame[] = [];
    let pushed = 0;
    for (const chunk of chunks) {
      decoder.push(chunk);
      pushed += chunk.length;
      for (let f = decoder.next(); f; f = decoder.next()) got.push(f);
      // A frame is returned exactly when its last byte has arrived, never earlier or later.
      assert.equal(got.length, ends.filter((e) => e <= pushed).length, `after ${pushed} bytes`);
      assert.equal(decoder.bufferedBytes, pushed - (ends.filter((e) => e <= pushed).at(-1) ?? 0));
    }
    assert.deepEqual(show(got), show(c.frames));
    assert.equal(decoder.bufferedBytes, 0);
    decoder.end(); // clean EOF: no throw
  });
}

test("splits: decode() generator yields the same frames as next()", () => {
  const decoder = new FrameDecoder();
  const got: Frame[] = [];
  for (const chunk of cutAt(AB_C, [2, lenA + 7, lenA + 9])) got.push(...decoder.decode(chunk));
  assert.deepEqual(show(got), show([A, B, C]));
  decoder.end();
});

test("splits: next() on an empty decoder returns undefined", () => {
  const decoder = new FrameDecoder();
  assert.equal(decoder.next(), undefined);
  decoder.push(bytes(0, 0));
  assert.equal(decoder.next(), undefined);
  assert.equal(decoder.bufferedBytes, 2);
});

// ---------------------------------------------------------------------------
// maxFrameSize

test("limit: length 0xFFFFFFFF raises FRAME_TOO_LARGE on the 5 header bytes alone", () => {
  const decoder = new FrameDecoder();
  let error: unknown;
  const { largest } = trackAllocations(() => {
    decoder.push(bytes(0xff, 0xff, 0xff, 0xff, 0x12));
    try {
      decoder.next();
    } catch (e) {
      error = e;
    }
  });
  assert.ok(error instanceof ProtocolError);
  assert.equal(error.code, "FRAME_TOO_LARGE");
  assert.match(error.message, /4294967295/);
  assert.equal(decoder.bufferedBytes, 5, "no payload byte was pushed");
  assert.ok(largest <= FRAME_HEADER_SIZE, `allocated ${largest} bytes for a hostile prefix`);
});

test("limit: the check fires when the 5th header byte arrives, not before", () => {
  for (const cut of [1, 2, 3, 4]) {
    const decoder = new FrameDecoder();
    const header = bytes(0xff, 0xff, 0xff, 0xff, 0x10);
    decoder.push(header.slice(0, cut));
    assert.equal(decoder.next(), undefined, `cut at ${cut}`);
    decoder.push(header.slice(cut));
    assertProtocolError(() => decoder.next(), "FRAME_TOO_LARGE");
  }
});

test("limit: default max + 1 is rejected, default max exactly is accepted", () => {
  assert.equal(DEFAULT_MAX_FRAME_SIZE, 1024 * 1024);
  const tooBig = new FrameDecoder();
  tooBig.push(encodeFrameHeader(0x12, DEFAULT_MAX_FRAME_SIZE + 1));
  const { largest, error } = trackAllocations(() => tooBig.next());
  assert.ok(error instanceof ProtocolError && error.code === "FRAME_TOO_LARGE");
  assert.ok(largest <= FRAME_HEADER_SIZE);

  const exact = new FrameDecoder();
  const big = payload(DEFAULT_MAX_FRAME_SIZE);
  const data = encodeFrame({ type: 0x12, payload: big });
  exact.push(data.slice(0, 100_000));
  assert.equal(exact.next(), undefined);
  exact.push(data.slice(100_000));
  const frame = exact.next();
  assert.ok(frame);
  assert.equal(frame.payload.length, DEFAULT_MAX_FRAME_SIZE);
  assert.equal(toHex(frame.payload.subarray(-64)), toHex(big.subarray(-64)));
  exact.end();
});

test("limit: custom maxFrameSize: max accepted, max + 1 rejected, payload bytes or not", () => {
  for (const max of [0, 1, 16, 1000]) {
    const ok = new FrameDecoder({ maxFrameSize: max });
    ok.push(encodeFrame({ type: 1, payload: payload(max) }));
    assert.equal(ok.next()?.payload.length, max);
    ok.end();

    const headerOnly = new FrameDecoder({ maxFrameSize: max });
    headerOnly.push(encodeFrameHeader(1, max + 1));
    assertProtocolError(() => headerOnly.next(), "FRAME_TOO_LARGE");

    const withPayload = new FrameDecoder({ maxFrameSize: max });
    withPayload.push(encodeFrame({ type: 1, payload: payload(max + 1) }));
    assertProtocolError(() => withPayload.next(), "FRAME_TOO_LARGE");
  }
});

test("limit: frames before an oversized one are still returned", () => {
  const decoder = new FrameDecoder({ maxFrameSize: 10 });
  decoder.push(concat(encodeFrame(A), encodeFrameHeader(0x12, 11)));
  assert.deepEqual(show([decoder.next()!]), show([A]));
  assertProtocolError(() => decoder.next(), "FRAME_TOO_LARGE");
});

test("limit: allocation spy works (a spanning frame allocates its payload size, no more)", () => {
  // Proves trackAllocations really sees the decoder's allocations, so the
  // "nothing allocated" assertions above are not vacuous.
  const decoder = new FrameDecoder();
  const data = encodeFrame({ type: 1, payload: payload(5000) });
  decoder.push(data.slice(0, 2000));
  decoder.push(data.slice(2000));
  let frame: Frame | undefined;
  const { largest } = trackAllocations(() => {
    frame = decoder.next();
  });
  assert.equal(frame?.payload.length, 5000);
  assert.equal(largest, 5000);
});

test("limit: constructor rejects a maxFrameSize that is not a u32", () => {
  for (const bad of [-1, 1.5, 2 ** 32, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => new FrameDecoder({ maxFrameSize: bad }), RangeError, String(bad));
  }
  assert.equal(new FrameDecoder().maxFrameSize, DEFAULT_MAX_FRAME_SIZE);
  assert.equal(new FrameDecoder({ maxFrameSize: MAX_FRAME_SIZE_CEILING }).maxFrameSize, 16 * 1024 * 1024);
});

// ---------------------------------------------------------------------------
// EOF

test("eof: end() inside the header throws TRUNCATED_FRAME", () => {
  const header = encodeFrameHeader(0x13, 4);
  for (let n = 1; n < FRAME_HEADER_SIZE; n++) {
    const decoder = new FrameDecoder();
    decoder.push(header.slice(0, n));
    assert.equal(decoder.next(), undefined);
    const e = assertProtocolError(() => decoder.end(), "TRUNCATED_FRAME");
    assert.match(e.message, new RegExp(`${n} bytes`));
  }
});

test("eof: end() after the header or inside the payload throws TRUNCATED_FRAME", () => {
  const data = encodeFrame(A);
  for (let n = FRAME_HEADER_SIZE; n < data.length; n++) {
    const decoder = new FrameDecoder();
    decoder.push(data.slice(0, n));
    assert.equal(decoder.next(), undefined);
    assertProtocolError(() => decoder.end(), "TRUNCATED_FRAME");
  }
});

test("eof: end() after whole frames, or with nothing received, does not throw", () => {
  new FrameDecoder().end();
  const decoder = new FrameDecoder();
  assert.equal([...decoder.decode(encodeAll([A, EMPTY]))].length, 2);
  decoder.end();
});

test("eof: a cut after some whole frames keeps those frames and throws on end()", () => {
  const decoder = new FrameDecoder();
  const got = [...decoder.decode(AB_C.slice(0, AB_C.length - 1))];
  assert.deepEqual(show(got), show([A, B]));
  assertProtocolError(() => decoder.end(), "TRUNCATED_FRAME");
});

// ---------------------------------------------------------------------------
// Web Streams

test("streams: FrameEncoderStream → re-chunking → FrameDecoderStream round-trips", async () => {
  const frames = [A, EMPTY, B, C, { type: 0x12, payload: payload(70_000, 3) }, EMPTY];
  const out = streamOf(frames).pipeThrough(new FrameEncoderStream()).pipeThrough(rechunk()).pipeThrough(
    new FrameDecoderStream(),
  );
  const { items, error } = await readAll(out);
  assert.equal(error, undefined);
  assert.deepEqual(show(items), show(frames));
});

test("streams: FrameEncoderStream emits one buffer per frame", async () => {
  const { items } = await readAll(streamOf([A, EMPTY]).pipeThrough(new FrameEncoderStream()));
  assert.deepEqual(items.map(toHex), [toHex(encodeFrame(A)), "0000000004"]);
});

test("streams: a stream cut inside a frame errors with TRUNCATED_FRAME", async () => {
  for (const cutBytes of [1, 150, C.payload.length + 1, C.payload.length + 4]) {
    const chunks = cutAt(AB_C.slice(0, AB_C.length - cutBytes), [7, 20]);
    const { items, error } = await readAll(streamOf(chunks).pipeThrough(new FrameDecoderStream()));
    assert.ok(error instanceof ProtocolError, `cut ${cutBytes}: ${String(error)}`);
    assert.equal(error.code, "TRUNCATED_FRAME");
    assert.deepEqual(show(items), show([A, B]), "whole frames before the cut are delivered");
  }
});

test("streams: an oversized length prefix errors the stream with FRAME_TOO_LARGE", async () => {
  // Length 0x00100001 = default limit + 1, its header split over two chunks.
  const chunks = [encodeFrame(A), bytes(0x00, 0x10, 0x00), bytes(0x01, 0x12)];
  const { items, error } = await readAll(streamOf(chunks).pipeThrough(new FrameDecoderStream()));
  assert.ok(error instanceof ProtocolError);
  assert.equal(error.code, "FRAME_TOO_LARGE");
  assert.deepEqual(show(items), show([A]));
});

test("streams: FrameDecoderStream honours a custom maxFrameSize", async () => {
  const { error } = await readAll(
    streamOf([encodeFrame(C)]).pipeThrough(new FrameDecoderStream({ maxFrameSize: 299 })),
  );
  assert.ok(error instanceof ProtocolError && error.code === "FRAME_TOO_LARGE");
  const ok = await readAll(
    streamOf([encodeFrame(C)]).pipeThrough(new FrameDecoderStream({ maxFrameSize: 300 })),
  );
  assert.deepEqual(show(ok.items), show([C]));
});

// ---------------------------------------------------------------------------
// Zero-copy views and copies

test("views: a frame inside one chunk is a view into that chunk's buffer", () => {
  const chunk = encodeAll([A, B]);
  const decoder = new FrameDecoder();
  decoder.push(chunk);
  const a = decoder.next()!;
  const b = decoder.next()!;
  assert.equal(a.payload.buffer, chunk.buffer);
  assert.equal(a.payload.byteOffset, chunk.byteOffset + FRAME_HEADER_SIZE);
  assert.equal(b.payload.buffer, chunk.buffer);
  assert.equal(b.payload.byteOffset, chunk.byteOffset + lenA + FRAME_HEADER_SIZE);
  // Zero-copy: the payload aliases the pushed bytes.
  chunk[FRAME_HEADER_SIZE] ^= 0xff;
  assert.equal(a.payload[0], chunk[FRAME_HEADER_SIZE]);
});

test("views: a frame inside a chunk that is itself a subarray keeps the right offset", () => {
  const backing = concat(bytes(9, 9, 9), encodeFrame(B), bytes(9));
  const chunk = backing.subarray(3, 3 + FRAME_HEADER_SIZE + B.payload.length);
  const decoder = new FrameDecoder();
  decoder.push(chunk);
  const b = decoder.next()!;
  assert.equal(b.payload.buffer, backing.buffer);
  assert.equal(b.payload.byteOffset, 3 + FRAME_HEADER_SIZE);
  assert.equal(toHex(b.payload), toHex(B.payload));
});

test("views: a frame after a split header but with its payload in one chunk is still a view", () => {
  const data = encodeFrame(C);
  const [head, body] = cutAt(data, [FRAME_HEADER_SIZE]);
  const decoder = new FrameDecoder();
  decoder.push(head);
  decoder.push(body);
  const c = decoder.next()!;
  assert.equal(c.payload.buffer, body.buffer);
  assert.equal(toHex(c.payload), toHex(C.payload));
});

test("views: a frame spanning chunks is a correct, independent copy", () => {
  const chunks = cutAt(encodeAll([A, B]), [8, lenA + 6]);
  const decoder = new FrameDecoder();
  for (const c of chunks) decoder.push(c);
  const a = decoder.next()!;
  const b = decoder.next()!;
  assert.deepEqual(show([a, b]), show([A, B]));
  for (const c of chunks) {
    assert.notEqual(a.payload.buffer, c.buffer);
    assert.notEqual(b.payload.buffer, c.buffer);
  }
  assert.equal(a.payload.byteOffset, 0);
  assert.equal(a.payload.buffer.byteLength, A.payload.length, "the copy is exactly the payload size");
  for (const c of chunks) c.fill(0);
  assert.deepEqual(show([a, b]), show([A, B]), "copies do not alias the chunks");
});

// ---------------------------------------------------------------------------
// Parts: nextParts() hands a payload out as the views it arrived in

/** Drains `decoder` with nextParts(); returns the frames (parts joined for comparison) and their parts. */
function drainParts(decoder: FrameDecoder): { frames: Frame[]; parts: Uint8Array[][] } {
  const frames: Frame[] = [];
  const parts: Uint8Array[][] = [];
  for (let f = decoder.nextParts(); f; f = decoder.nextParts()) {
    assert.equal(f.length, f.parts.reduce((n, p) => n + p.length, 0), "length is the sum of the parts");
    for (const p of f.parts) assert.ok(p.length > 0, "no empty parts");
    frames.push({ type: f.type, payload: concat(...f.parts) });
    parts.push(f.parts);
  }
  return { frames, parts };
}

test("parts: every split of three frames gives the same frames as next()", () => {
  const data = encodeAll([A, B, C]);
  for (let i = 0; i <= data.length; i++) {
    for (const j of [i, i + 1, i + 6, i + 17, data.length]) {
      if (j > data.length) continue;
      const decoder = new FrameDecoder();
      for (const c of cutAt(data, [i, j])) decoder.push(c);
      assert.deepEqual(show(drainParts(decoder).frames), show([A, B, C]), `cuts ${i}, ${j}`);
      decoder.end();
    }
  }
  const decoder = new FrameDecoder();
  for (const c of everyByte(data)) decoder.push(c);
  const { frames, parts } = drainParts(decoder);
  assert.deepEqual(show(frames), show([A, B, C]));
  assert.equal(parts[2].length, C.payload.length, "one byte per chunk: one part per byte");
});

test("parts: a frame spanning chunks comes as views of those chunks, not a copy", () => {
  const chunks = cutAt(encodeAll([C]), [3, 100, 250]);
  const decoder = new FrameDecoder();
  for (const c of chunks) decoder.push(c);
  let frame: ReturnType<FrameDecoder["nextParts"]>;
  const { largest } = trackAllocations(() => {
    frame = decoder.nextParts();
  });
  assert.ok(largest < FRAME_HEADER_SIZE + 1, `allocated ${largest} bytes for a spanning frame`);
  assert.equal(frame!.parts.length, 3);
  assert.deepEqual(frame!.parts.map((p) => p.buffer), chunks.slice(1).map((c) => c.buffer));
  assert.equal(toHex(concat(...frame!.parts)), toHex(C.payload));
  chunks[2].fill(0);
  assert.ok(frame!.parts[1].every((b) => b === 0), "the parts alias the chunks");
});

test("parts: views of one buffer that touch are merged into one part", () => {
  const data = encodeAll([A, C]);
  const decoder = new FrameDecoder();
  // Subarrays of one buffer, pushed in order: what a transport reading into one buffer hands out.
  for (const [from, to] of [[0, 4], [4, 20], [20, 100], [100, data.length]]) {
    decoder.push(data.subarray(from, to));
  }
  const { frames, parts } = drainParts(decoder);
  assert.deepEqual(show(frames), show([A, C]));
  assert.deepEqual(parts.map((p) => p.length), [1, 1]);
  assert.equal(parts[1][0].buffer, data.buffer);
  assert.equal(parts[1][0].byteOffset, lenA + FRAME_HEADER_SIZE);
});

test("parts: an empty payload has no parts; next() still gives an empty buffer", () => {
  const decoder = new FrameDecoder();
  decoder.push(encodeFrameHeader(0x21, 0));
  decoder.push(encodeFrameHeader(0x21, 0));
  assert.deepEqual(decoder.nextParts(), { type: 0x21, length: 0, parts: [] });
  assert.equal(decoder.next()?.payload.length, 0);
  assert.equal(decoder.nextParts(), undefined);
});

test("parts: limits on the 5 header bytes, nothing allocated, and TRUNCATED_FRAME at EOF mid-frame", () => {
  const hostile = new FrameDecoder({ maxFrameSize: 100 });
  hostile.push(concat(encodeFrame(A), bytes(0xff, 0xff)));
  assert.equal(hostile.nextParts()?.length, A.payload.length);
  assert.equal(hostile.nextParts(), undefined, "4 header bytes are not enough to judge");
  hostile.push(bytes(0xff, 0xff, 0x12));
  const { largest, error } = trackAllocations(() => hostile.nextParts());
  assert.ok(error instanceof ProtocolError && error.code === "FRAME_TOO_LARGE", String(error));
  assert.ok(largest <= FRAME_HEADER_SIZE, `allocated ${largest} bytes for a hostile length`);

  const exact = new FrameDecoder({ maxFrameSize: C.payload.length });
  exact.push(encodeFrame(C));
  assert.equal(exact.nextParts()?.length, C.payload.length, "a frame of exactly the limit passes");

  const cut = new FrameDecoder();
  cut.push(encodeFrame(C).subarray(0, 200));
  assert.equal(cut.nextParts(), undefined);
  assertProtocolError(() => cut.end(), "TRUNCATED_FRAME");
});

test("parts: onConsumed gets each chunk once, in order, once all of its bytes are taken", () => {
  const consumed: Uint8Array[] = [];
  const decoder = new FrameDecoder({ onConsumed: (c) => consumed.push(c) });
  const lenB = FRAME_HEADER_SIZE + B.payload.length;
  const chunks = cutAt(encodeAll([A, B, C]), [2, lenA + 1, lenA + lenB, AB_C.length - 5]);
  for (const c of chunks) decoder.push(c);
  assert.equal(decoder.nextParts()?.type, A.type);
  assert.deepEqual(consumed, [chunks[0]], "the chunk holding only A's header start is done");
  assert.equal(decoder.nextParts()?.type, B.type);
  assert.deepEqual(consumed, chunks.slice(0, 3), "the chunks up to B's end are done, C's are not");
  assert.equal(decoder.next()?.type, C.type, "next() reports consumed chunks too");
  assert.deepEqual(consumed, chunks);
  assert.equal(new Set(consumed).size, consumed.length, "no chunk twice");
  decoder.end();
});

// ---------------------------------------------------------------------------
// Encoding

test("encode: header layout is u32 big-endian length then type", () => {
  assert.equal(toHex(encodeFrameHeader(0x20, 8)), "0000000820");
  assert.equal(toHex(encodeFrameHeader(0xff, 0x01020304)), "01020304ff");
  assert.equal(toHex(encodeFrameHeader(0, 0xffffffff)), "ffffffff00");
  assert.equal(toHex(encodeFrame({ type: 0x30, payload: bytes(0x68, 0x69) })), "00000002306869");
});

test("encode: rejects a type that is not a byte and a length that is not a u32", () => {
  for (const type of [-1, 256, 1.5]) assert.throws(() => encodeFrameHeader(type, 0), RangeError);
  for (const len of [-1, 2 ** 32, 0.5]) assert.throws(() => encodeFrameHeader(1, len), RangeError);
});
