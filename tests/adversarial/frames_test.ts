/**
 * Hostile framing after a good handshake: huge length prefixes, frames cut
 * by EOF, oversized and malformed text messages.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeFrame, encodeFrameHeader } from "../../src/framing/frame.ts";
import { FrameType } from "../../src/protocol/constants.ts";
import { fileHeader, RawClient, withServer } from "../helpers/raw_client.ts";

const T = { timeout: 15_000 };

async function storedMessages(dir: string): Promise<string> {
  try {
    return await readFile(join(dir, ".ferry", "messages.ndjson"), "utf8");
  } catch {
    return "";
  }
}

/** A MESSAGE frame whose payload is id + the given raw text bytes. */
function rawMessage(id: number, text: Uint8Array): Uint8Array {
  const payload = new Uint8Array(4 + text.length);
  new DataView(payload.buffer).setUint32(0, id);
  payload.set(text, 4);
  return encodeFrame({ type: FrameType.MESSAGE, payload });
}

describe("adversarial: frames", () => {
  test("a length prefix of 0xFFFFFFFF gets FRAME_TOO_LARGE from the 5-byte header alone", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      // Only the header is sent: the server must not wait for (or reserve) 4 GiB.
      await c.write(new Uint8Array([0xff, 0xff, 0xff, 0xff, FrameType.DATA]));
      const e = await c.expectError("FRAME_TOO_LARGE");
      assert.match(e.message, /4294967295/);
      await c.waitClosed();
    });
  });

  test("a length prefix of the default limit + 1 gets FRAME_TOO_LARGE", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.write(encodeFrameHeader(FrameType.MESSAGE, 1024 * 1024 + 1));
      await c.expectError("FRAME_TOO_LARGE");
      await c.waitClosed();
    });
  });

  test("with --max-frame-size 4096, a 4096-byte frame is served and 4097 is refused", T, async () => {
    await withServer({ maxFrameSize: 4096, maxMessageBytes: 8192 }, async ({ port }) => {
      const c = await RawClient.connect(port);
      const welcome = await c.handshake();
      assert.equal(welcome.maxFrameSize, 4096);
      await c.write(rawMessage(1, new Uint8Array(4092).fill(0x61)));
      assert.equal((await c.expect("message_ack")).id, 1);
      await c.write(rawMessage(2, new Uint8Array(4093).fill(0x61)));
      await c.expectError("FRAME_TOO_LARGE");
      await c.waitClosed();
    });
  });

  test("a frame cut short by EOF gets TRUNCATED_FRAME", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const frame = rawMessage(1, new TextEncoder().encode("this message never finishes"));
      await c.write(frame.subarray(0, 12));
      c.socket.end(); // half-close: the server sees EOF inside a frame and can still answer
      await c.expectError("TRUNCATED_FRAME");
      await c.waitClosed();
    });
  });

  test("a file whose DATA frame is cut by EOF is not stored under its name", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const bytes = new Uint8Array(1000).fill(7);
      await c.send(fileHeader(1, "cut.bin", bytes));
      await c.expect("accept");
      const data = new Uint8Array(5 + 12 + bytes.length);
      data.set(encodeFrameHeader(FrameType.DATA, 12 + bytes.length));
      new DataView(data.buffer).setUint32(5, 1);
      await c.write(data.subarray(0, 500));
      c.socket.end();
      await c.expectError("TRUNCATED_FRAME");
      await c.waitClosed();
    }, { forbidden: ["cut.bin"] });
  });

  test("a MESSAGE over maxMessageBytes gets MESSAGE_TOO_LARGE with its id and is not stored", T, async () => {
    await withServer({ maxMessageBytes: 16 }, async ({ port, dir }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.send({ kind: "message", id: 7, text: "x".repeat(17) });
      await c.expectError("MESSAGE_TOO_LARGE", 7);
      assert.doesNotMatch(await storedMessages(dir), /xxxxxxxxxxxxxxxxx/);
      // Per message, not per connection: the next one is stored.
      await c.send({ kind: "message", id: 8, text: "y".repeat(16) });
      assert.equal((await c.expect("message_ack")).id, 8);
      assert.match(await storedMessages(dir), /y{16}/);
      await c.destroy();
    });
  });

  test("a MESSAGE over maxMessageBytes counts UTF-8 bytes, not characters", T, async () => {
    await withServer({ maxMessageBytes: 16 }, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.send({ kind: "message", id: 3, text: "é".repeat(9) }); // 9 characters, 18 bytes
      await c.expectError("MESSAGE_TOO_LARGE", 3);
      await c.destroy();
    });
  });

  test("a MESSAGE with invalid UTF-8 gets BAD_FRAME and is not stored", T, async () => {
    await withServer({}, async ({ port, dir }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.write(rawMessage(5, new Uint8Array([0x68, 0x69, 0xff, 0xfe, 0x21])));
      await c.expectError("BAD_FRAME");
      await c.waitClosed();
      assert.equal(await storedMessages(dir), "");
    });
  });

  test("a MESSAGE cut inside a UTF-8 sequence gets BAD_FRAME", T, async () => {
    await withServer({}, async ({ port, dir }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.write(rawMessage(6, new Uint8Array([0x61, 0xe2, 0x82]))); // "a" + 2 of the 3 bytes of "€"
      await c.expectError("BAD_FRAME");
      await c.waitClosed();
      assert.equal(await storedMessages(dir), "");
    });
  });
});
