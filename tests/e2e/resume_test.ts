/**
 * Resume under faults, in process: `serve()` and `send()` from mod.ts talk
 * through the fault proxy, which cuts, resets, stalls and slices the
 * connection at exact points of the frame stream.
 *
 * "Resent" is `result.bytesSent - size`. It must stay within one chunk plus
 * the bytes in flight at the cut, measured as what the sender's socket
 * accepted on the faulted connection minus what the proxy forwarded to the
 * server — never the whole file.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, utimes, writeFile } from "node:fs/promises";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  type ConnectionInfo,
  send,
  type SendEvent,
  type SendOptions,
  serve,
  type ServerOptions,
} from "../../mod.ts";
import { FileFlag, FrameType } from "../../src/protocol/constants.ts";
import { encodeMessage, type Message } from "../../src/protocol/messages.ts";
import { nodeNetRuntime } from "../../src/runtime/node_net.ts";
import type { Connection, Runtime } from "../../src/runtime/transport.ts";
import { type FaultPlan, FaultProxy, type FaultProxyOptions } from "../helpers/fault_proxy.ts";
import { sha256File, tempDir } from "../helpers/process.ts";

const CHUNK = 64 * 1024;
/** Frame header (5) + DATA prefix (id u32 + offset u64). */
const DATA_OVERHEAD = 5 + 12;
const DATA = FrameType.DATA;

let root: { path: string; cleanup: () => Promise<void> };
let caseNo = 0;

before(async () => {
  root = await tempDir("ferry-resume-");
});
after(async () => {
  await root.cleanup();
});

/** Prints measurements when FERRY_TEST_REPORT=1. */
function report(line: string): void {
  if (process.env.FERRY_TEST_REPORT === "1") console.log(`[resume] ${line}`);
}

/** Wraps node:net so the test can read what the sender's sockets accepted. */
function countingRuntime(): { runtime: Runtime; conns: Connection[] } {
  const conns: Connection[] = [];
  return {
    conns,
    runtime: {
      name: nodeNetRuntime.name,
      listen: nodeNetRuntime.listen,
      async connect(options) {
        const conn = await nodeNetRuntime.connect(options);
        conns.push(conn);
        return conn;
      },
    },
  };
}

interface Stack {
  dir: string;
  inbox: string;
  server: Awaited<ReturnType<typeof serve>>;
  proxy: FaultProxy;
  disconnects: Array<ConnectionInfo & { code?: string }>;
  /** Resolves with the disconnect record of server connection `id` (1-based). */
  disconnected(id: number): Promise<ConnectionInfo & { code?: string }>;
  close(): Promise<void>;
}

async function stack(
  server: Partial<ServerOptions> = {},
  proxy: FaultProxyOptions = {},
): Promise<Stack> {
  const dir = join(root.path, `case-${++caseNo}`);
  const inbox = join(dir, "inbox");
  const srv = await serve({ dir: inbox, port: 0, ...server });
  const disconnects: Stack["disconnects"] = [];
  const waiters = new Map<number, (d: ConnectionInfo & { code?: string }) => void>();
  srv.on("disconnect", (c) => {
    const record = { ...c, code: (c.reason as { code?: string } | undefined)?.code };
    disconnects.push(record);
    waiters.get(c.id)?.(record);
  });
  const px = await FaultProxy.start({ port: srv.port }, proxy);
  return {
    dir,
    inbox,
    server: srv,
    proxy: px,
    disconnects,
    disconnected(id) {
      const seen = disconnects.find((d) => d.id === id);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.set(id, resolve));
    },
    async close() {
      await px.close();
      await srv.close({ graceMs: 0 });
    },
  };
}

async function makeFile(dir: string, name: string, size: number): Promise<{ path: string; sha256: string }> {
  const path = join(dir, name);
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dir, { recursive: true });
  await writeFile(path, randomBytes(size));
  return { path, sha256: await sha256File(path) };
}

