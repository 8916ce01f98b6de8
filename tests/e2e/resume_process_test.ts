/**
 * Resume with real processes: `server.ts` and `send.ts --json` on both
 * runtimes, through the fault proxy. The server is SIGKILLed mid-transfer and
 * restarted on the same inbox; the sender must resume from the durable offset
 * recorded in the partial's sidecar, resending at most 2 × `--sync-every` bytes
 * plus what was in flight. An abandoned partial is removed after
 * `--partial-ttl`.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { FrameType } from "../../src/protocol/constants.ts";
import { FaultProxy } from "../helpers/fault_proxy.ts";
import {
  CURRENT_RUNTIME,
  runScript,
  type RuntimeName,
  sha256File,
  startServer,
  tempDir,
} from "../helpers/process.ts";

const CHUNK = 64 * 1024;
const SYNC_EVERY = 256 * 1024;

let root: { path: string; cleanup: () => Promise<void> };
before(async () => {
  root = await tempDir("ferry-resume-proc-");
});
after(async () => {
  await root.cleanup();
});

/** Polls `probe` until it returns a value (for state on disk that no event announces). */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Partial files and sidecars (not a sidecar's temp file, which exists only while it is rewritten). */
async function partialFiles(inbox: string): Promise<string[]> {
  try {
    return (await readdir(join(inbox, ".ferry", "partial"))).filter((f) => !f.endsWith(".tmp")).sort();
  } catch {
    return [];
  }
}

function jsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** Prints measurements when FERRY_TEST_REPORT=1. */
function report(line: string): void {
  if (process.env.FERRY_TEST_REPORT === "1") console.log(`[resume] ${line}`);
}

const other = (r: RuntimeName): RuntimeName => (r === "deno" ? "bun" : "deno");

describe("real processes through the fault proxy", () => {
  // Both directions of the runtime pair, whichever runtime runs the test file.
  const pairs: Array<[RuntimeName, RuntimeName]> = [[CURRENT_RUNTIME, other(CURRENT_RUNTIME)], [
    other(CURRENT_RUNTIME),
    CURRENT_RUNTIME,
  ]];
  for (const [serverRt, senderRt] of pairs) {
    test(
      `SIGKILL of a ${serverRt} server, restart on the same inbox: a ${senderRt} sender resumes from the durable offset`,
      {
        timeout: 60_000,
      },
      async () => {
        const dir = join(root.path, `kill-${serverRt}-${senderRt}`);
        const inbox = join(dir, "inbox");
        await mkdir(dir, { recursive: true });
        // Larger than the socket buffers can swallow, so the sender is really held back by the stall.
        const size = 16 * 1024 * 1024;
        const src = join(dir, "big.bin");
        await writeFile(src, randomBytes(size));
        const srcSha = await sha256File(src);
        const serverArgs = ["--dir", inbox, "--sync-every", "256K"];

        let server = await startServer(serverRt, serverArgs);
        // Stall right after the 37th DATA frame: the server holds exactly 37 chunks, which is not a
        // multiple of --sync-every, so part of it is not yet durable when the server is killed.
        const held = 37 * CHUNK;
        const proxy = await FaultProxy.start({ port: server.port }, {
          plans: [{ stallAfter: { frameType: FrameType.DATA, nth: 37, offset: "end" } }],
        });
        try {
          const sending = runScript(senderRt, "send.ts", [
            "--json",
            "--chunk-size",
            "64K",
            "--retries",
            "40",
            "--backoff-max",
            "300ms",
            src,
            proxy.address,
          ], { timeoutMs: 50_000 });
          const first = await proxy.connection(0);
          await first.faulted();
          const part = await waitFor("the partial to hold 37 chunks", async () => {
            const f = (await partialFiles(inbox)).find((n) => n.endsWith(".part"));
            if (!f) return undefined;
            const st = await stat(join(inbox, ".ferry", "partial", f));
            return st.size === held ? f : undefined;
          });
          assert.equal(await server.stop("SIGKILL"), "SIGKILL");

          const sidecar = JSON.parse(
            await readFile(join(inbox, ".ferry", "partial", part.replace(/\.part$/, ".json")), "utf8"),
          );
          const durable: number = sidecar.durableOffset;
          assert.ok(durable > 0 && durable <= held, `durable offset ${durable}`);
          // Checkpoints run in the background, one at a time: at most 2 × --sync-every is not durable.
          assert.ok(
            held - durable <= 2 * SYNC_EVERY,
            `${held - durable} bytes not durable, more than 2 × --sync-every`,
          );

          // The link dies with the server; the sender retries against a dead port until the restart.
          first.cut();
          server = await startServer(serverRt, serverArgs);
          proxy.setTarget({ port: server.port });

          const run = await sending;
          assert.equal(run.code, 0, run.stdout + run.stderr);
          const events = jsonLines(run.stdout);
          const offsets = events.filter((e) => e.type === "file").map((e) => e.offset as number);
          assert.equal(offsets[offsets.length - 1], durable, "resumed exactly at the durable offset");
          const summary = events.find((e) => e.type === "summary")!;
          assert.ok(summary, "send --json ends with a summary");
          assert.equal(events[events.length - 1].type, "summary");
          const reconnect = events.find((e) => e.type === "reconnect")!;
          const written = reconnect.bytesSent as number; // file bytes the sender wrote before the drop
          const inFlight = written - held;
          const resent = (summary.bytesSent as number) - size;
          assert.ok(inFlight >= 0, `in flight ${inFlight}`);
          assert.equal(resent, written - durable);
          assert.ok(
            resent <= 2 * SYNC_EVERY + inFlight,
            `resent ${resent} > 2 × sync ${SYNC_EVERY} + in flight ${inFlight}`,
          );
          assert.ok(resent < size - held, `resent ${resent}: everything after the stall`);
          assert.ok((summary.reconnects as number) >= 1);
          report(
            `SIGKILL ${serverRt} server / ${senderRt} sender: held ${held}, durable ${durable}, ` +
              `in flight ${inFlight}, resent ${resent}, reconnects ${summary.reconnects}`,
          );

          assert.equal(await sha256File(join(inbox, "big.bin")), srcSha);
          assert.deepEqual(await partialFiles(inbox), [], "the partial is gone once the file is stored");
        } finally {
          await proxy.close();
          await server.stop("SIGKILL");
        }
      },
    );
  }

  test(
    "an abandoned partial survives a restart and is deleted after --partial-ttl",
    { timeout: 60_000 },
    async () => {
      const serverRt = other(CURRENT_RUNTIME);
      const dir = join(root.path, "ttl");
      const inbox = join(dir, "inbox");
      await mkdir(dir, { recursive: true });
      const src = join(dir, "left.bin");
      await writeFile(src, randomBytes(2 * 1024 * 1024));
      let server = await startServer(serverRt, ["--dir", inbox]);
      const proxy = await FaultProxy.start({ port: server.port }, {
        plans: [{ cutAfter: { frameType: FrameType.DATA, nth: 10, offset: "end" } }],
      });
      try {
        // With --retries 0 the sender gives up at the first drop: exit 3 (connection failure).
        const run = await runScript(CURRENT_RUNTIME, "send.ts", [
          "--json",
          "--chunk-size",
          "64K",
          "--retries",
          "0",
          src,
          proxy.address,
        ], {
          timeoutMs: 30_000,
        });
        assert.equal(run.code, 3, run.stdout + run.stderr);
        const fatal = jsonLines(run.stdout).find((e) => e.type === "fatal");
        assert.equal(fatal?.code, "CONNECTION_FAILED");
        const left = await waitFor("the partial's sidecar", async () => {
          const files = await partialFiles(inbox);
          return files.some((f) => f.endsWith(".json")) ? files : undefined;
        });
        assert.equal(left.filter((f) => f.endsWith(".part")).length, 1);

        // A restart with the default TTL (24h) keeps it: it is still resumable.
        await server.stop();
        server = await startServer(serverRt, ["--dir", inbox]);
        assert.deepEqual(await partialFiles(inbox), left);
        await server.stop();

        // With a 1 ms TTL the startup sweep deletes it (the sidecar is older than that by now).
        server = await startServer(serverRt, ["--dir", inbox, "--partial-ttl", "1ms"]);
        assert.deepEqual(await partialFiles(inbox), []);
      } finally {
        await proxy.close();
        await server.stop("SIGKILL");
      }
    },
  );
});
