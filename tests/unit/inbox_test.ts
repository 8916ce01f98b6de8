import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import * as fss from "node:fs";
import { rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { FerryError } from "../../src/errors.ts";
import { type FileHeader, Inbox, type InboxOptions, type Receipt, Upload } from "../../src/store/inbox.ts";
import { openPartial, type PartialFile } from "../../src/runtime/files.ts";
import { dropCacheFor, loadSyncFs, syncFsFor } from "../../src/runtime/libc.ts";
import { GroupSync } from "../../src/store/group_sync.ts";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const text = (s: string) => new TextEncoder().encode(s);

function bytesOf(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function headerFor(name: string, bytes: Uint8Array, extra: Partial<FileHeader> = {}): FileHeader {
  return {
    name,
    size: bytes.length,
    sha256: sha256(bytes),
    mtimeMs: 0,
    mime: "application/octet-stream",
    sender: "127.0.0.1:50000",
    resume: false,
    ...extra,
  };
}

/** Asserts that `p` rejects with a FerryError of `code`. */
async function rejectsWith(p: Promise<unknown>, code: string): Promise<FerryError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof FerryError, `expected FerryError ${code}, got ${caught}`);
  assert.equal(caught.code, code, caught.message);
  return caught;
}

async function expectUpload(inbox: Inbox, h: FileHeader): Promise<Upload> {
  const r = await inbox.begin(h);
  assert.equal(r.kind, "upload");
  assert.ok(r.kind === "upload");
  assert.ok(r.upload instanceof Upload);
  return r.upload;
}

/**
 * An Upload like the one begin() makes, on the partial `file` at `partPath`: `handle` replaces calls of
 * the partial (as a failing disk would), `init` the rest (limits, hooks).
 */
function uploadOn(
  file: PartialFile,
  partPath: string,
  header: FileHeader,
  handle: Partial<PartialFile>,
  init: Partial<ConstructorParameters<typeof Upload>[0]>,
): Upload {
  return new Upload({
    header,
    handle: {
      fd: file.fd,
      serial: file.serial,
      write: (b, at) => file.write(b, at),
      sync: () => file.sync(),
      datasync: () => file.datasync(),
      close: () => file.close(),
      ...handle,
    },
    hash: createHash("sha256"),
    offset: 0,
    partPath,
    sidecarPath: `${partPath}.json`,
    sidecarOnDisk: false,
    release: () => {},
    commit: () => Promise.reject(new Error("not reached")),
    findDuplicate: () => Promise.resolve(undefined),
    syncEveryBytes: 1 << 30,
    flushAheadBytes: 0,
    durable: (f) => f.sync(),
    ...init,
  });
}

/** Sends a whole file in chunks and finishes it. */
async function send(inbox: Inbox, h: FileHeader, bytes: Uint8Array, chunk = 4096): Promise<Receipt> {
  const up = await expectUpload(inbox, h);
  for (let off = up.offset; off < bytes.length; off += chunk) {
    await up.write(bytes.subarray(off, Math.min(off + chunk, bytes.length)), off);
  }
  return await up.finish();
}

let root: string;
let dir: string;
let outside: string;

async function open(opts: Partial<InboxOptions> = {}): Promise<Inbox> {
  return await Inbox.open({ dir, ...opts });
}

/** Visible entries of the inbox (everything but .ferry), sorted, with "/" separators. */
async function visible(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (r === ".ferry") continue;
      out.push(r);
      if (e.isDirectory()) await walk(r);
    }
  };
  await walk("");
  return out.sort();
}

const partials = () => fs.readdir(path.join(dir, ".ferry", "partial"));

/** A file's extents from `filefrag -v` (FIEMAP): ext4 flags data not yet written to disk `delalloc`. */
function fileExtents(file: string): { offset: number; flags: string[] }[] {
  const out = execFileSync("filefrag", ["-v", file], { encoding: "utf8" });
  return [...out.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*\d+:.*?:\s*\d*:\s*(\S*)\s*$/gm)].map((m) => ({
    offset: Number(m[1]),
    flags: m[2].split(","),
  }));
}

/** Why the flush-ahead test cannot run here: it needs filefrag and a filesystem that reports delalloc. */
const DELALLOC_SKIP = (() => {
  const probe = path.join(os.tmpdir(), `ferry-delalloc-probe-${process.pid}`);
  try {
    writeFileSync(probe, new Uint8Array(64 * 1024).fill(1));
    const flags = fileExtents(probe).flatMap((e) => e.flags);
    return flags.includes("delalloc") ? false : "the temp filesystem does not report delayed allocation";
  } catch (e) {
    return `filefrag -v failed: ${(e as Error).message}`;
  } finally {
    rmSync(probe, { force: true });
  }
})();
const read = (rel: string) => fs.readFile(path.join(dir, rel));

/** Gives every test of the enclosing describe() a fresh temp root, removed afterwards. */
function useTempDirs(): void {
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "ferry-inbox-test-"));
    dir = path.join(root, "inbox");
    outside = path.join(root, "outside");
    await fs.mkdir(outside);
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });
}

describe("Inbox happy path", () => {
  useTempDirs();

  it("stores bytes, verifies the hash, sets mtime, records the receipt", async () => {
    const inbox = await open();
    assert.equal(inbox.dir, path.resolve(dir));
    const bytes = bytesOf(100_000);
    const mtimeMs = 1_600_000_000_123;
    const h = headerFor("photo.jpg", bytes, { mtimeMs, mime: "image/jpeg" });
    const up = await expectUpload(inbox, h);
    assert.equal(up.offset, 0);
    assert.equal(up.size, bytes.length);
    for (let off = 0; off < bytes.length; off += 7000) {
      const chunk = bytes.subarray(off, Math.min(off + 7000, bytes.length));
      await up.write(chunk, off);
      assert.equal(up.received, off + chunk.length);
    }
    const receipt = await up.finish();
    assert.deepEqual(receipt, {
      name: "photo.jpg",
      requestedName: "photo.jpg",
      size: bytes.length,
      sha256: h.sha256,
      mtimeMs,
      mime: "image/jpeg",
      sender: "127.0.0.1:50000",
      receivedAt: receipt.receivedAt,
    });
    assert.ok(!Number.isNaN(Date.parse(receipt.receivedAt)));
    assert.deepEqual(new Uint8Array(await read("photo.jpg")), bytes);
    const st = await fs.stat(path.join(dir, "photo.jpg"));
    // Runtimes pass utimes() as float seconds, which can lose the last millisecond.
    assert.ok(Math.abs(st.mtimeMs - mtimeMs) <= 1, `mtime ${st.mtimeMs}`);
    const lines = (await fs.readFile(path.join(dir, ".ferry", "receipts.ndjson"), "utf8")).split("\n");
    assert.equal(lines.length, 2);
    assert.equal(lines[1], "");
    assert.deepEqual(JSON.parse(lines[0]), receipt);
    assert.deepEqual(await partials(), []);
    assert.deepEqual(await visible(), ["photo.jpg"]);
    assert.deepEqual(inbox.receipts(), [receipt]);
  });

  it("stores an empty file", async () => {
    const inbox = await open();
    const receipt = await send(inbox, headerFor("empty.txt", new Uint8Array()), new Uint8Array());
    assert.equal(receipt.size, 0);
    assert.equal((await read("empty.txt")).length, 0);
  });

  it("creates nested directories", async () => {
    const inbox = await open();
    const bytes = text("nested");
    const receipt = await send(inbox, headerFor("a/b/c/file.txt", bytes), bytes);
    assert.equal(receipt.name, "a/b/c/file.txt");
    assert.deepEqual(await visible(), ["a", "a/b", "a/b/c", "a/b/c/file.txt"]);
    assert.equal((await read("a/b/c/file.txt")).toString(), "nested");
  });

  it("stores the NFC form of the name", async () => {
    const inbox = await open();
    const bytes = text("x");
    const receipt = await send(inbox, headerFor("cafe\u0301.txt", bytes), bytes);
    assert.equal(receipt.name, "caf\u00e9.txt");
    assert.equal(receipt.requestedName, "caf\u00e9.txt");
    assert.deepEqual(await visible(), ["caf\u00e9.txt"]);
  });

  it("queues pipelined writes in order", async () => {
    const inbox = await open({ syncEveryBytes: 1000 });
    const bytes = bytesOf(10_000, 7);
    const up = await expectUpload(inbox, headerFor("pipe.bin", bytes));
    const writes = [];
    for (let off = 0; off < bytes.length; off += 999) {
      writes.push(up.write(bytes.subarray(off, Math.min(off + 999, bytes.length)), off));
    }
    await Promise.all(writes);
    await up.finish();
    assert.deepEqual(new Uint8Array(await read("pipe.bin")), bytes);
  });
});

