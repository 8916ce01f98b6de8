/**
 * End to end: the server's log. With --log-json, one JSON line per
 * connection event and per file; in the human-readable log, hostile names and
 * messages never reach the terminal raw.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { send } from "../../mod.ts";
import { CURRENT_RUNTIME, runSender, type ServerProcess, startServer, tempDir } from "../helpers/process.ts";
import { jsonLines, OTHER_RUNTIME, waitForOutput, writeRandomFile } from "./e2e_util.ts";

const HOSTILE_NAME = "evil\x1b[31mred\x1b[0m.txt";
const HOSTILE_TEXT = "\x1b[2J\x1b[31mpwned\u202e\x07";
// ESC, BEL and the bidi override: none may reach a log raw.
// deno-lint-ignore no-control-regex
const RAW = /[\x1b\x07\u202e]/;

const count = (output: string, event: string) => jsonLines(output).filter((e) => e.event === event).length;

describe(`server logs (server ${CURRENT_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  const servers: ServerProcess[] = [];
  let files: string[];

  before(async () => {
    tmp = await tempDir("ferry-e2e-logs-");
    files = ["a.txt", "b.txt", "c.txt", "d.txt"].map((n) => join(tmp.path, "src", n));
    for (const [i, f] of files.entries()) await writeRandomFile(f, 1000 + i);
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await tmp?.cleanup();
  });

  test(
    "--log-json: one JSON line per connection, per file and per message",
    { timeout: 30_000 },
    async () => {
      const server = await startServer(CURRENT_RUNTIME, ["--dir", join(tmp.path, "json-inbox")]);
      servers.push(server);
      const r1 = await runSender(CURRENT_RUNTIME, ["-q", "-m", "hello", ...files.slice(0, 3)], server);
      assert.equal(r1.code, 0, r1.stderr);
      const r2 = await runSender(OTHER_RUNTIME, ["-q", files[3]], server);
      assert.equal(r2.code, 0, r2.stderr);
      // A refused name is logged too, escaped by JSON rather than dropped.
      const r3 = await send(`127.0.0.1:${server.port}`, [{ path: files[0], name: HOSTILE_NAME }], {
        retries: 0,
      });
      assert.equal(r3.failures[0]?.error.code, "BAD_NAME");
      await waitForOutput(server, (o) => count(o, "disconnect") === 3, "3 disconnect lines");

      const lines = jsonLines(server.output()); // throws if any line is not JSON
      for (const l of lines) {
        assert.ok(!Number.isNaN(Date.parse(String(l.time))), JSON.stringify(l));
        assert.ok(["info", "warn", "error"].includes(String(l.level)), JSON.stringify(l));
      }
      const connects = lines.filter((l) => l.event === "connect");
      assert.equal(connects.length, 3);
      assert.equal(new Set(connects.map((l) => l.conn)).size, 3, "distinct connection ids");
      for (const c of connects) assert.match(String(c.peer), /^127\.0\.0\.1:\d+$/);
      const disconnects = lines.filter((l) => l.event === "disconnect");
      assert.deepEqual(disconnects.map((l) => l.files), [3, 1, 0]);
      const fileLines = lines.filter((l) => l.event === "file");
      assert.deepEqual(fileLines.map((l) => l.name), ["a.txt", "b.txt", "c.txt", "d.txt"]);
      for (const f of fileLines) assert.match(String(f.sha256), /^[0-9a-f]{64}$/);
      assert.deepEqual(fileLines.map((l) => l.conn), [
        connects[0].conn,
        connects[0].conn,
        connects[0].conn,
        connects[1].conn,
      ]);
      assert.deepEqual(lines.filter((l) => l.event === "message").map((l) => l.text), ["hello"]);
      const refused = lines.filter((l) => l.event === "file_error");
      assert.equal(refused.length, 1);
      assert.equal(refused[0].code, "BAD_NAME");
      assert.equal(refused[0].name, HOSTILE_NAME, "the JSON keeps the exact name");
      assert.doesNotMatch(server.output(), RAW, "JSON escapes control characters");
    },
  );

  test("the human-readable log never prints a hostile name or message raw", { timeout: 30_000 }, async () => {
    const server = await startServer(CURRENT_RUNTIME, ["--dir", join(tmp.path, "human-inbox")], {
      logJson: false,
    });
    servers.push(server);
    const result = await send(`127.0.0.1:${server.port}`, [
      { path: files[0], name: HOSTILE_NAME },
      { path: files[1], name: "fine.txt" },
    ], { messages: [HOSTILE_TEXT], retries: 0 });
    assert.deepEqual(result.failures.map((f) => f.error.code), ["BAD_NAME"]);
    assert.deepEqual(result.receipts.map((r) => r.storedName), ["fine.txt"]);
    assert.equal(result.messagesAcked, 1);
    await waitForOutput(server, (o) => /disconnected/.test(o), "the disconnect line");

    const log = server.output() + server.errorOutput();
    assert.doesNotMatch(log, RAW);
    assert.match(log, /refused "evil\\x1b\[31mred\\x1b\[0m\.txt": BAD_NAME/);
    assert.match(log, /message: \\x1b\[2J\\x1b\[31mpwned\\u\{202e\}\\x07/);
    assert.match(log, /stored "fine\.txt"/);
    for (const line of server.output().trim().split("\n")) {
      assert.doesNotMatch(line, /^\{/, "no JSON without --log-json");
    }
  });
});
