/**
 * Connection floods: more clients than the server admits, idle clients that
 * hold their slot, and many connections from one address. Excess clients
 * get SERVER_BUSY at once, idle ones get IDLE_TIMEOUT, and afterwards a
 * normal client is served.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { hello, RawClient, untilEvent, withServer } from "../helpers/raw_client.ts";

/** Soft limit on open files for this process (Linux), or undefined elsewhere. */
async function openFileLimit(): Promise<number | undefined> {
  try {
    const limits = await readFile("/proc/self/limits", "utf8");
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
    return m ? (m[1] === "unlimited" ? Infinity : Number(m[1])) : undefined;
  } catch {
    return undefined;
  }
}

/** Counts the server's disconnect events. */
function countDisconnects(
  server: Parameters<typeof untilEvent>[0],
): { count: () => number; off: () => void } {
  let n = 0;
  const off = server.on("disconnect", () => n++);
  return { count: () => n, off };
}

const FLOOD = 5_000;
const FLOOD_ADMITTED = 500;
// Client and server sockets share this process: two descriptors per connection, plus headroom.
const limit = await openFileLimit();
const floodSkip = limit !== undefined && limit < FLOOD * 2 + 500
  ? `ulimit -n is ${limit}; ${FLOOD} connections need about ${FLOOD * 2 + 500} descriptors in one process`
  : false;

describe("adversarial: connections", () => {
  test(
    "with maxConnections 50: extra clients get SERVER_BUSY, idle ones IDLE_TIMEOUT",
    { timeout: 20_000 },
    async () => {
      await withServer({ maxConnections: 50, idleTimeoutMs: 1_500 }, async ({ port, server }) => {
        const gone = countDisconnects(server);
        const idle = await Promise.all(Array.from({ length: 50 }, () => RawClient.connect(port)));
        await Promise.all(idle.map((c) => c.handshake()));
        assert.equal(server.connections().length, 50);
        for (let i = 0; i < 3; i++) {
          const extra = await RawClient.connect(port);
          const e = await extra.expectError("SERVER_BUSY");
          assert.match(e.message, /50 connections/);
          await extra.waitClosed();
        }
        const started = performance.now();
        await Promise.all(idle.map(async (c) => {
          await c.expectError("IDLE_TIMEOUT");
          await c.waitClosed();
        }));
        assert.ok(performance.now() - started < 10_000);
        await untilEvent(server, "disconnect", () => gone.count() >= 50);
        gone.off();
      });
    },
  );

  test("activity keeps pushing the idle timeout back; silence after it still ends the connection", {
    timeout: 20_000,
  }, async () => {
    await withServer({ idleTimeoutMs: 1_000 }, async ({ port }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      // Messages every 250 ms for 2.5 s: longer than the timeout in total, never idle for as long.
      for (let id = 1; id <= 10; id++) {
        await new Promise((r) => setTimeout(r, 250));
        await c.send({ kind: "message", id, text: `still here ${id}` });
        const ack = await c.next();
        assert.equal(ack.kind, "message_ack", JSON.stringify(ack));
      }
      await c.expectError("IDLE_TIMEOUT");
      await c.waitClosed();
    });
  });

  test(
    `${FLOOD} raw sockets against maxConnections ${FLOOD_ADMITTED}: the rest get SERVER_BUSY`,
    { timeout: 30_000, skip: floodSkip },
    async () => {
      await withServer(
        {
          maxConnections: FLOOD_ADMITTED,
          maxConnectionsPerIp: FLOOD,
          // Longer than opening all the sockets takes, so no admitted slot frees up mid-flood.
          idleTimeoutMs: 8_000,
          handshakeTimeoutMs: 10_000,
        },
        async ({ port, server }) => {
          const gone = countDisconnects(server);
          const started = performance.now();
          const outcomes = await Promise.all(Array.from({ length: FLOOD }, async () => {
            const c = await RawClient.connect(port);
            await c.send(hello()).catch(() => {});
            const first = await c.next(15_000);
            let outcome: string = first.kind === "error" ? first.code : first.kind;
            if (first.kind === "welcome") {
              const second = await c.next(15_000);
              outcome = second.kind === "error" ? second.code : second.kind;
            }
            await c.waitClosed(15_000);
            return outcome;
          }));
          const elapsed = performance.now() - started;
          const counts: Record<string, number> = {};
          for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
          assert.deepEqual(counts, { SERVER_BUSY: FLOOD - FLOOD_ADMITTED, IDLE_TIMEOUT: FLOOD_ADMITTED });
          assert.ok(elapsed < 20_000, `${FLOOD} connections took ${Math.round(elapsed)} ms`);
          await untilEvent(server, "disconnect", () => gone.count() >= FLOOD_ADMITTED, 15_000);
          gone.off();
        },
      );
    },
  );

  test(
    "maxConnectionsPerIp: the 4th connection from one address gets SERVER_BUSY, another address is served",
    {
      timeout: 15_000,
    },
    async () => {
      await withServer({ maxConnectionsPerIp: 3 }, async ({ port, server }) => {
        const gone = countDisconnects(server);
        const held = await Promise.all([1, 2, 3].map(() => RawClient.connect(port)));
        await Promise.all(held.map((c) => c.handshake()));
        const fourth = await RawClient.connect(port);
        const e = await fourth.expectError("SERVER_BUSY");
        assert.match(e.message, /127\.0\.0\.1/);
        await fourth.waitClosed();
        // The whole of 127.0.0.0/8 is loopback: a second source address is a second "IP".
        const other = await RawClient.connect(port, { localAddress: "127.0.0.2" });
        await other.handshake();
        assert.equal(server.connections().filter((c) => c.peer.startsWith("127.0.0.2:")).length, 1);
        await Promise.all([...held, other].map((c) => c.destroy()));
        await untilEvent(server, "disconnect", () => gone.count() >= 4);
        gone.off();
      });
    },
  );

  test("refused connections do not count against the limit once gone", { timeout: 15_000 }, async () => {
    await withServer({ maxConnections: 2 }, async ({ port, server }) => {
      const gone = countDisconnects(server);
      for (let round = 0; round < 3; round++) {
        const a = await RawClient.connect(port);
        const b = await RawClient.connect(port);
        await a.handshake();
        await b.handshake();
        const c = await RawClient.connect(port);
        await c.expectError("SERVER_BUSY");
        await c.waitClosed();
        await a.destroy();
        await b.destroy();
        await untilEvent(server, "disconnect", () => gone.count() >= 2 * (round + 1));
      }
      gone.off();
    });
  });
});
