/**
 * A payload left in parts on its way to disk: Upload.write of a list of
 * parts (order, hash, the size and offset checks on the total), and
 * writeParts, which must finish after short writes on either runtime's path.
 */
import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { FerryError } from "../../src/errors.ts";
import { openPartial, writeParts } from "../../src/runtime/files.ts";
import { type FileHeader, Inbox, type Upload } from "../../src/store/inbox.ts";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function bytesOf(n: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 131 + seed * 7 + (i >> 8)) & 0xff);
}

/** Splits `bytes` into views at the given offsets. */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [0, ...cuts, bytes.length];
  return points.slice(1).map((end, i) => bytes.subarray(points[i], end));
}

function headerFor(name: string, bytes: Uint8Array): FileHeader {
  return {
    name,
    size: bytes.length,
    sha256: sha256(bytes),
    mtimeMs: 0,
    mime: "application/octet-stream",
    sender: "127.0.0.1:50000",
    resume: false,
  };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof FerryError, `expected FerryError ${code}, got ${e}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

let root: string;
let dir: string;

async function begin(inbox: Inbox, h: FileHeader): Promise<Upload> {
  const r = await inbox.begin(h);
  assert.ok(r.kind === "upload");
  return r.upload;
}

describe("Upload.write of parts", () => {
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "ferry-parts-test-"));
    dir = path.join(root, "inbox");
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it("writes parts in order, hashes them all, and mixes with single buffers", async () => {
    const inbox = await Inbox.open({ dir });
    const bytes = bytesOf(300_000);
    const up = await begin(inbox, headerFor("p.bin", bytes));
    await up.write(split(bytes.subarray(0, 100_000), [1, 2, 50_000, 99_999]), 0);
    assert.equal(up.received, 100_000);
    await up.write([bytes.subarray(100_000, 150_000)], 100_000);
    await up.write([], 150_000);
    await up.write([new Uint8Array(0), bytes.subarray(150_000, 200_000), new Uint8Array(0)], 150_000);
    await up.write(bytes.subarray(200_000), 200_000);
    const receipt = await up.finish();
    assert.equal(receipt.sha256, sha256(bytes));
    assert.deepEqual(new Uint8Array(await fs.readFile(path.join(dir, "p.bin"))), bytes);
  });

  it("checks offset and size on the parts' total; BAD_OFFSET keeps the upload usable", async () => {
    const inbox = await Inbox.open({ dir });
    const bytes = bytesOf(1000);
    const up = await begin(inbox, headerFor("s.bin", bytes));
    await rejectsWith(up.write(split(bytes.subarray(0, 10), [4]), 3), "BAD_OFFSET");
    await up.write(split(bytes.subarray(0, 600), [300]), 0);
    await rejectsWith(up.write([bytes.subarray(600), new Uint8Array(1)], 600), "SIZE_MISMATCH");
    // The upload is discarded: it takes no more bytes, and nothing of it is left.
    await rejectsWith(up.write(bytes.subarray(600), 600), "INTERNAL");
    assert.deepEqual(await fs.readdir(path.join(dir, ".ferry", "partial")), []);
  });

  it("refuses a list holding something that is not a Uint8Array", async () => {
    const inbox = await Inbox.open({ dir });
    const bytes = bytesOf(10);
    const up = await begin(inbox, headerFor("t.bin", bytes));
    await rejectsWith(up.write([bytes, "x" as unknown as Uint8Array], 0), "INTERNAL");
    await up.write([bytes], 0);
    await up.finish();
  });
});

/** A file handle that writes at most `max` bytes per call into `data`, recording each call. */
function shortWriter(max: number) {
  const data = new Uint8Array(4096);
  const calls: string[] = [];
  const copy = (bytes: Uint8Array, position: number) => {
    const n = Math.min(max, bytes.length);
    data.set(bytes.subarray(0, n), position);
    return n;
  };
  const fh = {
    write(buffer: Uint8Array, offset: number, length: number, position: number) {
      calls.push("write");
      return Promise.resolve({
        bytesWritten: copy(buffer.subarray(offset, offset + length), position),
        buffer,
      });
    },
    writev(buffers: Uint8Array[], position: number) {
      calls.push("writev");
      let total = 0;
      for (const b of buffers) {
        const n = copy(b.subarray(0, max - total), position + total);
        total += n;
        if (total === max || n < b.length) break;
      }
      return Promise.resolve({ bytesWritten: total, buffers });
    },
  };
  return { fh: fh as unknown as fs.FileHandle, data, calls };
}

describe("writeParts", () => {
  it("finishes after short writes, every part at its place", async () => {
    const bytes = bytesOf(1000, 3);
    for (const max of [1, 7, 333, 5000]) {
      for (const cuts of [[], [1], [10, 11, 500], [999]]) {
        const { fh, data, calls } = shortWriter(max);
        await writeParts(fh, split(bytes, cuts), 100);
        assert.deepEqual(data.subarray(100, 1100), bytes, `max ${max}, cuts ${cuts}`);
        assert.ok(data.subarray(0, 100).every((b) => b === 0), "nothing before the position");
        assert.ok(data.subarray(1100).every((b) => b === 0), "nothing after the end");
        assert.ok(calls.length >= Math.ceil(bytes.length / max));
      }
    }
  });

  it("fails instead of looping when the file accepts no bytes", async () => {
    const { fh } = shortWriter(0);
    await rejectsWith(writeParts(fh, split(bytesOf(10), [5]), 0), "IO_ERROR");
    await rejectsWith(writeParts(fh, [bytesOf(10)], 0), "IO_ERROR");
  });
});

describe("openPartial", () => {
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "ferry-partial-test-"));
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it("writes small (synchronous) and large (asynchronous) payloads and parts at their place", async () => {
    const file = path.join(root, "f.part");
    const bytes = bytesOf(700_000, 5);
    const pf = openPartial(file, "wx+");
    await pf.write(bytes.subarray(0, 10), 0);
    await pf.write(split(bytes.subarray(10, 100_000), [11, 50_000]), 10);
    await pf.write(split(bytes.subarray(100_000, 400_000), [100_001, 300_000]), 100_000);
    await pf.write(bytes.subarray(400_000), 400_000);
    await pf.write([], 700_000);
    await pf.datasync();
    await pf.sync();
    await pf.close();
    await pf.close(); // a second close does nothing
    assert.deepEqual(new Uint8Array(await fs.readFile(file)), bytes);
    assert.throws(() => openPartial(file, "wx+"), (e: unknown) => (e as { code?: string }).code === "EEXIST");
  });
});
