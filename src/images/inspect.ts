/**
 * What the server checks about images, early (on the first bytes of an
 * upload) and in full (on the complete file, before it is committed).
 *
 * The rules, the same in both places:
 * - Content that is an image (by magic bytes) is always checked: its
 *   structure must be intact (`CORRUPT_IMAGE`), its name's image extension,
 *   if any, must match (`TYPE_MISMATCH`, e.g. PNG bytes in `a.jpg`), and it
 *   must not declare more than `maxPixels` pixels (`TOO_MANY_PIXELS`).
 * - Content that is not an image passes, unless `imagesOnly`: then a name
 *   with an image extension gets `TYPE_MISMATCH` and any other name
 *   `NOT_AN_IMAGE`.
 *
 * @module
 */
import { open } from "node:fs/promises";
import { FerryError } from "../errors.ts";
import { escapeForDisplay } from "../names/names.ts";
import { exifTakenAt } from "./exif.ts";
import { detectFormat, formatFromName, IMAGE_LABEL, type ImageFormat, NEED_MORE } from "./formats.ts";
import { walkGif } from "./gif.ts";
import { walkIsobmff } from "./isobmff.ts";
import { walkJpeg } from "./jpeg.ts";
import { walkPng } from "./png.ts";
import {
  ByteReader,
  type ByteSource,
  CorruptError,
  fileSource,
  memorySource,
  NeedMoreError,
  TruncatedError,
  type WalkMode,
  type WalkResult,
} from "./reader.ts";
import { walkWebp } from "./webp.ts";

/** Default for {@linkcode ImagePolicy.maxPixels}: 100 megapixels. */
export const DEFAULT_MAX_PIXELS = 100_000_000;
/** Default for {@linkcode ImageSniffer}'s head: the dimensions of real images sit well inside it. */
export const DEFAULT_SNIFF_BYTES = 64 * 1024;

/**
 * What the server requires of images.
 *
 * @example
 * ```ts
 * import type { ImagePolicy } from "./inspect.ts";
 * const strict: ImagePolicy = { imagesOnly: true, maxPixels: 50_000_000 };
 * ```
 */
export interface ImagePolicy {
  /** Refuse every file whose content is not an image. Default false. */
  imagesOnly?: boolean;
  /** Refuse images that declare more pixels than this. Default 100 000 000. */
  maxPixels?: number;
}

/**
 * What is recorded about a stored image (in its receipt).
 *
 * @example
 * ```ts
 * import type { ImageMeta } from "./inspect.ts";
 * const meta: ImageMeta = { format: "jpeg", width: 4032, height: 3024, takenAt: "2024-05-01T12:34:56" };
 * ```
 */
export interface ImageMeta {
  format: ImageFormat;
  /** Width and height in pixels as encoded (before any EXIF or `irot` rotation). */
  width: number;
  height: number;
  /** EXIF DateTimeOriginal: local time, plus the offset when the file records one. */
  takenAt?: string;
}

const WALKERS: Record<ImageFormat, (r: ByteReader, mode: WalkMode) => Promise<WalkResult>> = {
  jpeg: walkJpeg,
  png: walkPng,
  gif: walkGif,
  webp: walkWebp,
  avif: walkIsobmff,
  heic: walkIsobmff,
};

/**
 * Checks a complete file on disk. Returns its metadata if it is an image,
 * undefined for an accepted non-image; throws `FerryError` with
 * `CORRUPT_IMAGE`, `TYPE_MISMATCH`, `NOT_AN_IMAGE`, `TOO_MANY_PIXELS` or
 * `IO_ERROR`.
 *
 * @example
 * ```ts ignore
 * const meta = await inspectFile("./inbox/.ferry/partial/x.part", "cat.jpg", { imagesOnly: true });
 * ```
 */
