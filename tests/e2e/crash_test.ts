/**
 * End to end: `kill -9` of the server mid-transfer. Nothing may appear under
 * the final name; only the partial stays, a restart keeps it while it is
 * fresh, and a restart with a short --partial-ttl sweeps it away.
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
import {
  GateProxy,
  jsonLines,
  listFiles,
  OTHER_RUNTIME,
  partialEntries,
  pollUntil,
  sizeOf,
  writeRandomFile,
} from "./e2e_util.ts";

const MiB = 1024 * 1024;

describe(`SIGKILL mid-transfer (server ${CURRENT_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let proxy: GateProxy | undefined;
  const servers: ServerProcess[] = [];

  before(async () => {
    tmp = await tempDir("ferry-e2e-crash-");
  });

  after(async () => {
    await proxy?.close();
    await Promise.all(servers.map((s) => s.stop("SIGKILL")));
    await tmp?.cleanup();
  });

  test("leaves only a partial; a restart keeps it, a short --partial-ttl sweeps it", {
    timeout: 60_000,
  }, async () => {
    const inbox = join(tmp.path, "inbox");
    const big = join(tmp.path, "src", "disk.img");
    await writeRandomFile(big, 16 * MiB);
    const partialDir = join(inbox, ".ferry", "partial");

    const first = await startServer(CURRENT_RUNTIME, ["--dir", inbox, "--sync-every", "4M"]);
    servers.push(first);
    proxy = await GateProxy.start(first);
    const reached = proxy.holdUpAfter(9 * MiB);
    const sending = runSender(OTHER_RUNTIME, ["--json", "--retries", "0", big], proxy);
    await reached;
    // The server writes what the proxy let through; wait until a checkpoint made 8 MiB durable.
    const sidecar = await pollUntil("a durable checkpoint of 8 MiB", async () => {
      const json = (await partialEntries(inbox)).find((e) => e.endsWith(".json"));
      if (!json) return undefined;
      const s = JSON.parse(await readFile(join(partialDir, json), "utf8"));
      return s.durableOffset >= 8 * MiB ? { file: json, ...s } : undefined;
    });
    assert.equal(await first.stop("SIGKILL"), "SIGKILL");

    const r = await sending;
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.equal(jsonLines(r.stdout).find((e) => e.type === "fatal")?.code, "CONNECTION_FAILED");
    assert.deepEqual(await listFiles(inbox), [], "nothing under the final name");
    const key = sidecar.file.slice(0, -".json".length);
    assert.deepEqual(await partialEntries(inbox), [`${key}.json`, `${key}.part`]);
    assert.ok((await sizeOf(join(partialDir, `${key}.part`)))! >= sidecar.durableOffset);
    assert.equal(sidecar.name, "disk.img");

    // A restart with the default TTL keeps a fresh partial for a resume.
    const second = await startServer(CURRENT_RUNTIME, ["--dir", inbox]);
    servers.push(second);
    assert.deepEqual(await partialEntries(inbox), [`${key}.json`, `${key}.part`]);
    assert.equal(await second.stop(), 0);

    // A restart with a TTL shorter than the partial's age sweeps it on start.
    const third = await startServer(CURRENT_RUNTIME, ["--dir", inbox, "--partial-ttl", "1ms"]);
    servers.push(third);
    assert.deepEqual(await partialEntries(inbox), []);
    assert.deepEqual(await listFiles(inbox), []);

    // And the inbox still works: the file arrives whole on a new connection.
    const again = await runSender(CURRENT_RUNTIME, ["--json", big], third);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    const file = jsonLines(again.stdout).find((e) => e.type === "file");
    assert.equal(file?.offset, 0, "started from scratch: the partial was gone");
    assert.equal(await sha256File(join(inbox, "disk.img")), await sha256File(big));
  });

  test("every receipt sent is in the kept-open receipts index after a SIGKILL and a restart", {
    timeout: 60_000,
  }, async () => {
    const inbox = join(tmp.path, "inbox-receipts");
    const src = join(tmp.path, "src-many");
    const names = Array.from({ length: 40 }, (_, i) => `f${String(i).padStart(2, "0")}.bin`);
    for (const n of names) await writeRandomFile(join(src, n), 3000);

    const first = await startServer(CURRENT_RUNTIME, ["--dir", inbox]);
    servers.push(first);
    const sent = await runSender(OTHER_RUNTIME, ["--json", src], first);
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);
    const done = jsonLines(sent.stdout).filter((e) => e.type === "done");
    assert.equal(done.length, names.length);
    // No graceful close: whatever the server did not fsync before each RECEIPT is lost here.
    assert.equal(await first.stop("SIGKILL"), "SIGKILL");

    const lines = (await readFile(join(inbox, ".ferry", "receipts.ndjson"), "utf8")).split("\n").filter(
      Boolean,
    );
    assert.deepEqual(
      lines.map((l) => JSON.parse(l).name).sort(),
      names.map((n) => `src-many/${n}`),
    );
    // The restarted server knows them all: sending the folder again is all duplicates.
    const second = await startServer(CURRENT_RUNTIME, ["--dir", inbox]);
    servers.push(second);
    const again = await runSender(CURRENT_RUNTIME, ["--json", src], second);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    const dups = jsonLines(again.stdout).filter((e) => e.type === "done").map((e) =>
      (e.receipt as { duplicate: boolean }).duplicate
    );
    assert.deepEqual(dups, names.map(() => true));
    assert.equal(await second.stop(), 0);
  });
});
