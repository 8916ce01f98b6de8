/**
 * Hostile file transfers on an authenticated-or-open connection: lying
 * headers, out-of-order or overlapping data, frames for files that are not
 * open, wrong hashes. A per-file error carries the file's id and leaves the
 * connection usable; a malformed frame is a connection-level error (id 0).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { encodeFrame } from "../../src/framing/frame.ts";
import { FrameType } from "../../src/protocol/constants.ts";
import { encodeMessage } from "../../src/protocol/messages.ts";
import {
  fileHeader,
  partialFiles,
  RawClient,
  sha256,
  untilEvent,
  withServer,
} from "../helpers/raw_client.ts";

const T = { timeout: 15_000 };
const enc = new TextEncoder();

/** A FILE frame built field by field, so tests can put values the encoder refuses. */
function rawFile(
  f: { id: number; size: bigint; hash: Uint8Array; name: string; mtime?: bigint; mime?: string },
): Uint8Array {
  const name = enc.encode(f.name);
  const mime = enc.encode(f.mime ?? "");
  const payload = new Uint8Array(4 + 1 + 8 + f.hash.length + 8 + 2 + name.length + 1 + mime.length);
  const v = new DataView(payload.buffer);
  let at = 0;
  v.setUint32(at, f.id);
  at += 5; // id + flags 0
  v.setBigUint64(at, f.size);
  at += 8;
  payload.set(f.hash, at);
  at += f.hash.length;
  v.setBigUint64(at, f.mtime ?? 0n);
  at += 8;
  v.setUint16(at, name.length);
  payload.set(name, at + 2);
  at += 2 + name.length;
  v.setUint8(at, mime.length);
  payload.set(mime, at + 1);
  return encodeFrame({ type: FrameType.FILE, payload });
}

/** Handshake, FILE for `bytes` under `name` with `id`, and the ACCEPT. */
async function openFile(port: number, id: number, name: string, bytes: Uint8Array): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.handshake();
  await c.send(fileHeader(id, name, bytes));
  const accept = await c.expect("accept");
  assert.deepEqual([accept.id, accept.offset], [id, 0]);
  return c;
}