async function sendThrough(
  s: Stack,
  files: string[],
  options: SendOptions = {},
): Promise<{ result: Awaited<ReturnType<typeof send>>; events: SendEvent[]; conns: Connection[] }> {
  const { runtime, conns } = countingRuntime();
  const events: SendEvent[] = [];
  const onEvent = options.onEvent;
  const result = await send(s.proxy.address, files, {
    chunkSize: CHUNK,
    backoffBaseMs: 50,
    backoffMaxMs: 400,
    runtime,
    ...options,
    onEvent: (e) => {
      events.push(e);
      onEvent?.(e);
    },
  });
  return { result, events, conns };
}

/** Files left in the inbox's partial directory. */
async function partials(inbox: string): Promise<string[]> {
  return (await readdir(join(inbox, ".ferry", "partial"))).filter((f) => !f.endsWith(".tmp"));
}

describe("resume after a cut", () => {
  const SIZE = 4 * 1024 * 1024; // 64 chunks
  const CHUNKS = SIZE / CHUNK;
  const cases: Array<{ name: string; plan: FaultPlan; offset: number; exact?: boolean }> = [
    {
      name: "early: inside the first DATA payload",
      plan: { cutAfter: { frameType: DATA, nth: 1, offset: DATA_OVERHEAD + 1000 } },
      offset: 0,
      exact: true,
    },
    {
      name: "inside the FILE frame header",
      plan: { cutAfter: { frameType: FrameType.FILE, nth: 1, offset: 3 } },
      offset: 0,
      exact: true,
    },
    {
      name: "mid-file, inside a DATA payload",
      plan: { cutAfter: { frameType: DATA, nth: 33, offset: DATA_OVERHEAD + CHUNK / 2 } },
      offset: 32 * CHUNK,
      exact: true,
    },
    {
      name: "inside a DATA frame header (2 of 5 bytes)",
      plan: { cutAfter: { frameType: DATA, nth: 21, offset: 2 } },
      offset: 20 * CHUNK,
      exact: true,
    },
    {
      name: "right after the last DATA, before END",
      plan: { cutAfter: { frameType: DATA, nth: CHUNKS, offset: "end" } },
      offset: SIZE,
      exact: true,
    },
    {
      name: "TCP reset mid-file",
      plan: { resetAfter: { frameType: DATA, nth: 40, offset: 7 } },
      offset: 39 * CHUNK,
    },
  ];

  for (const c of cases) {
    test(c.name, { timeout: 20_000 }, async () => {
      const s = await stack({}, { plans: [c.plan] });
      try {
        const src = await makeFile(s.dir, "cut.bin", SIZE);
        const { result, events, conns } = await sendThrough(s, [src.path]);
        assert.equal(result.failures.length, 0, JSON.stringify(result.failures));
        assert.equal(result.receipts.length, 1);
        assert.equal(result.receipts[0].sha256, src.sha256);
        assert.equal(await sha256File(join(s.inbox, "cut.bin")), src.sha256);
        assert.ok(result.reconnects >= 1);

        const first = s.proxy.connections[0];
        assert.equal(first.fault?.kind, c.plan.resetAfter ? "reset" : "cut");
        const offsets = events.filter((e) => e.type === "file").map((e) => (e as { offset: number }).offset);
        const resumedAt = offsets[offsets.length - 1];
        // What the server process read on the faulted connection.
        const reached = (await s.disconnected(1)).bytesReceived;
        if (c.exact) {
          assert.equal(resumedAt, c.offset, `resumed at ${resumedAt}, expected ${c.offset}`);
          // After a cut the server read exactly what the proxy forwarded.
          assert.equal(reached, first.up.forwarded);
        } else {
          // A RST also throws away what the proxy's kernel had not delivered yet.
          assert.ok(reached <= first.up.forwarded);
          assert.ok(resumedAt <= c.offset && resumedAt % CHUNK === 0, `resumed at ${resumedAt}`);
        }

        const resent = result.bytesSent - SIZE;
        // Bytes the sender's socket took that never reached the server.
        const inFlight = conns[0].bytesWritten - reached;
        assert.ok(inFlight >= 0, `in flight ${inFlight}`);
        assert.ok(resent >= 0);
        assert.ok(resent <= CHUNK + inFlight, `resent ${resent} > chunk ${CHUNK} + in flight ${inFlight}`);
        assert.ok(resent < SIZE, `resent ${resent}: the whole file again`);
        if (c.offset === SIZE) assert.equal(resent, 0, "nothing to resend after the last DATA");
        report(`${c.name}: resumed at ${resumedAt}, in flight ${inFlight}, resent ${resent}`);
        assert.deepEqual(await partials(s.inbox), [], "no partial left after success");
      } finally {
        await s.close();
      }
    });
  }

  test(
    "1-byte slices in both directions, cut inside a header, still deliver",
    { timeout: 20_000 },
    async () => {
      const size = 40 * 1024;
      const s = await stack({}, {
        plans: [{ slice: true, cutAfter: { frameType: DATA, nth: 3, offset: 2 } }],
        defaultPlan: { slice: true },
      });
      try {
        const src = await makeFile(s.dir, "sliced.bin", size);
        const { result, conns } = await sendThrough(s, [src.path], {
          chunkSize: 8 * 1024,
          messages: ["sliced hello"],
        });
        assert.equal(result.failures.length, 0, JSON.stringify(result.failures));
        assert.equal(result.messagesAcked, 1);
        assert.equal(await sha256File(join(s.inbox, "sliced.bin")), src.sha256);
        const inFlight = conns[0].bytesWritten - s.proxy.connections[0].up.forwarded;
        assert.ok(result.bytesSent - size <= 8 * 1024 + inFlight);
        // Every byte, both ways, went out in a write of its own.
        for (const c of s.proxy.connections) {
          assert.ok(c.up.forwarded > 0);
          assert.equal(c.up.writes, c.up.forwarded);
          assert.equal(c.down.writes, c.down.forwarded);
        }
        const log = await readFile(join(s.inbox, ".ferry", "messages.ndjson"), "utf8");
        assert.match(log, /sliced hello/);
      } finally {
        await s.close();
      }
    },
  );

  test(
    "many drops: each connection that makes progress restarts the retry budget",
    { timeout: 30_000 },
    async () => {
      const size = 6 * 1024 * 1024;
      // Every connection is cut after 1 MiB: 7+ connections with only 3 retries.
      const s = await stack({}, { defaultPlan: { cutAfter: 1024 * 1024 } });
      try {
        const src = await makeFile(s.dir, "flaky.bin", size);
        const { result, conns } = await sendThrough(s, [src.path], { retries: 3 });
        assert.equal(result.failures.length, 0);
        assert.equal(await sha256File(join(s.inbox, "flaky.bin")), src.sha256);
        assert.ok(result.reconnects >= 6, `reconnects ${result.reconnects}`);
        let inFlight = 0;
        for (const [i, c] of s.proxy.connections.entries()) {
          assert.equal((await s.disconnected(i + 1)).bytesReceived, c.up.forwarded);
          inFlight += conns[i].bytesWritten - c.up.forwarded;
        }
        const cuts = s.proxy.connections.filter((c) => c.fault).length;
        assert.ok(result.bytesSent - size <= cuts * CHUNK + inFlight);
      } finally {
        await s.close();
      }
    },
  );

  test("gives up with CONNECTION_FAILED when no connection makes progress", { timeout: 20_000 }, async () => {
    // Cut inside the FILE frame every time: the server never accepts anything.
    const s = await stack({}, {
      defaultPlan: { cutAfter: { frameType: FrameType.FILE, nth: 1, offset: 3 } },
    });
    try {
      const src = await makeFile(s.dir, "never.bin", 64 * 1024);
      await assert.rejects(
        sendThrough(s, [src.path], { retries: 2, backoffBaseMs: 5, backoffMaxMs: 20 }),
        (e: Error & { code?: string }) =>
          e.code === "CONNECTION_FAILED" && /after 3 attempts/.test(e.message),
      );
      assert.equal(s.proxy.connections.length, 3);
    } finally {
      await s.close();
    }
  });
});

