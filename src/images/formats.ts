/**
 * Image formats ferry recognises, by magic bytes and by name extension.
 *
 * @module
 */

/** An image format detected from file content. */
export type ImageFormat = "jpeg" | "png" | "gif" | "webp" | "avif" | "heic";

/** Media type of each format, used for receipts and the dashboard's `Content-Type`. */
export const IMAGE_MIME: Readonly<Record<ImageFormat, string>> = {
  jpeg: "image/jpeg",
  png: "image/png",
  gif: "image/gif",
  webp: "image/webp",
  avif: "image/avif",
  heic: "image/heic",
};

/** Human name of each format, for error messages. */
export const IMAGE_LABEL: Readonly<Record<ImageFormat, string>> = {
  jpeg: "JPEG",
  png: "PNG",
  gif: "GIF",
  webp: "WebP",
  avif: "AVIF",
  heic: "HEIC",
};

const BY_EXTENSION: ReadonlyMap<string, ImageFormat> = new Map([
  ["jpg", "jpeg"],
  ["jpeg", "jpeg"],
  ["jpe", "jpeg"],
  ["jfif", "jpeg"],
  ["pjpeg", "jpeg"],
  ["pjp", "jpeg"],
  ["png", "png"],
  ["apng", "png"],
  ["gif", "gif"],
  ["webp", "webp"],
  ["avif", "avif"],
  ["heic", "heic"],
  ["heif", "heic"],
  ["hif", "heic"],
]);

// ISO-BMFF brands (ISO/IEC 23008-12, AV1-ISOBMFF): AVIF first, since AVIF files also list mif1.
const AVIF_BRANDS = new Set(["avif", "avis"]);
const HEIC_BRANDS = new Set(["heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs", "mif1", "msf1"]);

/**
 * The format a file name's extension claims, or undefined for names without
 * an image extension. Case-insensitive.
 *
 * @example
 * ```ts
 * import { formatFromName } from "./formats.ts";
 * formatFromName("2024/IMG_0001.JPG"); // "jpeg"
 * formatFromName("notes.txt"); // undefined
 * ```
 */
export function formatFromName(name: string): ImageFormat | undefined {
  const base = name.slice(name.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  if (dot <= 0) return undefined;
  return BY_EXTENSION.get(base.slice(dot + 1).toLowerCase());
}

/** What {@linkcode detectFormat} needs before it can answer. */
export const NEED_MORE = "more" as const;

/**
 * Detects an image format from the first bytes of a file by its magic
 * signature: JPEG, PNG, GIF, WebP, and AVIF / HEIC by the ISO-BMFF `ftyp`
 * brands. Returns undefined for anything else, or {@linkcode NEED_MORE} when
 * `head` is too short to tell and `complete` is false.
 *
 * @example
 * ```ts
 * import { detectFormat } from "./formats.ts";
 * detectFormat(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), true); // "png"
 * detectFormat(new TextEncoder().encode("hello"), true); // undefined
 * ```
 */
export function detectFormat(
  head: Uint8Array,
  complete: boolean,
): ImageFormat | undefined | typeof NEED_MORE {
  const matches = (sig: Signature) => sig.every(([at, bytes]) => bytes.every((b, i) => head[at + i] === b));
  // A prefix that could still grow into a signature: wait for more, unless the file ends here.
  const couldMatch = (sig: Signature) =>
    sig.every(([at, bytes]) => bytes.every((b, i) => at + i >= head.length || head[at + i] === b));
  for (const [format, sig] of SIGNATURES) {
    if (matches(sig)) return format === "isobmff" ? brandFormat(head, complete) : format;
  }
  if (!complete && SIGNATURES.some(([, sig]) => couldMatch(sig))) return NEED_MORE;
  return undefined;
}

type Signature = ReadonlyArray<readonly [at: number, bytes: readonly number[]]>;

/** The PNG file signature. */
export const PNG_SIGNATURE: readonly number[] = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

const SIGNATURES: ReadonlyArray<readonly [ImageFormat | "isobmff", Signature]> = [
  ["jpeg", [[0, [0xff, 0xd8, 0xff]]]],
  ["png", [[0, PNG_SIGNATURE]]],
  ["gif", [[0, ascii("GIF87a")]]],
  ["gif", [[0, ascii("GIF89a")]]],
  ["webp", [[0, ascii("RIFF")], [8, ascii("WEBP")]]],
  ["isobmff", [[4, ascii("ftyp")]]],
];

function brandFormat(head: Uint8Array, complete: boolean): ImageFormat | undefined | typeof NEED_MORE {
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const boxSize = view.getUint32(0);
  if (boxSize < 16 || boxSize > 4096) return undefined; // ftyp is a short list of brands
  if (head.length < boxSize) return complete ? undefined : NEED_MORE;
  const brands = [fourcc(head, 8)];
  for (let p = 16; p + 4 <= boxSize; p += 4) brands.push(fourcc(head, p));
  if (brands.some((b) => AVIF_BRANDS.has(b))) return "avif";
  if (brands.some((b) => HEIC_BRANDS.has(b))) return "heic";
  return undefined;
}

/** Four bytes as a string of Latin-1 characters. */
export function fourcc(bytes: Uint8Array, at: number): string {
  return String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
}

function ascii(s: string): number[] {
  return Array.from(s, (c) => c.charCodeAt(0));
}