describe("Inbox failures", () => {
  useTempDirs();

  it("SIZE_MISMATCH on a short file leaves nothing behind", async () => {
    const inbox = await open();
    const bytes = bytesOf(5000);
    const up = await expectUpload(inbox, headerFor("short.bin", bytes));
    await up.write(bytes.subarray(0, 4000), 0);
    await rejectsWith(up.finish(), "SIZE_MISMATCH");
    assert.deepEqual(await visible(), []);
    assert.deepEqual(await partials(), []);
    assert.deepEqual(inbox.receipts(), []);
    // The key is free again.
    await send(inbox, headerFor("short.bin", bytes), bytes);
  });

  it("SIZE_MISMATCH when writing past the declared size", async () => {
    const inbox = await open();
    const bytes = bytesOf(100);
    const up = await expectUpload(inbox, headerFor("long.bin", bytes));
    await up.write(bytes.subarray(0, 60), 0);
    await rejectsWith(up.write(bytesOf(41), 60), "SIZE_MISMATCH");
    assert.deepEqual(await visible(), []);
    assert.deepEqual(await partials(), []);
  });

  it("HASH_MISMATCH leaves nothing behind", async () => {
    const inbox = await open();
    const bytes = bytesOf(3000);
    const h = headerFor("bad.bin", bytes, { sha256: sha256(text("something else")) });
    const up = await expectUpload(inbox, h);
    await up.write(bytes, 0);
    const err = await rejectsWith(up.finish(), "HASH_MISMATCH");
    assert.match(err.message, /bad\.bin/);
    assert.deepEqual(await visible(), []);
    assert.deepEqual(await partials(), []);
    assert.deepEqual(inbox.receipts(), []);
  });

  it("HASH_MISMATCH does not touch an existing file of that name", async () => {
    const inbox = await open({ onCollision: "overwrite" });
    const good = text("good");
    await send(inbox, headerFor("f.txt", good), good);
    const up = await expectUpload(inbox, headerFor("f.txt", text("evil"), { sha256: sha256(text("nope")) }));
    await up.write(text("evil"), 0);
    await rejectsWith(up.finish(), "HASH_MISMATCH");
    assert.equal((await read("f.txt")).toString(), "good");
  });

  it("BAD_OFFSET writes nothing and keeps the upload usable", async () => {
    const inbox = await open();
    const bytes = bytesOf(200);
    const up = await expectUpload(inbox, headerFor("o.bin", bytes));
    await rejectsWith(up.write(bytes.subarray(0, 10), 5), "BAD_OFFSET");
    await up.write(bytes.subarray(0, 100), 0);
    await rejectsWith(up.write(bytes.subarray(100), 99), "BAD_OFFSET");
    await rejectsWith(up.write(bytes.subarray(100), 101), "BAD_OFFSET");
    assert.equal(up.received, 100);
    await up.write(bytes.subarray(100), 100);
    await up.finish();
    assert.deepEqual(new Uint8Array(await read("o.bin")), bytes);
  });

  it("refuses bad headers", async () => {
    const inbox = await open();
    const ok = headerFor("x.bin", text("x"));
    await rejectsWith(inbox.begin({ ...ok, name: "../x.bin" }), "BAD_NAME");
    await rejectsWith(inbox.begin({ ...ok, name: ".ferry/receipts.ndjson" }), "BAD_NAME");
    for (const size of [-1, 1.5, NaN, Infinity, 2 ** 53, "1" as unknown as number]) {
      await rejectsWith(inbox.begin({ ...ok, size }), "BAD_HEADER");
    }
    for (const sha of ["", "abc", ok.sha256.toUpperCase(), ok.sha256 + "0", "g".repeat(64)]) {
      await rejectsWith(inbox.begin({ ...ok, sha256: sha }), "BAD_HEADER");
    }
    await rejectsWith(inbox.begin({ ...ok, mtimeMs: -5 }), "BAD_HEADER");
    assert.deepEqual(await partials(), []);
  });

  it("FILE_TOO_LARGE above maxFileSize", async () => {
    const inbox = await open({ maxFileSize: 10 });
    await rejectsWith(inbox.begin(headerFor("big.bin", bytesOf(11))), "FILE_TOO_LARGE");
    await send(inbox, headerFor("small.bin", bytesOf(10)), bytesOf(10));
  });

  it("INSUFFICIENT_STORAGE when the free-space floor would be crossed", async () => {
    const inbox = await open({ minFreeBytes: Number.MAX_SAFE_INTEGER });
    await rejectsWith(inbox.begin(headerFor("a.bin", bytesOf(1))), "INSUFFICIENT_STORAGE");
    assert.deepEqual(await partials(), []);
    // The lock was released: a later begin gets the same error, not FILE_BUSY.
    await rejectsWith(inbox.begin(headerFor("a.bin", bytesOf(1))), "INSUFFICIENT_STORAGE");
  });

  it("DISK_FULL deletes the partial (simulated with /dev/full)", async () => {
    if (!(await fs.stat("/dev/full").catch(() => undefined))) return; // Linux only
    const inbox = await open();
    const bytes = bytesOf(1000);
    const h = headerFor("full.bin", bytes);
    // The partial key is sha256("name\0size\0sha256\0mtimeMs"): point that partial at /dev/full.
    const key = sha256(text(`${h.name}\0${h.size}\0${h.sha256}\0${h.mtimeMs}`));
    await fs.symlink("/dev/full", path.join(dir, ".ferry", "partial", key + ".part"));
    const up = await expectUpload(inbox, h);
    const err = await rejectsWith(up.write(bytes, 0), "DISK_FULL");
    assert.ok(err.cause, "the OS error is chained as cause");
    assert.deepEqual(await partials(), []);
    assert.deepEqual(await visible(), []);
    await send(inbox, h, bytes); // the key was released
  });

  it("a second discard of a failed upload leaves a newer upload of the same file alone", async () => {
    const inbox = await open();
    const bytes = bytesOf(10);
    const h = { ...headerFor("twice.bin", bytes), resume: true };
    const first = await expectUpload(inbox, h);
    await rejectsWith(first.write(bytesOf(20), 0), "SIZE_MISMATCH"); // discards itself
    const second = await expectUpload(inbox, h);
    await first.discard(); // the session's own clean-up, after the fact
    // The second upload still holds the lock and its partial.
    await rejectsWith(inbox.begin(h), "FILE_BUSY");
    await second.write(bytes, 0);
    const receipt = await second.finish();
    assert.deepEqual(new Uint8Array(await read(receipt.name)), bytes);
  });

  it("FILE_BUSY for the same key twice", async () => {
    const inbox = await open();
    const bytes = bytesOf(50);
    const h = headerFor("busy.bin", bytes);
    const up = await expectUpload(inbox, h);
    await rejectsWith(inbox.begin(h), "FILE_BUSY");
    await rejectsWith(inbox.begin({ ...h, resume: true }), "FILE_BUSY");
    // Another Inbox object on the same directory shares the lock.
    const other = await open();
    await rejectsWith(other.begin(h), "FILE_BUSY");
    // A different file with the same name is a different key.
    const up2 = await expectUpload(inbox, headerFor("busy.bin", bytesOf(50, 9)));
    await up2.discard();
    await up.discard();
    assert.deepEqual(await partials(), []);
    await send(inbox, h, bytes);
  });

  it("a closed upload refuses further use", async () => {
    const inbox = await open();
    const bytes = text("abc");
    const up = await expectUpload(inbox, headerFor("c.txt", bytes));
    await up.write(bytes, 0);
    await up.finish();
    await rejectsWith(up.write(bytes, 3), "INTERNAL");
    await rejectsWith(up.finish(), "INTERNAL");
    await up.suspend(); // no-op
    await up.discard(); // idempotent, and must not delete the stored file
    assert.equal((await read("c.txt")).toString(), "abc");
  });
});

