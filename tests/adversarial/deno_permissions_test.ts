/**
 * The Deno sandbox README recommends for the server:
 * `--allow-net --allow-read=<inbox> --allow-write=<inbox> --allow-env=FERRY_TOKEN --allow-sys`.
 * Name rules already refuse `../x`, so this proves the second wall directly:
 * under those flags, node:fs (what the server uses) cannot leave the inbox,
 * and the server still serves transfers.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { send } from "../../mod.ts";
import { CURRENT_RUNTIME, runScript, startServer, tempDir } from "../helpers/process.ts";

const skip = CURRENT_RUNTIME === "deno"
  ? false
  : "Deno permission flags only exist on Deno; Bun has no permission sandbox";

/** Exactly README's server flags, for an inbox at `inbox`. */
function readmeFlags(inbox: string): string[] {
  return [
    "--allow-net",
    `--allow-read=${inbox}`,
    `--allow-write=${inbox}`,
    "--allow-env=FERRY_TOKEN",
    "--allow-sys",
  ];
}

describe("adversarial: Deno permission sandbox", () => {
  test("under README's flags, reads and writes outside the inbox are NotCapable", {
    skip,
    timeout: 30_000,
  }, async () => {
    const tmp = await tempDir("ferry-sandbox-");
    try {
      const inbox = join(tmp.path, "inbox");
      await mkdir(inbox);
      const secret = join(tmp.path, "secret.txt");
      await writeFile(secret, "not for the server");
      const r = await runScript("deno", "tests/adversarial/fixtures/sandbox_probe.ts", [
        inbox,
        secret,
        tmp.path,
      ], {
        denoPermissions: readmeFlags(inbox),
        env: { FERRY_TOKEN: "t" },
      });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), {
        writeInbox: "ok",
        readInbox: "ok",
        readOutside: "NotCapable",
        readEtcHostname: "NotCapable",
        writeOutside: "NotCapable",
        writeTmp: "NotCapable",
        readTraversal: "NotCapable",
        envHome: "NotCapable",
        envToken: "ok",
      });
      await assert.rejects(readFile(join(tmp.path, "escaped.txt")), { code: "ENOENT" });
    } finally {
      await tmp.cleanup();
    }
  });

  test("server.ts under README's flags serves a transfer, with FERRY_TOKEN auth", {
    skip,
    timeout: 30_000,
  }, async () => {
    const tmp = await tempDir("ferry-sandbox-");
    const inbox = join(tmp.path, "inbox");
    await mkdir(inbox);
    // No npm packages are imported by server.ts, so no read access to node_modules is needed.
    const server = await startServer("deno", ["--dir", inbox], {
      denoPermissions: readmeFlags(inbox),
      env: { FERRY_TOKEN: "sandboxed" },
    });
    try {
      assert.match(server.output(), /"auth":true/);
      // No --allow-ffi, so no syncfs: an fsync per file (the human-readable line says how to batch them).
      assert.match(server.output(), /"sync":"file"/);
      // Nor posix_fadvise: received data stays in the page cache.
      assert.match(server.output(), /"pageCache":"keep"/);
      const local = join(tmp.path, "photo.bin");
      const bytes = new Uint8Array(300_000).map((_, i) => (i * 31) & 0xff);
      await writeFile(local, bytes);
      const result = await send(
        `127.0.0.1:${server.port}`,
        [local, { path: local, name: "album/photo.bin" }],
        {
          token: "sandboxed",
          retries: 0,
        },
      );
      assert.deepEqual(result.failures, []);
      assert.deepEqual(new Uint8Array(await readFile(join(inbox, "photo.bin"))), bytes);
      assert.deepEqual(new Uint8Array(await readFile(join(inbox, "album", "photo.bin"))), bytes);
    } finally {
      assert.equal(await server.stop(), 0, server.errorOutput());
      await tmp.cleanup();
    }
  });

  test("--token-file outside the allowed paths is refused up front (use FERRY_TOKEN or allow that file)", {
    skip,
    timeout: 30_000,
  }, async () => {
    const tmp = await tempDir("ferry-sandbox-");
    try {
      const inbox = join(tmp.path, "inbox");
      await mkdir(inbox);
      const tokenFile = join(tmp.path, "token");
      await writeFile(tokenFile, "from a file\n");
      const r = await runScript("deno", "server.ts", [
        "--dir",
        inbox,
        "--port",
        "0",
        "--token-file",
        tokenFile,
      ], {
        denoPermissions: readmeFlags(inbox),
        timeoutMs: 20_000,
      });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /Requires read access/);
    } finally {
      await tmp.cleanup();
    }
  });
});
