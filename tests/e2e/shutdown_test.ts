/**
 * End to end: graceful shutdown of a real server process. A proxy holds the
 * sender's bytes mid-file, so the SIGTERM lands during a transfer every time.
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
  writeRandomFile,
} from "./e2e_util.ts";

const MiB = 1024 * 1024;

describe(`graceful shutdown (server ${CURRENT_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let big: string;
  let small: string;
  const servers: ServerProcess[] = [];
  const proxies: GateProxy[] = [];

  before(async () => {
    tmp = await tempDir("ferry-e2e-shutdown-");
    big = join(tmp.path, "src", "movie.bin");
    small = join(tmp.path, "src", "late.txt");
    await writeRandomFile(big, 8 * MiB);
    await writeRandomFile(small, 100);
  });

  after(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(servers.map((s) => s.stop("SIGKILL")));
    await tmp?.cleanup();
  });

  /** A server, a proxy in front of it holding after 2 MiB, and a sender started through it. */
  async function stalledTransfer(inbox: string, grace: string) {
    const server = await startServer(CURRENT_RUNTIME, ["--dir", inbox, "--grace", grace]);
    servers.push(server);
    const proxy = await GateProxy.start(server);
    proxies.push(proxy);
    const reached = proxy.holdUpAfter(2 * MiB);
    const sending = runSender(CURRENT_RUNTIME, ["--json", "--retries", "0", big], proxy);
    // Data only flows after ACCEPT, so the server has the upload open from here on.
    await reached;
    return { server, proxy, sending };
  }

  test("SIGTERM lets the transfer in flight finish, refuses new connections, exits 0", {
    timeout: 60_000,
  }, async () => {
    const inbox = join(tmp.path, "inbox-finish");
    const { server, proxy, sending } = await stalledTransfer(inbox, "30s");
    server.kill("SIGTERM");
    await server.waitForLine(/"event":"shutdown"/);

    const late = await runSender(OTHER_RUNTIME, ["--json", "--retries", "0", small], server);
    assert.equal(late.code, 3, late.stdout + late.stderr);
    assert.equal(server.child.exitCode, null, "still running while the transfer is held");

    const released = Date.now();
    proxy.releaseUp();
    const r = await sending;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const done = jsonLines(r.stdout).find((e) => e.type === "done")?.receipt as Record<string, unknown>;
    assert.equal(done?.sha256, await sha256File(big));
    assert.equal(await server.exited, 0);
    assert.ok(Date.now() - released < 15_000, "exited when the transfer ended, not at the end of --grace");

    assert.deepEqual(await listFiles(inbox), ["movie.bin"]);
    assert.equal(await sha256File(join(inbox, "movie.bin")), await sha256File(big));
    assert.deepEqual(await partialEntries(inbox), []);
    assert.match(server.output(), /"event":"stopped"/);
  });

  test("a transfer that outlives --grace is cut, its partial kept, and the exit is still 0", {
    timeout: 60_000,
  }, async () => {
    const inbox = join(tmp.path, "inbox-cut");
    const { server, sending } = await stalledTransfer(inbox, "300ms");
    server.kill("SIGTERM");
    assert.equal(await server.exited, 0);

    const r = await sending;
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.deepEqual(await listFiles(inbox), [], "nothing under the final name");
    const entries = await partialEntries(inbox);
    assert.deepEqual(entries.map((e) => e.replace(/^[0-9a-f]{64}/, "KEY")), ["KEY.json", "KEY.part"]);
    const sidecar = JSON.parse(await readFile(join(inbox, ".ferry", "partial", entries[0]), "utf8"));
    assert.ok(
      sidecar.durableOffset > 0 && sidecar.durableOffset <= 2 * MiB,
      `offset ${sidecar.durableOffset}`,
    );
    assert.equal(sidecar.name, "movie.bin");
  });
});
