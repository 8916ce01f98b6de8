/**
 * The process-wide budget of the sender's frame buffers: past it, a connection borrows a flushed
 * buffer from another connection, waits for one, and only after BUDGET_WAIT_MS allocates anyway.
 * The transport is a counter pair here (what FrameBuffers reads of a Connection); the runtime
 * contract test checks the real adapters' bytesQueued/bytesFlushed.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { BUDGET_WAIT_MS, FrameBuffers, PROCESS_BUDGET } from "../../src/client/frame_buffers.ts";
import type { Connection } from "../../src/runtime/transport.ts";

const SIZE = 4096 + 13; // a size no other test in this process uses, so its idle list is not shared

/** What FrameBuffers reads of a connection: bytes written so far and bytes the "OS" took. */
class FakeTransport {
  bytesQueued = 0;
  bytesFlushed = 0;
  /** Writes `buffer` (its whole length) and tells `buffers`. */
  send(buffers: FrameBuffers, buffer: Uint8Array): void {
    this.bytesQueued += buffer.length;
    buffers.sent(buffer);
  }
  flushAll(): void {
    this.bytesFlushed = this.bytesQueued;
  }
}

function connection(): { transport: FakeTransport; buffers: FrameBuffers } {
  const transport = new FakeTransport();
  return { transport, buffers: new FrameBuffers(transport as unknown as Connection, SIZE) };
}

/** Takes and sends one buffer on each new connection until the process budget is used up. */
async function fillBudget(): Promise<{ conns: ReturnType<typeof connection>[]; inFlight: Uint8Array[] }> {
  const conns: ReturnType<typeof connection>[] = [];
  const inFlight: Uint8Array[] = [];
  while (FrameBuffers.inUse < PROCESS_BUDGET) {
    const c = connection();
    const b = await c.buffers.take();
    c.transport.send(c.buffers, b);
    conns.push(c);
    inFlight.push(b);
  }
  return { conns, inFlight };
}

