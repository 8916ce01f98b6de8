/**
 * One contract, every socket adapter: node:net (Deno and Bun) and Deno's
 * native sockets (Deno only). Real sockets on 127.0.0.1, port 0.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FerryError } from "../../src/errors.ts";
import { denoNativeRuntime } from "../../src/runtime/deno_native.ts";
import { nodeNetRuntime } from "../../src/runtime/node_net.ts";
import { defaultRuntime } from "../../src/runtime/select.ts";
import type { Connection, Listener, Runtime } from "../../src/runtime/transport.ts";

const IS_DENO = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined" &&
  typeof (globalThis as { Bun?: unknown }).Bun === "undefined";

const ADAPTERS: Array<[string, Runtime]> = [["node:net", nodeNetRuntime]];
if (IS_DENO) ADAPTERS.push(["deno-native", denoNativeRuntime]);

/** A listener whose accepted connections arrive through `next()`. */
async function listen(rt: Runtime): Promise<{ listener: Listener; next: () => Promise<Connection> }> {
  const accepted: Connection[] = [];
  const waiters: Array<(c: Connection) => void> = [];
  const listener = await rt.listen({ hostname: "127.0.0.1", port: 0 }, (conn) => {
    const w = waiters.shift();
    if (w) w(conn);
    else accepted.push(conn);
  });
  return {
    listener,
    next: () => {
      const c = accepted.shift();
      return c ? Promise.resolve(c) : new Promise((r) => waiters.push(r));
    },
  };
}

/** Reads until end of stream; returns the bytes joined. */
async function readAll(conn: Connection): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  for (let c = await conn.read(); c; c = await conn.read()) {
    parts.push(c.slice());
    total += c.length;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Reads exactly `n` bytes (fails on an early end). */
async function readExactly(conn: Connection, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const c = await conn.read();
    assert.ok(c, `stream ended after ${at} of ${n} bytes`);
    out.set(c.subarray(0, Math.min(c.length, n - at)), at);
    at += c.length;
  }
  assert.equal(at, n, "read more bytes than were sent");
  return out;
}

function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

