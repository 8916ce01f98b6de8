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

describe("FrameBuffers: one budget for every connection of the process", () => {
  test("past the budget a connection waits, then borrows another connection's flushed buffer", async () => {
    // Fill the budget: one buffer in flight on each of PROCESS_BUDGET connections, none flushed.
    const conns = Array.from({ length: PROCESS_BUDGET }, connection);
    const inFlight: Uint8Array[] = [];
    for (const c of conns) {
      const b = await c.buffers.take();
      assert.equal(b.length, SIZE);
      c.transport.send(c.buffers, b);
      inFlight.push(b);
    }
    assert.equal(new Set(inFlight).size, PROCESS_BUDGET, "each a fresh buffer");
    const late = connection();
    let got: Uint8Array | undefined;
    const taking = late.buffers.take().then((b) => got = b);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(got, undefined, "waits: the budget is used up and nothing is flushed");
    // Connection 7's transport hands its bytes to the OS and its sender goes on: the waiter wakes.
    conns[7].transport.flushAll();
    FrameBuffers.progress();
    await taking;
    assert.equal(got, inFlight[7], "the flushed buffer of another connection, not a new one");
    late.buffers.giveBack(got!); // not sent after all: back to the pool (as the sender does)
    for (const c of [...conns, late]) c.buffers.retire();
  });

  test("a connection's own flushed buffer comes first, and a waiter allocates after BUDGET_WAIT_MS", async () => {
    const conns = Array.from({ length: PROCESS_BUDGET }, connection);
    const first: Uint8Array[] = [];
    for (const c of conns) {
      const b = await c.buffers.take();
      c.transport.send(c.buffers, b);
      first.push(b);
    }
    conns[0].transport.flushAll();
    assert.equal(await conns[0].buffers.take(), first[0], "its own oldest, once flushed");
    // Nothing flushed anywhere and nobody makes progress (a transport that stalls, or a buffer
    // lost to a failure): after the wait it allocates rather than stall for good.
    const t0 = performance.now();
    const fresh = await conns[1].buffers.take();
    const waited = performance.now() - t0;
    assert.ok(!first.includes(fresh), "a new buffer");
    assert.ok(waited >= BUDGET_WAIT_MS - 5, `allocated after ${waited} ms, before the wait was over`);
    assert.ok(waited < 2 * BUDGET_WAIT_MS, `waited ${waited} ms: the count of buffers leaked`);
    for (const c of conns) c.buffers.retire();
  });

  test("retired connections give their flushed buffers to the next ones, within the budget", async () => {
    const a = connection();
    const bufs: Uint8Array[] = [];
    for (let i = 0; i < 4; i++) {
      const b = await a.buffers.take();
      a.transport.send(a.buffers, b);
      bufs.push(b);
    }
    a.transport.flushAll();
    a.buffers.retire();
    const b = connection();
    const reused = new Set<Uint8Array>();
    for (let i = 0; i < 4; i++) reused.add(await b.buffers.take());
    assert.deepEqual([...reused].sort(), [...bufs].sort(), "the retired connection's four, no new ones");
    for (const buf of reused) b.buffers.giveBack(buf);
    b.buffers.retire();
  });
});
