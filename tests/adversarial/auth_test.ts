/**
 * Token auth under attack: wrong, missing, replayed and malformed proofs,
 * brute force from one address, and a network observer who must never see
 * the token. Also the real CLIs: the token comes from a file or FERRY_TOKEN,
 * never from argv.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { connect as netConnect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { send } from "../../mod.ts";
import { encodeFrame } from "../../src/framing/frame.ts";
import { FrameType } from "../../src/protocol/constants.ts";
import { authMac } from "../../src/server/auth.ts";
import { CURRENT_RUNTIME, runScript, runSender, startServer, tempDir } from "../helpers/process.ts";
import {
  destroyAllClients,
  fileHeader,
  hello,
  RawClient,
  snapshotInbox,
  startTestServer,
  withServer,
} from "../helpers/raw_client.ts";

const TOKEN = "correct horse battery staple";
const T = { timeout: 15_000 };
const enc = new TextEncoder();

/** Connects, says HELLO and reads the WELCOME with its nonce. */
async function welcomed(port: number, localAddress?: string) {
  const c = await RawClient.connect(port, { localAddress });
  await c.send(hello());
  const welcome = await c.expect("welcome");
  assert.equal(welcome.nonce.length, 32);
  return { c, nonce: welcome.nonce };
}

describe("adversarial: token auth", () => {
  test("the right mac gets AUTH_OK and the connection works", T, async () => {
    await withServer({ token: TOKEN }, async ({ port, baseline }) => {
      const c = await RawClient.connect(port);
      await c.handshake({ token: TOKEN });
      await c.sendFile(1, "authed.txt", enc.encode("hello"));
      await c.destroy();
      await baseline();
    }, { token: TOKEN });
  });

  test("a wrong mac gets AUTH_FAILED and is closed", T, async () => {
    await withServer({ token: TOKEN }, async ({ port }) => {
      const { c, nonce } = await welcomed(port);
      await c.send({ kind: "auth", mac: authMac("wrong token", nonce) });
      await c.expectError("AUTH_FAILED");
      await c.waitClosed();
    }, { token: TOKEN });
  });

  test("a FILE instead of AUTH gets AUTH_REQUIRED, is closed, and stores nothing", T, async () => {
    await withServer({ token: TOKEN }, async ({ port }) => {
      const { c } = await welcomed(port);
      const bytes = enc.encode("unauthenticated");
      await c.send(fileHeader(1, "noauth.txt", bytes));
      await c.send({ kind: "data", id: 1, offset: 0, bytes });
      await c.send({ kind: "end", id: 1 });
      await c.expectError("AUTH_REQUIRED");
      await c.waitClosed();
    }, { token: TOKEN, forbidden: ["noauth.txt"] });
  });

  test("a mac replayed from an earlier connection gets AUTH_FAILED (fresh nonce each time)", T, async () => {
    await withServer({ token: TOKEN }, async ({ port }) => {
      const first = await welcomed(port);
      const mac = authMac(TOKEN, first.nonce);
      await first.c.send({ kind: "auth", mac });
      await first.c.expect("auth_ok");
      await first.c.destroy();
      const second = await welcomed(port);
      assert.notDeepEqual(second.nonce, first.nonce);
      await second.c.send({ kind: "auth", mac });
      await second.c.expectError("AUTH_FAILED");
      await second.c.waitClosed();
    }, { token: TOKEN });
  });

  test("an AUTH frame with a 31-byte mac gets BAD_FRAME", T, async () => {
    await withServer({ token: TOKEN }, async ({ port }) => {
      const { c } = await welcomed(port);
      await c.write(encodeFrame({ type: FrameType.AUTH, payload: new Uint8Array(31) }));
      await c.expectError("BAD_FRAME");
      await c.waitClosed();
    }, { token: TOKEN });
  });

  test("a client that never sends AUTH gets HANDSHAKE_TIMEOUT", T, async () => {
    await withServer({ token: TOKEN, handshakeTimeoutMs: 300 }, async ({ port }) => {
      const { c } = await welcomed(port);
      await c.expectError("HANDSHAKE_TIMEOUT");
      await c.waitClosed();
    }, { token: TOKEN });
  });

  test(
    "after maxAuthFailuresPerMinute failures an address gets RATE_LIMITED, even with the right token",
    T,
    async () => {
      const t0 = await withServerNoNormalClient(
        { token: TOKEN, maxAuthFailuresPerMinute: 3 },
        async ({ port }) => {
          for (let i = 0; i < 3; i++) {
            const { c, nonce } = await welcomed(port);
            await c.send({ kind: "auth", mac: authMac(`guess ${i}`, nonce) });
            await c.expectError("AUTH_FAILED");
            await c.waitClosed();
          }
          // Refused before WELCOME: a limited address does not even get a nonce to work on.
          const limited = await RawClient.connect(port);
          await limited.send(hello());
          await limited.expectError("RATE_LIMITED");
          await limited.waitClosed();
          // Another address is not limited: brute force from one host does not lock everyone out.
          const other = await RawClient.connect(port, { localAddress: "127.0.0.2" });
          await other.handshake({ token: TOKEN });
          const receipt = await other.sendFile(1, "other-address.txt", enc.encode("still served"));
          assert.equal(receipt.storedName, "other-address.txt");
          await other.destroy();
        },
      );
      assert.deepEqual(t0, ["file other-address.txt"]);
    },
  );

  test("a network observer never sees the token: only the nonce and the HMAC cross the wire", T, async () => {
    await withServer({ token: TOKEN }, async ({ port, dir, scratch, baseline }) => {
      const captured: Uint8Array[] = [];
      const proxy = createServer((inbound: Socket) => {
        const outbound = netConnect({ host: "127.0.0.1", port });
        inbound.on("data", (d: Uint8Array) => {
          captured.push(new Uint8Array(d));
          outbound.write(d);
        });
        outbound.on("data", (d: Uint8Array) => {
          captured.push(new Uint8Array(d));
          inbound.write(d);
        });
        inbound.on("end", () => outbound.end());
        outbound.on("end", () => inbound.end());
        inbound.on("error", () => outbound.destroy());
        outbound.on("error", () => inbound.destroy());
      });
      await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
      try {
        const proxyPort = (proxy.address() as { port: number }).port;
        const local = join(scratch, "observed.txt");
        await writeFile(local, "watched in transit");
        const result = await send(`127.0.0.1:${proxyPort}`, [local], { token: TOKEN, retries: 0 });
        assert.equal(result.receipts.length, 1);
        const wire = Buffer.concat(captured);
        assert.ok(wire.length > 0);
        assert.equal(wire.indexOf(Buffer.from(TOKEN)), -1, "the token crossed the wire in clear");
        assert.equal(wire.indexOf(Buffer.from(TOKEN.slice(0, 8))), -1);
        assert.equal(await readFile(join(dir, "observed.txt"), "utf8"), "watched in transit");
        await baseline();
      } finally {
        proxy.close();
      }
    }, { token: TOKEN });
  });
});

