/**
 * examples/embed_server.ts and examples/embed_send.ts really run, on the
 * runtime running this test, and really transfer a file.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { CURRENT_RUNTIME, runScript, scriptCommand, sha256File, tempDir } from "../helpers/process.ts";

describe(`embedding examples on ${CURRENT_RUNTIME}`, () => {
  test("embed_send.ts delivers a file and a message to embed_server.ts", { timeout: 60_000 }, async () => {
    const tmp = await tempDir();
    const inbox = join(tmp.path, "inbox");
    const [cmd, ...args] = scriptCommand(CURRENT_RUNTIME, "examples/embed_server.ts");
    const server = spawn(cmd, [...args, inbox, "0"], { stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise<number | string>((r) => server.once("exit", (c, s) => r(c ?? s ?? -1)));
    let output = "";
    try {
      const port = await new Promise<number>((resolve, reject) => {
        server.stdout!.setEncoding("utf8").on("data", (d: string) => {
          output += d;
          const m = /listening on 127\.0\.0\.1:(\d+)/.exec(output);
          if (m) resolve(Number(m[1]));
        });
        exited.then((code) => reject(new Error(`embed_server.ts exited (${code}):\n${output}`)));
      });
      const file = join(tmp.path, "hello.txt");
      await writeFile(file, "hello from the embedding example\n");
      const sent = await runScript(
        CURRENT_RUNTIME,
        "examples/embed_send.ts",
        [`127.0.0.1:${port}`, file, "--message", "hi there"],
        { timeoutMs: 30_000 },
      );
      assert.equal(sent.code, 0, sent.stdout + sent.stderr);
      const expected = await sha256File(file);
      assert.match(sent.stdout, new RegExp(`hello\\.txt -> hello\\.txt sha256 ${expected}`));
      assert.match(sent.stdout, /1 message\(s\) delivered/);
      assert.equal(await sha256File(join(inbox, "hello.txt")), expected);

      const usage = await runScript(CURRENT_RUNTIME, "examples/embed_send.ts", [], { timeoutMs: 30_000 });
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /usage: embed_send\.ts/);

      // process.kill, not server.kill: Deno's child.kill reports a handled SIGTERM as a kill.
      process.kill(server.pid!, "SIGTERM");
      assert.equal(await exited, 0, output);
      assert.match(output, /stopping/);
      assert.match(output, /stored hello\.txt \(33 bytes/);
      assert.match(output, /message: hi there/);
    } finally {
      server.kill("SIGKILL");
      await exited;
      await tmp.cleanup();
    }
  });
});
