/**
 * TLS end to end: real server.ts and send.ts processes, certificates made by
 * openssl at test time. The server runs on the runtime executing this file
 * and the sender on the other one, so the two test runs cover both pairings.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
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
import { certificateFingerprint } from "../../mod.ts";
import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";

const OTHER: RuntimeName = CURRENT_RUNTIME === "deno" ? "bun" : "deno";

function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe(`TLS (server on ${CURRENT_RUNTIME}, sender on ${OTHER})`, {
  skip: !hasOpenssl() && "openssl not installed",
}, () => {
  let dir: { path: string; cleanup: () => Promise<void> };
  let cert: string;
  let key: string;
  let tlsServer: ServerProcess;
  let plainServer: ServerProcess;
  let file: string;

  before(async () => {
    dir = await tempDir();
    cert = join(dir.path, "cert.pem");
    key = join(dir.path, "key.pem");
    execFileSync("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ], { stdio: "ignore" });
    file = join(dir.path, "secret.bin");
    await writeFile(file, randomBytes(300_000));
    tlsServer = await startServer(CURRENT_RUNTIME, [
      "--dir",
      join(dir.path, "inbox-tls"),
      "--tls-cert",
      cert,
      "--tls-key",
      key,
    ]);
    plainServer = await startServer(CURRENT_RUNTIME, ["--dir", join(dir.path, "inbox-plain")]);
  });

  after(async () => {
    await tlsServer?.stop();
    await plainServer?.stop();
    await dir?.cleanup();
  });

  test("delivers over TLS verified against --ca", { timeout: 30_000 }, async () => {
    const r = await runSender(OTHER, ["--json", "--ca", cert, file], tlsServer);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal(await sha256File(join(dir.path, "inbox-tls", "secret.bin")), await sha256File(file));
    assert.match(tlsServer.output(), /"tls":true/);
  });

  test("delivers with a pinned fingerprint and no CA", { timeout: 30_000 }, async () => {
    const pin = certificateFingerprint(readFileSync(cert, "utf8"));
    const r = await runSender(OTHER, ["--json", "--pin", pin, "-m", "pinned hello"], tlsServer);
    assert.equal(r.code, 0, r.stderr + r.stdout);
  });

  test("a wrong pin fails loudly with TLS_MISMATCH", { timeout: 30_000 }, async () => {
    const r = await runSender(
      OTHER,
      ["--json", "--retries", "0", "--pin", "sha256:" + "00".repeat(32), file],
      tlsServer,
    );
    assert.equal(r.code, 3, r.stderr + r.stdout);
    const fatal = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
    assert.equal(fatal.code, "TLS_MISMATCH");
    assert.match(fatal.message, /does not match pin/);
  });

  test("a self-signed certificate is refused without --ca or --pin", { timeout: 30_000 }, async () => {
    const r = await runSender(OTHER, ["--json", "--retries", "0", "--tls", file], tlsServer);
    assert.equal(r.code, 3, r.stderr + r.stdout);
    assert.match(r.stdout, /"code":"TLS_MISMATCH"/);
  });

  test(
    "a plaintext client gets a clear TLS_MISMATCH from a TLS server, fast",
    { timeout: 30_000 },
    async () => {
      const started = performance.now();
      const r = await runSender(OTHER, ["--json", "--retries", "0", file], tlsServer);
      assert.equal(r.code, 3, r.stderr + r.stdout);
      assert.match(r.stdout, /"code":"TLS_MISMATCH".*requires TLS/);
      assert.ok(performance.now() - started < 8_000, "must fail fast, not wait for a timeout");
    },
  );

  test("a TLS client fails fast against a plaintext server", { timeout: 30_000 }, async () => {
    const started = performance.now();
    const r = await runSender(OTHER, ["--json", "--retries", "0", "--ca", cert, file], plainServer);
    assert.equal(r.code, 3, r.stderr + r.stdout);
    assert.match(r.stdout, /"code":"TLS_MISMATCH"/);
    assert.ok(performance.now() - started < 8_000, "must fail fast, not wait for a timeout");
  });
});