for (const [name, rt] of ADAPTERS) {
  describe(`runtime adapter contract: ${name}`, () => {
    test("round trip, addresses and byte counters", { timeout: 10_000 }, async () => {
      const { listener, next } = await listen(rt);
      try {
        assert.equal(listener.hostname, "127.0.0.1");
        assert.ok(listener.port > 0);
        const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
        const server = await next();
        assert.equal(server.remoteAddress, "127.0.0.1");
        assert.equal(client.remoteAddress, "127.0.0.1");
        assert.equal(client.remotePort, listener.port);
        await client.write([new Uint8Array([1, 2]), new Uint8Array([3])]);
        assert.deepEqual(await readExactly(server, 3), new Uint8Array([1, 2, 3]));
        await server.write(new Uint8Array([9]));
        assert.deepEqual(await readExactly(client, 1), new Uint8Array([9]));
        assert.equal(client.bytesWritten, 3);
        assert.equal(server.bytesRead, 3);
        client.close();
        server.close();
      } finally {
        await listener.close();
      }
    });

    test("8 MiB in frame-like parts arrives intact, in order", { timeout: 20_000 }, async () => {
      const { listener, next } = await listen(rt);
      try {
        const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
        const server = await next();
        const total = 8 * 1024 * 1024;
        const sent = createHash("sha256");
        const writing = (async () => {
          for (let i = 0, at = 0; at < total; i++) {
            const header = pattern(17, i);
            const payload = pattern(Math.min(256 * 1024 - 17, total - at - 17), i + 7);
            sent.update(header).update(payload);
            await client.write([header, payload]);
            at += header.length + payload.length;
          }
          await client.closeWrite();
        })();
        const got = await readAll(server);
        await writing;
        assert.equal(got.length, total);
        assert.equal(sha(got), sent.digest("hex"));
        client.close();
        server.close();
      } finally {
        await listener.close();
      }
    });

    test(
      "release(): chunks handed back after use; 8 MiB still arrive intact",
      { timeout: 20_000 },
      async () => {
        const { listener, next } = await listen(rt);
        try {
          const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
          const server = await next();
          assert.equal(typeof server.release, "function");
          const total = 8 * 1024 * 1024;
          const sent = createHash("sha256");
          const writing = (async () => {
            for (let i = 0, at = 0; at < total; i++) {
              const part = pattern(Math.min(100_003, total - at), i);
              sent.update(part);
              await client.write(part);
              at += part.length;
            }
            await client.closeWrite();
          })();
          const got = createHash("sha256");
          const buffers = new Set<ArrayBufferLike>();
          let received = 0;
          let reused = 0;
          for (let c = await server.read(); c; c = await server.read()) {
            if (buffers.has(c.buffer)) reused++;
            got.update(c);
            received += c.length;
            const before = c.buffer;
            server.release!(c);
            // A released chunk is either freed at once (detached: no bytes left) or kept for a later read.
            if (c.length !== 0) buffers.add(before);
          }
          await writing;
          assert.equal(received, total);
          assert.equal(got.digest("hex"), sent.digest("hex"));
          if (name === "deno-native") assert.ok(reused > 0, "the native adapter reads into released buffers");
          else assert.equal(buffers.size, 0, "node:net frees every released chunk (they own their buffers)");
          client.close();
          server.close();
        } finally {
          await listener.close();
        }
      },
    );

    test(
      "release(): a chunk not handed back is never reused, however many reads come after it",
      { timeout: 20_000 },
      async () => {
        const { listener, next } = await listen(rt);
        try {
          const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
          const server = await next();
          const total = 16 * 1024 * 1024;
          const writing = (async () => {
            for (let i = 0, at = 0; at < total; i++) {
              const part = pattern(Math.min(262_147, total - at), i);
              await client.write(part);
              at += part.length;
            }
            await client.closeWrite();
          })();
          // Every third chunk is held to the end with the hash it had when read; the others are
          // scribbled over and handed back at once, so a held chunk's memory reused by a later read,
          // or a released one read into while still shared with a held one, changes a hash.
          const held: Array<{ chunk: Uint8Array; hash: string }> = [];
          const got = createHash("sha256");
          const sent = createHash("sha256");
          let received = 0;
          for (let c = await server.read(), i = 0; c; c = await server.read(), i++) {
            got.update(c);
            received += c.length;
            if (i % 3 === 0) held.push({ chunk: c, hash: sha(c) });
            else {
              c.fill(0xee);
              server.release!(c);
            }
          }
          await writing;
          for (let i = 0, at = 0; at < total; i++) {
            const n = Math.min(262_147, total - at);
            sent.update(pattern(n, i));
            at += n;
          }
          assert.equal(received, total);
          assert.equal(got.digest("hex"), sent.digest("hex"));
          assert.ok(held.length > 3);
          assert.ok(held.every(({ chunk, hash }) => sha(chunk) === hash), "a held chunk was overwritten");
          if (name === "deno-native") {
            // Large reads land in the pooled slabs: several chunks share one ArrayBuffer.
            const memories = new Set(held.map(({ chunk }) => chunk.buffer));
            assert.ok(memories.size < held.length, "reads come from pooled slabs");
          }
          for (const { chunk } of held) server.release!(chunk);
          client.close();
          server.close();
        } finally {
          await listener.close();
        }
      },
    );

    test(
      "bytesFlushed: buffers refilled once flushed arrive intact; it lags while the peer does not read",
      { timeout: 20_000 },
      async () => {
        const { listener, next } = await listen(rt);
        try {
          const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
          const server = await next();
          assert.equal(typeof client.bytesQueued, "number");
          assert.equal(typeof client.bytesFlushed, "number");
          const total = 32 * 1024 * 1024;
          const size = 256 * 1024;
          const sent = createHash("sha256");
          // The sender's rule (src/client/sender.ts FrameBuffers): refill the oldest buffer only once
          // bytesFlushed has passed the end of what it held; otherwise take a fresh one.
          const ring: Array<{ buffer: Uint8Array; until: number }> = [];
          let refilled = 0;
          let lagged = false;
          let markLagged!: () => void;
          const laggedOnce = new Promise<void>((resolve) => markLagged = resolve);
          const writing = (async () => {
            for (let i = 0, at = 0; at < total; i++) {
              const oldest = ring[0];
              let buffer: Uint8Array;
              if (oldest && oldest.until <= client.bytesFlushed!) {
                buffer = ring.shift()!.buffer;
                refilled++;
              } else buffer = new Uint8Array(size);
              const part = buffer.subarray(0, Math.min(size, total - at));
              part.set(pattern(part.length, i));
              sent.update(part);
              const written = client.write(part);
              ring.push({ buffer, until: client.bytesQueued! });
              assert.ok(client.bytesFlushed! <= client.bytesQueued!);
              if (client.bytesFlushed! < client.bytesQueued! - size) {
                lagged = true;
                markLagged();
              }
              await written;
              at += part.length;
            }
            await client.closeWrite();
          })();
          // Nothing is read until the writer has had to wait: the kernel's buffers are full by then.
          // Waits for the writer to lag, or to end without lagging (a failed writer reports its own error).
          await Promise.race([laggedOnce, writing]);
          assert.ok(lagged, "the writer had to wait for the reader at least once");
          const got = await readAll(server);
          await writing;
          assert.equal(got.length, total);
          assert.equal(sha(got), sent.digest("hex"));
          assert.ok(refilled > 0, "some buffers were refilled");
          assert.equal(client.bytesQueued, total);
          assert.equal(client.bytesFlushed, total, "everything is flushed once the stream is closed");
          client.close();
          server.close();
        } finally {
          await listener.close();
        }
      },
    );

    test("10,000 small writes keep their order", { timeout: 20_000 }, async () => {
      const { listener, next } = await listen(rt);
      try {
        const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
        const server = await next();
        const expected = new Uint8Array(10_000 * 2);
        for (let i = 0; i < 10_000; i++) {
          const b = new Uint8Array([i >> 8, i & 0xff]);
          expected.set(b, i * 2);
          // Not awaited on purpose: many writes queue up at once.
          client.write(b).catch(() => {});
        }
        await client.closeWrite();
        assert.deepEqual(await readAll(server), expected);
        client.close();
        server.close();
      } finally {
        await listener.close();
      }
    });

    test(
      "small frames written just before close() reach the peer, in order",
      { timeout: 10_000 },
      async () => {
        const { listener, next } = await listen(rt);
        try {
          const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
          const server = await next();
          // Small writes are joined and sent at the end of the turn; a large one, or close(), sends
          // what is queued first.
          const expected: number[] = [];
          const small = (i: number) => {
            const b = pattern(21, i);
            expected.push(...b);
            return server.write(b);
          };
          await small(0);
          await small(1);
          const big = pattern(200_000, 2);
          const writes = [small(3)];
          for (const b of big) expected.push(b);
          writes.push(server.write(big), small(4));
          expected.push(...pattern(5, 5), ...pattern(7, 6));
          writes.push(server.write([pattern(5, 5), pattern(7, 6)]));
          await Promise.all(writes);
          assert.deepEqual(await readExactly(client, expected.length), new Uint8Array(expected));
          expected.length = 0;
          await small(7);
          await small(8);
          server.close();
          assert.deepEqual(await readAll(client), new Uint8Array(expected));
          await assert.rejects(server.write(new Uint8Array([1])), (e) => e instanceof FerryError);
          client.close();
        } finally {
          await listener.close();
        }
      },
    );

    test(
      "closeWrite ends the peer's reads; the peer can still answer (half-open)",
      { timeout: 10_000 },
      async () => {
        const { listener, next } = await listen(rt);
        try {
          const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
          const server = await next();
          await client.write(new TextEncoder().encode("END"));
          await client.closeWrite();
          assert.equal(new TextDecoder().decode(await readAll(server)), "END");
          await server.write(new TextEncoder().encode("RECEIPT"));
          await server.closeWrite();
          assert.equal(new TextDecoder().decode(await readAll(client)), "RECEIPT");
          await Promise.all([client.closed, server.closed]);
          await assert.rejects(client.write(new Uint8Array([1])), (e) => e instanceof FerryError);
        } finally {
          await listener.close();
        }
      },
    );

    test("close() ends a pending read on both sides; later writes reject", { timeout: 10_000 }, async () => {
      const { listener, next } = await listen(rt);
      try {
        const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
        const server = await next();
        const serverRead = server.read();
        const clientRead = client.read();
        client.close();
        assert.equal(await clientRead, null);
        assert.equal(await serverRead, null);
        await client.closed;
        await assert.rejects(
          client.write(new Uint8Array([1])),
          (e) => e instanceof FerryError && e.code === "IO_ERROR",
        );
        server.close();
        await server.closed;
      } finally {
        await listener.close();
      }
    });

    test("a taken port fails with EADDRINUSE; a closed listener refuses", { timeout: 10_000 }, async () => {
      const { listener } = await listen(rt);
      const port = listener.port;
      await assert.rejects(
        rt.listen({ hostname: "127.0.0.1", port }, () => {}),
        (e) => (e as { code?: string }).code === "EADDRINUSE",
      );
      await listener.close();
      await assert.rejects(rt.connect({ hostname: "127.0.0.1", port }));
    });
  });
}

describe("defaultRuntime", () => {
  test("picks an adapter that works on this runtime", { timeout: 10_000 }, async () => {
    const rt = defaultRuntime();
    assert.equal(rt.name, IS_DENO ? "deno" : "bun");
    const { listener, next } = await listen(rt);
    try {
      const client = await rt.connect({ hostname: "127.0.0.1", port: listener.port });
      const server = await next();
      await client.write(new Uint8Array([42]));
      assert.deepEqual(await readExactly(server, 1), new Uint8Array([42]));
      client.close();
      server.close();
    } finally {
      await listener.close();
    }
  });
});