describe("dead peers and RTT", () => {
  test(
    "a stalled link: PEER_DEAD on both sides, slot freed, sender resumes",
    { timeout: 20_000 },
    async () => {
      const size = 12 * 1024 * 1024; // more than the socket buffers hold, so the stall blocks the sender
      const hb = { heartbeatIntervalMs: 100, heartbeatMisses: 3 };
      const s = await stack(hb, { plans: [{ stallAfter: { frameType: DATA, nth: 10, offset: "end" } }] });
      try {
        const src = await makeFile(s.dir, "stall.bin", size);
        let stalledAt = 0;
        s.proxy.connection(0).then((c) => c.faulted()).then(() => stalledAt = performance.now());
        let deadAt = 0;
        const { result, events, conns } = await sendThrough(s, [src.path], {
          ...hb,
          onEvent: (e) => {
            if (e.type === "reconnect" && e.code === "PEER_DEAD" && !deadAt) deadAt = performance.now();
          },
        });
        assert.equal(await sha256File(join(s.inbox, "stall.bin")), src.sha256);

        // The sender noticed within a few intervals of the stall, and said why.
        const reconnect = events.find((e) => e.type === "reconnect") as { code: string; reason: string };
        assert.equal(reconnect.code, "PEER_DEAD", reconnect.reason);
        const detectMs = deadAt - stalledAt;
        assert.ok(detectMs >= 250 && detectMs < 3_000, `sender detected the dead peer after ${detectMs} ms`);

        // The server declared the stalled connection dead too, and freed its slot.
        const gone = await s.disconnected(1);
        assert.equal(gone.code, "PEER_DEAD");
        await s.disconnected(2);
        await new Promise((r) => setImmediate(r));
        assert.deepEqual(s.server.connections(), []);

        const resent = result.bytesSent - size;
        const inFlight = conns[0].bytesWritten - s.proxy.connections[0].up.forwarded;
        assert.ok(resent <= CHUNK + inFlight, `resent ${resent}, in flight ${inFlight}`);
        assert.ok(resent < size - 10 * CHUNK, `resent ${resent}: everything after the stall`);
        report(`stall: detected after ${Math.round(detectMs)} ms, in flight ${inFlight}, resent ${resent}`);
      } finally {
        await s.close();
      }
    },
  );

  test("RTT: the server's connection table shows rttMs and the sender emits rtt events", {
    timeout: 20_000,
  }, async () => {
    // A large file over plain loopback with a short interval: the socket buffers ahead of a PING
    // drain in milliseconds, so PONGs come back while the transfer is still running. (Over a
    // throttled link the PONG queues behind all buffered data and can lose the race with the
    // RECEIPT that ends the send.)
    const size = 32 * 1024 * 1024;
    const hb = { heartbeatIntervalMs: 20, heartbeatMisses: 100 };
    const s = await stack(hb, {});
    try {
      const src = await makeFile(s.dir, "rtt.bin", size);
      const serverRtts: number[] = [];
      const { result, events } = await sendThrough(s, [src.path], {
        ...hb,
        onEvent: () => {
          for (const c of s.server.connections()) if (c.rttMs !== undefined) serverRtts.push(c.rttMs);
        },
      });
      assert.equal(result.failures.length, 0);
      const rtts = events.filter((e) => e.type === "rtt").map((e) => (e as { ms: number }).ms);
      assert.ok(rtts.length >= 1, "the sender emitted no rtt event");
      assert.ok(rtts.every((ms) => Number.isFinite(ms) && ms >= 0), String(rtts));
      assert.ok(serverRtts.length >= 1, "the server's connection table never showed rttMs");
      assert.ok(serverRtts.every((ms) => Number.isFinite(ms) && ms >= 0));
    } finally {
      await s.close();
    }
  });
});

