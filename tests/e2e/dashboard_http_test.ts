/**
 * The web dashboard over real HTTP: a real server.ts process with
 * `--http 0` (on the runtime running this file) receives files from real
 * send.ts processes (on the other runtime); a raw HTTP client checks the JSON
 * API, the live event stream, the headers, the token, and that nothing
 * outside the inbox or under `.ferry/` can be fetched.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, rename, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CURRENT_RUNTIME, runSender, tempDir } from "../helpers/process.ts";
import { exifBlock, gif, jpeg, png } from "../fixtures/images.ts";
import { type DashboardServer, rawRequest, SseReader, startDashboardServer } from "./dashboard_util.ts";
import { OTHER_RUNTIME } from "./e2e_util.ts";

const CSP = "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'";

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

describe(`dashboard over HTTP (server ${CURRENT_RUNTIME}, sender ${OTHER_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let inbox: string;
  let d: DashboardServer;
  let events: SseReader;
  const files = {
    "cat.png": png(64, 48),
    "dog.jpg": jpeg(80, 60, { exif: exifBlock("2023:08:15 10:20:30") }),
    "spin.gif": gif(32, 32),
    "notes.txt": new TextEncoder().encode("<script>alert(1)</script> plain text\n"),
    "album/deep/x.txt": new TextEncoder().encode("inside a folder\n"),
  };

  before(async () => {
    tmp = await tempDir("ferry-dash-http-");
    inbox = join(tmp.path, "inbox");
    d = await startDashboardServer(CURRENT_RUNTIME, ["--dir", inbox]);
    events = await SseReader.open(d.httpPort);
    const local = join(tmp.path, "out");
    for (const [name, bytes] of Object.entries(files)) {
      await mkdir(join(local, name, ".."), { recursive: true });
      await writeFile(join(local, name), bytes);
    }
    const r = await runSender(
      OTHER_RUNTIME,
      ["-q", "--message", "hello from the test", ...["cat.png", "dog.jpg", "spin.gif", "notes.txt", "album"]],
      d.server,
      { cwd: local },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  after(async () => {
    events?.close();
    await d?.server.stop();
    await tmp?.cleanup();
  });

  test(
    "the event stream starts with a snapshot, then pushes files and messages",
    { timeout: 20_000 },
    async () => {
      assert.equal(events.status, 200);
      const snapshot = JSON.parse((await events.next("snapshot")).data);
      assert.equal(snapshot.inbox, "inbox");
      assert.ok(Array.isArray(snapshot.connections));
      const seen = new Set<string>();
      while (seen.size < 5) seen.add((await events.until<{ name: string }>("file", () => true)).name);
      assert.deepEqual([...seen].sort(), ["album/deep/x.txt", "cat.png", "dog.jpg", "notes.txt", "spin.gif"]);
      const message = await events.until<{ text: string }>("message", () => true);
      assert.equal(message.text, "hello from the test");
      // While the sender was connected the table was pushed; once it left, an empty table follows.
      await events.until<unknown[]>("connections", (list) => list.length === 0);
    },
  );

  test("JSON API: files with image metadata, messages, connections", { timeout: 20_000 }, async () => {
    const api = await rawRequest(d.httpPort, "/api/files");
    assert.equal(api.status, 200);
    assert.match(api.headers["content-type"], /^application\/json/);
    const list = JSON.parse(api.text()).files as Array<Record<string, unknown>>;
    const byName = Object.fromEntries(list.map((f) => [f.name, f]));
    assert.deepEqual(byName["cat.png"].image, { format: "png", width: 64, height: 48 });
    assert.deepEqual(byName["dog.jpg"].image, {
      format: "jpeg",
      width: 80,
      height: 60,
      takenAt: "2023-08-15T10:20:30",
    });
    assert.deepEqual(byName["spin.gif"].image, { format: "gif", width: 32, height: 32 });
    assert.equal(byName["notes.txt"].image, undefined);
    assert.equal(byName["album/deep/x.txt"].url, "/files/album/deep/x.txt");
    assert.equal(byName["cat.png"].sha256, sha256(files["cat.png"]));

    const messages = JSON.parse((await rawRequest(d.httpPort, "/api/messages")).text()).messages;
    assert.equal(messages[0].text, "hello from the test");
    assert.match(messages[0].sender, /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(JSON.parse((await rawRequest(d.httpPort, "/api/connections")).text()), []);
  });

  test("the page and its assets carry a strict CSP and nosniff", { timeout: 10_000 }, async () => {
    for (
      const [target, type] of [["/", /^text\/html/], ["/app.js", /javascript/], [
        "/app.css",
        /^text\/css/,
      ]] as const
    ) {
      const r = await rawRequest(d.httpPort, target);
      assert.equal(r.status, 200, target);
      assert.match(r.headers["content-type"], type, target);
      assert.ok(r.headers["content-security-policy"].startsWith(CSP), target);
      assert.equal(r.headers["x-content-type-options"], "nosniff");
    }
    const page = (await rawRequest(d.httpPort, "/")).text();
    assert.match(page, /<script src="\/app.js" defer><\/script>/);
    assert.doesNotMatch(page, /<script>|style=/, "no inline script or style");
  });

  test(
    "images are served inline with their type; other files only as downloads",
    { timeout: 10_000 },
    async () => {
      const types = { "cat.png": "image/png", "dog.jpg": "image/jpeg", "spin.gif": "image/gif" } as const;
      for (const [name, type] of Object.entries(types)) {
        const r = await rawRequest(d.httpPort, `/files/${name}`);
        assert.equal(r.status, 200, name);
        assert.equal(r.headers["content-type"], type);
        assert.match(r.headers["content-disposition"], /^inline;/);
        assert.equal(r.headers["x-content-type-options"], "nosniff");
        assert.ok(r.headers["content-security-policy"].startsWith(CSP));
        assert.equal(sha256(r.body), sha256(files[name as keyof typeof files]));
        const again = await rawRequest(d.httpPort, `/files/${name}`, {
          headers: { "If-None-Match": r.headers.etag },
        });
        assert.equal(again.status, 304);
      }
      const text = await rawRequest(d.httpPort, "/files/notes.txt");
      assert.equal(text.status, 200);
      assert.equal(text.headers["content-type"], "application/octet-stream");
      assert.equal(
        text.headers["content-disposition"],
        `attachment; filename="notes.txt"; filename*=UTF-8''notes.txt`,
      );
      assert.equal(text.text(), new TextDecoder().decode(files["notes.txt"]));
      const nested = await rawRequest(d.httpPort, "/files/album%2Fdeep%2Fx.txt");
      assert.equal(nested.status, 200, "an encoded / names the same stored file");
      const head = await rawRequest(d.httpPort, "/files/cat.png", { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(head.headers["content-length"], String(files["cat.png"].length));
    },
  );

  test("nothing outside the inbox or under .ferry/ is reachable", { timeout: 20_000 }, async () => {
    const secret = join(tmp.path, "secret.txt");
    await writeFile(secret, "TOP SECRET\n");
    // A symlink planted in the inbox, with no receipt.
    await symlink(secret, join(inbox, "planted.txt"));
    const targets = [
      "/files/../secret.txt",
      "/files/..%2fsecret.txt",
      "/files/%2e%2e/secret.txt",
      "/files/%2e%2e%2fsecret.txt",
      "/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
      "/files//etc/passwd",
      "/files/%2Fetc%2Fpasswd",
      `/files/${encodeURIComponent(secret)}`,
      "/files/.ferry/receipts.ndjson",
      "/files/.ferry%2freceipts.ndjson",
      "/files/%2eferry/messages.ndjson",
      "/files/album/../.ferry/receipts.ndjson",
      "/.ferry/receipts.ndjson",
      "/../secret.txt",
      "/files/planted.txt",
      "/files/cat.png%00.txt",
      "/files/%E0%A4%A",
      "/files/",
    ];
    for (const target of targets) {
      const r = await rawRequest(d.httpPort, target);
      assert.ok(r.status === 404 || r.status === 400, `${target}: status ${r.status}`);
      assert.doesNotMatch(r.text(), /TOP SECRET|"sha256"|root:/, target);
    }
  });

  test("a received file or folder swapped for a symlink is refused", { timeout: 20_000 }, async () => {
    const outside = join(tmp.path, "outside");
    await mkdir(join(outside, "deep"), { recursive: true });
    await writeFile(join(outside, "deep", "x.txt"), "TOP SECRET\n");
    await writeFile(join(outside, "spin.gif"), "TOP SECRET\n");
    // The receipts still name these paths; what is on disk now points outside.
    await rename(join(inbox, "spin.gif"), join(tmp.path, "moved.gif"));
    await symlink(join(outside, "spin.gif"), join(inbox, "spin.gif"));
    await rename(join(inbox, "album"), join(tmp.path, "album-moved"));
    await symlink(outside, join(inbox, "album"));
    for (const target of ["/files/spin.gif", "/files/album/deep/x.txt"]) {
      const r = await rawRequest(d.httpPort, target);
      assert.equal(r.status, 404, target);
      assert.doesNotMatch(r.text(), /TOP SECRET/);
    }
  });

  test("bad methods and foreign Host names are refused", { timeout: 10_000 }, async () => {
    const post = await rawRequest(d.httpPort, "/api/files", {
      method: "POST",
      headers: { "Content-Length": "0" },
    });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, "GET, HEAD");
    // DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1.
    const rebound = await rawRequest(d.httpPort, "/api/files", { host: "evil.example:8080" });
    assert.equal(rebound.status, 403);
    assert.equal((await rawRequest(d.httpPort, "/api/files", { host: "localhost" })).status, 200);
    assert.equal((await rawRequest(d.httpPort, "/nope")).status, 404);
  });
});

describe(`dashboard token (server ${CURRENT_RUNTIME})`, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let d: DashboardServer;
  const token = "correct horse battery staple";

  before(async () => {
    tmp = await tempDir("ferry-dash-token-");
    const tokenFile = join(tmp.path, "token");
    await writeFile(tokenFile, token + "\n");
    d = await startDashboardServer(CURRENT_RUNTIME, [
      "--dir",
      join(tmp.path, "inbox"),
      "--http-token-file",
      tokenFile,
    ]);
  });

  after(async () => {
    await d?.server.stop();
    await tmp?.cleanup();
  });

  test("without the token every route is 401", { timeout: 10_000 }, async () => {
    for (const target of ["/", "/app.js", "/api/files", "/events", "/files/x.png"]) {
      const r = await rawRequest(d.httpPort, target);
      assert.equal(r.status, 401, target);
      assert.match(r.headers["www-authenticate"], /^Bearer/);
    }
    assert.equal(
      (await rawRequest(d.httpPort, "/", { headers: { Authorization: "Bearer wrong" } })).status,
      401,
    );
    assert.equal((await rawRequest(d.httpPort, "/?token=wrong")).status, 401);
  });

  test("a Bearer header works; ?token= sets an HttpOnly SameSite=Strict cookie that works", {
    timeout: 10_000,
  }, async () => {
    const bearer = await rawRequest(d.httpPort, "/api/files", {
      headers: { Authorization: `Bearer ${token}` },
    });
    assert.equal(bearer.status, 200);
    const signIn = await rawRequest(d.httpPort, `/?token=${encodeURIComponent(token)}`);
    assert.equal(signIn.status, 303);
    assert.equal(signIn.headers.location, "/", "the token is taken out of the address");
    const cookie = signIn.headers["set-cookie"];
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.ok(!cookie.includes(token), "the cookie is not the token itself");
    const pair = cookie.split(";")[0];
    assert.equal((await rawRequest(d.httpPort, "/api/messages", { headers: { Cookie: pair } })).status, 200);
    const sse = await SseReader.open(d.httpPort, { Cookie: pair });
    try {
      assert.equal(sse.status, 200);
      await sse.next("snapshot");
    } finally {
      sse.close();
    }
    const forged = pair.slice(0, -4) + "0000";
    assert.equal(
      (await rawRequest(d.httpPort, "/api/messages", { headers: { Cookie: forged } })).status,
      401,
    );
  });
});
