/**
 * End to end: the command lines. The `--json` event stream, every documented
 * exit code (5 through a scripted fake server that lies about the hash),
 * `--help` / `--version`, and an IPv6 target.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { exitCodeFor } from "../../src/cli/send_cli.ts";
import { FerryError } from "../../src/errors.ts";
import { Channel } from "../../src/protocol/channel.ts";
import { Capability, PROTOCOL_VERSION } from "../../src/protocol/constants.ts";
import type { FileMessage } from "../../src/protocol/messages.ts";
import { dropCacheFor } from "../../src/runtime/libc.ts";
import { nodeNetRuntime } from "../../src/runtime/node_net.ts";
import type { Listener } from "../../src/runtime/transport.ts";
import {
  CURRENT_RUNTIME,
  ROOT,
  runScript,
  runSender,
  type ServerProcess,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";
import { canListen, closedPort, jsonLines, listFiles, OTHER_RUNTIME, writeRandomFile } from "./e2e_util.ts";

const HAS_IPV6 = await canListen("::1");
/** Why the page-cache test cannot run here: it needs Linux, a temp folder not on tmpfs, and fincore. */
const PAGE_CACHE_SKIP = (() => {
  if (!dropCacheFor(tmpdir())) return "no posix_fadvise here, or the temp folder is on tmpfs";
  try {
    execFileSync("fincore", ["--version"]);
    return false;
  } catch {
    return "needs util-linux fincore";
  }
})();