describe("Inbox collisions", () => {
  useTempDirs();

  it("rename keeps both: photo (1).jpg", async () => {
    const inbox = await open();
    const a = text("first");
    const b = text("second");
    const c = text("third");
    assert.equal((await send(inbox, headerFor("photo.jpg", a), a)).name, "photo.jpg");
    const rb = await send(inbox, headerFor("photo.jpg", b), b);
    assert.equal(rb.name, "photo (1).jpg");
    assert.equal(rb.requestedName, "photo.jpg");
    assert.equal((await send(inbox, headerFor("photo.jpg", c), c)).name, "photo (2).jpg");
    assert.deepEqual(await visible(), ["photo (1).jpg", "photo (2).jpg", "photo.jpg"]);
    assert.equal((await read("photo.jpg")).toString(), "first");
    assert.equal((await read("photo (1).jpg")).toString(), "second");
    assert.equal((await read("photo (2).jpg")).toString(), "third");
    assert.deepEqual(await partials(), []);
  });

  it("rename in a nested directory and around a planted symlink name", async () => {
    const inbox = await open();
    await fs.mkdir(path.join(dir, "d"), { recursive: true });
    await fs.symlink(path.join(outside, "target.tar.gz"), path.join(dir, "d", "archive.tar.gz"));
    const a = text("a");
    const r = await send(inbox, headerFor("d/archive.tar.gz", a), a);
    assert.equal(r.name, "d/archive (1).tar.gz");
    assert.deepEqual(await fs.readdir(outside), []);
  });

  it("overwrite replaces the file", async () => {
    const inbox = await open({ onCollision: "overwrite" });
    const a = text("old content");
    const b = text("new");
    await send(inbox, headerFor("doc.txt", a), a);
    const r = await send(inbox, headerFor("doc.txt", b), b);
    assert.equal(r.name, "doc.txt");
    assert.deepEqual(await visible(), ["doc.txt"]);
    assert.equal((await read("doc.txt")).toString(), "new");
    assert.equal(inbox.receipts().length, 2);
    // The old content is gone, so it is no duplicate any more.
    const again = await inbox.begin(headerFor("doc.txt", a));
    assert.equal(again.kind, "upload");
    if (again.kind === "upload") await again.upload.discard();
  });

  it("overwrite refuses a symlink or a directory in the way", async () => {
    const inbox = await open({ onCollision: "overwrite" });
    await fs.writeFile(path.join(outside, "secret"), "keep");
    await fs.mkdir(dir, { recursive: true });
    await fs.symlink(path.join(outside, "secret"), path.join(dir, "link.txt"));
    await fs.mkdir(path.join(dir, "adir"));
    const bytes = text("payload");
    await rejectsWith(send(inbox, headerFor("link.txt", bytes), bytes), "BAD_NAME");
    await rejectsWith(send(inbox, headerFor("adir", bytes), bytes), "NAME_EXISTS");
    assert.equal(await fs.readFile(path.join(outside, "secret"), "utf8"), "keep");
    assert.ok((await fs.lstat(path.join(dir, "link.txt"))).isSymbolicLink());
    assert.deepEqual(await partials(), []);
  });

  it("reject refuses an existing name at begin", async () => {
    const inbox = await open({ onCollision: "reject" });
    const a = text("a");
    const b = text("b");
    await send(inbox, headerFor("r.txt", a), a);
    await rejectsWith(inbox.begin(headerFor("r.txt", b)), "NAME_EXISTS");
    assert.equal((await read("r.txt")).toString(), "a");
    assert.deepEqual(await partials(), []);
  });

  it("reject re-checks the name at commit time", async () => {
    const inbox = await open({ onCollision: "reject" });
    const a = text("a");
    const b = text("bb");
    const upA = await expectUpload(inbox, headerFor("race.txt", a));
    const upB = await expectUpload(inbox, headerFor("race.txt", b));
    await upA.write(a, 0);
    await upB.write(b, 0);
    await upA.finish();
    await rejectsWith(upB.finish(), "NAME_EXISTS");
    assert.equal((await read("race.txt")).toString(), "a");
    assert.deepEqual(await visible(), ["race.txt"]);
    assert.deepEqual(await partials(), []);
    assert.equal(inbox.receipts().length, 1);
  });

  it("rename re-checks the name at commit time", async () => {
    const inbox = await open();
    const a = text("a");
    const b = text("bb");
    const upA = await expectUpload(inbox, headerFor("race.txt", a));
    const upB = await expectUpload(inbox, headerFor("race.txt", b));
    await upA.write(a, 0);
    await upB.write(b, 0);
    await upA.finish();
    assert.equal((await upB.finish()).name, "race (1).txt");
    assert.equal((await read("race.txt")).toString(), "a");
    assert.equal((await read("race (1).txt")).toString(), "bb");
  });
});

describe("Inbox duplicates", () => {
  useTempDirs();

  it("returns the original receipt and writes nothing", async () => {
    const inbox = await open();
    const bytes = bytesOf(1234);
    const original = await send(inbox, headerFor("dup.bin", bytes), bytes);
    const r = await inbox.begin(headerFor("dup.bin", bytes, { sender: "10.0.0.9:1", resume: true }));
    assert.equal(r.kind, "duplicate");
    assert.ok(r.kind === "duplicate");
    assert.deepEqual(r.receipt, { ...original, duplicate: true });
    assert.deepEqual(await visible(), ["dup.bin"]);
    assert.deepEqual(await partials(), []);
    assert.equal(inbox.receipts().length, 1);
    const lines = (await fs.readFile(path.join(dir, ".ferry", "receipts.ndjson"), "utf8")).trim().split("\n");
    assert.equal(lines.length, 1);
  });

  it("matches a renamed copy by requested name and by stored name", async () => {
    const inbox = await open();
    const a = text("a");
    const b = text("b");
    await send(inbox, headerFor("p.txt", a), a);
    const rb = await send(inbox, headerFor("p.txt", b), b);
    assert.equal(rb.name, "p (1).txt");
    const byRequested = await inbox.begin(headerFor("p.txt", b));
    assert.equal(byRequested.kind, "duplicate");
    const byStored = await inbox.begin(headerFor("p (1).txt", b));
    assert.equal(byStored.kind, "duplicate");
    assert.ok(byStored.kind === "duplicate");
    assert.equal(byStored.receipt.name, "p (1).txt");
  });

  it("is not a duplicate when the content, the name or the stored file differ", async () => {
    const inbox = await open();
    const bytes = text("content");
    await send(inbox, headerFor("d.txt", bytes), bytes);
    const other = await expectUpload(inbox, headerFor("e.txt", bytes));
    await other.discard();
    const changed = await expectUpload(inbox, headerFor("d.txt", text("changed")));
    await changed.discard();
    await fs.writeFile(path.join(dir, "d.txt"), "truncated"); // a different size now
    const modified = await expectUpload(inbox, headerFor("d.txt", bytes));
    await modified.discard();
    await fs.unlink(path.join(dir, "d.txt"));
    const r = await send(inbox, headerFor("d.txt", bytes), bytes);
    assert.equal(r.name, "d.txt");
  });
});

