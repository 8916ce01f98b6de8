/**
 * Unit tests for Channel.receiveParts(): DATA bytes as zero-copy parts however
 * the stream was split (the 12-byte id/offset prefix included), every other
 * message and every error exactly as from receive(), and chunks handed back
 * to the transport (Connection.release) only once the message they carried
 * is done with.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProtocolError } from "../../src/errors.ts";
import { encodeFrameHeader } from "../../src/framing/mod.ts";
import { Channel, type Incoming } from "../../src/protocol/channel.ts";
import { FrameType } from "../../src/protocol/constants.ts";
import { DATA_HEADER_SIZE, encodeMessage, type Message, toHex } from "../../src/protocol/messages.ts";
import type { Connection } from "../../src/runtime/transport.ts";

/** A connection that hands out the given chunks, then end of stream, and records releases. */
class FakeConnection implements Connection {
  readonly remoteAddress = "127.0.0.1";
  readonly remotePort = 1;
  readonly closed = Promise.resolve();
  readonly bytesWritten = 0;
  bytesRead = 0;
  released: Uint8Array[] = [];
  handedOut: Uint8Array[] = [];
  #chunks: Uint8Array[];

  constructor(chunks: Uint8Array[], withRelease = true) {
    this.#chunks = [...chunks];
    if (!withRelease) this.release = undefined;
  }
  read(): Promise<Uint8Array | null> {
    const chunk = this.#chunks.shift() ?? null;
    if (chunk) {
      this.bytesRead += chunk.length;
      this.handedOut.push(chunk);
    }
    return Promise.resolve(chunk);
  }
  release?(chunk: Uint8Array): void {
    assert.ok(this.handedOut.includes(chunk), "released a chunk read() never returned");
    assert.ok(!this.released.includes(chunk), "released a chunk twice");
    this.released.push(chunk);
  }
  writes: Array<Uint8Array | readonly Uint8Array[]> = [];
  write(parts: Uint8Array | readonly Uint8Array[]): Promise<void> {
    this.writes.push(parts);
    return Promise.resolve();
  }
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
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

/** Cuts `data` at the given offsets; each chunk is a fresh copy with its own buffer. */
function cutAt(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [0, ...cuts, data.length];
  const chunks: Uint8Array[] = [];
  for (let i = 1; i < points.length; i++) chunks.push(data.slice(points[i - 1], points[i]));
  return chunks;
}

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

/** Comparable form: DATA as one hex string of its bytes, other messages as they are. */
function comparable(m: Incoming | Message | null): unknown {
  if (m === null || m.kind !== "data") return m;
  const bytes = "parts" in m ? concat(...m.parts) : m.bytes;
  if ("parts" in m) assert.equal(m.length, bytes.length);
  return { kind: "data", id: m.id, offset: m.offset, bytes: toHex(bytes) };
}

async function receiveAll(chunks: Uint8Array[], parts: boolean): Promise<{ got: unknown[]; error?: string }> {
  const channel = new Channel(new FakeConnection(chunks), { maxFrameSize: 1 << 20 });
  const got: unknown[] = [];
  try {
    for (;;) {
      const m = parts ? await channel.receiveParts() : await channel.receive();
      if (m === null) return { got };
      got.push(comparable(m));
    }
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    return { got, error: e.code };
  }
}

const DATA_1 = { kind: "data", id: 7, offset: 2 ** 40 + 3, bytes: pattern(3000, 1) } as const;
const DATA_2 = { kind: "data", id: 8, offset: 0, bytes: pattern(5, 9) } as const;
const EMPTY_DATA = { kind: "data", id: 9, offset: 12, bytes: new Uint8Array(0) } as const;
const STREAM = concat(
  encodeMessage({ kind: "ping", token: 5n }),
  encodeMessage(DATA_1),
  encodeMessage(EMPTY_DATA),
  encodeMessage({ kind: "end", id: 7 }),
  encodeMessage(DATA_2),
);

test("receiveParts: every split, prefix included, gives the messages receive() gives", async () => {
  const expected = (await receiveAll([STREAM], false)).got;
  assert.equal(expected.length, 5);
  const first = encodeMessage({ kind: "ping", token: 5n }).length;
  // Every cut inside DATA_1's header and prefix, and a second cut anywhere after it.
  for (let i = first; i <= first + 5 + 12 + 1; i++) {
    for (const j of [i, i + 1, i + 700, STREAM.length - 3]) {
      const { got, error } = await receiveAll(cutAt(STREAM, [i, Math.max(i, j)]), true);
      assert.equal(error, undefined);
      assert.deepEqual(got, expected, `cuts ${i}, ${j}`);
    }
  }
  const oneByteEach = Array.from(STREAM, (b) => Uint8Array.of(b));
  assert.deepEqual((await receiveAll(oneByteEach, true)).got, expected);
});

test("receiveParts: DATA bytes are views of the chunks, never joined", async () => {
  const data = encodeMessage(DATA_1);
  const chunks = cutAt(data, [9, 1000, 2000]);
  const conn = new FakeConnection(chunks);
  const m = await new Channel(conn, { maxFrameSize: 1 << 20 }).receiveParts();
  assert.ok(m?.kind === "data" && "parts" in m);
  assert.equal(m.parts.length, 3);
  assert.deepEqual(m.parts.map((p) => p.buffer), chunks.slice(1).map((c) => c.buffer));
  assert.equal(m.parts[0].byteOffset, 17 - 9, "the prefix's tail is cut off the first part");
  assert.equal(toHex(concat(...m.parts)), toHex(DATA_1.bytes));
});

test("receiveParts: errors are receive()'s: short DATA, oversized header, EOF mid-frame", async () => {
  const shortData = concat(encodeFrameHeader(FrameType.DATA, 11), new Uint8Array(11));
  const cases: Array<[string, Uint8Array[]]> = [
    ["short DATA", [shortData]],
    ["short DATA split", cutAt(shortData, [6, 9])],
    ["oversized", [
      encodeMessage({ kind: "end", id: 1 }),
      Uint8Array.of(0xff, 0xff, 0xff, 0xff, FrameType.DATA),
    ]],
    ["cut in the prefix", cutAt(encodeMessage(DATA_1).subarray(0, 11), [7])],
    ["cut in the bytes", [encodeMessage(DATA_1).subarray(0, 2000)]],
    ["cut in a header", [STREAM.subarray(0, STREAM.length - DATA_2.bytes.length - 15)]],
  ];
  for (const [name, chunks] of cases) {
    const plain = await receiveAll(chunks, false);
    const parts = await receiveAll(chunks, true);
    assert.ok(plain.error, `${name}: receive() raised nothing`);
    assert.deepEqual(parts, plain, name);
  }
  assert.equal((await receiveAll(cutAt(shortData, [6]), true)).error, "BAD_FRAME");
  assert.equal((await receiveAll([encodeMessage(DATA_1).subarray(0, 2000)], true)).error, "TRUNCATED_FRAME");
});

test("receive() and receiveParts(): a chunk goes back to the transport at the next call, once", async () => {
  const hello = encodeMessage({ kind: "hello", version: 1, capabilities: 0, maxFrameSize: 1 << 20 });
  const d1 = encodeMessage(DATA_1);
  const d2 = encodeMessage(DATA_2);
  // hello | d1 head + some bytes | rest of d1 + d2's start | rest of d2
  const chunks = cutAt(concat(hello, d1, d2), [
    hello.length,
    hello.length + 100,
    hello.length + d1.length + 3,
  ]);
  const conn = new FakeConnection(chunks);
  const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
  assert.equal((await channel.receive())?.kind, "hello");
  assert.deepEqual([...conn.released], [], "the chunk of the message just returned is not released");
  const first = await channel.receiveParts();
  assert.equal(first?.kind, "data");
  assert.deepEqual([...conn.released], [chunks[0]], "HELLO's chunk goes back at the next call");
  const second = await channel.receiveParts();
  assert.equal(second?.kind, "data");
  assert.deepEqual(
    conn.released,
    [chunks[0], chunks[1]],
    "DATA_1's first chunk, done with, goes back; its last holds DATA_2",
  );
  assert.equal(await channel.receiveParts(), null);
  assert.deepEqual(conn.released, [chunks[0], chunks[1], chunks[2], chunks[3]]);
  channel.dispose();
  assert.equal(conn.released.length, 4, "dispose() after a clean end has nothing left to hand back");
});

test("dispose(): the chunks of a frame the stream ended inside go back to the transport", async () => {
  const d1 = encodeMessage(DATA_1);
  const stream = concat(encodeMessage({ kind: "ping", token: 5n }), d1.subarray(0, 2000));
  for (const parts of [false, true]) {
    const chunks = cutAt(stream, [10, 600, 1500]);
    const conn = new FakeConnection(chunks);
    const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
    assert.equal((await channel.receive())?.kind, "ping");
    await assert.rejects(
      parts ? channel.receiveParts() : channel.receive(),
      (e: unknown) => e instanceof ProtocolError && e.code === "TRUNCATED_FRAME",
    );
    assert.ok(conn.released.length < chunks.length, "the truncated frame's chunks are still held");
    channel.dispose();
    // FakeConnection fails the test on a chunk released twice.
    assert.deepEqual(new Set(conn.released), new Set(chunks), "every chunk read is back");
  }
});

test("receiveParts on a compactPending transport: same messages, and every read released before the next", async () => {
  // With a DATA frame larger than the smallest carry (64 KiB), cut into small reads: carries grow.
  const big = { kind: "data", id: 3, offset: 5, bytes: pattern(200_000, 4) } as const;
  const stream = concat(STREAM, encodeMessage(big), encodeMessage({ kind: "end", id: 3 }));
  const expected = (await receiveAll([stream], false)).got;
  const cutSets = [
    [1, 9, 30, 1000, 2000, 3040],
    Array.from({ length: 60 }, (_, i) => 3 + i * 53),
    Array.from({ length: 50 }, (_, i) => 3000 + i * 4099),
  ];
  for (const cuts of cutSets) {
    // Transports never hand out empty reads.
    const conn = new FakeConnection(cutAt(stream, cuts.filter((c) => c < stream.length)));
    Object.defineProperty(conn, "compactPending", { value: true });
    const read = conn.read.bind(conn);
    conn.read = () => {
      // Waiting for more: nothing of the earlier reads may be held (the frame returned last is dead).
      assert.equal(conn.released.length, conn.handedOut.length, "every earlier read was released");
      return read();
    };
    const release = conn.release!.bind(conn);
    conn.release = (chunk) => {
      release(chunk);
      chunk.fill(0xee); // as a reused buffer would be: bytes still needed would come out wrong
    };
    const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
    const got: unknown[] = [];
    for (let m = await channel.receiveParts(); m; m = await channel.receiveParts()) got.push(comparable(m));
    assert.deepEqual(got, expected, `cuts ${cuts.join(",")}`);
  }
});

test("receiveParts: works on a transport without release()", async () => {
  const conn = new FakeConnection(cutAt(STREAM, [30, 31]), false);
  const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
  let n = 0;
  while (await channel.receiveParts()) n++;
  assert.equal(n, 5);
});

test("sendDataFrame: one buffer with the header filled in place, byte for byte the DATA frame sendData writes", async () => {
  const conn = new FakeConnection([]);
  const writes = conn.writes;
  const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
  const bytes = new Uint8Array([7, 8, 9, 10, 11]);
  // The sender's shape: room for the header, then the file bytes, inside a larger buffer.
  const backing = new Uint8Array(64).fill(0xee);
  const frame = backing.subarray(3, 3 + DATA_HEADER_SIZE + bytes.length);
  frame.set(bytes, DATA_HEADER_SIZE);
  await channel.sendDataFrame(9, 2 ** 40 + 3, frame);
  await channel.sendData(9, 2 ** 40 + 3, bytes);
  assert.equal(writes.length, 2);
  assert.ok(writes[0] instanceof Uint8Array, "sendDataFrame writes a single buffer");
  assert.equal(writes[0], frame, "the frame is written as given, not copied");
  const expected = encodeMessage({ kind: "data", id: 9, offset: 2 ** 40 + 3, bytes });
  assert.equal(toHex(writes[0] as Uint8Array), toHex(expected));
  assert.equal(toHex(concat(...(writes[1] as Uint8Array[]))), toHex(expected));
  assert.equal(backing[2], 0xee, "nothing written before the frame");
  assert.equal(backing[3 + frame.length], 0xee, "nothing written after the frame");
});