/**
 * Like withServer, for the case where 127.0.0.1 itself is rate limited, so
 * the usual normal client (which connects from 127.0.0.1) cannot be used;
 * returns the visible inbox afterwards.
 */
async function withServerNoNormalClient(
  options: Parameters<typeof withServer>[0],
  attack: Parameters<typeof withServer>[1],
): Promise<string[]> {
  const t = await startTestServer(options);
  try {
    const noop = async () => {};
    await attack({ ...t, baseline: noop, unchanged: noop, stillUsable: noop });
    return (await snapshotInbox(t.dir)).map((l) => l.split(" ").slice(0, 2).join(" "));
  } finally {
    await destroyAllClients();
    await t.close();
  }
}

describe("adversarial: token auth through the real CLIs", () => {
  test(
    `send.ts with FERRY_TOKEN against server.ts --token-file (${CURRENT_RUNTIME})`,
    { timeout: 60_000 },
    async () => {
      const tmp = await tempDir("ferry-auth-cli-");
      const inbox = join(tmp.path, "inbox");
      const tokenFile = join(tmp.path, "token");
      await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
      const file = join(tmp.path, "cli.txt");
      await writeFile(file, "sent by the CLI");
      const server = await startServer(CURRENT_RUNTIME, [
        "--dir",
        inbox,
        "--token-file",
        tokenFile,
        "--max-auth-failures",
        "2",
      ]);
      try {
        assert.match(server.output(), /"auth":true/);
        const ok = await runSender(CURRENT_RUNTIME, ["-q", file], server, { env: { FERRY_TOKEN: TOKEN } });
        assert.equal(ok.code, 0, ok.stderr);
        assert.equal(await readFile(join(inbox, "cli.txt"), "utf8"), "sent by the CLI");

        const wrong = await runSender(CURRENT_RUNTIME, ["-q", file], server, {
          env: { FERRY_TOKEN: "nope" },
        });
        assert.equal(wrong.code, 4, wrong.stderr);
        assert.match(wrong.stderr, /AUTH_FAILED/);
        assert.ok(!wrong.stderr.includes(TOKEN) && !server.output().includes(TOKEN), "the token was printed");

        // --max-auth-failures 2: the second failure locks this address out, right token or not.
        const wrong2 = await runSender(CURRENT_RUNTIME, ["-q", file], server, {
          env: { FERRY_TOKEN: "nope2" },
        });
        assert.match(wrong2.stderr, /AUTH_FAILED/);
        const limited = await runSender(CURRENT_RUNTIME, ["-q", file], server, {
          env: { FERRY_TOKEN: TOKEN },
        });
        assert.equal(limited.code, 4, limited.stderr);
        assert.match(limited.stderr, /RATE_LIMITED/);

        // No --token flag: a secret in argv shows up in `ps` for every local user.
        const argv = await runSender(CURRENT_RUNTIME, ["--token", TOKEN, file], server, {
          env: { FERRY_TOKEN: "" },
        });
        assert.equal(argv.code, 2, argv.stderr);
        assert.match(argv.stderr, /token/);
      } finally {
        await server.stop();
        await tmp.cleanup();
      }
    },
  );

  test(`server.ts --token is a usage error too (${CURRENT_RUNTIME})`, { timeout: 30_000 }, async () => {
    const tmp = await tempDir("ferry-auth-cli-");
    try {
      const r = await runScript(CURRENT_RUNTIME, "server.ts", [
        "--dir",
        tmp.path,
        "--port",
        "0",
        "--token",
        TOKEN,
      ]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /token/);
    } finally {
      await tmp.cleanup();
    }
  });
});
