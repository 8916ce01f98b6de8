/**
 * End to end: many senders at once against one real server process. 200
 * concurrent `send()` calls (each its own connection) from this process, 10
 * concurrent send.ts processes, and a client that stalls mid-handshake of a
 * file without holding anyone else up.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { send } from "../../mod.ts";
import { Channel } from "../../src/protocol/channel.ts";
import { Capability, FileFlag, PROTOCOL_VERSION } from "../../src/protocol/constants.ts";
import { nodeNetRuntime } from "../../src/runtime/node_net.ts";
import type { Connection } from "../../src/runtime/transport.ts";
import {
  CURRENT_RUNTIME,
  runSender,
  type ServerProcess,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";
import { jsonLines, OTHER_RUNTIME, sizeOf, writeRandomFile } from "./e2e_util.ts";

const KiB = 1024;

describe(`concurrency (server ${CURRENT_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let server: ServerProcess;
  let inbox: string;
  let slow: Connection;
  let slowClosed = false;

  before(async () => {
    tmp = await tempDir("ferry-e2e-concurrency-");
    inbox = join(tmp.path, "inbox");
    server = await startServer(CURRENT_RUNTIME, ["--dir", inbox]);

    // A client that announces a file, gets ACCEPT, and then sends nothing at all.
    slow = await nodeNetRuntime.connect({ hostname: "127.0.0.1", port: server.port });
    slow.closed.then(() => slowClosed = true);
    const channel = new Channel(slow, { maxFrameSize: 1 << 20 });
    await channel.send({
      kind: "hello",
      version: PROTOCOL_VERSION,
      capabilities: Capability.RESUME | Capability.MESSAGES,
      maxFrameSize: 1 << 20,
    });
    assert.equal((await channel.receive())?.kind, "welcome");
    await channel.send({
      kind: "file",
      id: 1,
      flags: FileFlag.RESUME,
      size: 1 << 20,
      sha256: new Uint8Array(32).fill(7),
      mtimeMs: 0,
      name: "slow.bin",
      mime: "",
    });
    assert.deepEqual(await channel.receive(), { kind: "accept", id: 1, offset: 0 });
  });

  after(async () => {
    slow?.close();
    await server?.stop();
    await tmp?.cleanup();
  });

  test(
    "200 concurrent send() calls, one connection each, all stored intact",
    { timeout: 90_000 },
    async () => {
      const n = 200;
      const sources = Array.from({ length: n }, (_, i) => ({
        path: join(tmp.path, "many", `f${String(i).padStart(3, "0")}.bin`),
        size: 64 * KiB + Math.floor(Math.random() * (192 * KiB + 1)),
      }));
      await Promise.all(sources.map((s) => writeRandomFile(s.path, s.size)));
      const connectsBefore = jsonLines(server.output()).filter((e) => e.event === "connect").length;

      const results = await Promise.all(
        sources.map((s) => send(`127.0.0.1:${server.port}`, [s.path], { retries: 0 })),
      );

      for (const [i, r] of results.entries()) {
        assert.deepEqual(r.failures, [], sources[i].path);
        assert.equal(r.receipts.length, 1);
        assert.equal(r.reconnects, 0);
      }
      for (const s of sources) {
        const name = s.path.slice(s.path.lastIndexOf("/") + 1);
        const expected = await sha256File(s.path);
        assert.equal(await sha256File(join(inbox, name)), expected, name);
        assert.equal(results.find((r) => r.receipts[0].name === name)!.receipts[0].sha256, expected);
      }
      const connects = jsonLines(server.output()).filter((e) => e.event === "connect").length;
      assert.equal(connects - connectsBefore, n, "each send() used its own connection");
      assert.equal(slowClosed, false, "the stalled client is still connected");
    },
  );

  test("10 concurrent send.ts processes on both runtimes", { timeout: 60_000 }, async () => {
    const sources = Array.from({ length: 10 }, (_, i) => join(tmp.path, "procs", `p${i}.bin`));
    await Promise.all(sources.map((p, i) => writeRandomFile(p, 300 * KiB + i * 4099)));
    const runs = await Promise.all(
      sources.map((p, i) => runSender(i % 2 ? OTHER_RUNTIME : CURRENT_RUNTIME, ["--json", p], server)),
    );
    for (const [i, r] of runs.entries()) {
      assert.equal(r.code, 0, `${sources[i]}: ${r.stdout}${r.stderr}`);
      assert.equal(jsonLines(r.stdout).filter((e) => e.type === "done").length, 1);
      assert.equal(await sha256File(join(inbox, `p${i}.bin`)), await sha256File(sources[i]));
    }
    assert.equal(slowClosed, false, "the stalled client is still connected");
    // Its upload is still open: nothing stored under its name, its partial still empty.
    assert.equal(await sizeOf(join(inbox, "slow.bin")), undefined);
  });
});
