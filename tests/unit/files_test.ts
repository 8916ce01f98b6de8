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
import { readWholeFile, reuseWholeFileBuffer } from "../../src/client/files.ts";
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

test("readWholeFile: with a limit, reads into a kept buffer once one is given back that fits", async () => {
  const a = fileOf("a.bin", 3000);
  const b = fileOf("b.bin", 1000);
  const big = fileOf("big.bin", 70_000);
  const first = await readWholeFile({ path: a.path, name: "a.bin" }, 200_000);
  const pooled = first.pooled!;
  assert.equal(first.frame!.buffer, pooled.buffer);
  assert.equal(pooled.length, DATA_HEADER_SIZE + 64 * 1024 + 1, "a step of 64 KiB plus header room");
  // Not given back: the next file gets a buffer of its own.
  const other = await readWholeFile({ path: b.path, name: "b.bin" }, 200_000);
  assert.notEqual(other.pooled!.buffer, pooled.buffer);
  reuseWholeFileBuffer(pooled);
  const second = await readWholeFile({ path: b.path, name: "b.bin" }, 200_000);
  assert.equal(second.pooled, pooled, "the buffer given back is the one read into");
  assert.equal(hex(second.data), hex(b.bytes));
  assert.equal(hex(second.sha256), b.sha256);
  assert.equal(hex(second.frame!.subarray(DATA_HEADER_SIZE)), hex(b.bytes));
  // A kept buffer too small for the next file is left for a smaller one; the file gets a new buffer.
  reuseWholeFileBuffer(second.pooled!);
  const third = await readWholeFile({ path: big.path, name: "big.bin" }, 200_000);
  assert.notEqual(third.pooled, pooled);
  assert.ok(third.pooled!.length >= DATA_HEADER_SIZE + 70_000 + 1);
  assert.ok(third.pooled!.length <= DATA_HEADER_SIZE + 200_000 + 1);
  assert.equal(hex(third.data), hex(big.bytes));
  assert.equal(hex(third.sha256), big.sha256);
  const fourth = await readWholeFile({ path: a.path, name: "a.bin" }, 200_000);
  assert.equal(fourth.pooled, pooled, "the small kept buffer still serves a small file");
  assert.equal(hex(fourth.data), hex(a.bytes));
  // Without a limit the buffer is exactly the file's size and never pooled.
  const unlimited = await readWholeFile({ path: b.path, name: "b.bin" });
  assert.equal(unlimited.pooled, undefined);
  assert.equal(unlimited.frame!.buffer.byteLength, DATA_HEADER_SIZE + 1000 + 1);
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
