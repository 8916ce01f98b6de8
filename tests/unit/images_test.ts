/**
 * Images checked by content: detection, structure walks over valid and
 * damaged files, dimensions, EXIF, the name/content rules, the early check
 * of an upload's head, and the server refusing bad images before they are
 * stored (in-process server, real sockets).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FerryError } from "../../src/errors.ts";
import {
  DEFAULT_MAX_PIXELS,
  detectFormat,
  exifTakenAt,
  formatFromName,
  type ImageFormat,
  ImageSniffer,
  inspectBytes,
  inspectFile,
} from "../../src/images/mod.ts";
import { NEED_MORE } from "../../src/images/formats.ts";
import { ByteReader, memorySource } from "../../src/images/reader.ts";
import { walkGif } from "../../src/images/gif.ts";
import { walkIsobmff } from "../../src/images/isobmff.ts";
import { walkJpeg } from "../../src/images/jpeg.ts";
import { walkPng } from "../../src/images/png.ts";
import { walkWebp } from "../../src/images/webp.ts";
import { send } from "../../mod.ts";
import {
  ascii,
  concat,
  exifBlock,
  gif,
  heif,
  jpeg,
  png,
  pngChunk,
  pngHead,
  webp,
} from "../fixtures/images.ts";
import {
  fileHeader,
  partialFiles,
  RawClient,
  startTestServer,
  type TestServer,
} from "../helpers/raw_client.ts";

const EXIF = exifBlock("2021:07:04 15:30:00", "+02:00");

/** One valid sample per format, with the dimensions it declares. */
const SAMPLES: Array<{ name: string; format: ImageFormat; bytes: Uint8Array; w: number; h: number }> = [
  { name: "a.png", format: "png", bytes: png(64, 40), w: 64, h: 40 },
  { name: "a.jpg", format: "jpeg", bytes: jpeg(48, 32), w: 48, h: 32 },
  { name: "a.gif", format: "gif", bytes: gif(30, 20), w: 30, h: 20 },
  { name: "lossy.webp", format: "webp", bytes: webp("VP8 ", 300, 200), w: 300, h: 200 },
  { name: "lossless.webp", format: "webp", bytes: webp("VP8L", 301, 201), w: 301, h: 201 },
  { name: "extended.webp", format: "webp", bytes: webp("VP8X", 5000, 3000), w: 5000, h: 3000 },
  { name: "a.avif", format: "avif", bytes: heif("avif", 640, 480), w: 640, h: 480 },
  { name: "a.heic", format: "heic", bytes: heif("heic", 4032, 3024), w: 4032, h: 3024 },
];

const WALKERS = {
  png: walkPng,
  jpeg: walkJpeg,
  gif: walkGif,
  webp: walkWebp,
  avif: walkIsobmff,
  heic: walkIsobmff,
};