describe(`command lines (current runtime ${CURRENT_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let server: ServerProcess;
  let file: string;
  const extra: ServerProcess[] = [];

  before(async () => {
    tmp = await tempDir("ferry-e2e-cli-");
    file = join(tmp.path, "src", "report.pdf");
    await writeRandomFile(file, 1_500_000);
    server = await startServer(CURRENT_RUNTIME, ["--dir", join(tmp.path, "inbox")]);
  });

  after(async () => {
    await Promise.all([server, ...extra].map((s) => s?.stop()));
    await tmp?.cleanup();
  });

  test("--json prints start, connected, file, progress, done with the receipt, and a summary", {
    timeout: 30_000,
  }, async () => {
    const r = await runSender(OTHER_RUNTIME, ["--json", file], server);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stderr, "", "--json keeps stderr quiet on success");
    const events = jsonLines(r.stdout);
    for (const e of events) {
      assert.ok(!Number.isNaN(Date.parse(String(e.time))), `time in ${JSON.stringify(e)}`);
    }
    const types = events.map((e) => e.type).filter((t) => t !== "rtt");
    assert.equal(types[0], "start");
    assert.equal(types[1], "connected");
    assert.equal(types[2], "file");
    assert.equal(types.at(-2), "done");
    assert.equal(types.at(-1), "summary");
    assert.ok(types.slice(3, -2).every((t) => t === "progress") && types.length > 5, types.join(","));
    assert.deepEqual(
      { files: events[0].files, bytes: events[0].bytes, messages: events[0].messages },
      { files: 1, bytes: 1_500_000, messages: 0 },
    );
    const progress = events.filter((e) => e.type === "progress");
    assert.equal(progress.at(-1)!.sent, 1_500_000);
    assert.equal(progress.at(-1)!.totalSent, 1_500_000);
    const summary = events.at(-1)!;
    assert.equal(summary.bytesSent, 1_500_000);
    assert.equal(summary.files, 1);
    assert.equal(summary.failures, 0);
    const receipt = events.find((e) => e.type === "done")!.receipt as Record<string, unknown>;
    assert.equal(receipt.name, "report.pdf");
    assert.equal(receipt.sha256, await sha256File(file));
    assert.equal(receipt.size, 1_500_000);
  });

  test("exit code 2 for usage errors", { timeout: 30_000 }, async () => {
    const cases: Array<[string, string[], RegExp]> = [
      ["send.ts", [], /HOST:PORT/],
      ["send.ts", [file], /Nothing to send/],
      ["send.ts", ["--bogus", file, "127.0.0.1:9000"], /bogus/],
      ["send.ts", [file, "127.0.0.1:99999"], /port must be 1\.\.65535/],
      ["send.ts", [file, "127.0.0.1:http"], /port/],
      ["send.ts", ["--retries", "-1", file, "127.0.0.1:9000"], /retries|-1/],
      ["send.ts", [file, "::1:9000"], /brackets/],
      ["server.ts", ["--port", "70000", "--dir", join(tmp.path, "x")], /--port/],
      ["server.ts", ["--on-collision", "maybe", "--dir", join(tmp.path, "x")], /--on-collision/],
      ["server.ts", ["--bogus", "--dir", join(tmp.path, "x")], /bogus/],
      ["server.ts", ["--min-free", "lots", "--dir", join(tmp.path, "x")], /--min-free/],
      ["server.ts", ["--flush-ahead", "soon", "--dir", join(tmp.path, "x")], /--flush-ahead/],
      ["server.ts", ["--sync-mode", "later", "--dir", join(tmp.path, "x")], /--sync-mode/],
    ];
    for (const [i, [script, args, message]] of cases.entries()) {
      const r = await runScript(i % 2 ? OTHER_RUNTIME : CURRENT_RUNTIME, script, args, { timeoutMs: 15_000 });
      assert.equal(r.code, 2, `${script} ${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, message, `${script} ${args.join(" ")}`);
      assert.match(r.stderr, /--help/, "points to --help");
    }
  });

  test("exit code 3 when nothing listens (--retries 0)", { timeout: 30_000 }, async () => {
    const port = await closedPort();
    const json = await runSender(CURRENT_RUNTIME, ["--json", "--retries", "0", file], {
      host: "127.0.0.1",
      port,
    });
    assert.equal(json.code, 3, json.stdout + json.stderr);
    const fatal = jsonLines(json.stdout).find((e) => e.type === "fatal");
    assert.equal(fatal?.code, "CONNECTION_FAILED", json.stdout);
    const human = await runSender(OTHER_RUNTIME, ["--retries", "0", file], { host: "127.0.0.1", port });
    assert.equal(human.code, 3, human.stdout + human.stderr);
    assert.match(human.stderr, /CONNECTION_FAILED/);
  });

  test("exit code 4 with an error event when the server refuses a file", { timeout: 30_000 }, async () => {
    const small = await startServer(CURRENT_RUNTIME, [
      "--dir",
      join(tmp.path, "small-inbox"),
      "--max-file-size",
      "1K",
    ]);
    extra.push(small);
    const tiny = join(tmp.path, "src", "tiny.txt");
    await writeRandomFile(tiny, 100);
    const r = await runSender(OTHER_RUNTIME, ["--json", file, tiny], small);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const events = jsonLines(r.stdout);
    const error = events.find((e) => e.type === "error");
    assert.equal(error?.code, "FILE_TOO_LARGE", r.stdout);
    assert.equal(error?.name, "report.pdf");
    // The refusal is per file: the other one still arrives.
    assert.deepEqual(
      events.filter((e) => e.type === "done").map((e) => (e.receipt as { name: string }).name),
      ["tiny.txt"],
    );
    assert.deepEqual(await listFiles(join(tmp.path, "small-inbox")), ["tiny.txt"]);
  });

  test("--sync-mode: the listening line says how files are made durable; both modes store a folder whole", {
    timeout: 60_000,
  }, async () => {
    const folder = join(tmp.path, "src", "many");
    for (let i = 0; i < 40; i++) await writeRandomFile(join(folder, `m${i}.bin`), 20_000 + i);
    // On Linux the default batches (the test processes get every Deno permission); elsewhere it cannot.
    for (
      const [mode, expected] of [[undefined, process.platform === "linux" ? "batch" : "file"], [
        "file",
        "file",
      ]]
    ) {
      const inbox = join(tmp.path, `sync-${mode ?? "default"}`);
      const s = await startServer(CURRENT_RUNTIME, ["--dir", inbox, ...(mode ? ["--sync-mode", mode] : [])]);
      extra.push(s);
      assert.equal(JSON.parse(await s.waitForLine(/"event":"listening"/)).sync, expected);
      const r = await runSender(OTHER_RUNTIME, ["-q", folder], s);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const stored = await listFiles(inbox);
      assert.equal(stored.length, 40);
      for (const name of ["many/m0.bin", "many/m39.bin"]) {
        assert.equal(await sha256File(join(inbox, name)), await sha256File(join(tmp.path, "src", name)));
      }
    }
  });

  test("--keep-page-cache: by default a large upload leaves the page cache once on disk; with it, it stays", {
    skip: PAGE_CACHE_SKIP,
    timeout: 60_000,
  }, async () => {
    const big = join(tmp.path, "src", "cache.bin");
    await writeRandomFile(big, 12 * 1024 * 1024);
    // Bytes of the stored file in the page cache, from util-linux fincore (mincore(2)).
    const cached = (f: string) =>
      Number(
        execFileSync("fincore", ["--bytes", "--noheadings", "--output", "RES", f], { encoding: "utf8" }),
      );
    for (const [flags, expected] of [[[], "drop"], [["--keep-page-cache"], "keep"]] as const) {
      const inbox = join(tmp.path, `cache-${expected}`);
      const s = await startServer(CURRENT_RUNTIME, ["--dir", inbox, ...flags]);
      extra.push(s);
      assert.equal(JSON.parse(await s.waitForLine(/"event":"listening"/)).pageCache, expected);
      const r = await runSender(OTHER_RUNTIME, ["-q", big], s);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const inCache = cached(join(inbox, "cache.bin"));
      if (expected === "keep") assert.equal(inCache, 12 * 1024 * 1024);
      else assert.ok(inCache <= 256 * 1024, `${inCache} bytes still cached`);
      assert.equal(await sha256File(join(inbox, "cache.bin")), await sha256File(big));
    }
  });

  test("exit code 5 when the receipt's hash does not match (fake server)", { timeout: 30_000 }, async () => {
    const seen: FileMessage[] = [];
    const fake: Listener = await nodeNetRuntime.listen({ hostname: "127.0.0.1", port: 0 }, async (conn) => {
      const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
      try {
        await channel.receive(); // HELLO
        await channel.send({
          kind: "welcome",
          version: PROTOCOL_VERSION,
          capabilities: Capability.RESUME | Capability.MESSAGES | Capability.HEARTBEAT,
          maxFrameSize: 1 << 20,
          nonce: new Uint8Array(0),
        });
        for (let m = await channel.receive(); m; m = await channel.receive()) {
          if (m.kind === "file") {
            seen.push(m);
            await channel.send({ kind: "accept", id: m.id, offset: 0 });
          } else if (m.kind === "end") {
            const f = seen.find((s) => s.id === m.id)!;
            const wrong = new Uint8Array(32).fill(0xab);
            await channel.send({
              kind: "receipt",
              id: m.id,
              flags: 0,
              size: f.size,
              sha256: wrong,
              storedName: f.name,
            });
          } else if (m.kind === "ping") await channel.send({ kind: "pong", token: m.token });
        }
      } catch {
        // The sender hung up; nothing to clean up but the socket.
      } finally {
        conn.close();
      }
    });
    try {
      const r = await runSender(CURRENT_RUNTIME, ["--json", "--retries", "0", file], {
        host: "127.0.0.1",
        port: fake.port,
      });
      assert.equal(r.code, 5, r.stdout + r.stderr);
      const error = jsonLines(r.stdout).find((e) => e.type === "error");
      assert.equal(error?.code, "HASH_MISMATCH", r.stdout);
      assert.equal(jsonLines(r.stdout).filter((e) => e.type === "done").length, 0);
      assert.equal(seen.length, 1);
    } finally {
      await fake.close();
    }
    // Size mismatches are integrity failures too.
    assert.equal(exitCodeFor(new FerryError("SIZE_MISMATCH", "x")), 5);
    assert.equal(exitCodeFor(new FerryError("HASH_MISMATCH", "x")), 5);
  });

  test("--help and --version for server.ts and send.ts", { timeout: 30_000 }, async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8"));
    // Long flags on this runtime, short ones on the other: each run covers both runtimes.
    for (
      const [runtime, help, ver] of [[CURRENT_RUNTIME, "--help", "--version"], [OTHER_RUNTIME, "-h", "-V"]]
    ) {
      for (const script of ["server.ts", "send.ts"]) {
        const h = await runScript(runtime as typeof CURRENT_RUNTIME, script, [help]);
        assert.equal(h.code, 0, `${runtime} ${script} ${help}: ${h.stderr}`);
        assert.match(h.stdout, /Usage:/);
        assert.match(h.stdout, /Exit codes:|--dir DIR/);
        assert.match(h.stdout, script === "server.ts" ? /--on-collision/ : /--json/);
        const v = await runScript(runtime as typeof CURRENT_RUNTIME, script, [ver]);
        assert.equal(v.code, 0);
        assert.equal(v.stdout.trim(), `ferry ${version}`);
      }
    }
  });

  test("an IPv6 target [::1]:port", {
    timeout: 30_000,
    skip: HAS_IPV6 ? false : "::1 is not available on this host (no IPv6 loopback)",
  }, async () => {
    const inbox = join(tmp.path, "v6-inbox");
    const v6 = await startServer(CURRENT_RUNTIME, ["--dir", inbox, "--host", "::1"]);
    extra.push(v6);
    assert.equal(v6.host, "::1");
    const r = await runScript(OTHER_RUNTIME, "send.ts", ["--json", file, `[::1]:${v6.port}`]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await sha256File(join(inbox, "report.pdf")), await sha256File(file));
    const connect = jsonLines(v6.output()).find((e) => e.event === "connect");
    assert.match(String(connect?.peer), /^\[::1\]:\d+$/);
  });
});
