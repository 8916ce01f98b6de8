/**
 * DIGEST_AT_END end to end: `send()` streams a large file before hashing it and
 * gives the SHA-256 in END_DIGEST; small files are offered with their hash;
 * `hashFirst` restores the hash-before-sending behaviour. Resume through the
 * fault proxy (also across a new `send()`, as after a restart of the sender),
 * a source rewritten under the same size and mtime (HASH_MISMATCH, never a
 * splice), and duplicates found at the end.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, utimes, writeFile } from "node:fs/promises";
import { utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { send, type SendEvent, type SendOptions, serve } from "../../mod.ts";
import { FileFlag, FrameType } from "../../src/protocol/constants.ts";
import type { FileMessage } from "../../src/protocol/messages.ts";
import { tapRuntime } from "../../src/load/tap.ts";
import { nodeNetRuntime } from "../../src/runtime/node_net.ts";
import type { Connection, Runtime } from "../../src/runtime/transport.ts";
import { type FaultPlan, FaultProxy } from "../helpers/fault_proxy.ts";
import { sha256File, tempDir } from "../helpers/process.ts";

const CHUNK = 64 * 1024;
const DATA = FrameType.DATA;
const MTIME = new Date(1_700_000_000_000);

let root: { path: string; cleanup: () => Promise<void> };
let caseNo = 0;

before(async () => {
  root = await tempDir("ferry-dae-");
});
after(async () => {
  await root.cleanup();
});

interface Stack {
  dir: string;
  inbox: string;
  server: Awaited<ReturnType<typeof serve>>;
  proxy: FaultProxy;
  close(): Promise<void>;
}

async function stack(
  plans: FaultPlan[] = [],
  serverOptions: { hashFirst?: boolean; onCollision?: "reject" } = {},
): Promise<Stack> {
  const dir = join(root.path, `case-${++caseNo}`);
  const inbox = join(dir, "inbox");
  const server = await serve({
    dir: inbox,
    port: 0,
    hostname: "127.0.0.1",
    minFreeBytes: 0,
    ...serverOptions,
  });
  const proxy = await FaultProxy.start({ port: server.port }, { plans });
  return {
    dir,
    inbox,
    server,
    proxy,
    async close() {
      await proxy.close();
      await server.close({ graceMs: 0 });
    },
  };
}

async function makeFile(dir: string, name: string, size: number): Promise<{ path: string; sha256: string }> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  await writeFile(path, randomBytes(size));
  await utimes(path, MTIME, MTIME);
  return { path, sha256: await sha256File(path) };
}

/** A runtime that records every FILE frame `send()` writes and counts what each socket accepted. */
function watchedRuntime(): { runtime: Runtime; offers: FileMessage[]; conns: Connection[] } {
  const offers: FileMessage[] = [];
  const conns: Connection[] = [];
  const counting: Runtime = {
    name: nodeNetRuntime.name,
    listen: nodeNetRuntime.listen,
    async connect(options) {
      const conn = await nodeNetRuntime.connect(options);
      conns.push(conn);
      return conn;
    },
  };
  return { runtime: tapRuntime(counting, () => ({ onFile: (f) => offers.push(f) })), offers, conns };
}

async function sendTo(
  address: string,
  files: string[],
  options: SendOptions = {},
): Promise<{
  result: Awaited<ReturnType<typeof send>>;
  events: SendEvent[];
  offers: FileMessage[];
  conns: Connection[];
}> {
  const { runtime, offers, conns } = watchedRuntime();
  const events: SendEvent[] = [];
  const onEvent = options.onEvent;
  const result = await send(address, files, {
    chunkSize: CHUNK,
    backoffBaseMs: 20,
    backoffMaxMs: 200,
    runtime,
    ...options,
    onEvent: (e) => {
      events.push(e);
      onEvent?.(e);
    },
  });
  return { result, events, offers, conns };
}

async function visible(inbox: string): Promise<string[]> {
  return (await readdir(inbox)).filter((f) => !f.startsWith(".")).sort();
}

async function partials(inbox: string): Promise<string[]> {
  return (await readdir(join(inbox, ".ferry", "partial"))).filter((f) => !f.endsWith(".tmp"));
}

async function receiptLines(inbox: string): Promise<number> {
  const text = await readFile(join(inbox, ".ferry", "receipts.ndjson"), "utf8").catch(() => "");
  return text.split("\n").filter((l) => l.trim() !== "").length;
}

const flagsOf = (offers: FileMessage[], name: string) =>
  offers.filter((o) => o.name === name).map((o) => o.flags);

