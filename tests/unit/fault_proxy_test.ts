/** The fault proxy itself: exact cut points, frame points across split headers, stall/resume, slicing. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as net from "node:net";
import { FaultProxy } from "../helpers/fault_proxy.ts";

/** A server that records what each connection sent and echoes nothing. */
let sink: net.Server;
let sinkPort = 0;
interface SinkConn {
  bytes: number[];
  ended: Promise<void>;
}
const received: SinkConn[] = [];
const sinkWaiters = new Map<number, (c: SinkConn) => void>();

/** The sink's connection number `index`, once accepted. */
function sinkConnection(index: number): Promise<SinkConn> {
  if (received[index]) return Promise.resolve(received[index]);
  return new Promise((resolve) => sinkWaiters.set(index, resolve));
}

before(async () => {
  sink = net.createServer({ allowHalfOpen: true }, (socket) => {
    const entry = {
      bytes: [] as number[],
      ended: new Promise<void>((resolve) => socket.on("end", () => resolve())),
    };
    received.push(entry);
    sinkWaiters.get(received.length - 1)?.(entry);
    socket.on("data", (d: Uint8Array) => entry.bytes.push(...d));
    socket.on("error", () => {});
    socket.on("end", () => socket.end());
  });
  await new Promise<void>((r) => sink.listen(0, "127.0.0.1", () => r()));
  sinkPort = (sink.address() as net.AddressInfo).port;
});
after(async () => {
  await new Promise<void>((r) => sink.close(() => r()));
});

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => resolve(s));
    s.on("error", reject);
  });
}

function bytes(n: number, from = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (from + i) % 251);
}

/** A frame: u32 length, u8 type, payload. */
function frame(type: number, payloadLength: number): Uint8Array {
  const f = new Uint8Array(5 + payloadLength);
  new DataView(f.buffer).setUint32(0, payloadLength);
  f[4] = type;
  f.set(bytes(payloadLength, type), 5);
  return f;
}

describe("FaultProxy", () => {
  test(
    "cuts after exactly N client→server bytes; the server sees them, then EOF",
    { timeout: 5_000 },
    async () => {
      const proxy = await FaultProxy.start({ port: sinkPort }, { plans: [{ cutAfter: 1000 }] });
      const index = received.length;
      try {
        const client = await connect(proxy.port);
        const closed = new Promise((r) => client.on("close", r));
        client.on("error", () => {});
        client.write(bytes(5000));
        const conn = await proxy.connection(0);
        assert.deepEqual(await conn.faulted(), { kind: "cut", at: 1000 });
        await closed;
        await conn.closed;
        await (await sinkConnection(index)).ended;
        assert.deepEqual(received[index].bytes, [...bytes(1000)]);
        assert.equal(conn.up.forwarded, 1000);
        assert.ok(conn.up.received >= 1000);
      } finally {
        await proxy.close();
      }
    },
  );

  test(
    "finds a frame point even when the header arrives one byte at a time",
    { timeout: 5_000 },
    async () => {
      // Cut 2 bytes into the header of the 2nd frame of type 0x20.
      const proxy = await FaultProxy.start({ port: sinkPort }, {
        plans: [{ cutAfter: { frameType: 0x20, nth: 2, offset: 2 } }],
      });
      const index = received.length;
      try {
        const client = await connect(proxy.port);
        client.on("error", () => {});
        client.setNoDelay(true);
        const stream = new Uint8Array([
          ...frame(0x10, 3),
          ...frame(0x20, 8),
          ...frame(0x20, 8),
          ...frame(0x20, 8),
        ]);
        const conn = await proxy.connection(0);
        for (let i = 0; i < stream.length && !conn.dead; i++) {
          await new Promise<void>((r) => client.write(stream.subarray(i, i + 1), () => r()));
        }
        await conn.faulted();
        await (await sinkConnection(index)).ended;
        // FILE-like frame (8) + first 0x20 frame (13) + 2 header bytes of the second.
        assert.deepEqual(received[index].bytes, [...stream.subarray(0, 8 + 13 + 2)]);
        client.destroy();
      } finally {
        await proxy.close();
      }
    },
  );

  test("stall holds bytes without closing; resume delivers them in order", { timeout: 5_000 }, async () => {
    const proxy = await FaultProxy.start({ port: sinkPort }, { plans: [{ stallAfter: 10 }] });
    const index = received.length;
    try {
      const client = await connect(proxy.port);
      client.write(bytes(300));
      const conn = await proxy.connection(0);
      await conn.faulted();
      assert.equal(conn.stalled, true);
      assert.equal(conn.up.forwarded, 10);
      conn.resume();
      client.end();
      await (await sinkConnection(index)).ended;
      assert.deepEqual(received[index].bytes, [...bytes(300)]);
      assert.equal(conn.up.forwarded, 300);
    } finally {
      await proxy.close();
    }
  });

  test("slice forwards every byte in a write of its own; counters add up", { timeout: 5_000 }, async () => {
    const proxy = await FaultProxy.start({ port: sinkPort }, { defaultPlan: { slice: true } });
    const index = received.length;
    try {
      const client = await connect(proxy.port);
      client.end(bytes(200));
      await (await sinkConnection(index)).ended;
      const conn = await proxy.connection(0);
      assert.deepEqual(received[index].bytes, [...bytes(200)]);
      assert.equal(conn.up.forwarded, 200);
      assert.equal(conn.up.writes, 200);
      assert.deepEqual(proxy.totals.up, { received: 200, forwarded: 200, writes: 200 });
    } finally {
      await proxy.close();
    }
  });

  test("rejects a bad target port with RangeError", () => {
    assert.throws(() => FaultProxy.start({ port: 0 }), RangeError);
  });
});
