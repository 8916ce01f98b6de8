/**
 * End to end: a full disk. The inbox lives on a small tmpfs (needs root or
 * passwordless sudo for `mount`; skipped with a message otherwise).
 *
 * DISK_FULL needs the disk to fill after the free-space check passed: a
 * proxy holds the server's ACCEPT while the test fills the tmpfs, so the
 * write fails mid-file every time.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { rm, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { FrameType } from "../../src/protocol/constants.ts";
import {
  CURRENT_RUNTIME,
  runCommand,
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

const MB = 1000 * 1000;
const tmp = await tempDir("ferry-e2e-enospc-");
const mountPoint = join(tmp.path, "small");
/** `mount`/`umount` directly as root, else through `sudo -n`. */
const asRoot = (cmd: string, args: string[]) =>
  process.getuid?.() === 0 ? runCommand(cmd, args) : runCommand("sudo", ["-n", cmd, ...args]);

await runCommand("mkdir", ["-p", mountPoint]);
const mounted = await asRoot("mount", ["-t", "tmpfs", "-o", "size=48m,mode=1777", "tmpfs", mountPoint])
  .catch((e: Error) => ({ code: -1, stdout: "", stderr: e.message }));
const SKIP = mounted.code === 0
  ? false
  : `cannot mount a tmpfs here (needs root or passwordless sudo): ${mounted.stderr.trim()}`;
if (SKIP) console.warn(`enospc_test.ts: skipped: ${SKIP}`);

describe(`full disk (server ${CURRENT_RUNTIME})`, () => {
  const servers: ServerProcess[] = [];
  let proxy: GateProxy | undefined;
  let src: string;

  before(async () => {
    if (SKIP) return;
    src = join(tmp.path, "src");
    await writeRandomFile(join(src, "forty.bin"), 40 * MB);
    await writeRandomFile(join(src, "twenty.bin"), 20 * MB);
    await writeRandomFile(join(src, "small.txt"), 100_000);
  });

  after(async () => {
    await proxy?.close();
    await Promise.all(servers.map((s) => s.stop()));
    if (!SKIP) await asRoot("umount", [mountPoint]);
    await tmp.cleanup();
  });

  test("the disk filling up mid-file gives DISK_FULL, no partial, and the server goes on", {
    timeout: 60_000,
    skip: SKIP,
  }, async () => {
    const inbox = join(mountPoint, "inbox-full");
    const server = await startServer(CURRENT_RUNTIME, ["--dir", inbox, "--min-free", "0"]);
    servers.push(server);
    const gate = await GateProxy.start(server);
    proxy = gate;
    let filled = false;
    // Hold the sender after 8 MB until it has been told, so it cannot have sent everything already.
    gate.holdUpAfter(8 * MB);
    gate.onServerFrame = async (type) => {
      if (type === FrameType.ERROR) setTimeout(() => gate.releaseUp(), 0); // once the ERROR is on its way
      if (type !== FrameType.ACCEPT || filled) return;
      filled = true;
      // Leave 1 MB: the 40 MB file passed the free-space check but cannot fit now.
      const st = await statfs(mountPoint);
      await writeFile(join(mountPoint, "filler"), new Uint8Array(Number(st.bavail) * Number(st.bsize) - MB));
    };

    const r = await runSender(OTHER_RUNTIME, ["--json", "--retries", "0", join(src, "forty.bin")], gate);
    assert.ok(filled, "the proxy saw ACCEPT");
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const error = jsonLines(r.stdout).find((e) => e.type === "error");
    assert.equal(error?.code, "DISK_FULL", r.stdout);
    assert.equal(error?.name, "forty.bin");
    assert.ok(
      gate.upBytes < 32 * MB,
      `the sender stopped after the refusal, not after ${gate.upBytes} bytes`,
    );
    assert.deepEqual(await listFiles(inbox), [], "nothing under the final name");
    assert.deepEqual(await partialEntries(inbox), [], "the partial was removed");
    assert.match(server.output(), /"event":"file_error".*"code":"DISK_FULL"/);

    // A new connection with a file that fits still works.
    const ok = await runSender(CURRENT_RUNTIME, ["--json", join(src, "small.txt")], server);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.equal(await sha256File(join(inbox, "small.txt")), await sha256File(join(src, "small.txt")));
    await rm(join(mountPoint, "filler"));
  });

  test("a declared size over the free space is refused with INSUFFICIENT_STORAGE before any data", {
    timeout: 60_000,
    skip: SKIP,
  }, async () => {
    const inbox = join(mountPoint, "inbox-check");
    // Default --min-free (64M): more than this 48 MB disk has at all.
    const server = await startServer(CURRENT_RUNTIME, ["--dir", inbox]);
    servers.push(server);
    const r = await runSender(OTHER_RUNTIME, ["--json", "--retries", "0", join(src, "twenty.bin")], server);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const events = jsonLines(r.stdout);
    assert.equal(events.find((e) => e.type === "error")?.code, "INSUFFICIENT_STORAGE", r.stdout);
    assert.equal(
      events.filter((e) => e.type === "file" || e.type === "progress").length,
      0,
      "no data was sent",
    );
    await server.waitForLine(/"event":"disconnect"/);
    const disconnect = jsonLines(server.output()).find((e) => e.event === "disconnect")!;
    assert.ok(Number(disconnect.bytes) < 4096, `server received ${disconnect.bytes} bytes`);
    assert.deepEqual(await listFiles(inbox), []);
    assert.deepEqual(await partialEntries(inbox), []);
  });
});
