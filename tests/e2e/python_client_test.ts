/**
 * examples/python/ferry_send.py, a client written from docs/PROTOCOL.md alone,
 * against a real server.ts process on the runtime running this test (so
 * `deno test` and `bun test` between them cover both servers), plus a
 * scripted fake server for PING answering and the integrity exit code.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import * as net from "node:net";
import { join } from "node:path";
import {
  CURRENT_RUNTIME,
  ROOT,
  runCommand,
  type RunResult,
  type ServerProcess,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";
import { FaultProxy } from "../helpers/fault_proxy.ts";
import { Channel } from "../../src/protocol/channel.ts";
import { Capability, FrameType } from "../../src/protocol/constants.ts";
import type { Message } from "../../src/protocol/messages.ts";
import { nodeNetRuntime } from "../../src/runtime/node_net.ts";

const SCRIPT = join(ROOT, "examples", "python", "ferry_send.py");
const PYTHON = (() => {
  const r = spawnSync("python3", ["--version"], { encoding: "utf8" });
  return r.status === 0 ? "python3" : undefined;
})();
const SKIP = PYTHON ? false : "python3 is not installed: skipping the Python client tests";
if (!PYTHON) console.log(`tests/e2e/python_client_test.ts: ${SKIP}`);

function python(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return runCommand(PYTHON!, [SCRIPT, ...args], { env: { FERRY_TOKEN: "", ...env }, timeoutMs: 60_000 });
}

/** The `--json` events a run printed. */
function events(r: RunResult): Array<Record<string, unknown>> {
  return r.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

describe(`Python client against a ${CURRENT_RUNTIME} server`, { skip: SKIP }, () => {
  let tmp: { path: string; cleanup: () => Promise<void> };
  let plain: ServerProcess;
  let authed: ServerProcess;
  let plainInbox: string;
  let authedInbox: string;
  let src: string;
  const TOKEN = "pässwörd 🔑";

  before(async () => {
    tmp = await tempDir("ferry-py-");
    src = join(tmp.path, "src");
    plainInbox = join(tmp.path, "inbox");
    authedInbox = join(tmp.path, "inbox-auth");
    await mkdir(join(src, "album", "2024"), { recursive: true });
    await writeFile(join(src, "big.bin"), randomBytes(1024 * 1024 + 17));
    await writeFile(join(src, "album", "a.txt"), "a\n");
    await writeFile(join(src, "album", "2024", "b.bin"), randomBytes(70_000));
    await writeFile(join(tmp.path, "token"), TOKEN + "\n");
    [plain, authed] = await Promise.all([
      startServer(CURRENT_RUNTIME, ["--dir", plainInbox, "--on-collision", "reject"]),
      startServer(CURRENT_RUNTIME, ["--dir", authedInbox], { env: { FERRY_TOKEN: TOKEN } }),
    ]);
  });

  after(async () => {
    await Promise.all([plain?.stop(), authed?.stop()]);
    await tmp?.cleanup();
  });

  test(
    "--self-test: encodes and decodes every vector of docs/vectors.json",
    { timeout: 30_000 },
    async () => {
      const r = await python(["--self-test"]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(
        r.stdout,
        /self-test: \d+ vectors, \d+ invalid streams, 2 auth examples, \d+ session frames: ok/,
      );
    },
  );

  test("a file, a folder and a message arrive intact", { timeout: 30_000 }, async () => {
    const r = await python([
      "--json",
      join(src, "big.bin"),
      join(src, "album"),
      "-m",
      "from Python ✓",
      `${plain.host}:${plain.port}`,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const done = events(r).filter((e) => e.type === "done");
    assert.deepEqual(done.map((e) => e.name).sort(), ["album/2024/b.bin", "album/a.txt", "big.bin"]);
    for (const [name, local] of [["big.bin", "big.bin"], ["album/a.txt", "album/a.txt"]]) {
      const expected = await sha256File(join(src, local));
      assert.equal(await sha256File(join(plainInbox, name)), expected);
      assert.equal(done.find((e) => e.name === name)!.sha256, expected);
    }
    assert.equal(
      await sha256File(join(plainInbox, "album", "2024", "b.bin")),
      await sha256File(join(src, "album", "2024", "b.bin")),
    );
    const messages = await readFile(join(plainInbox, ".ferry", "messages.ndjson"), "utf8");
    assert.ok(messages.split("\n").some((l) => l && JSON.parse(l).text === "from Python ✓"));
  });

  test("a name the server refuses exits 4 with the error code", { timeout: 30_000 }, async () => {
    const other = join(tmp.path, "a.txt");
    await writeFile(other, "different content\n");
    const first = await python([other, `${plain.host}:${plain.port}`]);
    const clash = join(tmp.path, "clash");
    await mkdir(clash, { recursive: true });
    await writeFile(join(clash, "a.txt"), "other bytes, same name\n");
    const r = await python([join(clash, "a.txt"), `${plain.host}:${plain.port}`]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stderr, /FAILED a\.txt: NAME_EXISTS/);
  });

  test("token auth: FERRY_TOKEN and --token-file work, a wrong or missing token exits 4", {
    timeout: 30_000,
  }, async () => {
    const target = `${authed.host}:${authed.port}`;
    const file = join(src, "album", "a.txt");
    const viaEnv = await python([file, target], { FERRY_TOKEN: TOKEN });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    const viaFile = await python(["--token-file", join(tmp.path, "token"), "-m", "authed", target]);
    assert.equal(viaFile.code, 0, viaFile.stderr);
    const wrong = await python([file, target], { FERRY_TOKEN: "wrong" });
    assert.equal(wrong.code, 4);
    assert.match(wrong.stderr, /AUTH_FAILED/);
    const missing = await python([file, target]);
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /AUTH_REQUIRED: Server requires a token/);
    assert.equal(await sha256File(join(authedInbox, "a.txt")), await sha256File(file));
  });

  test("--clients 20: twenty concurrent clients, each file under its own prefix", {
    timeout: 60_000,
  }, async () => {
    const r = await python(
      [
        "--clients",
        "20",
        "--json",
        "--token-file",
        join(tmp.path, "token"),
        join(src, "album"),
        `${authed.host}:${authed.port}`,
      ],
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const summaries = events(r).filter((e) => e.type === "summary");
    assert.equal(summaries.length, 20);
    assert.ok(
      summaries.every((s) => s.exit === 0 && s.delivered === 2 && s.files === 2),
      JSON.stringify(summaries),
    );
    const a = await sha256File(join(src, "album", "a.txt"));
    const b = await sha256File(join(src, "album", "2024", "b.bin"));
    for (let i = 0; i < 20; i++) {
      assert.equal(await sha256File(join(authedInbox, `c${i}-album`, "a.txt")), a);
      assert.equal(await sha256File(join(authedInbox, `c${i}-album`, "2024", "b.bin")), b);
    }
  });

  test("a connection cut mid-file: reconnects and resumes from the server's offset", {
    timeout: 60_000,
  }, async () => {
    // Cut 100 bytes into the 5th DATA frame: the server holds 4 whole 64 KiB chunks.
    const proxy = await FaultProxy.start({ port: plain.port }, {
      plans: [{ cutAfter: { frameType: FrameType.DATA, nth: 5, offset: 100 } }],
    });
    try {
      const file = join(tmp.path, "resume.bin");
      await writeFile(file, randomBytes(1024 * 1024));
      const r = await python([
        "--json",
        "--chunk-size",
        "64K",
        "--backoff-base",
        "0.05",
        file,
        proxy.address,
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const ev = events(r);
      assert.ok(ev.some((e) => e.type === "reconnect"), "reconnected after the cut");
      const done = ev.find((e) => e.type === "done")!;
      const resumedFrom = done.resumedFrom as number;
      assert.ok(resumedFrom > 0 && resumedFrom <= 4 * 65536, `resumed from ${resumedFrom}`);
      assert.equal(done.sha256, await sha256File(file));
      assert.equal(await sha256File(join(plainInbox, "resume.bin")), await sha256File(file));
      assert.ok(proxy.connections.length >= 2);
      assert.equal(proxy.connections[0].fault?.kind, "cut");
    } finally {
      await proxy.close();
    }
  });

  test("usage errors exit 2, an unreachable server exits 3", { timeout: 30_000 }, async () => {
    assert.equal((await python([])).code, 2);
    const missing = await python([join(tmp.path, "nope.bin"), "127.0.0.1:9"]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no such file or folder/);
    assert.equal((await python([join(src, "album"), "127.0.0.1:notaport"])).code, 2);
    // A port that was free a moment ago: connection refused, on loopback only.
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const r = await python([
      "--retries",
      "1",
      "--backoff-base",
      "0.01",
      join(src, "album", "a.txt"),
      `127.0.0.1:${port}`,
    ]);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(r.stderr, /CONNECTION_FAILED/);
  });

  test("answers PING with the same 64-bit token, and a wrong RECEIPT hash exits 5", {
    timeout: 30_000,
  }, async () => {
    const TOKEN64 = 0xfedcba9876543210n; // above 2^53: tokens use the whole u64 range
    const seen: Message[] = [];
    let failure: unknown;
    const listener = await nodeNetRuntime.listen({ hostname: "127.0.0.1", port: 0 }, (conn) => {
      const ch = new Channel(conn, { maxFrameSize: 1 << 20 });
      (async () => {
        const hello = await ch.receive();
        assert.equal(hello?.kind, "hello");
        await ch.send({
          kind: "welcome",
          version: 1,
          capabilities: Capability.RESUME | Capability.MESSAGES | Capability.HEARTBEAT,
          maxFrameSize: 1 << 20,
          nonce: new Uint8Array(0),
        });
        await ch.send({ kind: "ping", token: TOKEN64 });
        let file: Extract<Message, { kind: "file" }> | undefined;
        let pong = false;
        while (!file || !pong) {
          const m = (await ch.receive())!;
          seen.push(m);
          if (m.kind === "file") file = m;
          if (m.kind === "pong") pong = m.token === TOKEN64;
        }
        await ch.send({ kind: "accept", id: file.id, offset: 0 });
        for (;;) {
          const m = (await ch.receive())!;
          if (m.kind === "end") break;
        }
        await ch.send({
          kind: "receipt",
          id: file.id,
          flags: 0,
          size: file.size,
          sha256: new Uint8Array(32).fill(0xab),
          storedName: file.name,
        });
        await ch.receive(); // the client closes
      })().catch((e) => failure = e).finally(() => conn.close());
    });
    try {
      const r = await python([join(src, "album", "a.txt"), `127.0.0.1:${listener.port}`]);
      assert.equal(failure, undefined, String(failure));
      assert.ok(seen.some((m) => m.kind === "pong" && m.token === TOKEN64), "PONG echoed the token");
      assert.equal(r.code, 5, r.stdout + r.stderr);
      assert.match(r.stderr, /HASH_MISMATCH/);
    } finally {
      await listener.close();
    }
  });
});