describe("resume bookkeeping", () => {
  test("a source changed between attempts restarts from 0 and stores the new content", {
    timeout: 20_000,
  }, async () => {
    const size = 2 * 1024 * 1024;
    const s = await stack({}, { plans: [{ cutAfter: { frameType: DATA, nth: 8, offset: "end" } }] });
    try {
      const src = await makeFile(s.dir, "changing.bin", size);
      const fresh = randomBytes(size);
      const { result, events } = await sendThrough(s, [src.path], {
        onEvent: (e) => {
          if (e.type === "reconnect" && e.attempt === 1) {
            // Same size, new bytes, and a clearly different mtime: only a re-hash can tell.
            writeFileSync(src.path, fresh);
          }
        },
      });
      const newSha = await sha256File(src.path);
      assert.notEqual(newSha, src.sha256);
      assert.equal(result.failures.length, 0, JSON.stringify(result.failures));
      assert.equal(result.receipts[0].sha256, newSha);
      assert.equal(await sha256File(join(s.inbox, "changing.bin")), newSha);
      const offsets = events.filter((e) => e.type === "file").map((e) => (e as { offset: number }).offset);
      assert.equal(offsets[offsets.length - 1], 0, "the changed file must restart at 0");
      assert.ok(result.bytesSent >= size + 8 * CHUNK);
    } finally {
      await s.close();
    }
  });

  test("the same file on two connections: FILE_BUSY for the second, no interleaving", {
    timeout: 20_000,
  }, async () => {
    const size = 2 * 1024 * 1024;
    // The first sender's link stalls mid-file (heartbeats are slow, so it stays open and busy).
    const s = await stack({}, { plans: [{ stallAfter: { frameType: DATA, nth: 5, offset: "end" } }] });
    try {
      const src = await makeFile(s.dir, "twice.bin", size);
      await utimes(src.path, new Date(), new Date(1_700_000_000_000));
      const firstDone = sendThrough(s, [src.path], { retries: 0 });
      const first = await s.proxy.connection(0);
      await first.faulted();

      // The second sender goes straight to the server.
      const events: SendEvent[] = [];
      const second = send(`127.0.0.1:${s.server.port}`, [src.path], {
        chunkSize: CHUNK,
        retries: 10,
        backoffBaseMs: 20,
        backoffMaxMs: 100,
        onEvent: (e) => {
          events.push(e);
          if (e.type === "reconnect" && e.code === "FILE_BUSY") first.resume();
        },
      });
      const [a, b] = await Promise.all([firstDone, second]);
      const busy = events.find((e) => e.type === "reconnect") as { code: string } | undefined;
      assert.equal(busy?.code, "FILE_BUSY");
      assert.equal(a.result.failures.length, 0);
      assert.equal(b.failures.length, 0);
      // The second sender found the finished file: a large file goes with DIGEST_AT_END, so it is
      // recognised at its end (bytes sent, nothing stored twice); with hashFirst it would send none.
      assert.ok(b.bytesSent <= size);
      assert.equal(b.receipts[0].duplicate, true);
      assert.equal(b.receipts[0].storedName, "twice.bin");
      assert.equal(await sha256File(join(s.inbox, "twice.bin")), src.sha256);
      const stored = (await readdir(s.inbox)).filter((f) => !f.startsWith("."));
      assert.deepEqual(stored, ["twice.bin"]);
    } finally {
      await s.close();
    }
  });
});

