/**
 * Random access to the bytes of an image for the structure walkers: over a
 * whole file on disk (read in windows, never all at once), over bytes in
 * memory, or over only the first bytes of an upload still in flight.
 *
 * @module
 */
import type { FileHandle } from "node:fs/promises";

/** Where the bytes come from. */
export interface ByteSource {
  /** Size of the whole file in bytes. */
  readonly size: number;
  /** Bytes `[0, available)` can be read now; the rest has not arrived yet. */
  readonly available: number;
  /** Reads exactly `len` bytes at `pos` (within `available`); may return a view. */
  read(pos: number, len: number): Promise<Uint8Array> | Uint8Array;
}

/** The structure needs bytes past the end of the file: the image is truncated or lies about a length. */
export class TruncatedError extends Error {
  constructor(pos: number, len: number, size: number) {
    super(`needs bytes ${pos}..${pos + len} but the file has ${size}`);
    this.name = "TruncatedError";
  }
}

/** The structure needs bytes that have not arrived yet (only for a partial source). */
export class NeedMoreError extends Error {
  constructor() {
    super("needs bytes that have not arrived yet");
    this.name = "NeedMoreError";
  }
}

/** The bytes break the format's rules. */
export class CorruptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CorruptError";
  }
}

const DEFAULT_WINDOW = 1024 * 1024;

/**
 * Bounds-checked big- and little-endian reads with a cached window. Views it
 * returns are valid until the next call.
 *
 * @example
 * ```ts
 * import { ByteReader, memorySource } from "./reader.ts";
 * const r = new ByteReader(memorySource(new Uint8Array([0, 0, 1, 0])));
 * await r.u32be(0); // 256
 * ```
 */
export class ByteReader {
  readonly #src: ByteSource;
  readonly #windowSize: number;
  #win: Uint8Array = new Uint8Array(0);
  #winPos = 0;

  constructor(src: ByteSource, windowSize = DEFAULT_WINDOW) {
    this.#src = src;
    this.#windowSize = windowSize;
  }

  /** Size of the whole file. */
  get size(): number {
    return this.#src.size;
  }