describe("adversarial: files", () => {
  test("DATA for a file after its END gets UNKNOWN_FILE with that id", T, async () => {
    await withServer({}, async ({ port, baseline, stillUsable }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const bytes = enc.encode("legit");
      await c.sendFile(3, "legit.txt", bytes);
      await baseline();
      await c.send({ kind: "data", id: 3, offset: bytes.length, bytes: enc.encode("more") });
      await c.expectError("UNKNOWN_FILE", 3);
      // Once refused, later frames for the id are dropped without another ERROR:
      // the next frame the client reads is the ACCEPT of its next file.
      await c.send({ kind: "end", id: 3 });
      await stillUsable(c, 4);
      await c.destroy();
    });
  });

  test("DATA past the declared size gets SIZE_MISMATCH and nothing is kept", T, async () => {
    await withServer({}, async ({ port, dir, stillUsable }) => {
      const bytes = enc.encode("12345");
      const c = await openFile(port, 1, "past.txt", bytes);
      await c.send({ kind: "data", id: 1, offset: 0, bytes: enc.encode("123456") });
      await c.expectError("SIZE_MISMATCH", 1);
      assert.deepEqual(await partialFiles(dir), []);
      await stillUsable(c, 2);
      await c.destroy();
    }, { forbidden: ["past.txt"] });
  });

  test("a second DATA frame that crosses the declared size gets SIZE_MISMATCH", T, async () => {
    await withServer({}, async ({ port, dir, stillUsable }) => {
      const bytes = enc.encode("12345");
      const c = await openFile(port, 1, "past2.txt", bytes);
      await c.send({ kind: "data", id: 1, offset: 0, bytes });
      await c.send({ kind: "data", id: 1, offset: 5, bytes: enc.encode("6") });
      await c.expectError("SIZE_MISMATCH", 1);
      // Frames still in flight for the failed id are dropped, not answered again.
      await c.send({ kind: "end", id: 1 });
      await stillUsable(c, 2);
      assert.deepEqual(await partialFiles(dir), []);
      await c.destroy();
    }, { forbidden: ["past2.txt"] });
  });

  test("END before all bytes arrived gets SIZE_MISMATCH and nothing is kept", T, async () => {
    await withServer({}, async ({ port, dir, stillUsable }) => {
      const bytes = enc.encode("0123456789");
      const c = await openFile(port, 1, "short.txt", bytes);
      await c.send({ kind: "data", id: 1, offset: 0, bytes: bytes.subarray(0, 5) });
      await c.send({ kind: "end", id: 1 });
      await c.expectError("SIZE_MISMATCH", 1);
      assert.deepEqual(await partialFiles(dir), []);
      await stillUsable(c, 2);
      await c.destroy();
    }, { forbidden: ["short.txt"] });
  });

  for (
    const [label, offset] of [
      ["a duplicate chunk", 0],
      ["an overlapping chunk", 2],
      ["a chunk that leaves a gap", 7],
    ] as const
  ) {
    test(`${label} gets BAD_OFFSET and nothing is stored`, T, async () => {
      await withServer({}, async ({ port, dir, stillUsable }) => {
        const bytes = enc.encode("0123456789");
        const c = await openFile(port, 1, "offsets.txt", bytes);
        await c.send({ kind: "data", id: 1, offset: 0, bytes: bytes.subarray(0, 5) });
        await c.send({ kind: "data", id: 1, offset, bytes: bytes.subarray(offset, offset + 3) });
        await c.expectError("BAD_OFFSET", 1);
        await c.send({ kind: "data", id: 1, offset: 5, bytes: bytes.subarray(5) });
        await c.send({ kind: "end", id: 1 });
        await stillUsable(c, 2);
        assert.deepEqual(await partialFiles(dir), []);
        await c.destroy();
      }, { forbidden: ["offsets.txt"] });
    });
  }

  test("DATA before any FILE (so before ACCEPT) gets UNKNOWN_FILE", T, async () => {
    await withServer({}, async ({ port, stillUsable }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.send({ kind: "data", id: 9, offset: 0, bytes: enc.encode("orphan") });
      await c.expectError("UNKNOWN_FILE", 9);
      await stillUsable(c, 10);
      await c.destroy();
    });
  });

  test("DATA and END for an id that was never opened get UNKNOWN_FILE", T, async () => {
    await withServer({}, async ({ port, baseline, stillUsable }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const bytes = enc.encode("abc");
      await c.sendFile(1, "real.txt", bytes);
      await baseline();
      await c.send({ kind: "data", id: 77, offset: 0, bytes });
      await c.expectError("UNKNOWN_FILE", 77);
      await c.send({ kind: "end", id: 78 });
      await c.expectError("UNKNOWN_FILE", 78);
      await c.destroy();
      const c2 = await RawClient.connect(port);
      await c2.handshake();
      await stillUsable(c2, 2);
      await c2.destroy();
    });
  });

  test("a FILE whose id is already open gets a connection-level BAD_HEADER", T, async () => {
    await withServer({}, async ({ port }) => {
      const a = enc.encode("first file");
      const c = await openFile(port, 5, "first.txt", a);
      await c.send({ kind: "data", id: 5, offset: 0, bytes: a.subarray(0, 5) });
      await c.send(fileHeader(5, "second.txt", enc.encode("second")));
      // A per-file error for id 5 could not say which of the two files it means.
      await c.expectError("BAD_HEADER", 0);
      await c.waitClosed();
    }, { forbidden: ["first.txt", "second.txt"] });
  });

  test("file id 0 (reserved for the connection) gets a connection-level BAD_HEADER", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.send(fileHeader(0, "zero.txt", enc.encode("zero")));
      // An ERROR with id 0 means the whole connection, so the server must also close it.
      await c.expectError("BAD_HEADER", 0);
      await c.waitClosed();
    }, { forbidden: ["zero.txt"] });
  });

  test(
    "DATA for id 0 gets a connection-level UNKNOWN_FILE, never a per-file error with id 0",
    T,
    async () => {
      await withServer({}, async ({ port }) => {
        const c = await RawClient.connect(port);
        await c.handshake();
        await c.send({ kind: "data", id: 0, offset: 0, bytes: enc.encode("zero") });
        await c.expectError("UNKNOWN_FILE", 0);
        await c.waitClosed();
      });
    },
  );

  // Sizes travel as u64 but must fit 2^53-1. Fractional or negative sizes cannot
  // be written in a binary u64 field at all; 2^64-1 is what a sender's -1 becomes.
  for (
    const [label, size] of [
      ["2^64-1 (a negative i64)", 0xffffffffffffffffn],
      ["2^53", 2n ** 53n],
      ["2^63", 2n ** 63n],
    ] as const
  ) {
    test(`FILE with size ${label} gets BAD_HEADER for the connection`, T, async () => {
      await withServer({}, async ({ port }) => {
        const c = await RawClient.connect(port);
        await c.handshake();
        await c.write(rawFile({ id: 1, size, hash: new Uint8Array(32), name: "huge.bin" }));
        // The frame is malformed, so the server trusts none of it (not even the id):
        // connection-level error, id 0, and close.
        const e = await c.expectError("BAD_HEADER", 0);
        assert.match(e.message, /size/);
        await c.waitClosed();
      }, { forbidden: ["huge.bin"] });
    });
  }

  for (const length of [31, 33, 0]) {
    test(`FILE with a ${length}-byte hash gets BAD_HEADER for the connection`, T, async () => {
      await withServer({}, async ({ port }) => {
        const c = await RawClient.connect(port);
        await c.handshake();
        // The hash has no length prefix: a wrong length shifts every later field.
        await c.write(
          rawFile({ id: 1, size: 4n, hash: new Uint8Array(length).fill(0x11), name: "hash.txt" }),
        );
        await c.expectError("BAD_HEADER", 0);
        await c.waitClosed();
      }, { forbidden: ["hash.txt"] });
    });
  }

  test("a FILE frame whose payload stops mid-field gets BAD_HEADER for the connection", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const whole = encodeMessage(fileHeader(1, "cut.txt", enc.encode("cut")));
      const payload = whole.subarray(5, 5 + 20); // id, flags, size, 7 bytes of the hash
      await c.write(encodeFrame({ type: FrameType.FILE, payload }));
      await c.expectError("BAD_HEADER", 0);
      await c.waitClosed();
    }, { forbidden: ["cut.txt"] });
  });

  test("a FILE frame cut by EOF gets TRUNCATED_FRAME", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const whole = encodeMessage(fileHeader(1, "eof.txt", enc.encode("eof")));
      await c.write(whole.subarray(0, whole.length - 4));
      c.socket.end();
      await c.expectError("TRUNCATED_FRAME", 0);
      await c.waitClosed();
    }, { forbidden: ["eof.txt"] });
  });

  test("a wrong hash with the right size gets HASH_MISMATCH and no file", T, async () => {
    await withServer({}, async ({ port, dir, stillUsable }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const bytes = enc.encode("the real content");
      await c.send(fileHeader(1, "tampered.txt", bytes, { sha256: sha256(enc.encode("other content")) }));
      await c.expect("accept");
      await c.send({ kind: "data", id: 1, offset: 0, bytes });
      await c.send({ kind: "end", id: 1 });
      const e = await c.expectError("HASH_MISMATCH", 1);
      assert.match(e.message, /SHA-256/);
      assert.deepEqual(await partialFiles(dir), []);
      await stillUsable(c, 2);
      await c.destroy();
    }, { forbidden: ["tampered.txt"] });
  });

  test("a client that half-closes after END still gets its RECEIPT", T, async () => {
    await withServer({}, async ({ port, dir, baseline }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const bytes = enc.encode("sent, then FIN");
      await c.send(fileHeader(1, "fin.txt", bytes));
      await c.send({ kind: "data", id: 1, offset: 0, bytes });
      await c.send({ kind: "end", id: 1 });
      c.socket.end();
      await c.expect("accept");
      assert.equal((await c.expect("receipt")).storedName, "fin.txt");
      await c.waitClosed();
      assert.deepEqual(await partialFiles(dir), []);
      await baseline();
    });
  });

  test("FILEs beyond maxOpenFiles on one connection get SERVER_BUSY with their id", T, async () => {
    await withServer({ maxOpenFiles: 4 }, async ({ port, dir, stillUsable }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const files = [1, 2, 3, 4, 5].map((id) => enc.encode(`open file ${id}`));
      for (const [i, bytes] of files.entries()) await c.send(fileHeader(i + 1, `open-${i + 1}.txt`, bytes));
      for (let id = 1; id <= 4; id++) assert.equal((await c.expect("accept")).id, id);
      // Each open file holds a file handle: without this limit one client could exhaust them.
      await c.expectError("SERVER_BUSY", 5);
      assert.equal((await partialFiles(dir)).length, 4);
      await c.destroy();
      const c2 = await RawClient.connect(port);
      await c2.handshake();
      await stillUsable(c2, 1);
      await c2.destroy();
    }, { forbidden: ["open-1.txt", "open-5.txt"] });
  });

  test("a client that opens FILEs and leaves without data leaves no partial files", T, async () => {
    await withServer({}, async ({ port, dir, server }) => {
      let disconnects = 0;
      const off = server.on("disconnect", () => disconnects++);
      const c = await RawClient.connect(port);
      await c.handshake();
      for (let id = 1; id <= 3; id++) await c.send(fileHeader(id, `litter-${id}.bin`, enc.encode(`${id}`)));
      for (let id = 1; id <= 3; id++) await c.expect("accept");
      assert.equal((await partialFiles(dir)).length, 3);
      await c.destroy();
      await untilEvent(server, "disconnect", () => disconnects === 1);
      off();
      // Empty uploads have nothing to resume, so they are not kept for a day.
      assert.deepEqual(await partialFiles(dir), []);
    });
  });

  test("a DATA frame with a short id/offset prefix gets BAD_FRAME", T, async () => {
    await withServer({}, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      await c.write(encodeFrame({ type: FrameType.DATA, payload: new Uint8Array(7) }));
      await c.expectError("BAD_FRAME", 0);
      await c.waitClosed();
    });
  });
});
