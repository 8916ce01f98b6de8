/**
 * The Deno adapter's pooled read buffers all come back to its pool however a connection ends: a
 * server session cut inside a frame, a reader that read with `receive()`. A slot that never came back
 * would stay out of the pool for good, and after a few hundred such connections every read would be
 * fresh memory again. Deno only (the adapter uses `Deno.listen`).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeMessage } from "../../src/protocol/messages.ts";
import { Channel } from "../../src/protocol/channel.ts";
import { Capability, FileFlag, PROTOCOL_VERSION } from "../../src/protocol/constants.ts";
import { denoNativeRuntime, readPoolInUse } from "../../src/runtime/deno_native.ts";
import { serve } from "../../src/server/server.ts";

const IS_DENO = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined" &&
  typeof (globalThis as { Bun?: unknown }).Bun === "undefined";
const MiB = 1024 * 1024;
/** A sender's usual DATA payload: frames of it span reads of the pooled size. */
const FRAME = 256 * 1024;

/** `n` bytes of DATA frames for file `id`, each of FRAME bytes. */
function dataFrames(id: number, n: number): Uint8Array[] {
  const frames: Uint8Array[] = [];
  for (let offset = 0; offset < n; offset += FRAME) {
    frames.push(
      encodeMessage({ kind: "data", id, offset, bytes: new Uint8Array(FRAME).fill(offset / FRAME) }),
    );
  }
  return frames;
}

test(
  "read pool: a server session cut inside a DATA frame hands every read back",
  { skip: !IS_DENO, timeout: 20_000 },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-read-pool-"));
    const server = await serve({ dir, port: 0, hostname: "127.0.0.1", runtime: denoNativeRuntime });
    try {
      const before = readPoolInUse();
      const ended = new Promise<unknown>((resolve) =>
        server.on("disconnect", (info) => resolve(info.reason))
      );
      const conn = await denoNativeRuntime.connect({ hostname: "127.0.0.1", port: server.port });
      const channel = new Channel(conn, { maxFrameSize: 4 * MiB });
      await channel.send({
        kind: "hello",
        version: PROTOCOL_VERSION,
        capabilities: Capability.RESUME,
        maxFrameSize: 4 * MiB,
      });
      assert.equal((await channel.receive())?.kind, "welcome");
      await channel.send({
        kind: "file",
        id: 1,
        flags: FileFlag.RESUME,
        size: 64 * MiB,
        sha256: new Uint8Array(32),
        mtimeMs: 0,
        name: "cut.bin",
        mime: "",
      });
      assert.equal((await channel.receive())?.kind, "accept");
      // 16 MiB of whole frames: the server's reads grow to the pooled size. Then half a frame, and EOF.
      const frames = dataFrames(1, 16 * MiB + FRAME);
      for (const frame of frames.slice(0, -1)) await conn.write(frame);
      await conn.write(frames.at(-1)!.subarray(0, FRAME / 2));
      let peak = 0;
      const watching = setInterval(() => peak = Math.max(peak, readPoolInUse() - before), 1);
      await conn.closeWrite();
      const reason = await ended;
      clearInterval(watching);
      assert.equal((reason as { code?: string })?.code, "TRUNCATED_FRAME");
      assert.ok(peak > 0, "the server read into pooled buffers (else this test proves nothing)");
      assert.equal(readPoolInUse(), before, "every pooled read came back once the session ended");
      conn.close();
      channel.dispose();
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test(
  "read pool: a reader that used receive() hands every read back at its next call and at dispose()",
  { skip: !IS_DENO, timeout: 20_000 },
  async () => {
    const received: Promise<Channel>[] = [];
    const listener = await denoNativeRuntime.listen({ hostname: "127.0.0.1", port: 0 }, (conn) => {
      received.push(Promise.resolve(new Channel(conn, { maxFrameSize: 4 * MiB })));
    });
    try {
      const before = readPoolInUse();
      const client = await denoNativeRuntime.connect({ hostname: "127.0.0.1", port: listener.port });
      const frames = dataFrames(2, 16 * MiB);
      const writing = (async () => {
        for (const frame of frames) await client.write(frame);
        await client.write(encodeMessage({ kind: "end", id: 2 }));
        await client.closeWrite();
      })();
      while (received.length === 0) await new Promise((r) => setTimeout(r, 1));
      const channel = await received[0];
      let bytes = 0;
      let peak = 0;
      for (let m = await channel.receive(); m; m = await channel.receive()) {
        peak = Math.max(peak, readPoolInUse() - before);
        if (m.kind === "data") {
          assert.equal(m.bytes[0], m.offset / FRAME, "DATA bytes are intact until the next call");
          bytes += m.bytes.length;
        }
        // Held back while one message is out: never more than the reads one frame spans, plus one.
        assert.ok(
          readPoolInUse() - before <= FRAME / (256 * 1024) + 2,
          `${readPoolInUse() - before} reads held`,
        );
      }
      await writing;
      assert.equal(bytes, 16 * MiB);
      assert.ok(peak > 0, "reads came from the pool (else this test proves nothing)");
      channel.dispose();
      assert.equal(readPoolInUse(), before);
      client.close();
      channel.conn.close();
    } finally {
      await listener.close();
    }
  },
);