  /** `len` bytes at `pos`, as a view valid until the next call. */
  async bytes(pos: number, len: number): Promise<Uint8Array> {
    this.#check(pos, len);
    const off = pos - this.#winPos;
    if (off >= 0 && off + len <= this.#win.length) return this.#win.subarray(off, off + len);
    const want = Math.max(len, Math.min(this.#windowSize, this.#src.available - pos));
    this.#win = await this.#src.read(pos, want);
    this.#winPos = pos;
    return this.#win.subarray(0, len);
  }

  async u8(pos: number): Promise<number> {
    return (await this.bytes(pos, 1))[0];
  }

  async u16be(pos: number): Promise<number> {
    const b = await this.bytes(pos, 2);
    return (b[0] << 8) | b[1];
  }

  async u16le(pos: number): Promise<number> {
    const b = await this.bytes(pos, 2);
    return b[0] | (b[1] << 8);
  }

  async u24le(pos: number): Promise<number> {
    const b = await this.bytes(pos, 3);
    return b[0] | (b[1] << 8) | (b[2] << 16);
  }

  async u32be(pos: number): Promise<number> {
    const b = await this.bytes(pos, 4);
    return ((b[0] << 24) >>> 0) + ((b[1] << 16) | (b[2] << 8) | b[3]);
  }

  async u32le(pos: number): Promise<number> {
    const b = await this.bytes(pos, 4);
    return ((b[3] << 24) >>> 0) + ((b[2] << 16) | (b[1] << 8) | b[0]);
  }

  /** Four bytes as Latin-1 text, e.g. a PNG chunk type. */
  async fourcc(pos: number): Promise<string> {
    const b = await this.bytes(pos, 4);
    return String.fromCharCode(b[0], b[1], b[2], b[3]);
  }

  /** A copy of `len` bytes at `pos` that stays valid. */
  async copy(pos: number, len: number): Promise<Uint8Array> {
    return (await this.bytes(pos, len)).slice();
  }

  /** Position of the first `byte` in `[from, end)`, or -1. Searches the cached window first, in native code. */
  async indexOf(byte: number, from: number, end: number): Promise<number> {
    let pos = from;
    while (pos < end) {
      let off = pos - this.#winPos;
      if (off < 0 || off >= this.#win.length) {
        await this.bytes(pos, Math.min(end - pos, this.#windowSize)); // loads a window starting at pos
        off = 0;
      }
      const n = Math.min(this.#win.length - off, end - pos);
      const i = this.#win.subarray(off, off + n).indexOf(byte);
      if (i !== -1) return pos + i;
      pos += n;
    }
    return -1;
  }

  /**
   * The cached bytes from `pos` to the end of the window, loading a window at
   * `pos` first if needed; empty at the end of the file. For tight loops that
   * would otherwise await once per step.
   */
  async window(pos: number): Promise<Uint8Array> {
    const off = pos - this.#winPos;
    if (off >= 0 && off < this.#win.length) return this.#win.subarray(off);
    if (pos >= this.#src.size) return new Uint8Array(0);
    await this.bytes(pos, Math.min(this.#src.size - pos, this.#windowSize));
    return this.#win.subarray(0);
  }

  /** Calls `fn` with consecutive views covering `[pos, pos + len)`. */
  async each(pos: number, len: number, fn: (chunk: Uint8Array) => void): Promise<void> {
    this.#check(pos, len);
    const end = pos + len;
    while (pos < end) {
      const n = Math.min(end - pos, this.#windowSize);
      fn(await this.bytes(pos, n));
      pos += n;
    }
  }

  #check(pos: number, len: number): void {
    if (!(pos >= 0 && len >= 0 && pos + len <= this.#src.size)) {
      throw new TruncatedError(pos, len, this.#src.size);
    }
    if (pos + len > this.#src.available) throw new NeedMoreError();
  }
}

/**
 * A source over bytes in memory. With `size` larger than `bytes.length`, the
 * bytes are the head of a longer file whose rest has not arrived.
 *
 * @example
 * ```ts
 * import { memorySource } from "./reader.ts";
 * const head = memorySource(new Uint8Array(64), 1_000_000); // 64 of 1e6 bytes so far
 * ```
 */
export function memorySource(bytes: Uint8Array, size = bytes.length): ByteSource {
  return {
    size,
    available: Math.min(bytes.length, size),
    read: (pos, len) => bytes.subarray(pos, pos + len),
  };
}

/**
 * A source over an open file of known size; reads only what is asked for.
 *
 * @example
 * ```ts ignore
 * const fh = await open("photo.jpg");
 * const src = fileSource(fh, (await fh.stat()).size);
 * ```
 */
export function fileSource(handle: FileHandle, size: number): ByteSource {
  return {
    size,
    available: size,
    async read(pos, len) {
      const buf = new Uint8Array(len);
      let done = 0;
      while (done < len) {
        const { bytesRead } = await handle.read(buf, done, len - done, pos + done);
        if (bytesRead === 0) throw new TruncatedError(pos, len, pos + done);
        done += bytesRead;
      }
      return buf;
    },
  };
}

/** What a structure walk found. */
export interface WalkResult {
  width: number;
  height: number;
  /** Largest pixel count any image item declares, when that differs from width × height (HEIF tiles). */
  pixels?: number;
  /** The EXIF block (a TIFF structure starting "II" or "MM"), when the image has one. */
  exif?: Uint8Array;
}

/**
 * `"header"` stops as soon as the dimensions are known (for the early check
 * of an upload); `"full"` checks the whole structure and collects EXIF.
 */
export type WalkMode = "header" | "full";

/** EXIF blocks larger than this are ignored (they are metadata, not the image). */
export const MAX_EXIF_BYTES = 1024 * 1024;

/** Strips the `Exif\0\0` prefix some containers keep; returns undefined if what is left is no TIFF block. */
export function tiffBlock(bytes: Uint8Array): Uint8Array | undefined {
  const b = bytes[0] === 0x45 && bytes[1] === 0x78 && bytes[2] === 0x69 && bytes[3] === 0x66 &&
      bytes[4] === 0 && bytes[5] === 0
    ? bytes.subarray(6)
    : bytes;
  const tiff = (b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a && b[3] === 0) ||
    (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 0x2a);
  return tiff ? b : undefined;
}