describe("Inbox symlinks", () => {
  useTempDirs();

  it("refuses a symlink planted as a directory component at begin", async () => {
    const inbox = await open();
    await fs.symlink(outside, path.join(dir, "evil"));
    const bytes = text("pwned");
    await rejectsWith(inbox.begin(headerFor("evil/x.txt", bytes)), "BAD_NAME");
    await rejectsWith(inbox.begin(headerFor("evil/deeper/x.txt", bytes)), "BAD_NAME");
    assert.deepEqual(await fs.readdir(outside), []);
    assert.deepEqual(await partials(), []);
  });

  it("refuses a symlink planted between begin and finish", async () => {
    const inbox = await open();
    const bytes = text("pwned");
    const up = await expectUpload(inbox, headerFor("later/x.txt", bytes));
    await up.write(bytes, 0);
    await fs.symlink(outside, path.join(dir, "later"));
    await rejectsWith(up.finish(), "BAD_NAME");
    assert.deepEqual(await fs.readdir(outside), []);
    assert.deepEqual(await partials(), []);
    assert.deepEqual(inbox.receipts(), []);
  });

  it("refuses a deeper symlink and a file used as a directory", async () => {
    const inbox = await open();
    await fs.mkdir(path.join(dir, "a", "b"), { recursive: true });
    await fs.symlink(outside, path.join(dir, "a", "b", "c"));
    await fs.writeFile(path.join(dir, "plain"), "file");
    const bytes = text("x");
    await rejectsWith(send(inbox, headerFor("a/b/c/d/x.txt", bytes), bytes), "BAD_NAME");
    await rejectsWith(send(inbox, headerFor("plain/x.txt", bytes), bytes), "BAD_NAME");
    assert.deepEqual(await fs.readdir(outside), []);
  });

  it("refuses a checked folder replaced by a symlink between two files", async () => {
    const inbox = await open();
    const one = text("one");
    await send(inbox, headerFor("d/one.txt", one), one); // "d" is now a checked, cached folder
    await fs.rename(path.join(dir, "d"), path.join(dir, "d-old"));
    await fs.symlink(outside, path.join(dir, "d"));
    const two = text("two");
    // begin() may trust its cache; placement walks again and refuses.
    await rejectsWith(send(inbox, headerFor("d/two.txt", two), two), "BAD_NAME");
    // Deeper: the first component becomes a symlink to a tree that has the rest of the path.
    await send(inbox, headerFor("a/b/one.txt", one), one);
    await fs.mkdir(path.join(outside, "b"));
    await fs.rename(path.join(dir, "a"), path.join(dir, "a-old"));
    await fs.symlink(outside, path.join(dir, "a"));
    await rejectsWith(send(inbox, headerFor("a/b/two.txt", two), two), "BAD_NAME");
    assert.deepEqual(await fs.readdir(outside), ["b"]);
    assert.deepEqual(await fs.readdir(path.join(outside, "b")), []);
    assert.deepEqual(await partials(), []);
    assert.deepEqual(inbox.receipts().map((r) => r.name), ["d/one.txt", "a/b/one.txt"]);
    await inbox.close();
  });

  it("places into a folder that was replaced by a new real folder between two files", async () => {
    const inbox = await open();
    const one = text("one");
    await send(inbox, headerFor("d/one.txt", one), one);
    await fs.rename(path.join(dir, "d"), path.join(dir, "d-old"));
    await fs.mkdir(path.join(dir, "d"));
    const two = text("two");
    await send(inbox, headerFor("d/two.txt", two), two);
    assert.deepEqual(await visible(), ["d", "d-old", "d-old/one.txt", "d/two.txt"]);
    await inbox.close();
  });

  it("refuses a symlinked .ferry state directory", async () => {
    await fs.mkdir(dir);
    await fs.symlink(outside, path.join(dir, ".ferry"));
    await rejectsWith(open(), "IO_ERROR");
    assert.deepEqual(await fs.readdir(outside), []);
  });
});