describe("digest at end: transfers", () => {
  test("a large file streams with DIGEST_AT_END and a source key; a small one is offered with its hash", {
    timeout: 20_000,
  }, async () => {
    const s = await stack();
    try {
      const big = await makeFile(s.dir, "big.bin", 20 * CHUNK + 123);
      const small = await makeFile(s.dir, "small.bin", CHUNK);
      const { result, events, offers } = await sendTo(s.proxy.address, [big.path, small.path]);
      assert.deepEqual(result.failures, []);
      const byName = result.receipts.map((r) => [r.name, r.sha256, r.duplicate]).sort();
      assert.deepEqual(byName, [["big.bin", big.sha256, false], ["small.bin", small.sha256, false]]);
      assert.equal(await sha256File(join(s.inbox, "big.bin")), big.sha256);
      assert.equal(await sha256File(join(s.inbox, "small.bin")), small.sha256);
      // The wire: the large file carried a source key, not its hash; the small one its hash.
      assert.deepEqual(flagsOf(offers, "big.bin"), [FileFlag.RESUME | FileFlag.DIGEST_AT_END]);
      const bigOffer = offers.find((o) => o.name === "big.bin")!;
      assert.notEqual(Buffer.from(bigOffer.sha256).toString("hex"), big.sha256);
      assert.deepEqual(flagsOf(offers, "small.bin"), [FileFlag.RESUME]);
      assert.equal(
        Buffer.from(offers.find((o) => o.name === "small.bin")!.sha256).toString("hex"),
        small.sha256,
      );
      // Sizes in the start event come from stat, before anything was read.
      const start = events.find((e) => e.type === "start") as { bytes: number; files: number };
      assert.deepEqual([start.files, start.bytes], [2, 21 * CHUNK + 123]);
      assert.equal(result.bytesSent, 21 * CHUNK + 123);
      assert.deepEqual(await partials(s.inbox), []);
    } finally {
      await s.close();
    }
  });

  test(
    "hashFirst offers every file with its hash, as without the capability",
    { timeout: 20_000 },
    async () => {
      const s = await stack();
      try {
        const big = await makeFile(s.dir, "big.bin", 10 * CHUNK);
        const { result, offers } = await sendTo(s.proxy.address, [big.path], { hashFirst: true });
        assert.deepEqual(result.failures, []);
        assert.equal(result.receipts[0].sha256, big.sha256);
        assert.deepEqual(flagsOf(offers, "big.bin"), [FileFlag.RESUME]);
        assert.equal(Buffer.from(offers[0].sha256).toString("hex"), big.sha256);
        assert.equal(await sha256File(join(s.inbox, "big.bin")), big.sha256);
      } finally {
        await s.close();
      }
    },
  );

  test(
    "a server with hashFirst does not announce DIGEST_AT_END: the sender hashes first, a re-send moves no byte",
    { timeout: 20_000 },
    async () => {
      const s = await stack([], { hashFirst: true });
      try {
        const big = await makeFile(s.dir, "big.bin", 10 * CHUNK);
        const first = await sendTo(s.proxy.address, [big.path]);
        assert.deepEqual(first.result.failures, []);
        assert.deepEqual(flagsOf(first.offers, "big.bin"), [FileFlag.RESUME]);
        assert.equal(Buffer.from(first.offers[0].sha256).toString("hex"), big.sha256);
        assert.equal(first.result.bytesSent, 10 * CHUNK);
        const again = await sendTo(s.proxy.address, [big.path]);
        assert.deepEqual(again.result.failures, []);
        assert.equal(again.result.receipts[0].duplicate, true);
        assert.equal(again.result.bytesSent, 0, "the duplicate was recognised before any byte moved");
        assert.deepEqual((await readdir(s.inbox)).filter((n) => n !== ".ferry"), ["big.bin"]);
      } finally {
        await s.close();
      }
    },
  );

  test(
    "with --on-collision reject, an identical re-send is DUPLICATE; another size is NAME_EXISTS before any byte",
    { timeout: 20_000 },
    async () => {
      const s = await stack([], { onCollision: "reject" });
      try {
        const big = await makeFile(s.dir, "big.bin", 10 * CHUNK);
        assert.deepEqual((await sendTo(s.proxy.address, [big.path])).result.failures, []);
        const again = await sendTo(s.proxy.address, [big.path]);
        assert.deepEqual(again.result.failures.map((f) => f.error.code), []);
        assert.equal(again.result.receipts[0].duplicate, true);
        assert.deepEqual(flagsOf(again.offers, "big.bin"), [FileFlag.RESUME | FileFlag.DIGEST_AT_END]);
        // Same name, another size: it cannot be the same file, so it is refused before its bytes.
        const other = join(s.dir, "other");
        await mkdir(other, { recursive: true });
        const bigger = await makeFile(other, "big.bin", 11 * CHUNK);
        const refused = await sendTo(s.proxy.address, [bigger.path]);
        assert.deepEqual(refused.result.failures.map((f) => f.error.code), ["NAME_EXISTS"]);
        assert.equal(refused.result.bytesSent, 0);
        assert.equal(await sha256File(join(s.inbox, "big.bin")), big.sha256);
      } finally {
        await s.close();
      }
    },
  );

  test("an empty file and a file of exactly one chunk", { timeout: 20_000 }, async () => {
    const s = await stack();
    try {
      const empty = await makeFile(s.dir, "empty.bin", 0);
      const one = await makeFile(s.dir, "one.bin", CHUNK + 1);
      const { result, offers } = await sendTo(s.proxy.address, [empty.path, one.path]);
      assert.deepEqual(result.failures, []);
      assert.equal(await sha256File(join(s.inbox, "empty.bin")), empty.sha256);
      assert.equal(await sha256File(join(s.inbox, "one.bin")), one.sha256);
      assert.deepEqual(flagsOf(offers, "empty.bin"), [FileFlag.RESUME]);
      assert.deepEqual(flagsOf(offers, "one.bin"), [FileFlag.RESUME | FileFlag.DIGEST_AT_END]);
    } finally {
      await s.close();
    }
  });
});

