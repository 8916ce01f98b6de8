/**
 * Hostile handshakes: slow, malformed or out-of-order first frames. Each case
 * must get its exact connection-level error (id 0), be closed, leave the
 * inbox alone, and leave the server serving normal clients.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { encodeFrame } from "../../src/framing/frame.ts";
import { FrameType, PROTOCOL_VERSION } from "../../src/protocol/constants.ts";
import { encodeMessage } from "../../src/protocol/messages.ts";
import { hello, RawClient, withServer } from "../helpers/raw_client.ts";

const T = { timeout: 15_000 };

/** Writes `bytes` one byte every `everyMs` until the server closes or all are sent. */
async function trickle(c: RawClient, bytes: Uint8Array, everyMs: number): Promise<number> {
  let sent = 0;
  for (const b of bytes) {
    if (c.ended) break;
    await c.write(new Uint8Array([b])).catch(() => {});
    sent++;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return sent;
}

describe("adversarial: handshake", () => {
  test("slowloris HELLO, one byte per 100 ms, gets HANDSHAKE_TIMEOUT and is closed", T, async () => {
    await withServer({ handshakeTimeoutMs: 500 }, async ({ port }) => {
      const c = await RawClient.connect(port);
      const bytes = encodeMessage(hello());
      const started = performance.now();
      const trickled = trickle(c, bytes, 100);
      await c.expectError("HANDSHAKE_TIMEOUT");
      await c.waitClosed();
      const elapsed = performance.now() - started;
      const sent = await trickled;
      // The deadline is for the whole handshake: trickling does not extend it.
      assert.ok(sent < bytes.length, `the server waited for all ${bytes.length} trickled bytes`);
      assert.ok(elapsed < 3_000, `took ${Math.round(elapsed)} ms to cut a 500 ms handshake`);
    });
  });

  test("a connection that never says anything gets HANDSHAKE_TIMEOUT", T, async () => {
    await withServer({ handshakeTimeoutMs: 300 }, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.expectError("HANDSHAKE_TIMEOUT");
      await c.waitClosed();
    });
  });

  test("after the handshake, a frame trickled byte by byte does not reset the idle timer", T, async () => {
    await withServer({ idleTimeoutMs: 600, heartbeatIntervalMs: 60_000 }, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const frame = encodeMessage({ kind: "message", id: 1, text: "x".repeat(64) });
      const trickled = trickle(c, frame, 100);
      await c.expectError("IDLE_TIMEOUT");
      await c.waitClosed();
      assert.ok((await trickled) < frame.length, "the whole trickled frame was read before the timeout");
    });
  });

  test("bad magic gets BAD_MAGIC", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      const frame = encodeMessage(hello());
      frame.set(new TextEncoder().encode("FRRZ"), 5);
      await c.write(frame);
      await c.expectError("BAD_MAGIC");
      await c.waitClosed();
    });
  });

  test("an unknown protocol version in HELLO gets UNSUPPORTED_VERSION", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.send(hello({ version: PROTOCOL_VERSION + 1 }));
      const e = await c.expectError("UNSUPPORTED_VERSION");
      assert.match(e.message, /version 2/);
      await c.waitClosed();
    });
  });

  test("a first frame that is not HELLO gets UNEXPECTED_FRAME", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.send({ kind: "ping", token: 1n });
      await c.expectError("UNEXPECTED_FRAME");
      await c.waitClosed();
    });
  });

  test("a FILE before HELLO gets UNEXPECTED_FRAME and nothing is stored", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      const bytes = new TextEncoder().encode("sneaky");
      await c.send({
        kind: "file",
        id: 1,
        flags: 0,
        size: bytes.length,
        sha256: new Uint8Array(32),
        mtimeMs: 0,
        name: "sneaky.txt",
        mime: "",
      });
      await c.send({ kind: "data", id: 1, offset: 0, bytes });
      await c.send({ kind: "end", id: 1 });
      await c.expectError("UNEXPECTED_FRAME");
      await c.waitClosed();
    }, { forbidden: ["sneaky.txt"] });
  });

  test("an HTTP request instead of HELLO is refused before any allocation (FRAME_TOO_LARGE)", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      // "GET " read as a u32 length is 1,195,725,856 bytes.
      await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      await c.expectError("FRAME_TOO_LARGE");
      await c.waitClosed();
    });
  });

  test("an unknown frame type as the first frame gets UNKNOWN_FRAME_TYPE", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.write(encodeFrame({ type: 0x7f, payload: new Uint8Array(3) }));
      await c.expectError("UNKNOWN_FRAME_TYPE");
      await c.waitClosed();
    });
  });

  test("an unknown frame type after the handshake gets UNKNOWN_FRAME_TYPE", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.write(encodeFrame({ type: 0xee, payload: new Uint8Array(0) }));
      await c.expectError("UNKNOWN_FRAME_TYPE");
      await c.waitClosed();
    });
  });

  test("a second HELLO gets UNEXPECTED_FRAME", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.send(hello());
      await c.expectError("UNEXPECTED_FRAME");
      await c.waitClosed();
    });
  });

  test("a server-only frame (RECEIPT) from a client gets UNEXPECTED_FRAME", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.send({
        kind: "receipt",
        id: 1,
        flags: 0,
        size: 0,
        sha256: new Uint8Array(32),
        storedName: "forged.txt",
      });
      await c.expectError("UNEXPECTED_FRAME");
      await c.waitClosed();
    }, { forbidden: ["forged.txt"] });
  });

  test("a HELLO with a trailing byte gets BAD_FRAME", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      const good = encodeMessage(hello()).subarray(5);
      const payload = new Uint8Array(good.length + 1);
      payload.set(good);
      await c.write(encodeFrame({ type: FrameType.HELLO, payload }));
      await c.expectError("BAD_FRAME");
      await c.waitClosed();
    });
  });
});
