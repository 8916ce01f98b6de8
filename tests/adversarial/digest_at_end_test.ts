/**
 * DIGEST_AT_END from a raw client: the two forms must not be mixed, the flag
 * and END_DIGEST need the capability, a wrong hash at the end is HASH_MISMATCH.
 * Every violation gets its stable code, leaves the visible inbox unchanged and
 * no partial behind; a client that never heard of the capability is served as
 * before.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeFrame } from "../../src/framing/frame.ts";
import { Capability, FileFlag, FrameType } from "../../src/protocol/constants.ts";
import { toHex } from "../../src/protocol/messages.ts";
import { fileHeader, hello, partialFiles, RawClient, sha256, withServer } from "../helpers/raw_client.ts";

const T = { timeout: 15_000 };
const enc = new TextEncoder();
const KEY = sha256(enc.encode("a source key, not a hash"));
const CAPS = Capability.RESUME | Capability.MESSAGES | Capability.HEARTBEAT;

/** Handshake announcing `capabilities`; returns the WELCOME's capability bits. */
async function connect(port: number, capabilities = CAPS | Capability.DIGEST_AT_END) {
  const c = await RawClient.connect(port);
  await c.send(hello({ capabilities }));
  const welcome = await c.expect("welcome");
  return { c, serverCaps: welcome.capabilities };
}

/** FILE with DIGEST_AT_END and a source key for `bytes`, then ACCEPT and all the DATA. */
async function streamAtEnd(c: RawClient, id: number, name: string, bytes: Uint8Array): Promise<void> {
  await c.send(fileHeader(id, name, bytes, { flags: FileFlag.RESUME | FileFlag.DIGEST_AT_END, sha256: KEY }));
  const accept = await c.expect("accept");
  assert.deepEqual([accept.id, accept.offset], [id, 0]);
  await c.send({ kind: "data", id, offset: 0, bytes });
}

