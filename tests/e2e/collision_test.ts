/**
 * End to end: what happens when a name exists in the inbox (rename, reject,
 * overwrite), re-sending an identical file, and text messages. Real server.ts
 * and send.ts processes; the sender alternates runtimes between tests.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  CURRENT_RUNTIME,
  runSender,
  type ServerProcess,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";
import { jsonLines, listFiles, OTHER_RUNTIME, writeRandomFile } from "./e2e_util.ts";

describe(`collisions and messages (server ${CURRENT_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let first: string; // photo.jpg, content A
  let second: string; // photo.jpg, content B
  const servers: ServerProcess[] = [];

  const start = async (label: string, args: string[] = []) => {
    const server = await startServer(CURRENT_RUNTIME, ["--dir", join(tmp.path, label), ...args]);
    servers.push(server);
    return { server, inbox: join(tmp.path, label) };
  };

  before(async () => {
    tmp = await tempDir("ferry-e2e-collision-");
    first = join(tmp.path, "a", "photo.jpg");
    second = join(tmp.path, "b", "photo.jpg");
    await writeRandomFile(first, 40_000);
    await writeRandomFile(second, 50_000);
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await tmp?.cleanup();
  });

  test('default policy keeps both: the second becomes "photo (1).jpg"', { timeout: 30_000 }, async () => {
    const { server, inbox } = await start("rename");
    assert.equal((await runSender(CURRENT_RUNTIME, ["-q", first], server)).code, 0);
    const r = await runSender(OTHER_RUNTIME, ["--json", second], server);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const done = jsonLines(r.stdout).find((e) => e.type === "done")!.receipt as Record<string, unknown>;
    assert.equal(done.name, "photo.jpg");
    assert.equal(done.storedName, "photo (1).jpg");
    assert.deepEqual(await listFiles(inbox), ["photo (1).jpg", "photo.jpg"]);
    assert.equal(await sha256File(join(inbox, "photo.jpg")), await sha256File(first));
    assert.equal(await sha256File(join(inbox, "photo (1).jpg")), await sha256File(second));
  });

  test("re-sending the identical file is a no-op reported as duplicate", { timeout: 30_000 }, async () => {
    const { server, inbox } = await start("duplicate");
    assert.equal((await runSender(CURRENT_RUNTIME, ["-q", first], server)).code, 0);
    const before = await listFiles(inbox);
    const receiptsBefore = await readFile(join(inbox, ".ferry", "receipts.ndjson"), "utf8");
    const r = await runSender(OTHER_RUNTIME, ["--json", first], server);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const events = jsonLines(r.stdout);
    const done = events.find((e) => e.type === "done")!.receipt as Record<string, unknown>;
    assert.equal(done.duplicate, true);
    assert.equal(done.storedName, "photo.jpg");
    assert.equal(done.sha256, await sha256File(first));
    assert.equal(events.filter((e) => e.type === "progress").length, 0, "no data was sent");
    assert.deepEqual(await listFiles(inbox), before);
    assert.equal(await readFile(join(inbox, ".ferry", "receipts.ndjson"), "utf8"), receiptsBefore);
  });

  test("--on-collision reject refuses with exit 4 and NAME_EXISTS", { timeout: 30_000 }, async () => {
    const { server, inbox } = await start("reject", ["--on-collision", "reject"]);
    assert.equal((await runSender(CURRENT_RUNTIME, ["-q", first], server)).code, 0);
    const r = await runSender(OTHER_RUNTIME, ["--json", second], server);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const error = jsonLines(r.stdout).find((e) => e.type === "error");
    assert.ok(error, r.stdout);
    assert.equal(error.code, "NAME_EXISTS");
    assert.equal(error.name, "photo.jpg");
    assert.deepEqual(await listFiles(inbox), ["photo.jpg"]);
    assert.equal(await sha256File(join(inbox, "photo.jpg")), await sha256File(first), "original untouched");
    // The human-readable form says so on stderr, too.
    const human = await runSender(CURRENT_RUNTIME, [second], server);
    assert.equal(human.code, 4);
    assert.match(human.stderr, /NAME_EXISTS/);
  });

  test("--on-collision overwrite replaces the file", { timeout: 30_000 }, async () => {
    const { server, inbox } = await start("overwrite", ["--on-collision", "overwrite"]);
    assert.equal((await runSender(CURRENT_RUNTIME, ["-q", first], server)).code, 0);
    const r = await runSender(OTHER_RUNTIME, ["--json", second], server);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const done = jsonLines(r.stdout).find((e) => e.type === "done")!.receipt as Record<string, unknown>;
    assert.equal(done.storedName, "photo.jpg");
    assert.deepEqual(await listFiles(inbox), ["photo.jpg"]);
    assert.equal(await sha256File(join(inbox, "photo.jpg")), await sha256File(second));
  });

  test("a text message is stored with text, sender and time", { timeout: 30_000 }, async () => {
    const { server, inbox } = await start("messages");
    const t0 = Date.now();
    const r = await runSender(OTHER_RUNTIME, ["--json", "--message", "hi", "-m", "lunch at 12? ☕"], server);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const events = jsonLines(r.stdout);
    assert.deepEqual(events.filter((e) => e.type === "start").map((e) => e.messages), [2]);
    assert.deepEqual(events.filter((e) => e.type === "message").map((e) => e.index), [0, 1]);

    const lines = jsonLines(await readFile(join(inbox, ".ferry", "messages.ndjson"), "utf8"));
    assert.deepEqual(lines.map((l) => l.text), ["hi", "lunch at 12? ☕"]);
    for (const l of lines) {
      assert.match(String(l.sender), /^127\.0\.0\.1:\d+$/);
      const at = Date.parse(String(l.receivedAt));
      assert.ok(at >= t0 - 1000 && at <= Date.now() + 1000, `receivedAt ${l.receivedAt}`);
    }
    assert.deepEqual(await listFiles(inbox), [], "a message is not a file");
    const logged = jsonLines(server.output()).filter((e) => e.event === "message");
    assert.deepEqual(logged.map((e) => e.text), ["hi", "lunch at 12? ☕"]);
  });
});
