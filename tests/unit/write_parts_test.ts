/**
 * A payload left in parts on its way to disk: Upload.write of a list of
 * parts (order, hash, the size and offset checks on the total), and the
 * partial file's synchronous and asynchronous write paths.
 */
import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { FerryError } from "../../src/errors.ts";
import { handlePartial, openPartial } from "../../src/runtime/files.ts";
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

describe("openPartial", () => {
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "ferry-partial-test-"));
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it("writes small (synchronous) and large (asynchronous) payloads and parts at their place", async () => {
    // Synchronous up to 128 KiB on Deno and 1 MiB on Bun; one part above both, one between.
    const file = path.join(root, "f.part");
    const bytes = bytesOf(1_900_000, 5);
    const pf = openPartial(file, "wx+");
    await pf.write(bytes.subarray(0, 10), 0);
    await pf.write(split(bytes.subarray(10, 100_000), [11, 50_000]), 10);
    await pf.write(split(bytes.subarray(100_000, 400_000), [100_001, 300_000]), 100_000);
    await pf.write(bytes.subarray(400_000, 700_000), 400_000);
    await pf.write(split(bytes.subarray(700_000), [700_001, 1_800_000]), 700_000);
    await pf.write([], 1_900_000);
    await pf.datasync();
    await pf.sync();
    await pf.close();
    await pf.close(); // a second close does nothing
    assert.deepEqual(new Uint8Array(await fs.readFile(file)), bytes);
    assert.throws(() => openPartial(file, "wx+"), (e: unknown) => (e as { code?: string }).code === "EEXIST");
  });

  it("handlePartial writes through the same paths on an open FileHandle", async () => {
    const file = path.join(root, "g.part");
    const bytes = bytesOf(1_300_000, 9);
    const pf = handlePartial(await fs.open(file, "w+"));
    await pf.write(split(bytes.subarray(0, 200_000), [1, 100_000]), 0);
    await pf.write(bytes.subarray(200_000), 200_000);
    await pf.sync();
    await pf.close();
    assert.deepEqual(new Uint8Array(await fs.readFile(file)), bytes);
  });
});
