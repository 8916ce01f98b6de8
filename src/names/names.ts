/**
 * Untrusted names from the network: validation of relative paths, safe
 * display on a terminal, and "keep both" collision names.
 *
 * A name that passes {@linkcode validateRelativePath} can be joined under the
 * inbox directory on POSIX and Windows without escaping it, without naming a
 * device, and without hiding anything from a human reading a log.
 *
 * @module
 */

import { FerryError } from "../errors.ts";

// Largest UTF-8 length of one path component (NAME_MAX on common filesystems).
const MAX_COMPONENT_BYTES = 255;
// Largest UTF-8 length of a whole relative path (PATH_MAX on Linux).
const MAX_PATH_BYTES = 4096;
// Largest number of components in a relative path.
const MAX_DEPTH = 32;
// First path component reserved for the server's own state.
const RESERVED_DIR = ".ferry";

// C0, DEL and C1 controls: C1 includes the 8-bit CSI (U+009B) of ANSI escapes.
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// Unicode Bidi_Control: these reorder what a terminal shows ("gpj.exe" tricks).
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// A drive letter makes path.join() on Windows leave the inbox: "C:", "c:/x", "C:foo".
const DRIVE = /^[a-z]:/i;
// Windows maps these to devices in every directory, with or without an extension.
const RESERVED_DEVICE = /^(con|prn|aux|nul|com[1-9\u00b9\u00b2\u00b3]|lpt[1-9\u00b9\u00b2\u00b3])(\..*)?$/i;
// Everything escapeForDisplay rewrites; U+2028/U+2029 act as newlines in some terminals.
const DISPLAY_UNSAFE = new RegExp(
  String.raw`[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"\\]|` +
    LONE_SURROGATE.source,
  "g",
);
// Error messages show at most this many code points of a hostile name.
const MAX_SHOWN_CODE_POINTS = 128;

/**
 * Checks a relative path received from a peer and returns it in NFC with its
 * components joined by `/`. Throws `FerryError` with code `BAD_NAME` and a
 * message naming the rule that failed.
 *
 * @example Accept a nested name, refuse a traversal
 * ```ts
 * import { validateRelativePath } from "./names.ts";
 * validateRelativePath("photos/2024/cafe\u0301.jpg"); // "photos/2024/café.jpg" (NFC)
 * validateRelativePath("../etc/passwd"); // throws FerryError (BAD_NAME)
 * ```
 */
export function validateRelativePath(name: string): string {
  if (typeof name !== "string") throw new FerryError("BAD_NAME", "Cannot accept name: it is not a string");
  if (name.length === 0) throw badName(name, "the name is empty");
  // Before NFC: normalising is linear, but not worth doing on a huge name.
  // NFC shrinks UTF-8 by at most a quarter, so this bound is safe.
  if (name.length > MAX_PATH_BYTES * 4) {
    throw badName(name, `the path is longer than ${MAX_PATH_BYTES} bytes`);
  }
  if (LONE_SURROGATE.test(name)) throw badName(name, "it contains a lone surrogate (not valid Unicode)");
  const nfc = name.normalize("NFC");
  const control = CONTROL.exec(nfc);
  if (control) throw badName(name, `it contains the control character ${codePointLabel(control[0])}`);
  const bidi = BIDI.exec(nfc);
  if (bidi) throw badName(name, `it contains the bidirectional control ${codePointLabel(bidi[0])}`);
  if (nfc.includes("\\")) throw badName(name, "it contains a backslash");
  if (nfc.startsWith("/")) throw badName(name, "it is an absolute path");
  if (DRIVE.test(nfc)) throw badName(name, "it starts with a drive letter");
  if (utf8Length(nfc) > MAX_PATH_BYTES) {
    throw badName(name, `the path is longer than ${MAX_PATH_BYTES} bytes`);
  }
  const components = nfc.split("/");
  if (components.length > MAX_DEPTH) throw badName(name, `it has more than ${MAX_DEPTH} components`);
  for (const c of components) {
    if (c === "") throw badName(name, "it has an empty component");
    if (c === "." || c === "..") throw badName(name, `it has a "${c}" component`);
    if (utf8Length(c) > MAX_COMPONENT_BYTES) {
      throw badName(name, `a component is longer than ${MAX_COMPONENT_BYTES} bytes`);
    }
    if (c.endsWith(".")) throw badName(name, `component "${shown(c)}" ends with a dot`);
    if (c.endsWith(" ")) throw badName(name, `component "${shown(c)}" ends with a space`);
    if (RESERVED_DEVICE.test(c)) {
      throw badName(name, `component "${shown(c)}" is a reserved device name on Windows`);
    }
  }
  if (components[0].toLowerCase() === RESERVED_DIR) {
    throw badName(name, `the first component "${RESERVED_DIR}" is reserved for the server`);
  }
  return components.join("/");
}