describe("adversarial: digest at end", () => {
  test(
    "the server announces DIGEST_AT_END; a flagged file with END_DIGEST is stored with the real hash",
    T,
    async () => {
      await withServer({}, async ({ port, dir, baseline }) => {
        const { c, serverCaps } = await connect(port);
        assert.ok(serverCaps & Capability.DIGEST_AT_END);
        const bytes = enc.encode("streamed before it was hashed\n");
        await streamAtEnd(c, 1, "late.txt", bytes);
        await c.send({ kind: "end_digest", id: 1, sha256: sha256(bytes) });
        const receipt = await c.expect("receipt");
        assert.equal(receipt.id, 1);
        assert.equal(receipt.flags, 0);
        assert.equal(toHex(receipt.sha256), toHex(sha256(bytes)));
        assert.deepEqual(new Uint8Array(await readFile(join(dir, "late.txt"))), bytes);
        const index = await readFile(join(dir, ".ferry", "receipts.ndjson"), "utf8");
        assert.match(index, new RegExp(toHex(sha256(bytes))));
        assert.doesNotMatch(index, new RegExp(toHex(KEY)), "the source key is never recorded as the hash");
        await baseline();
        await c.destroy();
      });
    },
  );

  test(
    "END_DIGEST with the wrong hash: HASH_MISMATCH for that file, nothing kept, connection usable",
    T,
    async () => {
      await withServer({}, async ({ port, dir, stillUsable }) => {
        const { c } = await connect(port);
        const bytes = enc.encode("0123456789");
        await streamAtEnd(c, 1, "wrong.txt", bytes);
        await c.send({ kind: "end_digest", id: 1, sha256: sha256(enc.encode("something else")) });
        await c.expectError("HASH_MISMATCH", 1);
        assert.deepEqual(await partialFiles(dir), []);
        await stillUsable(c, 2);
        await c.destroy();
      }, { forbidden: ["wrong.txt"] });
    },
  );

  test("the source key itself given as the hash at the end is HASH_MISMATCH", T, async () => {
    await withServer({}, async ({ port, dir, stillUsable }) => {
      const { c } = await connect(port);
      await streamAtEnd(c, 1, "key.txt", enc.encode("abc"));
      await c.send({ kind: "end_digest", id: 1, sha256: KEY });
      await c.expectError("HASH_MISMATCH", 1);
      assert.deepEqual(await partialFiles(dir), []);
      await stillUsable(c, 2);
      await c.destroy();
    }, { forbidden: ["key.txt"] });
  });

  const violations: Array<{
    name: string;
    code: "UNEXPECTED_FRAME" | "BAD_HEADER";
    capabilities: number;
    run: (c: RawClient, bytes: Uint8Array) => Promise<void>;
  }> = [
    {
      name: "END for a file offered with DIGEST_AT_END",
      code: "UNEXPECTED_FRAME",
      capabilities: CAPS | Capability.DIGEST_AT_END,
      run: async (c, bytes) => {
        await streamAtEnd(c, 1, "mixed.txt", bytes);
        await c.send({ kind: "end", id: 1 });
      },
    },
    {
      name: "END_DIGEST for a file offered with its SHA-256",
      code: "UNEXPECTED_FRAME",
      capabilities: CAPS | Capability.DIGEST_AT_END,
      run: async (c, bytes) => {
        await c.send(fileHeader(1, "mixed.txt", bytes, { flags: FileFlag.RESUME }));
        await c.expect("accept");
        await c.send({ kind: "data", id: 1, offset: 0, bytes });
        await c.send({ kind: "end_digest", id: 1, sha256: sha256(bytes) });
      },
    },
    {
      name: "the DIGEST_AT_END flag without the capability in HELLO",
      code: "BAD_HEADER",
      capabilities: CAPS,
      run: async (c, bytes) => {
        await c.send(fileHeader(1, "mixed.txt", bytes, { flags: FileFlag.DIGEST_AT_END, sha256: KEY }));
      },
    },
    {
      name: "END_DIGEST without the capability in HELLO",
      code: "UNEXPECTED_FRAME",
      capabilities: CAPS,
      run: async (c, bytes) => {
        await c.send(fileHeader(1, "mixed.txt", bytes));
        await c.expect("accept");
        await c.send({ kind: "data", id: 1, offset: 0, bytes });
        await c.send({ kind: "end_digest", id: 1, sha256: sha256(bytes) });
      },
    },
  ];
  for (const v of violations) {
    test(`${v.name}: ${v.code} for the connection, nothing stored or kept`, T, async () => {
      await withServer({}, async ({ port, dir }) => {
        const { c } = await connect(port, v.capabilities);
        await v.run(c, enc.encode("some bytes that must not be stored\n"));
        await c.expectError(v.code, 0);
        await c.waitClosed();
        assert.deepEqual(await partialFiles(dir), []);
      }, { forbidden: ["mixed.txt"] });
    });
  }

  test(
    "a server with hashFirst does not announce DIGEST_AT_END and refuses the flag: BAD_HEADER",
    T,
    async () => {
      await withServer({ hashFirst: true }, async ({ port, dir }) => {
        const { c, serverCaps } = await connect(port);
        assert.equal(serverCaps & Capability.DIGEST_AT_END, 0);
        assert.notEqual(serverCaps & Capability.RESUME, 0);
        const bytes = enc.encode("streamed before hashing\n");
        await c.send(
          fileHeader(1, "mixed.txt", bytes, { flags: FileFlag.RESUME | FileFlag.DIGEST_AT_END, sha256: KEY }),
        );
        await c.expectError("BAD_HEADER", 0);
        await c.waitClosed();
        assert.deepEqual(await partialFiles(dir), []);
      }, { forbidden: ["mixed.txt"] });
    },
  );

  test("END_DIGEST of the wrong length is BAD_FRAME", T, async () => {
    await withServer({}, async ({ port, dir }) => {
      const { c } = await connect(port);
      const bytes = enc.encode("xyz");
      await streamAtEnd(c, 1, "short.txt", bytes);
      const payload = new Uint8Array(4 + 31);
      payload[3] = 1;
      payload.set(sha256(bytes).subarray(0, 31), 4);
      await c.write(encodeFrame({ type: FrameType.END_DIGEST, payload }));
      await c.expectError("BAD_FRAME", 0);
      await c.waitClosed();
      // A malformed frame ends the connection like any other: the file's bytes stay a resumable
      // partial (a connection-level error keeps partials), never placed under the name.
      assert.equal((await partialFiles(dir)).length, 1);
    }, { forbidden: ["short.txt"] });
  });

  test("a client without the capability is served exactly as before (FILE with hash, END)", T, async () => {
    await withServer({}, async ({ port, dir, baseline }) => {
      const { c } = await connect(port, CAPS);
      const bytes = enc.encode("old-style client\n");
      const receipt = await c.sendFile(1, "old.txt", bytes);
      assert.equal(receipt.storedName, "old.txt");
      assert.deepEqual(new Uint8Array(await readFile(join(dir, "old.txt"))), bytes);
      // Its re-send is still a duplicate before any data.
      await c.send(fileHeader(2, "old.txt", bytes));
      const dup = await c.expect("receipt");
      assert.deepEqual([dup.id, dup.flags, dup.storedName], [2, 1, "old.txt"]);
      await baseline();
      await c.destroy();
    });
  });

  test(
    "a resumed DIGEST_AT_END partial is found by key and flag, never by a hash of the same value",
    T,
    async () => {
      await withServer({}, async ({ port, dir, baseline, server }) => {
        const bytes = enc.encode("0123456789abcdef");
        const first = await connect(port);
        await first.c.send(
          fileHeader(1, "r.txt", bytes, { flags: FileFlag.RESUME | FileFlag.DIGEST_AT_END, sha256: KEY }),
        );
        await first.c.expect("accept");
        await first.c.send({ kind: "data", id: 1, offset: 0, bytes: bytes.subarray(0, 10) });
        // A PING round trip: the DATA before it has been read and written.
        await first.c.send({ kind: "ping", token: 7n });
        await first.c.expect("pong");
        // The partial is released (suspended) when the server sees the connection go.
        const gone = new Promise<void>((resolve) => {
          const off = server.on("disconnect", () => {
            off();
            resolve();
          });
        });
        await first.c.destroy();
        await gone;

        const second = await connect(port);
        // Same name, size and 32-byte field, but without the flag: a different file, offset 0.
        await second.c.send(fileHeader(1, "r.txt", bytes, { flags: FileFlag.RESUME, sha256: KEY }));
        assert.equal((await second.c.expect("accept")).offset, 0);
        await second.c.send({ kind: "error", code: "IO_ERROR", wireCode: 51, id: 1, message: "never mind" });
        // With the flag: the partial, at 10.
        await second.c.send(
          fileHeader(2, "r.txt", bytes, { flags: FileFlag.RESUME | FileFlag.DIGEST_AT_END, sha256: KEY }),
        );
        const accept = await second.c.expect("accept");
        assert.deepEqual([accept.id, accept.offset], [2, 10]);
        await second.c.send({ kind: "data", id: 2, offset: 10, bytes: bytes.subarray(10) });
        await second.c.send({ kind: "end_digest", id: 2, sha256: sha256(bytes) });
        const receipt = await second.c.expect("receipt");
        assert.equal(toHex(receipt.sha256), toHex(sha256(bytes)));
        assert.deepEqual(new Uint8Array(await readFile(join(dir, "r.txt"))), bytes);
        await baseline();
        await second.c.destroy();
      });
    },
  );
});