describe("digest at end: duplicates", () => {
  test("an identical re-send is recognised at END_DIGEST: DUPLICATE, no copy, nothing kept", {
    timeout: 20_000,
  }, async () => {
    const s = await stack();
    try {
      const big = await makeFile(s.dir, "photo.jpg.bin", 12 * CHUNK);
      const first = await sendTo(s.proxy.address, [big.path]);
      assert.deepEqual(first.result.failures, []);
      const stored = first.result.receipts[0].storedName;
      assert.equal(await receiptLines(s.inbox), 1);

      const again = await sendTo(s.proxy.address, [big.path]);
      assert.deepEqual(again.result.failures, []);
      const r = again.result.receipts[0];
      assert.equal(r.duplicate, true);
      assert.equal(r.storedName, stored);
      assert.equal(r.sha256, big.sha256);
      // The bytes went over the wire (the server could not know before the end) …
      assert.equal(again.result.bytesSent, 12 * CHUNK);
      assert.deepEqual(flagsOf(again.offers, "photo.jpg.bin"), [FileFlag.RESUME | FileFlag.DIGEST_AT_END]);
      // … but nothing new was stored: no "photo.jpg (1).bin", no partial, no new receipt line.
      assert.deepEqual(await visible(s.inbox), ["photo.jpg.bin"]);
      assert.deepEqual(await partials(s.inbox), []);
      assert.equal(await receiptLines(s.inbox), 1);

      // With hashFirst the duplicate is found before a byte moves.
      const hashed = await sendTo(s.proxy.address, [big.path], { hashFirst: true });
      assert.equal(hashed.result.receipts[0].duplicate, true);
      assert.equal(hashed.result.bytesSent, 0);
      assert.deepEqual(await visible(s.inbox), ["photo.jpg.bin"]);
    } finally {
      await s.close();
    }
  });

  test("a small file's duplicate is still found before sending", { timeout: 20_000 }, async () => {
    const s = await stack();
    try {
      const small = await makeFile(s.dir, "note.txt", 1000);
      await sendTo(s.proxy.address, [small.path]);
      const again = await sendTo(s.proxy.address, [small.path]);
      assert.equal(again.result.receipts[0].duplicate, true);
      assert.equal(again.result.bytesSent, 0);
      assert.deepEqual(await visible(s.inbox), ["note.txt"]);
    } finally {
      await s.close();
    }
  });

  test("different content under the same name is kept as a copy, not taken for a duplicate", {
    timeout: 20_000,
  }, async () => {
    const s = await stack();
    try {
      const a = await makeFile(join(s.dir, "a"), "same.bin", 8 * CHUNK);
      const b = await makeFile(join(s.dir, "b"), "same.bin", 8 * CHUNK);
      await sendTo(s.proxy.address, [a.path]);
      const second = await sendTo(s.proxy.address, [b.path]);
      assert.equal(second.result.receipts[0].duplicate, false);
      assert.equal(second.result.receipts[0].storedName, "same (1).bin");
      assert.equal(await sha256File(join(s.inbox, "same (1).bin")), b.sha256);
    } finally {
      await s.close();
    }
  });
});