/**
 * Makes a string safe to print on a terminal or in a log: control characters,
 * bidirectional controls, line/paragraph separators, lone surrogates, `\` and
 * `"` become `\xNN` or `\u{...}`. Everything else, including non-ASCII
 * letters, is left as is.
 *
 * @example Defuse an ANSI escape
 * ```ts
 * import { escapeForDisplay } from "./names.ts";
 * escapeForDisplay("\x1b[31mred"); // "\\x1b[31mred"
 * ```
 */
export function escapeForDisplay(name: string): string {
  return name.replace(DISPLAY_UNSAFE, (ch) => {
    const cp = ch.codePointAt(0)!;
    return cp <= 0xff ? `\\x${cp.toString(16).padStart(2, "0")}` : `\\u{${cp.toString(16)}}`;
  });
}

/**
 * Returns the "keep both" name for collision number `n` (a positive integer):
 * ` (n)` goes before the extension, which starts at the first dot of the base
 * name after its first character, so dotfiles keep their name whole. The
 * base name stays within 255 UTF-8 bytes: the stem is cut at a code point
 * boundary if needed.
 *
 * @example
 * ```ts
 * import { collisionName } from "./names.ts";
 * collisionName("photo.jpg", 1); // "photo (1).jpg"
 * collisionName("dir/archive.tar.gz", 2); // "dir/archive (2).tar.gz"
 * collisionName(".bashrc", 1); // ".bashrc (1)"
 * ```
 */
export function collisionName(relPath: string, n: number): string {
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new FerryError("INTERNAL", `Cannot make collision name: ${n} is not a positive integer`);
  }
  const slash = relPath.lastIndexOf("/");
  const dir = relPath.slice(0, slash + 1);
  const base = relPath.slice(slash + 1);
  const suffix = ` (${n})`;
  const dot = base.indexOf(".", 1);
  let stem = dot === -1 ? base : base.slice(0, dot);
  let ext = dot === -1 ? "" : base.slice(dot);
  // A very long extension leaves no room for the stem: treat the whole base as stem.
  if (utf8Length(suffix) + utf8Length(ext) + utf8Length(firstCodePoint(stem)) > MAX_COMPONENT_BYTES) {
    stem = base;
    ext = "";
  }
  const room = MAX_COMPONENT_BYTES - utf8Length(suffix) - utf8Length(ext);
  return dir + truncateUtf8(stem, room) + suffix + ext;
}

/** UTF-8 length of a well-formed string, without allocating. */
function utf8Length(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      bytes += 4; // a surrogate pair is one 4-byte code point
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/** The longest prefix of `s` within `maxBytes` UTF-8 bytes, never splitting a code point. */
function truncateUtf8(s: string, maxBytes: number): string {
  let bytes = 0;
  let end = 0;
  for (const ch of s) {
    const len = utf8Length(ch);
    if (bytes + len > maxBytes) break;
    bytes += len;
    end += ch.length;
  }
  return s.slice(0, end);
}

function firstCodePoint(s: string): string {
  for (const ch of s) return ch;
  return "";
}

function codePointLabel(ch: string): string {
  return "U+" + ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
}

/** A bounded, escaped excerpt of a hostile name for error messages. */
function shown(name: string): string {
  let out = "";
  let count = 0;
  for (const ch of name) {
    if (count++ === MAX_SHOWN_CODE_POINTS) return escapeForDisplay(out) + "…";
    out += ch;
  }
  return escapeForDisplay(out);
}

function badName(name: string, reason: string): FerryError {
  return new FerryError("BAD_NAME", `Cannot accept name "${shown(name)}": ${reason}`);
}
