import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { FerryError } from "../../src/errors.ts";
import { collisionName, escapeForDisplay, validateRelativePath } from "../../src/names/names.ts";

const utf8 = (s: string) => new TextEncoder().encode(s).length;

/** Asserts BAD_NAME and that the message names the rule (`reason` is a substring). */
function assertBadName(name: string, reason: RegExp): void {
  assert.throws(
    () => validateRelativePath(name),
    (e: unknown) => {
      assert.ok(e instanceof FerryError, `not a FerryError: ${e}`);
      assert.equal(e.code, "BAD_NAME");
      assert.match(e.message, /^Cannot accept name "/);
      assert.match(e.message, reason);
      // The message itself must be safe to print.
      // deno-lint-ignore no-control-regex
      assert.doesNotMatch(e.message, /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
      return true;
    },
    `expected BAD_NAME for ${JSON.stringify(name)}`,
  );
}

describe("validateRelativePath rejects", () => {
  const hostile: [label: string, name: string, reason: RegExp][] = [
    ["empty", "", /empty/],
    ["backslash", "a\\b", /backslash/],
    ["backslash traversal", "..\\..\\etc\\passwd", /backslash/],
    ["absolute", "/etc/passwd", /absolute/],
    ["root only", "/", /absolute/],
    ["empty component", "a//b", /empty component/],
    ["trailing slash", "a/", /empty component/],
    ["dot component", "./a", /"\." component/],
    ["inner dot", "a/./b", /"\." component/],
    ["dotdot", "..", /"\.\." component/],
    ["dotdot traversal", "../etc/passwd", /"\.\." component/],
    ["inner dotdot", "a/../../b", /"\.\." component/],
    ["drive", "C:", /drive letter/],
    ["drive path", "c:/x", /drive letter/],
    ["drive relative", "C:foo", /drive letter/],
    ["NUL", "a\0b", /control character U\+0000/],
    ["newline", "a\nb", /control character U\+000A/],
    ["ANSI escape", "\x1b[31mred", /control character U\+001B/],
    ["DEL", "a\x7f", /control character U\+007F/],
    ["C1 CSI", "a\u009b31m", /control character U\+009B/],
    ["C1 NEL", "a\u0085b", /control character U\+0085/],
    ["RLO", "gpj.\u202eexe", /bidirectional control U\+202E/],
    ["LRE", "\u202aa", /bidirectional control U\+202A/],
    ["RLI", "a\u2067b", /bidirectional control U\+2067/],
    ["PDI", "a\u2069", /bidirectional control U\+2069/],
    ["lone high surrogate", "a\ud800b", /lone surrogate/],
    ["lone low surrogate", "a\udc00", /lone surrogate/],
    ["component of 256 bytes", "a".repeat(256), /longer than 255 bytes/],
    ["component of 86 three-byte chars", "€".repeat(86), /longer than 255 bytes/],
    ["path over 4096 bytes", Array(20).fill("a".repeat(250)).join("/"), /longer than 4096 bytes/],
    ["huge path", "a/".repeat(20000) + "a", /longer than 4096 bytes/],
    ["33 components", Array(33).fill("d").join("/"), /more than 32 components/],
    ["CON", "CON", /reserved device name/],
    ["con lower", "con", /reserved device name/],
    ["con.txt", "con.txt", /reserved device name/],
    ["Com1.jpg", "Com1.jpg", /reserved device name/],
    ["nested lpt9", "dir/LPT9.tar.gz", /reserved device name/],
    ["prn", "prn", /reserved device name/],
    ["aux", "Aux.c", /reserved device name/],
    ["nul", "nul", /reserved device name/],
    ["trailing dot", "file.", /ends with a dot/],
    ["dir trailing dot", "dir./file", /ends with a dot/],
    ["trailing space", "file ", /ends with a space/],
    ["dir trailing space", "dir /file", /ends with a space/],
    [".ferry", ".ferry", /reserved for the server/],
    [".ferry inside", ".ferry/receipts.ndjson", /reserved for the server/],
    [".FERRY", ".FERRY/partial/x", /reserved for the server/],
  ];
  for (const [label, name, reason] of hostile) {
    it(label, () => assertBadName(name, reason));
  }

  it("non-strings", () => {
    for (const v of [undefined, null, 42, {}, ["a"]]) {
      assert.throws(() => validateRelativePath(v as unknown as string), { code: "BAD_NAME" });
    }
  });

  it("escapes the hostile name in the message", () => {
    assert.throws(() => validateRelativePath("\x1b[2Jx\\y"), (e: unknown) => {
      assert.ok(e instanceof FerryError);
      assert.ok(e.message.includes(String.raw`"\x1b[2Jx\x5cy"`), e.message);
      return true;
    });
  });

  it("bounds the message for a huge name", () => {
    assert.throws(() => validateRelativePath("x".repeat(100_000)), (e: unknown) => {
      assert.ok(e instanceof FerryError);
      assert.ok(e.message.length < 400, `message is ${e.message.length} chars`);
      return true;
    });
  });
});

describe("validateRelativePath accepts", () => {
  const valid: [name: string, expected?: string][] = [
    ["photo.jpg"],
    ["a/b/c/d.txt"],
    [".bashrc"],
    ["dir/.hidden/.file"],
    [".ferryx"],
    ["sub/.ferry"],
    ["..foo"],
    ["a..b"],
    ["日本語/写真.png"],
    ["emoji 😀.txt"],
    ["Ωμέγα"],
    ["name with spaces.txt"],
    ["ab:c"],
    ["console.txt"],
    ["com10"],
    ["lpt.txt"],
    ["auxiliary"],
    ["a".repeat(255)],
    ["😀".repeat(63)], // 252 bytes
    [Array(32).fill("d").join("/")],
    ["cafe\u0301.jpg", "caf\u00e9.jpg"],
    ["dir\u0301/x", "dir\u0301/x".normalize("NFC")],
  ];
  for (const [name, expected] of valid) {
    it(JSON.stringify(name).slice(0, 60), () => {
      assert.equal(validateRelativePath(name), expected ?? name);
    });
  }

  it("normalises to NFC", () => {
    const decomposed = "e\u0301t\u0065\u0301.txt"; // "été" spelt with combining accents
    const out = validateRelativePath(decomposed);
    assert.equal(out, "\u00e9t\u00e9.txt");
    assert.equal(out, out.normalize("NFC"));
    assert.notEqual(out.length, decomposed.length);
  });

  it("checks the length after NFC", () => {
    // 128 × "e + U+0301" is 384 bytes decomposed but 256 bytes composed; 127 fit.
    assert.equal(validateRelativePath("e\u0301".repeat(127)), "\u00e9".repeat(127));
    assertBadName("e\u0301".repeat(128), /longer than 255 bytes/);
  });

  it("a path of exactly 4096 bytes", () => {
    const name = Array(16).fill("a".repeat(254)).join("/") + "/" + "b".repeat(16);
    assert.equal(utf8(name), 4096);
    assert.equal(validateRelativePath(name), name);
    assertBadName(name + "b", /longer than 4096 bytes/);
  });
});

describe("escapeForDisplay", () => {
  it("escapes an ANSI escape", () => {
    assert.equal(escapeForDisplay("\x1b[31mred"), "\\x1b[31mred");
  });
  it("escapes controls, bidi, backslash, quote and lone surrogates", () => {
    assert.equal(escapeForDisplay("a\0b\nc\x7f\u0085"), "a\\x00b\\x0ac\\x7f\\x85");
    assert.equal(escapeForDisplay("gpj.\u202eexe\u2066"), "gpj.\\u{202e}exe\\u{2066}");
    assert.equal(escapeForDisplay('say "hi" \\o/'), "say \\x22hi\\x22 \\x5co/");
    assert.equal(escapeForDisplay("x\ud800y\udc00"), "x\\u{d800}y\\u{dc00}");
    assert.equal(escapeForDisplay("line\u2028sep"), "line\\u{2028}sep");
  });
  it("leaves everything else alone", () => {
    for (const s of ["photo.jpg", "日本語/写真.png", "emoji 😀", "café", "a/b c.txt", "100% (1)"]) {
      assert.equal(escapeForDisplay(s), s);
    }
  });
  it("output has no terminal control characters", () => {
    let all = "";
    for (let i = 0; i < 0x300; i++) all += String.fromCharCode(i);
    all += "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069";
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(escapeForDisplay(all), /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
  });
});

describe("collisionName", () => {
  const cases: [relPath: string, n: number, expected: string][] = [
    ["photo.jpg", 1, "photo (1).jpg"],
    ["photo.jpg", 12, "photo (12).jpg"],
    ["dir/archive.tar.gz", 2, "dir/archive (2).tar.gz"],
    [".bashrc", 1, ".bashrc (1)"],
    ["a/b/.config.json", 3, "a/b/.config (3).json"],
    ["README", 1, "README (1)"],
    ["dir.d/README", 1, "dir.d/README (1)"],
    ["café.jpg", 9999, "café (9999).jpg"],
  ];
  for (const [relPath, n, expected] of cases) {
    it(`${relPath} ${n} → ${expected}`, () => {
      assert.equal(collisionName(relPath, n), expected);
      assert.equal(validateRelativePath(collisionName(relPath, n)), expected);
    });
  }

  it("truncates a long stem to stay within 255 bytes", () => {
    const out = collisionName("x/" + "a".repeat(251) + ".jpg", 1);
    assert.equal(out, "x/" + "a".repeat(247) + " (1).jpg");
    assert.equal(utf8(out.slice(2)), 255);
  });

  it("never splits a character when truncating", () => {
    const stem = "😀".repeat(62) + "é"; // 250 bytes
    const out = collisionName(stem + ".png", 123);
    assert.ok(utf8(out) <= 255, `${utf8(out)} bytes`);
    assert.match(out, / \(123\)\.png$/);
    assert.equal(validateRelativePath(out), out);
    const noExt = collisionName("€".repeat(85), 5); // 255 bytes, no extension
    assert.ok(utf8(noExt) <= 255);
    assert.equal(noExt, "€".repeat(83) + " (5)");
  });

  it("handles an extension too long to keep", () => {
    const base = "a." + "b".repeat(253); // 255 bytes
    const out = collisionName(base, 1);
    assert.ok(utf8(out) <= 255);
    assert.ok(out.endsWith(" (1)"));
    assert.equal(validateRelativePath(out), out);
  });

  it("rejects a non-positive n", () => {
    assert.throws(() => collisionName("a.txt", 0), { code: "INTERNAL" });
    assert.throws(() => collisionName("a.txt", 1.5), { code: "INTERNAL" });
  });
});