describe("digest at end: resume", () => {
  const SIZE = 4 * 1024 * 1024; // 64 chunks

  test("a cut mid-file resumes from the durable offset; the sender re-hashes the kept prefix", {
    timeout: 20_000,
  }, async () => {
    const s = await stack([{ cutAfter: { frameType: DATA, nth: 33, offset: 17 + CHUNK / 2 } }]);
    try {
      const src = await makeFile(s.dir, "cut.bin", SIZE);
      const { result, events, offers, conns } = await sendTo(s.proxy.address, [src.path]);
      assert.deepEqual(result.failures, []);
      assert.equal(result.receipts[0].sha256, src.sha256);
      assert.equal(await sha256File(join(s.inbox, "cut.bin")), src.sha256);
      // Every offer carried the same source key with DIGEST_AT_END (a reconnect that beats the server's
      // release of the old connection gets FILE_BUSY and offers once more).
      assert.ok(offers.length >= 2, `${offers.length} offers`);
      assert.ok(offers.every((o) => o.flags === (FileFlag.RESUME | FileFlag.DIGEST_AT_END)));
      for (const o of offers) assert.deepEqual(o.sha256, offers[0].sha256);
      const offsets = events.filter((e) => e.type === "file").map((e) => (e as { offset: number }).offset);
      assert.deepEqual(offsets, [0, 32 * CHUNK]);
      const resent = result.bytesSent - SIZE;
      const inFlight = conns[0].bytesWritten - s.proxy.connections[0].up.forwarded;
      assert.ok(resent >= 0 && resent <= CHUNK + inFlight, `resent ${resent}, in flight ${inFlight}`);
      assert.deepEqual(await partials(s.inbox), []);
    } finally {
      await s.close();
    }
  });

  test("a new send() of the unchanged file (as after a sender restart) resumes too", {
    timeout: 20_000,
  }, async () => {
    const s = await stack([{ cutAfter: { frameType: DATA, nth: 21, offset: 2 } }]);
    try {
      const src = await makeFile(s.dir, "restart.bin", SIZE);
      // The first sender gives up at the cut.
      await assert.rejects(
        sendTo(s.proxy.address, [src.path], { retries: 0 }),
        (e: Error & { code?: string }) => e.code === "CONNECTION_FAILED",
      );
      // A fresh sender: the same source key finds the partial.
      const { result, events } = await sendTo(s.proxy.address, [src.path]);
      assert.deepEqual(result.failures, []);
      const offsets = events.filter((e) => e.type === "file").map((e) => (e as { offset: number }).offset);
      assert.deepEqual(offsets, [20 * CHUNK]);
      assert.equal(result.bytesSent, SIZE - 20 * CHUNK);
      assert.equal(await sha256File(join(s.inbox, "restart.bin")), src.sha256);
    } finally {
      await s.close();
    }
  });

  test("content rewritten under the same size and mtime: resumed, then HASH_MISMATCH, nothing stored", {
    timeout: 20_000,
  }, async () => {
    const s = await stack([{ cutAfter: { frameType: DATA, nth: 8, offset: "end" } }]);
    try {
      const src = await makeFile(s.dir, "sneaky.bin", 2 * 1024 * 1024);
      const fresh = randomBytes(2 * 1024 * 1024);
      const { result, events } = await sendTo(s.proxy.address, [src.path], {
        onEvent: (e) => {
          if (e.type === "reconnect" && e.attempt === 1) {
            // New bytes, same size, and the mtime put back: the identity the sender sees is unchanged.
            writeFileSync(src.path, fresh);
            utimesSync(src.path, MTIME, MTIME);
          }
        },
      });
      const offsets = events.filter((e) => e.type === "file").map((e) => (e as { offset: number }).offset);
      assert.deepEqual(offsets, [0, 8 * CHUNK], "the partial was resumed");
      assert.equal(result.receipts.length, 0);
      assert.deepEqual(result.failures.map((f) => f.error.code), ["HASH_MISMATCH"]);
      // Never spliced: nothing under the name, and the partial is gone.
      assert.deepEqual(await visible(s.inbox), []);
      assert.deepEqual(await partials(s.inbox), []);

      // The next send starts over and stores the new content.
      const again = await sendTo(s.proxy.address, [src.path]);
      assert.deepEqual(again.result.failures, []);
      assert.equal(await sha256File(join(s.inbox, "sneaky.bin")), await sha256File(src.path));
    } finally {
      await s.close();
    }
  });
});