export async function inspectFile(
  path: string,
  name: string,
  policy: ImagePolicy = {},
): Promise<ImageMeta | undefined> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (e) {
    throw new FerryError("IO_ERROR", `Cannot check "${escapeForDisplay(name)}": ${(e as Error).message}`, {
      cause: e,
    });
  }
  try {
    const size = (await fh.stat()).size;
    return await inspect(fileSource(fh, size), name, policy);
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * Checks a complete file held in memory; same rules and errors as
 * {@linkcode inspectFile}.
 *
 * @example
 * ```ts
 * import { inspectBytes } from "./inspect.ts";
 * await inspectBytes(new TextEncoder().encode("just text"), "notes.txt"); // undefined: not an image, allowed
 * ```
 */
export function inspectBytes(
  bytes: Uint8Array,
  name: string,
  policy: ImagePolicy = {},
): Promise<ImageMeta | undefined> {
  return inspect(memorySource(bytes), name, policy);
}

async function inspect(src: ByteSource, name: string, policy: ImagePolicy): Promise<ImageMeta | undefined> {
  const reader = new ByteReader(src);
  const head = await reader.bytes(0, Math.min(src.size, 4096));
  const found = detectFormat(head, true);
  const format = found === NEED_MORE ? undefined : found;
  judge(name, format, policy);
  if (format === undefined) return undefined;
  const walk = await runWalk(reader, format, "full", name);
  checkPixels(walk, format, name, policy);
  const meta: ImageMeta = { format, width: walk.width, height: walk.height };
  const takenAt = walk.exif ? exifTakenAt(walk.exif) : undefined;
  if (takenAt !== undefined) meta.takenAt = takenAt;
  return meta;
}

/**
 * Applies the name/content rules; throws `TYPE_MISMATCH` or `NOT_AN_IMAGE`.
 *
 * @example
 * ```ts
 * import { judge } from "./inspect.ts";
 * judge("cat.jpg", "jpeg", {}); // fine
 * try { judge("cat.jpg", "png", {}); } catch (e) { (e as { code: string }).code; } // "TYPE_MISMATCH"
 * ```
 */
export function judge(name: string, content: ImageFormat | undefined, policy: ImagePolicy): void {
  const named = formatFromName(name);
  const shown = escapeForDisplay(name);
  if (content === undefined) {
    if (!policy.imagesOnly) return;
    if (named) {
      throw new FerryError(
        "TYPE_MISMATCH",
        `Cannot accept "${shown}": it is named as ${IMAGE_LABEL[named]} but its content is not an image`,
      );
    }
    throw new FerryError(
      "NOT_AN_IMAGE",
      `Cannot accept "${shown}": only images are accepted and its content is not JPEG, PNG, GIF, WebP, AVIF or HEIC`,
    );
  }
  if (named && named !== content) {
    throw new FerryError(
      "TYPE_MISMATCH",
      `Cannot accept "${shown}": it is named as ${IMAGE_LABEL[named]} but its content is ${
        IMAGE_LABEL[content]
      }`,
    );
  }
}

function checkPixels(walk: WalkResult, format: ImageFormat, name: string, policy: ImagePolicy): void {
  const max = policy.maxPixels ?? DEFAULT_MAX_PIXELS;
  const pixels = walk.pixels ?? walk.width * walk.height;
  if (max > 0 && pixels > max) {
    throw new FerryError(
      "TOO_MANY_PIXELS",
      `Cannot accept "${escapeForDisplay(name)}": the ${
        IMAGE_LABEL[format]
      } declares ${walk.width}x${walk.height} ` +
        `(${pixels} pixels), above the limit of ${max}`,
    );
  }
}

/** Runs a walker, turning structure errors into `CORRUPT_IMAGE`. `NeedMoreError` passes through. */
async function runWalk(
  r: ByteReader,
  format: ImageFormat,
  mode: WalkMode,
  name: string,
): Promise<WalkResult> {
  try {
    return await WALKERS[format](r, mode);
  } catch (e) {
    if (e instanceof NeedMoreError || e instanceof FerryError) throw e;
    if (e instanceof CorruptError || e instanceof TruncatedError) {
      const detail = e instanceof TruncatedError ? "the file is truncated or a length is wrong" : e.message;
      throw new FerryError(
        "CORRUPT_IMAGE",
        `Cannot accept "${escapeForDisplay(name)}": damaged ${IMAGE_LABEL[format]}: ${detail}`,
        { cause: e },
      );
    }
    throw new FerryError("IO_ERROR", `Cannot check "${escapeForDisplay(name)}": ${(e as Error).message}`, {
      cause: e,
    });
  }
}

/**
 * Looks at the first bytes of an upload as they arrive and refuses it as
 * soon as they show it must be refused (wrong type under the policy, a
 * damaged header, too many pixels), so the body is never stored. Copies at
 * most `maxHeadBytes`, and nothing when the first chunk alone decides.
 * Inconclusive heads are left to the full check at the end.
 *
 * @example Refuse a pixel bomb from its first chunk
 * ```ts ignore
 * const sniffer = new ImageSniffer("huge.png", header.size, { maxPixels: 1e8 });
 * await sniffer.push(firstChunk, 0); // throws FerryError TOO_MANY_PIXELS
 * ```
 */
export class ImageSniffer {
  readonly #name: string;
  readonly #size: number;
  readonly #policy: ImagePolicy;
  readonly #limit: number;
  #head?: Uint8Array;
  #have = 0;
  #done = false;
  #notAnImage = false;

  /**
   * @param name the (validated) name of the file
   * @param size its declared size
   * @param startOffset where the upload starts (a resumed upload starts past the head: nothing to sniff)
   */
  constructor(
    name: string,
    size: number,
    policy: ImagePolicy,
    startOffset = 0,
    maxHeadBytes = DEFAULT_SNIFF_BYTES,
  ) {
    this.#name = name;
    this.#size = size;
    this.#policy = policy;
    this.#limit = Math.min(size, maxHeadBytes);
    this.#done = startOffset !== 0 || size === 0;
  }

  /** True once the head has decided, or can no longer decide, anything. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * True when the head showed that the content is not an image and the policy lets it pass: the full
   * check of the complete file ({@linkcode inspectFile}) would reach the same verdict from the same
   * first bytes, so it can be skipped.
   */
  get notAnImage(): boolean {
    return this.#notAnImage;
  }

  /** Feeds the bytes of a DATA frame at `offset`; throws `FerryError` to refuse the file. */
  async push(bytes: Uint8Array, offset: number): Promise<void> {
    if (this.#done || bytes.length === 0) return;
    if (offset !== this.#have) {
      this.#done = true; // not contiguous from 0: leave it to the full check
      return;
    }
    let view: Uint8Array;
    if (this.#have === 0) {
      // The first chunk is looked at where it is: it often decides alone (anything that is no image
      // does, in its first 12 bytes), and a head is copied out only if more is needed.
      view = bytes.subarray(0, this.#limit);
      this.#have = view.length;
    } else {
      const n = Math.min(bytes.length, this.#limit - this.#have);
      this.#head!.set(bytes.subarray(0, n), this.#have);
      this.#have += n;
      view = this.#head!.subarray(0, this.#have);
    }
    try {
      if (await this.#decide(view)) this.#finish();
    } catch (e) {
      this.#finish();
      throw e;
    }
    if (this.#have >= this.#limit) this.#finish();
    else if (!this.#done && this.#head === undefined) {
      // Undecided after the first chunk: keep its bytes, since the socket reuses the chunk.
      this.#head = new Uint8Array(this.#limit);
      this.#head.set(view);
    }
  }

  /** True when the head has said all it can. */
  async #decide(view: Uint8Array): Promise<boolean> {
    const complete = view.length >= this.#size;
    const found = detectFormat(view, complete);
    if (found === NEED_MORE) return false;
    judge(this.#name, found, this.#policy);
    if (found === undefined) {
      this.#notAnImage = true;
      return true;
    }
    const reader = new ByteReader(memorySource(view, this.#size));
    let walk: WalkResult;
    try {
      walk = await runWalk(reader, found, "header", this.#name);
    } catch (e) {
      if (e instanceof NeedMoreError) return false;
      throw e;
    }
    checkPixels(walk, found, this.#name, this.#policy);
    return true;
  }

  #finish(): void {
    this.#done = true;
    this.#head = undefined;
  }
}