/** Runs `fn`, expecting a FerryError with `code`; returns it. */
async function refused(fn: () => Promise<unknown>, code: string, message?: RegExp): Promise<FerryError> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof FerryError, `expected FerryError ${code}, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    return e;
  }
  assert.fail(`expected ${code}, but nothing was thrown`);
}

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const copy = bytes.slice();
  copy[at] ^= 0xff;
  return copy;
}

describe("format detection", () => {
  test("magic bytes name every sample's format", () => {
    for (const s of SAMPLES) assert.equal(detectFormat(s.bytes, true), s.format, s.name);
  });

  test("non-images, MP4 brands and short prefixes", () => {
    assert.equal(detectFormat(ascii("hello, world"), true), undefined);
    assert.equal(detectFormat(new Uint8Array(0), true), undefined);
    const mp4 = concat(new Uint8Array([0, 0, 0, 16]), ascii("ftypisom"), new Uint8Array(4));
    assert.equal(detectFormat(mp4, true), undefined);
    // A prefix that could still become a signature waits for more, unless the file ends there.
    assert.equal(detectFormat(new Uint8Array([0x89, 0x50]), false), NEED_MORE);
    assert.equal(detectFormat(new Uint8Array([0x89, 0x50]), true), undefined);
    assert.equal(detectFormat(ascii("RIFF\0\0\0\0WE"), false), NEED_MORE);
    assert.equal(detectFormat(ascii("RIFF\0\0\0\0WAVE"), false), undefined);
    assert.equal(detectFormat(ascii("hello, world"), false), undefined);
    const avif = heif("avif", 2, 2);
    assert.equal(detectFormat(avif.subarray(0, 20), false), NEED_MORE, "ftyp box not complete yet");
  });

  test("name extensions, case-insensitively", () => {
    const cases: Array<[string, ImageFormat | undefined]> = [
      ["IMG_0001.JPG", "jpeg"],
      ["x/y.jpeg", "jpeg"],
      ["a.png", "png"],
      ["a.webp", "webp"],
      ["a.HEIF", "heic"],
      ["a.avif", "avif"],
      ["notes.txt", undefined],
      [".png", undefined],
      ["png", undefined],
      ["dir.png/file", undefined],
    ];
    for (const [name, want] of cases) assert.equal(formatFromName(name), want, name);
  });
});

describe("structure checks of valid images", () => {
  test("every sample passes with its dimensions", async () => {
    for (const s of SAMPLES) {
      const meta = await inspectBytes(s.bytes, s.name);
      assert.deepEqual(meta, { format: s.format, width: s.w, height: s.h }, s.name);
    }
  });

  test("walking through a 7-byte window gives the same answers", async () => {
    for (const s of SAMPLES) {
      const r = new ByteReader(memorySource(s.bytes), 7);
      const walk = await WALKERS[s.format](r, "full");
      assert.deepEqual([walk.width, walk.height], [s.w, s.h], s.name);
    }
    const withExif = await walkPng(new ByteReader(memorySource(png(8, 8, { exif: EXIF })), 7), "full");
    assert.deepEqual(withExif.exif, EXIF);
  });

  test("files on disk are checked the same way", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ferry-images-"));
    try {
      const big = jpeg(600, 400, { quality: 95 });
      await writeFile(join(dir, "big.jpg"), big);
      assert.deepEqual(await inspectFile(join(dir, "big.jpg"), "big.jpg"), {
        format: "jpeg",
        width: 600,
        height: 400,
      });
      await writeFile(join(dir, "cut.jpg"), big.subarray(0, big.length - 500));
      await refused(() => inspectFile(join(dir, "cut.jpg"), "cut.jpg"), "CORRUPT_IMAGE", /EOI/);
      await refused(() => inspectFile(join(dir, "missing.jpg"), "missing.jpg"), "IO_ERROR");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("JPEG data after EOI is tolerated (camera trailers); PNG data after IEND is not", async () => {
    const tail = ascii("trailing preview");
    assert.equal((await inspectBytes(concat(jpeg(16, 16), tail), "t.jpg"))?.format, "jpeg");
    await refused(() => inspectBytes(concat(png(4, 4), tail), "t.png"), "CORRUPT_IMAGE", /after IEND/);
  });
});

describe("damaged images are CORRUPT_IMAGE", () => {
  const p = png(16, 16);
  const j = jpeg(16, 16);
  const g = gif(8, 8);
  const w = webp("VP8X", 100, 100);
  const h = heif("heic", 100, 100);
  const cases: Array<[string, string, Uint8Array, RegExp]> = [
    ["PNG with a flipped CRC byte", "a.png", flip(p, 8 + 4 + 4 + 13), /IHDR.*CRC/],
    ["PNG with a flipped data byte", "a.png", flip(p, 8 + 25 + 10), /IDAT.*CRC/],
    ["PNG without IEND", "a.png", p.subarray(0, p.length - 12), /without an IEND/],
    ["PNG cut inside a chunk", "a.png", p.subarray(0, 40), /truncated/],
    ["PNG without IDAT", "a.png", concat(pngHead(4, 4), pngChunk("IEND", new Uint8Array(0))), /no IDAT/],
    ["truncated JPEG without EOI", "a.jpg", j.subarray(0, j.length - 2), /EOI/],
    ["JPEG cut in its headers", "a.jpg", j.subarray(0, 30), /truncated|EOI/],
    ["JPEG with a broken marker", "a.jpg", flip(j, 20), /no marker at offset 20/],
    ["GIF without its trailer", "a.gif", g.subarray(0, g.length - 1), /trailer/],
    [
      "GIF with an unknown block",
      "a.gif",
      concat(g.subarray(0, g.length - 1), new Uint8Array([0x99, 0x3b])),
      /unknown block/,
    ],
    ["WebP with a wrong RIFF length", "a.webp", concat(w, new Uint8Array(2)), /RIFF length/],
    ["WebP cut short", "a.webp", w.subarray(0, w.length - 4), /RIFF length/],
    ["HEIC cut inside mdat", "a.heic", h.subarray(0, h.length - 10), /truncated/],
  ];
  for (const [label, name, bytes, message] of cases) {
    test(label, async () => {
      await refused(() => inspectBytes(bytes, name), "CORRUPT_IMAGE", message);
    });
  }

  test("WebP whose RIFF length matches but a chunk runs past the end", async () => {
    const bad = w.slice();
    new DataView(bad.buffer).setUint32(16, 1000, true); // VP8X chunk length
    await refused(() => inspectBytes(bad, "a.webp"), "CORRUPT_IMAGE", /truncated/);
  });

  test("HEIC whose item data lies past the end of the file", async () => {
    const bad = h.slice();
    // Make the final mdat box end early and drop its bytes: boxes tile the file, iloc points past it.
    const mdatAt = bad.length - (8 + 64);
    new DataView(bad.buffer).setUint32(mdatAt, 8 + 10);
    await refused(
      () => inspectBytes(bad.subarray(0, mdatAt + 18), "a.heic"),
      "CORRUPT_IMAGE",
      /past the end/,
    );
  });
});

describe("name and content rules", () => {
  const p = png(8, 8);
  const text = ascii("just some text, not a picture\n");

  test("an image named as another format is TYPE_MISMATCH, with or without --images-only", async () => {
    await refused(
      () => inspectBytes(p, "photo.jpg"),
      "TYPE_MISMATCH",
      /named as JPEG but its content is PNG/,
    );
    await refused(() => inspectBytes(p, "photo.jpg", { imagesOnly: true }), "TYPE_MISMATCH");
  });

  test("text named .jpg: accepted by default, TYPE_MISMATCH with --images-only", async () => {
    assert.equal(await inspectBytes(text, "photo.jpg"), undefined);
    await refused(
      () => inspectBytes(text, "photo.jpg", { imagesOnly: true }),
      "TYPE_MISMATCH",
      /named as JPEG but its content is not an image/,
    );
  });

  test("other non-images: accepted by default, NOT_AN_IMAGE with --images-only", async () => {
    assert.equal(await inspectBytes(text, "notes.txt"), undefined);
    assert.equal(await inspectBytes(new Uint8Array(0), "empty"), undefined);
    await refused(() => inspectBytes(text, "notes.txt", { imagesOnly: true }), "NOT_AN_IMAGE");
    await refused(() => inspectBytes(new Uint8Array(0), "empty.bin", { imagesOnly: true }), "NOT_AN_IMAGE");
  });

  test("a damaged signature is no image: a plain file by default, TYPE_MISMATCH with --images-only", async () => {
    const damaged = flip(p, 3);
    assert.equal(await inspectBytes(damaged, "a.png"), undefined);
    await refused(() => inspectBytes(damaged, "a.png", { imagesOnly: true }), "TYPE_MISMATCH");
  });

  test("an image under a non-image name is judged by its content", async () => {
    assert.equal((await inspectBytes(p, "scan.bin", { imagesOnly: true }))?.format, "png");
  });
});

describe("pixel limit", () => {
  // Structurally valid: the CRCs are right; only the declared size is absurd.
  const bomb = concat(
    pngHead(20_000, 20_000),
    pngChunk("IDAT", new Uint8Array(10)),
    pngChunk("IEND", new Uint8Array(0)),
  );

  test("an image declaring more than maxPixels is TOO_MANY_PIXELS", async () => {
    assert.equal(DEFAULT_MAX_PIXELS, 100_000_000);
    await refused(() => inspectBytes(bomb, "bomb.png"), "TOO_MANY_PIXELS", /20000x20000.*100000000/);
    await refused(() => inspectBytes(png(10, 10), "small.png", { maxPixels: 99 }), "TOO_MANY_PIXELS");
    assert.equal((await inspectBytes(png(10, 10), "small.png", { maxPixels: 100 }))?.width, 10);
    assert.equal((await inspectBytes(bomb, "bomb.png", { maxPixels: 0 }))?.width, 20_000, "0 = no limit");
  });

  test("HEIF counts its largest item, not only the primary one", async () => {
    await refused(() => inspectBytes(heif("avif", 12_000, 9_000), "a.avif"), "TOO_MANY_PIXELS");
  });
});

describe("EXIF DateTimeOriginal", () => {
  test("read from JPEG APP1, PNG eXIf, WebP EXIF and HEIF Exif items", async () => {
    const files: Array<[string, Uint8Array]> = [
      ["e.jpg", jpeg(16, 16, { exif: EXIF })],
      ["e.png", png(8, 8, { exif: EXIF })],
      ["e.webp", webp("VP8X", 10, 10, { exif: EXIF })],
      ["e.avif", heif("avif", 10, 10, { exif: EXIF })],
      ["e.heic", heif("heic", 10, 10, { exif: EXIF })],
    ];
    for (const [name, bytes] of files) {
      assert.equal((await inspectBytes(bytes, name))?.takenAt, "2021-07-04T15:30:00+02:00", name);
    }
  });

  test("without an offset, with an unset date, and with a damaged block", () => {
    assert.equal(exifTakenAt(exifBlock("2019:12:31 23:59:58")), "2019-12-31T23:59:58");
    assert.equal(exifTakenAt(exifBlock("0000:00:00 00:00:00")), undefined);
    assert.equal(exifTakenAt(exifBlock("not a date at all!!")), undefined);
    const damaged = exifBlock("2019:12:31 23:59:58");
    new DataView(damaged.buffer).setUint32(4, 0xfffff); // IFD0 offset far past the end
    assert.equal(exifTakenAt(damaged), undefined);
  });

  test("a damaged EXIF block does not fail the image", async () => {
    const damaged = EXIF.slice();
    new DataView(damaged.buffer).setUint32(4, 0xfffff);
    assert.deepEqual(await inspectBytes(jpeg(16, 16, { exif: damaged }), "d.jpg"), {
      format: "jpeg",
      width: 16,
      height: 16,
    });
  });
});

describe("early check of an upload's first bytes", () => {
  const bombHead = pngHead(20_000, 20_000); // 33 bytes: the size is known after byte 24

  test("fed byte by byte, a pixel bomb is refused exactly when its size is known", async () => {
    const sniffer = new ImageSniffer("bomb.png", 50_000_000, {});
    for (let i = 0; i < 23; i++) await sniffer.push(bombHead.subarray(i, i + 1), i);
    assert.equal(sniffer.done, false);
    await refused(() => sniffer.push(bombHead.subarray(23, 24), 23), "TOO_MANY_PIXELS");
    assert.equal(sniffer.done, true);
  });

  test("an undecided first chunk is kept as a copy: the socket reuses its buffer", async () => {
    const chunk = bombHead.slice(0, 10);
    const sniffer = new ImageSniffer("bomb.png", 50_000_000, {});
    await sniffer.push(chunk, 0);
    assert.equal(sniffer.done, false);
    chunk.fill(0); // the transport's next read lands in the same buffer
    await refused(() => sniffer.push(bombHead.subarray(10), 10), "TOO_MANY_PIXELS");
    // An empty push first changes nothing.
    const late = new ImageSniffer("bomb.png", 50_000_000, {});
    await late.push(new Uint8Array(0), 0);
    await late.push(bombHead.slice(0, 10), 0);
    await refused(() => late.push(bombHead.subarray(10), 10), "TOO_MANY_PIXELS");
  });

  test("awkward splits of a valid JPEG decide without refusing", async () => {
    const j = jpeg(40, 30, { exif: EXIF });
    for (const split of [[1], [2, 1], [3, 3, 3], [21, 1000], [j.length]]) {
      const sniffer = new ImageSniffer("ok.jpg", j.length, { maxPixels: 1200 });
      let at = 0;
      for (const n of [...split, j.length]) {
        if (sniffer.done || at >= j.length) break;
        const part = j.subarray(at, Math.min(j.length, at + n));
        await sniffer.push(part, at);
        at += part.length;
      }
      assert.equal(sniffer.done, true, `split ${split}`);
    }
    await refused(
      () => new ImageSniffer("ok.jpg", j.length, { maxPixels: 1199 }).push(j, 0),
      "TOO_MANY_PIXELS",
    );
  });

  test("type rules apply to the head too", async () => {
    const text = ascii("plain text, long enough to decide");
    await refused(() => new ImageSniffer("a.txt", 1000, { imagesOnly: true }).push(text, 0), "NOT_AN_IMAGE");
    await refused(() => new ImageSniffer("a.jpg", 1000, { imagesOnly: true }).push(text, 0), "TYPE_MISMATCH");
    await refused(() => new ImageSniffer("a.jpg", 1000, {}).push(png(4, 4), 0), "TYPE_MISMATCH");
    const fine = new ImageSniffer("a.txt", 1000, {});
    await fine.push(text, 0);
    assert.equal(fine.done, true);
  });

  test("notAnImage only when the head showed the content is not an image and the policy lets it pass", async () => {
    const text = ascii("plain text, long enough to decide");
    const plain = new ImageSniffer("a.txt", 1000, {});
    assert.equal(plain.notAnImage, false);
    await plain.push(text, 0);
    assert.equal(plain.notAnImage, true);
    // The full check of the same bytes agrees: nothing to learn from running it.
    assert.equal(await inspectBytes(text, "a.txt"), undefined);
    // A few bytes that could still grow into a signature decide nothing yet.
    const maybe = new ImageSniffer("m.bin", 1000, {});
    await maybe.push(new Uint8Array([0x89, 0x50]), 0);
    assert.equal(maybe.notAnImage, false);
    const image = new ImageSniffer("ok.png", 1000, {});
    await image.push(png(4, 4), 0);
    assert.equal(image.notAnImage, false);
    const refusedHead = new ImageSniffer("a.txt", 1000, { imagesOnly: true });
    await refused(() => refusedHead.push(text, 0), "NOT_AN_IMAGE");
    assert.equal(refusedHead.notAnImage, false);
  });

  test("a WebP whose RIFF length disagrees with the declared size is refused from its head", async () => {
    const w = webp("VP8L", 10, 10);
    await refused(() => new ImageSniffer("a.webp", w.length + 100, {}).push(w, 0), "CORRUPT_IMAGE", /RIFF/);
  });

  test("inconclusive heads are left to the full check", async () => {
    // The frame header lies beyond a 100-byte head: give up quietly.
    const j = jpeg(40, 30, { exif: exifBlock("2021:07:04 15:30:00") });
    const sniffer = new ImageSniffer("late.jpg", j.length, { maxPixels: 1 }, 0, 100);
    await sniffer.push(j.subarray(0, 60), 0);
    assert.equal(sniffer.done, false);
    await sniffer.push(j.subarray(60, 200), 60);
    assert.equal(sniffer.done, true);
    assert.equal(sniffer.notAnImage, false, "an image, even an undecided one, is never 'not an image'");
    // A resumed upload starts past the head: nothing to look at.
    assert.equal(new ImageSniffer("r.png", 1000, {}, 500).done, true);
    assert.equal(new ImageSniffer("r.txt", 1000, {}, 500).notAnImage, false, "not seen: no verdict");
    // Bytes not contiguous from 0: give up.
    const gap = new ImageSniffer("g.png", 1000, {});
    await gap.push(new Uint8Array([0x89]), 0);
    await gap.push(new Uint8Array(10), 5);
    assert.equal(gap.done, true);
  });
});

describe("the server checks images", () => {
  let t: TestServer;
  let strict: TestServer;
  before(async () => {
    t = await startTestServer({ handshakeTimeoutMs: 5_000 });
    strict = await startTestServer({ imagesOnly: true, maxPixels: 1_000_000 });
  });
  after(async () => {
    await t?.close();
    await strict?.close();
  });

  test(
    "a pixel bomb is refused after its first DATA frame and nothing is kept",
    { timeout: 15_000 },
    async () => {
      const c = await RawClient.connect(t.port);
      try {
        await c.handshake();
        const declared = new Uint8Array(0); // only its size and hash matter here
        await c.send(fileHeader(1, "bomb.png", declared, { size: 200_000_000, sha256: new Uint8Array(32) }));
        await c.expect("accept");
        await c.send({ kind: "data", id: 1, offset: 0, bytes: pngHead(20_000, 20_000) });
        const error = await c.expectError("TOO_MANY_PIXELS", 1);
        assert.match(error.message, /20000x20000/);
        assert.deepEqual(await partialFiles(t.dir), [], "the partial is discarded");
        // The connection goes on: a valid image is stored with its metadata.
        const ok = png(20, 10);
        const receipt = await c.sendFile(2, "fine.png", ok);
        assert.equal(receipt.storedName, "fine.png");
      } finally {
        await c.destroy();
      }
    },
  );

  test(
    "receipts record format, size and EXIF time; mtime 0 takes the EXIF time",
    { timeout: 15_000 },
    async () => {
      const c = await RawClient.connect(t.port);
      try {
        await c.handshake();
        const bytes = jpeg(32, 24, { exif: exifBlock("2020:02:29 08:15:30", "+00:00") });
        const receipt = await c.sendFile(3, "exif.jpg", bytes); // fileHeader sends mtimeMs 0
        assert.equal(receipt.storedName, "exif.jpg");
      } finally {
        await c.destroy();
      }
      const taken = Date.parse("2020-02-29T08:15:30+00:00");
      assert.equal(Math.floor((await stat(join(t.dir, "exif.jpg"))).mtimeMs / 1000), taken / 1000);
      const lines = (await readFile(join(t.dir, ".ferry", "receipts.ndjson"), "utf8")).trim().split("\n");
      const stored = lines.map((l) => JSON.parse(l)).find((r) => r.name === "exif.jpg");
      assert.deepEqual(stored.image, {
        format: "jpeg",
        width: 32,
        height: 24,
        takenAt: "2020-02-29T08:15:30+00:00",
      });
      assert.deepEqual(t.server.inbox.receipt("exif.jpg")?.image, stored.image);
    },
  );

  test(
    "--images-only: each refusal has its own code, and good images get through",
    { timeout: 30_000 },
    async () => {
      const files: Array<[string, Uint8Array]> = [
        ["notes.txt", ascii("hello\n")],
        ["fake.jpg", ascii("not really a jpeg\n")],
        ["png-named.jpg", png(8, 8)],
        ["broken.gif", gif(8, 8).subarray(0, 100)],
        ["huge.png", png(1001, 1000)],
        ["good.png", png(50, 40)],
        ["good.jpg", jpeg(50, 40)],
      ];
      for (const [name, bytes] of files) await writeFile(join(strict.scratch, name), bytes);
      const paths = files.map(([n]) => join(strict.scratch, n));
      const result = await send(`127.0.0.1:${strict.port}`, paths, { retries: 0 });
      const codes = Object.fromEntries(result.failures.map((f) => [f.name, f.error.code]));
      assert.deepEqual(codes, {
        "notes.txt": "NOT_AN_IMAGE",
        "fake.jpg": "TYPE_MISMATCH",
        "png-named.jpg": "TYPE_MISMATCH",
        "broken.gif": "CORRUPT_IMAGE",
        "huge.png": "TOO_MANY_PIXELS",
      });
      assert.deepEqual(result.receipts.map((r) => r.storedName).sort(), ["good.jpg", "good.png"]);
      assert.deepEqual(await partialFiles(strict.dir), []);
    },
  );
});
