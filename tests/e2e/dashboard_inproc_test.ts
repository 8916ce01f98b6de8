/**
 * The dashboard with an in-process server (`serve({ http })`): what it
 * remembers across a restart (messages read back from disk, overwritten
 * files listed once), its limits, and a clean close.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { appendFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { serve } from "../../mod.ts";
import { png } from "../fixtures/images.ts";
import { RawClient } from "../helpers/raw_client.ts";
import { rawRequest, SseReader } from "./dashboard_util.ts";

describe("dashboard in process", () => {
  test("messages and files from an earlier run are listed after a restart", { timeout: 20_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-dash-inproc-"));
    try {
      const first = await serve({ dir, port: 0, minFreeBytes: 0, onCollision: "overwrite" });
      const c = await RawClient.connect(first.port);
      await c.handshake();
      for (let i = 1; i <= 3; i++) {
        await c.send({ kind: "message", id: i, text: `message ${i}` });
        await c.expect("message_ack");
      }
      await c.sendFile(10, "same.png", png(4, 4));
      await c.sendFile(11, "same.png", png(8, 8)); // overwrites: one entry, the newer one
      await c.destroy();
      await first.close({ graceMs: 0 });
      // A line torn by a crash is skipped, not fatal.
      await appendFile(join(dir, ".ferry", "messages.ndjson"), '{"receivedAt":"x","sen');

      const second = await serve({ dir, port: 0, minFreeBytes: 0, http: { port: 0, history: 2 } });
      try {
        const http = second.http!;
        assert.match(http.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
        const messages = JSON.parse((await rawRequest(http.port, "/api/messages")).text()).messages;
        assert.deepEqual(
          messages.map((m: { text: string }) => m.text),
          ["message 3", "message 2"],
          "newest first",
        );
        const files = JSON.parse((await rawRequest(http.port, "/api/files")).text()).files;
        assert.equal(files.length, 1);
        assert.deepEqual(files[0].image, { format: "png", width: 8, height: 8 });
      } finally {
        await second.close({ graceMs: 0 });
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("live streams are limited, and close() ends them", { timeout: 20_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-dash-inproc-"));
    const server = await serve({ dir, port: 0, minFreeBytes: 0, http: { port: 0, maxClients: 1 } });
    try {
      const port = server.http!.port;
      const one = await SseReader.open(port);
      await one.next("snapshot");
      const extra = await rawRequest(port, "/events");
      assert.equal(extra.status, 503);
      assert.match(extra.text(), /limit 1/);
      // The first stream sees a connection come and go.
      const c = await RawClient.connect(server.port);
      await c.handshake();
      await one.until<unknown[]>("connections", (list) => list.length === 1);
      await c.destroy();
      await one.until<unknown[]>("connections", (list) => list.length === 0);
      const closed = server.close({ graceMs: 0 });
      await assert.rejects(one.next("never"), /closed before/);
      await closed;
    } finally {
      await server.close({ graceMs: 0 });
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("bad dashboard options make serve() fail with a clear error", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-dash-inproc-"));
    try {
      await assert.rejects(serve({ dir, port: 0, http: { port: 70_000 } }), RangeError);
      await assert.rejects(serve({ dir, port: 0, http: { port: 0, history: 0 } }), RangeError);
      await assert.rejects(serve({ dir, port: 0, http: { port: 0, token: "" } }), TypeError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