/** Whether `p` settles within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

describe("FrameBuffers: one budget for every connection of the process", () => {
  test("past the budget a connection waits, then gets another connection's buffer once it is flushed", async () => {
    const before = FrameBuffers.inUse;
    const { conns, inFlight } = await fillBudget();
    assert.ok(conns.length > 0 && new Set(inFlight).size === inFlight.length, "each a fresh buffer");
    const late = connection();
    let got: Uint8Array | undefined;
    const taking = late.buffers.take().then((b) => got = b);
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(got, undefined, "waits: the budget is used up and nothing is flushed");
    // One connection's transport hands its bytes to the OS and its sender goes on: served at once,
    // without waiting for the poll timer.
    conns[0].transport.flushAll();
    FrameBuffers.progress();
    await Promise.resolve();
    await Promise.resolve();
    assert.equal(got, inFlight[0], "the flushed buffer of another connection, not a new one");
    await taking;
    // A flush nobody reports is found by the poll, long before the wait is over.
    const second = late.buffers.take();
    conns[1].transport.flushAll();
    assert.ok(await settlesWithin(second, BUDGET_WAIT_MS / 2), "found by the poll");
    assert.equal(await second, inFlight[1]);
    assert.equal(FrameBuffers.inUse, before + conns.length, "borrowing allocates nothing");
    late.buffers.giveBack(got!); // not sent after all: back to the pool (as the sender does)
    late.buffers.giveBack(await second);
    for (const c of [...conns, late]) c.buffers.retire();
    assert.ok(FrameBuffers.inUse <= before + 16, "retired: only idle buffers stay counted");
  });

  test("a connection's own flushed buffer comes first, and a waiter allocates after BUDGET_WAIT_MS", async () => {
    const { conns, inFlight } = await fillBudget();
    conns[0].transport.flushAll();
    const own = await conns[0].buffers.take();
    assert.equal(own, inFlight[0], "its own oldest, once flushed");
    // Nothing flushed anywhere and nobody makes progress (a transport that stalls, or a buffer
    // lost to a failure): after the wait it allocates rather than stall for good.
    const t0 = performance.now();
    const fresh = await conns[1].buffers.take();
    const waited = performance.now() - t0;
    assert.ok(!inFlight.includes(fresh), "a new buffer");
    assert.ok(waited >= BUDGET_WAIT_MS - 5, `allocated after ${waited} ms, before the wait was over`);
    conns[0].buffers.giveBack(own);
    conns[1].buffers.giveBack(fresh);
    for (const c of conns) c.buffers.retire();
  });

  test("retired connections give their flushed buffers to the next ones", async () => {
    const a = connection();
    const bufs: Uint8Array[] = [];
    for (let i = 0; i < 4; i++) {
      const b = await a.buffers.take();
      a.transport.send(a.buffers, b);
      bufs.push(b);
    }
    a.transport.flushAll();
    a.buffers.retire();
    const inUse = FrameBuffers.inUse;
    const b = connection();
    const reused = new Set<Uint8Array>();
    for (let i = 0; i < 4; i++) reused.add(await b.buffers.take());
    assert.equal(reused.size, 4);
    assert.ok(bufs.every((buf) => reused.has(buf)), "the retired connection's four, no new ones");
    assert.equal(FrameBuffers.inUse, inUse, "nothing allocated");
    for (const buf of reused) b.buffers.giveBack(buf);
    b.buffers.retire();
  });

  test("a retired connection never waits, and what it sends afterwards is dropped from the count", async () => {
    const { conns } = await fillBudget();
    const gone = connection();
    gone.buffers.retire();
    const inUse = FrameBuffers.inUse;
    const t0 = performance.now();
    const b = await gone.buffers.take();
    assert.ok(performance.now() - t0 < BUDGET_WAIT_MS / 2, "no wait after retire()");
    assert.equal(FrameBuffers.inUse, inUse + 1);
    gone.transport.send(gone.buffers, b); // a send still finishing after the connection failed
    assert.equal(FrameBuffers.inUse, inUse, "dropped, not kept in a ring nobody reads");
    for (const c of conns) c.buffers.retire();
  });
});

describe("FrameBuffers: pooled memory", () => {
  const POOLED = 8192 + 13; // a size of its own: its own pool and idle list
  const samePlace = (a: Uint8Array, b: Uint8Array) => a.buffer === b.buffer && a.byteOffset === b.byteOffset;

  test("a buffer dropped while its transport may hold it never comes back; a flushed one does", async () => {
    const transport = new FakeTransport();
    const a = new FrameBuffers(transport as unknown as Connection, POOLED);
    // Nine sent and none flushed: the ring keeps eight, so the oldest is dropped while still held.
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 9; i++) {
      const b = await a.take();
      transport.send(a, b);
      sent.push(b);
    }
    const lost = sent[0];
    // A tenth once everything is flushed: the ring's oldest (flushed) is dropped and goes back.
    transport.flushAll();
    const tenth = await a.take(); // its own oldest flushed buffer
    assert.ok(samePlace(tenth, sent[1]));
    transport.send(a, tenth);
    const eleventh = new FrameBuffers(new FakeTransport() as unknown as Connection, POOLED);
    const fresh = await eleventh.take(); // allocated: from the pool
    transport.send(a, fresh); // ring past its limit again: drops sent[2], flushed
    const back = await eleventh.take();
    assert.ok(samePlace(back, sent[2]), "the flushed buffer dropped from the ring is handed out again");
    // However many more are taken, the one dropped while held is never among them.
    const more: Uint8Array[] = [];
    for (let i = 0; i < 40; i++) more.push(await eleventh.take());
    assert.ok(![tenth, fresh, back, ...more].some((b) => samePlace(b, lost)), "a held buffer was handed out");
    for (const b of [back, ...more]) eleventh.giveBack(b);
    eleventh.retire();
    a.retire();
  });
});
