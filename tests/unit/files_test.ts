/**
 * Unit tests for the sender's local file reading (src/client/files.ts): a
 * small file is read once into a buffer with room for the DATA header, and a
 * file that is larger than the caller's limit is hashed in a pass, never read
 * whole into memory.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { readWholeFile } from "../../src/client/files.ts";
import { DATA_HEADER_SIZE } from "../../src/protocol/messages.ts";

const dir = mkdtempSync(join(tmpdir(), "ferry-files-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

function fileOf(name: string, size: number): { path: string; bytes: Uint8Array; sha256: string } {
  const bytes = new Uint8Array(randomBytes(size));
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return { path, bytes, sha256: createHash("sha256").update(bytes).digest("hex") };
}

const hex = (b: Uint8Array | undefined) => Buffer.from(b ?? []).toString("hex");

test("readWholeFile: the bytes, their SHA-256, and the same bytes behind room for the DATA header", async () => {
  const f = fileOf("small.bin", 5000);
  const file = await readWholeFile({ path: f.path, name: "small.bin" }, 5000);
  assert.equal(file.size, 5000);
  assert.equal(hex(file.data), hex(f.bytes));
  assert.equal(hex(file.sha256), f.sha256);
  assert.equal(file.frame!.length, DATA_HEADER_SIZE + 5000);
  assert.equal(file.frame!.buffer, file.data!.buffer, "one buffer: the frame is the data with room in front");
  assert.equal(hex(file.frame!.subarray(DATA_HEADER_SIZE)), hex(f.bytes));
});

test("readWholeFile: a file over the limit is hashed in a pass, not read into memory", async () => {
  const f = fileOf("grew.bin", 300 * 1024);
  const file = await readWholeFile({ path: f.path, name: "grew.bin" }, 256 * 1024);
  assert.equal(file.data, undefined);
  assert.equal(file.frame, undefined);
  assert.equal(file.size, 300 * 1024);
  assert.equal(hex(file.sha256), f.sha256);
});

test("readWholeFile: an empty file and a missing one", async () => {
  const empty = fileOf("empty.bin", 0);
  const file = await readWholeFile({ path: empty.path, name: "empty.bin" }, 1024);
  assert.equal(file.data!.length, 0);
  assert.equal(hex(file.sha256), empty.sha256);
  await assert.rejects(readWholeFile({ path: join(dir, "nope"), name: "nope" }, 1024), { code: "ENOENT" });
});
