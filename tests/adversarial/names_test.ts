/**
 * Hostile names through a raw socket: every traversal, device, control and
 * display trick must get BAD_NAME for that file id, write nothing, and leave
 * the connection usable. Symlinks planted in the inbox must not be followed.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeFrame } from "../../src/framing/frame.ts";
import { FrameType } from "../../src/protocol/constants.ts";
import { fileHeader, partialFiles, RawClient, sha256, withServer } from "../helpers/raw_client.ts";

const T = { timeout: 15_000 };
const enc = new TextEncoder();

// Characters an ERROR message must never carry back raw to a terminal.
// deno-lint-ignore no-control-regex
const UNSAFE_FOR_TERMINAL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

const HOSTILE_NAMES: Array<[string, string]> = [
  ["empty", ""],
  ["dot", "."],
  ["dot-dot", ".."],
  ["parent traversal", "../x.txt"],
  ["nested traversal", "a/../../b.txt"],
  ["dot component", "a/./b.txt"],
  ["absolute", "/etc/passwd"],
  ["backslash", "a\\b.txt"],
  ["backslash traversal", "..\\..\\x.txt"],
  ["drive with backslash", "C:\\x"],
  ["drive with slash", "c:/x"],
  ["drive-relative", "C:x.txt"],
  ["empty component", "a//b.txt"],
  ["trailing slash", "dir/"],
  ["NUL", "a\u0000b.txt"],
  ["newline", "a\nb.txt"],
  ["BEL", "a\u0007.txt"],
  ["DEL", "a\u007f.txt"],
  ["ANSI escape", "\u001b[31mred.txt"],
  ["8-bit CSI", "\u009b31mred.txt"],
  ["bidi override", "invoice\u202Egpj.exe"],
  ["bidi isolate", "a\u2066b.txt"],
  ["256-byte component", "a".repeat(256)],
  ["256-byte component of 2-byte letters", "é".repeat(128)],
  ["33 components", Array(33).fill("d").join("/")],
  ["4097-byte path", Array(17).fill("b".repeat(240)).join("/") + "/" + "c".repeat(16)],
  ["reserved CON", "CON"],
  ["reserved nul.txt", "nul.txt"],
  ["reserved COM1", "COM1"],
  ["reserved lpt9 in a folder", "dir/lpt9.log"],
  ["trailing dot", "a."],
  ["trailing space", "a "],
  ["state dir", ".ferry/x"],
  ["state dir, other case", ".FERRY/receipts.ndjson"],
];

describe("adversarial: names", () => {
  for (const [label, name] of HOSTILE_NAMES) {
    test(`${label}: ${JSON.stringify(name).slice(0, 40)} gets BAD_NAME with its id`, T, async () => {
      await withServer({}, async ({ port, dir, stillUsable }) => {
        const c = await RawClient.connect(port);
        await c.handshake();
        const bytes = enc.encode("payload");
        await c.send(fileHeader(11, name, bytes));
        const e = await c.expectError("BAD_NAME", 11);
        assert.doesNotMatch(e.message, UNSAFE_FOR_TERMINAL, "the error echoes the name unescaped");
        // The refused file's data, if the client sends it anyway, goes nowhere.
        await c.send({ kind: "data", id: 11, offset: 0, bytes });
        await c.send({ kind: "end", id: 11 });
        await stillUsable(c, 12);
        assert.deepEqual(await partialFiles(dir), []);
        await c.destroy();
      });
    });
  }

  for (
    const [label, nameBytes] of [
      ["overlong UTF-8 slash (C0 AF)", [0x2e, 0x2e, 0xc0, 0xaf, 0x78]],
      ["UTF-8 of a lone surrogate (ED A0 80)", [0x61, 0xed, 0xa0, 0x80]],
    ] as const
  ) {
    test(`${label} in a name gets BAD_HEADER for the connection`, T, async () => {
      await withServer({}, async ({ port }) => {
        const c = await RawClient.connect(port);
        await c.handshake();
        const name = new Uint8Array(nameBytes);
        const payload = new Uint8Array(4 + 1 + 8 + 32 + 8 + 2 + name.length + 1);
        const v = new DataView(payload.buffer);
        v.setUint32(0, 1);
        payload.set(sha256(new Uint8Array(0)), 13);
        v.setUint16(53, name.length);
        payload.set(name, 55);
        await c.write(encodeFrame({ type: FrameType.FILE, payload }));
        // Invalid UTF-8 is a malformed frame, not a name to be judged.
        await c.expectError("BAD_HEADER", 0);
        await c.waitClosed();
      });
    });
  }

  test("a name that is NFD on the wire is stored in NFC", T, async () => {
    await withServer({}, async ({ port, dir, baseline }) => {
      const c = await RawClient.connect(port);
      await c.handshake();
      const receipt = await c.sendFile(1, "cafe\u0301.txt", enc.encode("nfc"));
      assert.equal(receipt.storedName, "caf\u00e9.txt");
      assert.deepEqual(await readdir(dir).then((l) => l.filter((n) => n !== ".ferry")), ["caf\u00e9.txt"]);
      await c.destroy();
      await baseline();
    });
  });

  describe("symlinks planted in the inbox", () => {
    test("a folder symlink pointing outside: evil/x.txt gets BAD_NAME, nothing outside", T, async () => {
      await withServer({}, async ({ port, dir, scratch, baseline, stillUsable }) => {
        const outside = join(scratch, "outside");
        await mkdir(outside);
        await symlink(outside, join(dir, "evil"));
        await baseline();
        const c = await RawClient.connect(port);
        await c.handshake();
        await c.send(fileHeader(1, "evil/x.txt", enc.encode("escaped!")));
        await c.expectError("BAD_NAME", 1);
        await c.send(fileHeader(2, "evil/deeper/y.txt", enc.encode("escaped!")));
        await c.expectError("BAD_NAME", 2);
        assert.deepEqual(await readdir(outside), []);
        await stillUsable(c, 3);
        await c.destroy();
      });
    });

    test("a folder symlink pointing inside the inbox is not followed either", T, async () => {
      await withServer({}, async ({ port, dir, baseline, stillUsable }) => {
        await mkdir(join(dir, "real"));
        await symlink(join(dir, "real"), join(dir, "alias"));
        await baseline();
        const c = await RawClient.connect(port);
        await c.handshake();
        await c.send(fileHeader(1, "alias/x.txt", enc.encode("through a link")));
        await c.expectError("BAD_NAME", 1);
        assert.deepEqual(await readdir(join(dir, "real")), []);
        await stillUsable(c, 2);
        await c.destroy();
      });
    });

    test(
      "a file symlink with --on-collision overwrite gets BAD_NAME, the target is untouched",
      T,
      async () => {
        await withServer({ onCollision: "overwrite" }, async ({ port, dir, scratch, baseline }) => {
          const target = join(scratch, "target.txt");
          await writeFile(target, "original");
          await symlink(target, join(dir, "link.txt"));
          await baseline();
          const c = await RawClient.connect(port);
          await c.handshake();
          const bytes = enc.encode("overwritten through a symlink");
          await c.send(fileHeader(1, "link.txt", bytes));
          await c.expect("accept");
          await c.send({ kind: "data", id: 1, offset: 0, bytes });
          await c.send({ kind: "end", id: 1 });
          await c.expectError("BAD_NAME", 1);
          assert.equal(await readFile(target, "utf8"), "original");
          assert.deepEqual(await partialFiles(dir), []);
          await c.destroy();
        });
      },
    );

    test("a file symlink with the default rename policy keeps both; the target is untouched", T, async () => {
      await withServer({}, async ({ port, dir, scratch, baseline }) => {
        const target = join(scratch, "target.txt");
        await writeFile(target, "original");
        await symlink(target, join(dir, "link.txt"));
        await baseline();
        const c = await RawClient.connect(port);
        await c.handshake();
        const receipt = await c.sendFile(1, "link.txt", enc.encode("new file"));
        assert.equal(receipt.storedName, "link (1).txt");
        assert.equal(await readFile(target, "utf8"), "original");
        assert.equal(await readFile(join(dir, "link (1).txt"), "utf8"), "new file");
        await c.destroy();
        await baseline();
      });
    });
  });
});
