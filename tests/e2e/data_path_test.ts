/**
 * The server's DATA receive path end to end: DATA frames split anywhere and
 * glued to each other and to END are stored intact, whatever pieces the
 * socket reads cut them into (the payload reaches the disk as zero-copy parts
 * of those reads, and the read buffers are reused or freed afterwards).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeMessage, toHex } from "../../src/protocol/messages.ts";
import { destroyAllClients, fileHeader, RawClient, startTestServer } from "../helpers/raw_client.ts";

const T = { timeout: 20_000 };

function pattern(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed + (i >> 9)) & 0xff);
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

/** The DATA frames of `bytes` in frames of `frame` bytes, then END, as one buffer. */
function dataThenEnd(id: number, bytes: Uint8Array, frame: number): Uint8Array {
  const frames: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; at += frame) {
    frames.push(encodeMessage({ kind: "data", id, offset: at, bytes: bytes.subarray(at, at + frame) }));
  }
  frames.push(encodeMessage({ kind: "end", id }));
  return concat(frames);
}

describe("e2e: the DATA receive path", () => {
  test("DATA frames split anywhere and glued together are stored intact", T, async () => {
    const t = await startTestServer();
    try {
      const c = await RawClient.connect(t.port);
      await c.handshake();
      // Pieces: every cut inside the first header and prefix, a piece spanning a frame boundary,
      // a frame's last byte glued to the next frame's first, the last frame glued to END.
      const frame = 20_000;
      const cutsFor = (total: number) =>
        [1, 4, 5, 6, 9, 16, 17, 18, 5_000, frame + 17 - 1, frame + 17 + 3, 2 * (frame + 17) + 40, total - 12]
          .filter((x) => x < total).sort((a, b) => a - b);
      for (const [id, size] of [[1, 3 * frame + 7], [2, frame], [3, 1], [4, 2 * frame + 17]]) {
        const bytes = pattern(size, id);
        const name = `split-${id}.bin`;
        await c.send(fileHeader(id, name, bytes));
        await c.expect("accept");
        const stream = dataThenEnd(id, bytes, frame);
        const points = [0, ...cutsFor(stream.length), stream.length];
        for (let i = 1; i < points.length; i++) await c.write(stream.slice(points[i - 1], points[i]));
        const receipt = await c.expect("receipt");
        assert.equal(receipt.id, id);
        assert.equal(receipt.storedName, name);
        assert.equal(toHex(receipt.sha256), createHash("sha256").update(bytes).digest("hex"));
        assert.deepEqual(new Uint8Array(await readFile(join(t.dir, name))), bytes);
      }
    } finally {
      await destroyAllClients();
      await t.close();
    }
  });

  test("several connections streaming at once store every file intact", T, async () => {
    const t = await startTestServer();
    try {
      const files = Array.from({ length: 6 }, (_, i) => pattern(300_000 + i * 4099, i + 10));
      await Promise.all(files.map(async (bytes, i) => {
        const c = await RawClient.connect(t.port);
        await c.handshake();
        await c.send(fileHeader(1, `conn-${i}.bin`, bytes));
        await c.expect("accept");
        await c.write(dataThenEnd(1, bytes, 65_536 - 12 + i));
        const receipt = await c.expect("receipt");
        assert.equal(receipt.storedName, `conn-${i}.bin`);
      }));
      for (const [i, bytes] of files.entries()) {
        assert.deepEqual(new Uint8Array(await readFile(join(t.dir, `conn-${i}.bin`))), bytes);
      }
    } finally {
      await destroyAllClients();
      await t.close();
    }
  });
});