describe("docs/PROTOCOL.md resume example", () => {
  test("every hex dump of the worked example is byte-exact", async () => {
    const doc = await readFile(new URL("../../docs/PROTOCOL.md", import.meta.url), "utf8");
    const content = new TextEncoder().encode("0123456789abcdef");
    const sha256 = new Uint8Array(createHash("sha256").update(content).digest());
    const expected: Record<string, Message> = {
      data_first: { kind: "data", id: 1, offset: 0, bytes: content.subarray(0, 10) },
      file: {
        kind: "file",
        id: 1,
        flags: FileFlag.RESUME,
        size: 16,
        sha256,
        mtimeMs: 1_700_000_000_000,
        name: "a.txt",
        mime: "",
      },
      accept: { kind: "accept", id: 1, offset: 10 },
      data_resumed: { kind: "data", id: 1, offset: 10, bytes: content.subarray(10) },
      end: { kind: "end", id: 1 },
      receipt: { kind: "receipt", id: 1, flags: 0, size: 16, sha256, storedName: "a.txt" },
    };
    const seen: string[] = [];
    for (const m of doc.matchAll(/<!-- resume-example: ([a-z_]+) -->\n+```text\n([\s\S]*?)\n```/g)) {
      const hex = m[2].split("\n").map((line) => /^((?:[0-9a-f]{2} )*[0-9a-f]{2})/.exec(line)?.[1] ?? "")
        .join(" ");
      const bytes = Uint8Array.from(hex.trim().split(/\s+/), (h) => parseInt(h, 16));
      assert.ok(expected[m[1]], `unknown example block ${m[1]}`);
      assert.deepEqual(bytes, encodeMessage(expected[m[1]]), `block ${m[1]}`);
      seen.push(m[1]);
    }
    assert.deepEqual(seen.sort(), Object.keys(expected).sort());
  });
});