describe("Inbox resume", () => {
  useTempDirs();

  const resumeHeader = (bytes: Uint8Array, extra: Partial<FileHeader> = {}) =>
    headerFor("movie.bin", bytes, { resume: true, mtimeMs: 1_700_000_000_000, ...extra });

  it("suspend then begin(resume) continues from the durable offset", async () => {
    const inbox = await open({ syncEveryBytes: 1000 });
    const bytes = bytesOf(10_000, 3);
    const h = resumeHeader(bytes);
    const first = await expectUpload(inbox, h);
    for (let off = 0; off < 3500; off += 500) await first.write(bytes.subarray(off, off + 500), off);
    await first.suspend();
    // Bytes past the durable offset (say, from a torn write) must never be trusted.
    const [part] = (await partials()).filter((f) => f.endsWith(".part"));
    await fs.appendFile(path.join(dir, ".ferry", "partial", part), "GARBAGE");
    const second = await expectUpload(inbox, h);
    assert.equal(second.offset, 3500);
    assert.equal(second.received, 3500);
    await rejectsWith(second.write(bytes.subarray(0, 10), 0), "BAD_OFFSET");
    for (let off = 3500; off < bytes.length; off += 1500) {
      await second.write(bytes.subarray(off, Math.min(off + 1500, bytes.length)), off);
    }
    const receipt = await second.finish();
    assert.equal(receipt.sha256, sha256(bytes));
    assert.deepEqual(new Uint8Array(await read("movie.bin")), bytes);
    assert.deepEqual(await partials(), []);
  });

  it("resumes across Inbox instances (a restarted server)", async () => {
    const bytes = bytesOf(50_000, 4);
    const h = resumeHeader(bytes);
    const first = await expectUpload(await open(), h);
    await first.write(bytes.subarray(0, 20_000), 0);
    await first.suspend();
    const inbox = await open();
    const receipt = await send(inbox, h, bytes, 7777);
    assert.equal(receipt.size, bytes.length);
    assert.deepEqual(new Uint8Array(await read("movie.bin")), bytes);
  });

  it("records periodic checkpoints in the sidecar", async () => {
    const inbox = await open({ syncEveryBytes: 1000 });
    const bytes = bytesOf(5000);
    const up = await expectUpload(inbox, resumeHeader(bytes));
    await up.write(bytes.subarray(0, 2500), 0);
    // The checkpoint runs in the background: the write did not wait for it.
    await up.checkpointed();
    const [json] = (await partials()).filter((f) => f.endsWith(".json"));
    const sidecar = JSON.parse(await fs.readFile(path.join(dir, ".ferry", "partial", json), "utf8"));
    assert.equal(sidecar.durableOffset, 2500);
    assert.equal(sidecar.name, "movie.bin");
    assert.equal(sidecar.sha256, sha256(bytes));
    await up.discard();
    assert.deepEqual(await partials(), []);
  });

  it("flush-ahead gets a partial's data to disk before it is stored, and records nothing", {
    skip: DELALLOC_SKIP,
  }, async (t) => {
    // Writes 512 KiB, waits for any background sync, and tells whether some of it is still only in the
    // page cache (a delalloc extent).
    const cachedOnly = async (flushAheadBytes: number) => {
      const inbox = await open({ flushAheadBytes, syncEveryBytes: 1 << 30 });
      const bytes = bytesOf(1 << 20, 9);
      const up = await expectUpload(inbox, resumeHeader(bytes));
      await up.write(bytes.subarray(0, 512 * 1024), 0);
      await up.checkpointed();
      const names = await partials();
      // A flush is not a checkpoint: no sidecar, so the durable offset stays 0.
      assert.deepEqual(names.filter((n) => n.endsWith(".json")), []);
      const extents = fileExtents(path.join(dir, ".ferry", "partial", names[0]));
      await up.discard();
      return extents.some((e) => e.flags.includes("delalloc"));
    };
    if (!(await cachedOnly(0))) {
      // The kernel wrote the pages back on its own (dirty memory above its background threshold, from
      // other work on the machine): this run cannot tell flush-ahead from that.
      t.skip("the kernel was writing dirty pages back on its own");
      return;
    }
    assert.equal(await cachedOnly(256 * 1024), false, "with flush-ahead it is on disk");
  });

  it("a failed flush-ahead fails the upload at its next write and deletes the partial", async () => {
    await open();
    const bytes = bytesOf(4000, 3);
    assert.deepEqual(await partials(), []); // open() made the folder
    // An Upload like the one begin() makes, on a partial whose fdatasync fails (as on a disk error).
    const partPath = path.join(dir, ".ferry", "partial", "failing.part");
    const file = openPartial(partPath, "wx+");
    let datasyncs = 0;
    const up = uploadOn(file, partPath, resumeHeader(bytes), {
      datasync: () => {
        datasyncs++;
        return Promise.reject(Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" }));
      },
    }, { flushAheadBytes: 1000 });
    await up.write(bytes.subarray(0, 1500), 0); // starts the flush, which fails in the background
    const err = await rejectsWith(up.write(bytes.subarray(1500, 3000), 1500), "IO_ERROR");
    assert.match(err.message, /EIO/);
    assert.equal(datasyncs, 1);
    assert.deepEqual(await partials(), [], "the partial is deleted: its unflushed pages may be lost");
    await rejectsWith(up.finish(), "INTERNAL"); // closed
  });

  it("restarts at 0 when mtime or hash changed, or resume is off", async () => {
    const inbox = await open();
    const bytes = bytesOf(4000, 5);
    const h = resumeHeader(bytes);
    const first = await expectUpload(inbox, h);
    await first.write(bytes.subarray(0, 2000), 0);
    await first.suspend();

    const newMtime = await expectUpload(inbox, { ...h, mtimeMs: h.mtimeMs + 1 });
    assert.equal(newMtime.offset, 0);
    await newMtime.discard();

    const changed = bytesOf(4000, 6);
    const newHash = await expectUpload(inbox, resumeHeader(changed));
    assert.equal(newHash.offset, 0);
    await newHash.discard();

    const noResume = await expectUpload(inbox, { ...h, resume: false });
    assert.equal(noResume.offset, 0);
    await noResume.write(bytes, 0);
    await noResume.finish();
    assert.deepEqual(new Uint8Array(await read("movie.bin")), bytes);
    assert.deepEqual(await partials(), []);
  });

  it("suspend waits for an in-flight write", async () => {
    const inbox = await open();
    const bytes = bytesOf(3000);
    const h = resumeHeader(bytes);
    const up = await expectUpload(inbox, h);
    const w = up.write(bytes.subarray(0, 1000), 0);
    const s = up.suspend();
    await Promise.all([w, s]);
    const again = await expectUpload(inbox, h);
    assert.equal(again.offset, 1000);
    await again.discard();
  });
});

describe("Inbox kept-open files", () => {
  useTempDirs();

  it("every receipt and message is on disk before finish() returns, without close()", async () => {
    const inbox = await open();
    const files = Array.from({ length: 20 }, (_, i) => bytesOf(1000 + i, i + 1));
    // Concurrent finishes share group-committed appends.
    const receipts = await Promise.all(files.map((b, i) => send(inbox, headerFor(`f${i}.bin`, b), b)));
    await inbox.appendMessage({ text: "hello", sender: "127.0.0.1:1" });
    const onDisk = (await fs.readFile(path.join(dir, ".ferry", "receipts.ndjson"), "utf8"))
      .split("\n").filter(Boolean).map((l) => JSON.parse(l).name);
    assert.deepEqual(onDisk.sort(), receipts.map((r) => r.name).sort());
    // A second inbox on the directory (a restarted server) loads them all.
    const again = await open();
    assert.equal(again.receipts().length, files.length);
    assert.deepEqual((await again.recentMessages(5)).map((m) => m.text), ["hello"]);
    await again.close();
    // close() releases the files; the inbox stays usable and opens them again.
    await inbox.close();
    const late = text("late");
    await send(inbox, headerFor("late.txt", late), late);
    await inbox.appendMessage({ text: "again", sender: "127.0.0.1:1" });
    const third = await open();
    assert.deepEqual(third.receipts().map((r) => r.name).slice(-1), ["late.txt"]);
    assert.deepEqual((await third.recentMessages(5)).map((m) => m.text), ["hello", "again"]);
    await inbox.close();
    await third.close();
  });

  it("partials created ahead of need are used, then deleted by close() and, after a crash, by open()", async () => {
    const inbox = await open();
    const freshDir = path.join(dir, ".ferry", "fresh");
    for (let i = 0; i < 12; i++) {
      const b = bytesOf(500, i + 1);
      await send(inbox, headerFor(`f${i}.bin`, b), b);
    }
    assert.equal(inbox.receipts().length, 12);
    assert.deepEqual(await partials(), []);
    await inbox.close();
    assert.deepEqual(await fs.readdir(freshDir), []);
    // Left behind by a process that died: removed at the next open; other names are not ours.
    await fs.writeFile(path.join(freshDir, "0123456789abcdef0123456789abcdef.fresh"), "");
    await fs.writeFile(path.join(freshDir, "keep.txt"), "");
    const again = await open();
    assert.deepEqual(await fs.readdir(freshDir), ["keep.txt"]);
    const b = bytesOf(10);
    await send(again, headerFor("after.bin", b), b);
    await again.close();
    assert.deepEqual(await fs.readdir(freshDir), ["keep.txt"]);
  });

  it("a new upload of a key whose earlier partial is not resumed replaces it", async () => {
    const inbox = await open();
    const bytes = bytesOf(3000);
    // Uploads first, so that files created ahead of need are in play.
    for (let i = 0; i < 5; i++) {
      const b = bytesOf(100, i + 7);
      await send(inbox, headerFor(`warm${i}.bin`, b), b);
    }
    const h = headerFor("again.bin", bytes, { resume: true });
    const first = await expectUpload(inbox, h);
    await first.write(bytes.subarray(0, 1000), 0);
    await first.suspend(); // <key>.part and <key>.json on disk
    assert.equal((await partials()).length, 2);
    // Without the resume flag the upload starts over; once stored, nothing of the old one is left.
    const up = await expectUpload(inbox, { ...h, resume: false });
    assert.equal(up.offset, 0);
    await up.write(bytes, 0);
    await up.finish();
    assert.deepEqual(await partials(), []);
    assert.deepEqual(await read("again.bin"), Buffer.from(bytes));
    // The same when the upload fails instead.
    const h2 = headerFor("again2.bin", bytes, { resume: true });
    const second = await expectUpload(inbox, h2);
    await second.write(bytes.subarray(0, 1000), 0);
    await second.suspend();
    const failing = await expectUpload(inbox, { ...h2, resume: false });
    await rejectsWith(failing.write(bytesOf(4000), 0), "SIZE_MISMATCH");
    assert.deepEqual(await partials(), []);
    await inbox.close();
  });

  it("a file that arrives whole before its first checkpoint leaves no sidecar behind at any point", async () => {
    const inbox = await open({ syncEveryBytes: 1 << 20 });
    const bytes = bytesOf(10_000);
    const up = await expectUpload(inbox, headerFor("whole.bin", bytes, { resume: true }));
    await up.write(bytes, 0);
    assert.deepEqual((await partials()).filter((e) => !e.endsWith(".part")), []);
    await up.finish();
    assert.deepEqual(await partials(), []);
    await inbox.close();
  });

  it("skips the inspect hook only when told the content is not an image", async () => {
    const seen: string[] = [];
    const inbox = await open({
      inspect: (_temp, h) => {
        seen.push(h.name);
        return Promise.resolve(undefined);
      },
    });
    const bytes = text("plain");
    const a = await expectUpload(inbox, headerFor("a.txt", bytes));
    await a.write(bytes, 0);
    await a.finish(undefined, { notAnImage: true });
    const b = await expectUpload(inbox, headerFor("b.txt", bytes));
    await b.write(bytes, 0);
    await b.finish();
    assert.deepEqual(seen, ["b.txt"]);
    await inbox.close();
  });

  it("a free-space reading is reused to accept, never to refuse", async () => {
    const free = await fs.statfs(root).then((s) => Number(s.bavail) * Number(s.bsize), () => NaN);
    if (!(free > 4 * 2 ** 30)) return; // needs a few GiB free to leave room for the floor
    const inbox = await open({ minFreeBytes: free - 2 ** 30 });
    const small = text("small");
    await send(inbox, headerFor("small.txt", small), small);
    // Within the reuse window: a declared size over the floor is refused all the same.
    const big = headerFor("big.bin", small, { size: 2 * 2 ** 30 });
    await rejectsWith(inbox.begin(big), "INSUFFICIENT_STORAGE");
    // And one that fits is accepted from the same reading.
    const fits = await inbox.begin(headerFor("fits.bin", small, { size: 2 ** 29 }));
    assert.equal(fits.kind, "upload");
    if (fits.kind === "upload") await fits.upload.discard();
    await inbox.close();
  });
});

describe("Inbox maintenance", () => {
  useTempDirs();

  it("open() deletes stale partials and orphan temp files", async () => {
    const ttl = 60_000;
    let inbox = await open({ partialTtlMs: ttl });
    const bytes = bytesOf(2000);
    const stale = await expectUpload(inbox, headerFor("stale.bin", bytes, { resume: true }));
    await stale.write(bytes.subarray(0, 1000), 0);
    await stale.suspend();
    const fresh = await expectUpload(inbox, headerFor("fresh.bin", bytes, { resume: true }));
    await fresh.write(bytes.subarray(0, 1000), 0);
    await fresh.suspend();
    const pdir = path.join(dir, ".ferry", "partial");
    // Age the sidecar of stale.bin by two hours.
    let staleKey = "";
    for (const f of (await fs.readdir(pdir)).filter((f) => f.endsWith(".json"))) {
      const sidecar = JSON.parse(await fs.readFile(path.join(pdir, f), "utf8"));
      if (sidecar.name !== "stale.bin") continue;
      staleKey = f.slice(0, 64);
      sidecar.updatedAt = new Date(Date.now() - 2 * 3600_000).toISOString();
      await fs.writeFile(path.join(pdir, f), JSON.stringify(sidecar));
    }
    assert.equal(staleKey.length, 64);
    const freshFiles = (await fs.readdir(pdir)).filter((f) => !f.startsWith(staleKey));
    assert.equal(freshFiles.length, 2);
    const orphanPart = "a".repeat(64) + ".part";
    const orphanTmp = "b".repeat(64) + ".json.tmp";
    await fs.writeFile(path.join(pdir, orphanPart), "orphan");
    await fs.writeFile(path.join(pdir, orphanTmp), "{");
    await fs.writeFile(path.join(pdir, "unrelated.txt"), "left alone");

    inbox = await open({ partialTtlMs: ttl });
    assert.deepEqual((await fs.readdir(pdir)).sort(), [...freshFiles, "unrelated.txt"].sort());
    const resumed = await expectUpload(inbox, headerFor("fresh.bin", bytes, { resume: true }));
    assert.equal(resumed.offset, 1000);
    await resumed.discard();
    const restarted = await expectUpload(inbox, headerFor("stale.bin", bytes, { resume: true }));
    assert.equal(restarted.offset, 0);
    await restarted.discard();
  });

  it("a sidecar never outlives its partial: open() deletes one left alone, and a new upload starts at 0", async () => {
    let inbox = await open();
    const bytes = bytesOf(2000);
    const kept = await expectUpload(inbox, headerFor("kept.bin", bytes, { resume: true }));
    await kept.write(bytes.subarray(0, 1000), 0);
    await kept.suspend();
    const pdir = path.join(dir, ".ferry", "partial");
    const [sidecar] = (await fs.readdir(pdir)).filter((f) => f.endsWith(".json"));
    const key = sidecar.slice(0, -".json".length);
    // What a crash between the two deletes of an older version left: a fresh sidecar, no partial.
    await fs.rm(path.join(pdir, key + ".part"));
    inbox = await open();
    assert.deepEqual(await fs.readdir(pdir), []);
    const again = await expectUpload(inbox, headerFor("kept.bin", bytes, { resume: true }));
    assert.equal(again.offset, 0);
    await again.write(bytes, 0);
    await again.finish();
    assert.deepEqual(await fs.readdir(pdir), []);
    // A discarded upload takes its sidecar and its partial with it.
    const gone = await expectUpload(inbox, headerFor("gone.bin", bytes, { resume: true }));
    await gone.write(bytes.subarray(0, 1000), 0);
    await gone.suspend();
    const back = await expectUpload(inbox, headerFor("gone.bin", bytes, { resume: true }));
    assert.equal(back.offset, 1000);
    await back.discard();
    assert.deepEqual(await fs.readdir(pdir), []);
    await inbox.close();
  });

  it("sweep() deletes stale partials, skips open uploads, returns the count", async () => {
    const inbox = await open({ partialTtlMs: 0 });
    const bytes = bytesOf(100);
    const a = await expectUpload(inbox, headerFor("a.bin", bytes, { resume: true }));
    await a.write(bytes.subarray(0, 50), 0);
    await a.suspend();
    const open_ = await expectUpload(inbox, headerFor("b.bin", bytes, { resume: true }));
    await open_.write(bytes.subarray(0, 50), 0);
    // partialTtlMs 0: a partial is stale as soon as it exists (age >= TTL), so no waiting is needed.
    assert.equal(await inbox.sweep(), 1);
    assert.equal(await inbox.sweep(), 0);
    // The open upload was untouched and still completes.
    await open_.write(bytes.subarray(50), 50);
    await open_.finish();
    assert.deepEqual(await partials(), []);
  });

  it("appends messages as JSON lines", async () => {
    const inbox = await open();
    const m1 = await inbox.appendMessage({ id: 1, text: "hello", sender: "10.0.0.1:1" });
    const m2 = await inbox.appendMessage({ text: "line\nbreak \x1b[31m\u202e", sender: "10.0.0.2:2" });
    const lines = (await fs.readFile(path.join(dir, ".ferry", "messages.ndjson"), "utf8")).split("\n");
    assert.equal(lines.length, 3);
    assert.deepEqual(JSON.parse(lines[0]), {
      receivedAt: m1.receivedAt,
      sender: "10.0.0.1:1",
      text: "hello",
    });
    assert.deepEqual(JSON.parse(lines[1]), {
      receivedAt: m2.receivedAt,
      sender: "10.0.0.2:2",
      text: "line\nbreak \x1b[31m\u202e",
    });
    await rejectsWith(inbox.appendMessage({ text: 5 as unknown as string, sender: "x" }), "BAD_HEADER");
  });

  it("a second open() reloads receipts and drops a torn last line", async () => {
    let inbox = await open();
    const a = text("a");
    const b = text("b");
    const ra = await send(inbox, headerFor("a.txt", a, { mtimeMs: 1_000_000 }), a);
    const rb = await send(inbox, headerFor("b.txt", b), b);
    const receiptsPath = path.join(dir, ".ferry", "receipts.ndjson");
    await fs.appendFile(receiptsPath, '{"name":"c.txt","requestedName":"c.t');

    inbox = await open();
    assert.deepEqual(inbox.receipts(), [ra, rb]);
    const dup = await inbox.begin(headerFor("a.txt", a));
    assert.equal(dup.kind, "duplicate");
    const c = text("c");
    const rc = await send(inbox, headerFor("c.txt", c), c);
    const lines = (await fs.readFile(receiptsPath, "utf8")).trim().split("\n");
    assert.deepEqual(lines.map((l) => JSON.parse(l)), [ra, rb, rc]);

    inbox = await open();
    assert.deepEqual(inbox.receipts(), [ra, rb, rc]);
  });

  it("repairs a torn messages file before appending", async () => {
    await open();
    const messagesPath = path.join(dir, ".ferry", "messages.ndjson");
    await fs.writeFile(messagesPath, '{"receivedAt":"x","sender":"s","text":"ok"}\n{"receivedAt":"y","sen');
    const inbox = await open();
    await inbox.appendMessage({ text: "next", sender: "s" });
    const lines = (await fs.readFile(messagesPath, "utf8")).trim().split("\n");
    assert.deepEqual(lines.map((l) => JSON.parse(l).text), ["ok", "next"]);
  });

  it("rejects bad options", async () => {
    await rejectsWith(Inbox.open({ dir: "" }), "INTERNAL");
    await rejectsWith(open({ onCollision: "clobber" as "rename" }), "INTERNAL");
    await rejectsWith(open({ partialTtlMs: -1 }), "INTERNAL");
  });
});

describe("Inbox durability: files finishing together share a syncfs", () => {
  useTempDirs();
  const FILES = 16;

  /** Begins FILES uploads, writes each whole, then finishes them all at once. */
  async function finishTogether(inbox: Inbox): Promise<{ receipts: Receipt[]; contents: Uint8Array[] }> {
    const contents = Array.from({ length: FILES }, (_, i) => bytesOf(48 * 1024 + i, 100 + i));
    const uploads: Upload[] = [];
    for (const [i, bytes] of contents.entries()) {
      const up = await expectUpload(inbox, headerFor(`together/f${i}.bin`, bytes));
      await up.write(bytes, 0);
      uploads.push(up);
    }
    const receipts = await Promise.all(uploads.map((up) => up.finish()));
    for (const [i, r] of receipts.entries()) assert.deepEqual(await read(r.name), Buffer.from(contents[i]));
    return { receipts, contents };
  }

  /** Whether some stored file still has data only in the page cache (`delalloc`), or undefined if unknown. */
  function someCachedOnly(receipts: Receipt[]): boolean | undefined {
    if (DELALLOC_SKIP) return undefined;
    return receipts.some((r) =>
      fileExtents(path.join(dir, r.name)).some((e) => e.flags.includes("delalloc"))
    );
  }

  it("batch: one file alone gets its own fsync, the ones finishing behind it one syncfs, all on disk", {
    skip: syncFsFor(os.tmpdir())
      ? false
      : "no syncfs that is safe to use here (runtime, kernel or filesystem)",
  }, async () => {
    const inbox = await open();
    assert.equal(inbox.syncStats.grouping, true);
    const { receipts } = await finishTogether(inbox);
    const s = inbox.syncStats;
    assert.ok(s.groupSyncs >= 1, `expected a syncfs, got ${JSON.stringify(s)}`);
    assert.ok(s.fileSyncs < FILES / 2, `most files should share a syncfs: ${JSON.stringify(s)}`);
    // Each file waits twice: for its data, then for its new name and receipt line.
    assert.equal(s.fileSyncs + s.groupedFiles, 2 * FILES);
    assert.equal(s.groupFailures, 0);
    assert.notEqual(someCachedOnly(receipts), true, "every stored file's data is on disk");
  });

  it("no syncfs where it may not be as safe as an fsync per file: tmpfs", {
    skip: process.platform === "linux" && fss.existsSync("/dev/shm") ? false : "needs Linux /dev/shm",
  }, async () => {
    const shm = await fs.mkdtemp("/dev/shm/ferry-syncfs-");
    try {
      assert.equal(syncFsFor(shm), undefined);
      const inbox = await Inbox.open({ dir: path.join(shm, "inbox") });
      assert.equal(inbox.syncStats.grouping, false);
      await send(inbox, headerFor("a.txt", text("on tmpfs")), text("on tmpfs"));
      assert.equal(inbox.syncStats.fileSyncs, 1);
    } finally {
      await fs.rm(shm, { recursive: true, force: true });
    }
  });

  it("file: an fsync per file, and no syncfs", async () => {
    let calls = 0;
    const inbox = await open({ syncMode: "file", syncfs: () => Promise.resolve(calls++) });
    assert.equal(inbox.syncStats.grouping, false);
    const { receipts } = await finishTogether(inbox);
    assert.deepEqual(inbox.syncStats, {
      fileSyncs: FILES,
      groupSyncs: 0,
      groupedFiles: 0,
      groupFailures: 0,
      grouping: false,
    });
    assert.equal(calls, 0);
    assert.notEqual(someCachedOnly(receipts), true);
  });

  it("a failed syncfs falls back to an fsync per file from then on, and loses nothing", async () => {
    let calls = 0;
    let fallbacks = 0;
    const inbox = await open({
      syncfs: () => {
        calls++;
        return Promise.resolve(-1);
      },
      onSyncFallback: () => fallbacks++,
    });
    const { receipts } = await finishTogether(inbox);
    const s = inbox.syncStats;
    assert.deepEqual([calls, s.groupFailures, s.groupSyncs, s.grouping], [1, 1, 0, false], JSON.stringify(s));
    assert.equal(fallbacks, 1, "told once that grouping stopped");
    assert.ok(s.fileSyncs >= FILES, "every file was fsynced on its own");
    assert.notEqual(someCachedOnly(receipts), true);
    // Every receipt was recorded all the same: a new inbox reads every one.
    await inbox.close();
    assert.equal((await open()).receipts().length, FILES);
  });

  it("syncfs gets the descriptor opened first; after a failed one, the file whose fsync fails is the one rejected", async () => {
    await open(); // makes the folders
    const partial = (name: string) => openPartial(path.join(dir, ".ferry", "partial", name), "wx+");
    const [a, b, c] = [partial("a.part"), partial("b.part"), partial("c.part")];
    const real = loadSyncFs();
    const given: number[] = [];
    const group = new GroupSync(async (fd) => {
      given.push(fd);
      return real ? await real(fd) : 0;
    });
    // a alone (nothing running), then c and b wait behind it and share one syncfs.
    await Promise.all([group.sync(a), group.sync(c), group.sync(b)]);
    assert.deepEqual(given, [b.fd], "b was opened before c");
    assert.deepEqual(group.stats, { fileSyncs: 1, groupSyncs: 1, groupedFiles: 2, groupFailures: 0 });

    const failing = new GroupSync(() => Promise.resolve(-1));
    const eio = Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" });
    // b, but its fsync fails (as on a disk error).
    const bad: PartialFile = {
      fd: b.fd,
      serial: b.serial,
      write: (bytes, at) => b.write(bytes, at),
      sync: () => Promise.reject(eio),
      datasync: () => b.datasync(),
      close: () => b.close(),
    };
    const results = await Promise.allSettled([failing.sync(a), failing.sync(bad), failing.sync(c)]);
    assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
    assert.equal((results[1] as PromiseRejectedResult).reason, eio);
    assert.deepEqual(failing.stats, { fileSyncs: 3, groupSyncs: 0, groupedFiles: 0, groupFailures: 1 });
    // A descriptor reports an error to syncfs once: after a failure, no more grouping.
    assert.equal(failing.grouping, false);
    await Promise.all([failing.sync(a), failing.sync(c), failing.sync(b)]);
    assert.deepEqual(failing.stats, { fileSyncs: 6, groupSyncs: 0, groupedFiles: 0, groupFailures: 1 });
    for (const f of [a, b, c]) await f.close();
  });
});

describe("Inbox page cache: stretches on disk are dropped", () => {
  useTempDirs();
  const MB = 1024 * 1024;

  /** Sends `bytes` in 256 KiB writes, with flush-ahead every MiB and a checkpoint every 4 MiB. */
  async function sendLarge(inbox: Inbox, name: string, bytes: Uint8Array): Promise<Receipt> {
    return await send(inbox, headerFor(name, bytes, { resume: true }), bytes, 256 * 1024);
  }

  /** Bytes of `file` in the page cache, from util-linux `fincore` (mincore(2)). */
  function cachedBytes(file: string): number {
    return Number(
      execFileSync("fincore", ["--bytes", "--noheadings", "--output", "RES", file], { encoding: "utf8" }),
    );
  }

  const FINCORE_SKIP = (() => {
    if (!dropCacheFor(os.tmpdir())) return "no posix_fadvise through this runtime's FFI here";
    try {
      execFileSync("fincore", ["--version"]);
      return false;
    } catch {
      return "needs util-linux fincore";
    }
  })();

  it("a large upload leaves almost nothing in the page cache; keepPageCache keeps it all", {
    skip: FINCORE_SKIP,
  }, async () => {
    const bytes = bytesOf(8 * MB, 31);
    const dropping = await open({ flushAheadBytes: MB, syncEveryBytes: 4 * MB });
    const dropped = await sendLarge(dropping, "dropped.bin", bytes);
    const keeping = await open({ flushAheadBytes: MB, syncEveryBytes: 4 * MB, keepPageCache: true });
    const kept = await sendLarge(keeping, "kept.bin", bytes);
    // Measured before reading the files back, which would cache them again.
    const droppedCached = cachedBytes(path.join(dir, dropped.name));
    const keptCached = cachedBytes(path.join(dir, kept.name));
    assert.equal(keptCached, bytes.length, "keepPageCache leaves every page cached");
    assert.ok(droppedCached <= 64 * 1024, `${droppedCached} bytes of the dropped file still cached`);
    assert.deepEqual(await read(dropped.name), Buffer.from(bytes));
    assert.deepEqual(await read(kept.name), Buffer.from(bytes));
  });

  it("drops each stretch only after an fdatasync that covered it, and closes the file after the last drop", async () => {
    await open();
    const bytes = bytesOf(6 * MB + 12345, 32);
    const partPath = path.join(dir, ".ferry", "partial", "spied.part");
    const file = openPartial(partPath, "wx+");
    const current: { upload?: Upload } = {};
    /** What had been written when each completed fdatasync started: on disk once it completed. */
    let onDisk = 0;
    let pendingDrops = 0;
    let closedWhileDropping = false;
    // The drop of the file's rest is held until a turn after the name is placed, so a close that does
    // not wait for it would come first.
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => openGate = resolve);
    const drops: { offset: number; end: number; onDisk: number }[] = [];
    const up = current.upload = uploadOn(file, partPath, headerFor("spied.bin", bytes, { resume: true }), {
      datasync: async () => {
        const started = current.upload!.received;
        await file.datasync();
        onDisk = Math.max(onDisk, started);
      },
      close: () => {
        closedWhileDropping ||= pendingDrops > 0;
        return file.close();
      },
    }, {
      commit: () => {
        setImmediate(openGate);
        return Promise.resolve({ name: "spied.bin" } as Receipt);
      },
      syncEveryBytes: 4 * MB,
      flushAheadBytes: MB,
      dropCache: async (_fd, offset, length) => {
        drops.push({ offset, end: offset + length, onDisk });
        pendingDrops++;
        if (offset + length === bytes.length) await gate;
        pendingDrops--;
        return 0;
      },
      durable: async (f) => {
        await f.sync();
        onDisk = bytes.length;
      },
    });
    for (let off = 0; off < bytes.length; off += 256 * 1024) {
      await up.write(bytes.subarray(off, Math.min(off + 256 * 1024, bytes.length)), off);
    }
    await up.finish();
    assert.ok(
      drops.length >= 3,
      `stretches dropped while receiving and at the end: ${JSON.stringify(drops)}`,
    );
    let end = 0;
    for (const d of drops) {
      assert.ok(d.end <= d.onDisk, `dropped before it was on disk: ${JSON.stringify(d)}`);
      // Each starts at a page boundary at or before where the last one ended: no byte is missed.
      assert.equal(d.offset % (64 * 1024), 0);
      assert.ok(d.offset <= end && d.end > end, JSON.stringify(drops));
      end = d.end;
    }
    assert.equal(end, bytes.length, "up to the end of the file");
    assert.equal(closedWhileDropping, false, "the descriptor stays open until every drop is done");
  });

  it("a small file, and any file with keepPageCache, is never dropped", async () => {
    let calls = 0;
    const dropCache = () => Promise.resolve(calls++);
    const inbox = await open({ flushAheadBytes: MB, dropCache });
    await send(inbox, headerFor("small.bin", bytesOf(512 * 1024, 33)), bytesOf(512 * 1024, 33));
    assert.equal(calls, 0, "under one flush-ahead: stored with its pages cached, no extra call");
    const keeping = await open({ flushAheadBytes: MB, keepPageCache: true, dropCache });
    await sendLarge(keeping, "big.bin", bytesOf(3 * MB, 34));
    assert.equal(calls, 0);
  });

  it("a failing drop loses nothing: the file is stored whole", async () => {
    let calls = 0;
    const inbox = await open({
      flushAheadBytes: MB,
      dropCache: () => {
        calls++;
        return Promise.reject(new Error("EBADF"));
      },
    });
    const bytes = bytesOf(3 * MB, 35);
    const r = await sendLarge(inbox, "f.bin", bytes);
    assert.ok(calls > 0);
    assert.deepEqual(await read(r.name), Buffer.from(bytes));
  });
});
