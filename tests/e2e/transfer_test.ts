/**
 * End to end: real server.ts and send.ts processes on both runtimes. The
 * server runs on the runtime executing this file and the sender on each
 * runtime, so a `deno test` run plus a `bun test` run cover all four
 * combinations once.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import {
  CURRENT_RUNTIME,
  runSender,
  type RuntimeName,
  type ServerProcess,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";
import { jsonLines, listFiles, OTHER_RUNTIME, partialEntries, writeRandomFile } from "./e2e_util.ts";

const CHUNK = 256 * 1024; // the sender's default DATA chunk
const MB = 1000 * 1000;
// Distinct past times with a millisecond part, so "now" cannot pass for a preserved mtime.
const BASE_MTIME = Date.UTC(2021, 0, 2, 3, 4, 5, 678);

for (const senderRuntime of [CURRENT_RUNTIME, OTHER_RUNTIME] as RuntimeName[]) {
  // The 50 MB file only where sender and server share a runtime: once per test run.
  const bigSize = senderRuntime === CURRENT_RUNTIME ? 50 * MB : 3 * MB;

  describe(`transfer: server ${CURRENT_RUNTIME} × sender ${senderRuntime}`, () => {
    let tmp: Awaited<ReturnType<typeof tempDir>>;
    let server: ServerProcess;
    let inbox: string;
    let src: string;
    const files = [
      { name: "zero.bin", size: 0 },
      { name: "one.bin", size: 1 },
      { name: "chunk.bin", size: CHUNK },
      { name: "chunk-plus-one.bin", size: CHUNK + 1 },
      { name: "big.bin", size: bigSize },
    ].map((f, i) => ({ ...f, mtimeMs: BASE_MTIME + i * 86_400_000 + i * 7 }));

    before(async () => {
      tmp = await tempDir("ferry-e2e-transfer-");
      inbox = join(tmp.path, "inbox");
      src = join(tmp.path, "src");
      for (const f of files) await writeRandomFile(join(src, f.name), f.size, f.mtimeMs);
      server = await startServer(CURRENT_RUNTIME, ["--dir", inbox]);
    });

    after(async () => {
      await server?.stop();
      await tmp?.cleanup();
    });

    test(`0 B, 1 B, one chunk, one chunk + 1 and ${bigSize / MB} MB arrive intact with their mtime`, {
      timeout: 60_000,
    }, async () => {
      const r = await runSender(
        senderRuntime,
        ["--json", ...files.map((f) => join(src, f.name))],
        server,
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const done = jsonLines(r.stdout).filter((e) => e.type === "done");
      assert.equal(done.length, files.length, r.stdout);
      for (const f of files) {
        const expected = await sha256File(join(src, f.name));
        const receipt = done.find((e) => (e.receipt as { name: string }).name === f.name)
          ?.receipt as Record<string, unknown>;
        assert.ok(receipt, `no done event for ${f.name}`);
        assert.equal(receipt.storedName, f.name);
        assert.equal(receipt.size, f.size);
        assert.equal(receipt.sha256, expected, `${f.name}: receipt hash`);
        assert.equal(receipt.duplicate, false);
        const stored = join(inbox, f.name);
        assert.equal(await sha256File(stored), expected, `${f.name}: stored bytes`);
        const st = await stat(stored);
        assert.equal(st.size, f.size);
        assert.equal(Math.floor(st.mtimeMs / 1000), Math.floor(f.mtimeMs / 1000), `${f.name}: mtime`);
      }
      assert.deepEqual(await listFiles(inbox), files.map((f) => f.name).sort());
      assert.deepEqual(await partialEntries(inbox), [], "no partials left after success");
      // One file line per file in the server's log.
      const logged = jsonLines(server.output()).filter((e) => e.event === "file");
      assert.deepEqual(logged.map((e) => e.name).sort(), files.map((f) => f.name).sort());
    });

    test("a folder tree arrives under the same relative paths", { timeout: 30_000 }, async () => {
      const tree = join(tmp.path, "album");
      const paths = [
        "a.txt",
        "2024/b.jpg",
        "2024/summer/c.bin",
        "deep/x/y/z/w.txt",
        "Ünïcødé/naïve café.txt",
      ];
      for (const [i, p] of paths.entries()) await writeRandomFile(join(tree, p), 1000 * i + 17);
      await mkdir(join(tree, "empty", "nested"), { recursive: true });

      const r = await runSender(senderRuntime, ["--json", tree], server);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(jsonLines(r.stdout).filter((e) => e.type === "done").length, paths.length);
      for (const p of paths) {
        assert.equal(await sha256File(join(inbox, "album", p)), await sha256File(join(tree, p)), p);
      }
      const stored = (await listFiles(inbox)).filter((p) => p.startsWith("album/"));
      assert.deepEqual(stored, paths.map((p) => `album/${p}`).sort());
    });
  });
}
