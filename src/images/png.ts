/**
 * PNG structure walk: signature, IHDR first, every chunk's CRC, IEND last.
 *
 * @module
 */
import { crc32 } from "node:zlib";
import { PNG_SIGNATURE } from "./formats.ts";
import {
  type ByteReader,
  CorruptError,
  MAX_EXIF_BYTES,
  tiffBlock,
  type WalkMode,
  type WalkResult,
} from "./reader.ts";

const MAX_CHUNK = 0x7fffffff; // PNG spec: chunk lengths fit in 31 bits
const TYPE_CHAR = /^[A-Za-z]{4}$/;

/**
 * Walks a PNG. In `"full"` mode checks the CRC of every chunk (zlib's crc32,
 * in native code) and that IEND ends the file; throws `CorruptError`,
 * `TruncatedError` or (on a partial source) `NeedMoreError`.
 *
 * @example
 * ```ts ignore
 * const { width, height } = await walkPng(new ByteReader(fileSource(fh, size)), "full");
 * ```
 */
export async function walkPng(r: ByteReader, mode: WalkMode): Promise<WalkResult> {
  const sig = await r.bytes(0, 8);
  if (!PNG_SIGNATURE.every((b, i) => sig[i] === b)) throw new CorruptError("PNG signature is damaged");
  let pos = 8;
  let width = 0;
  let height = 0;
  let exif: Uint8Array | undefined;
  let sawData = false;
  let n = 0;
  /** Checks one chunk whose type, data and CRC are in hand; returns true at IEND. */
  const chunk = (
    at: number,
    len: number,
    type: string,
    crc: number,
    stored: number,
    data: () => Uint8Array,
  ) => {
    if (len > MAX_CHUNK) throw new CorruptError(`PNG chunk at offset ${at} has length ${len} above 2^31-1`);
    if (!TYPE_CHAR.test(type)) throw new CorruptError(`PNG chunk at offset ${at} has an invalid type`);
    if (n++ === 0 ? type !== "IHDR" || len !== 13 : type === "IHDR") {
      throw new CorruptError(
        n === 1 ? "PNG does not start with an IHDR chunk" : "PNG has a second IHDR chunk",
      );
    }
    if (stored !== crc) {
      throw new CorruptError(
        `PNG chunk ${type} at offset ${at}: CRC is 0x${hex(stored)}, the data gives 0x${hex(crc)}`,
      );
    }
    if (type === "IDAT") sawData = true;
    if (type === "eXIf" && exif === undefined && len <= MAX_EXIF_BYTES) exif = tiffBlock(data().slice());
    if (type !== "IEND") return false;
    if (len !== 0) throw new CorruptError("PNG IEND chunk is not empty");
    if (!sawData) throw new CorruptError("PNG has no IDAT chunk");
    if (at + 12 !== r.size) throw new CorruptError(`PNG has ${r.size - at - 12} bytes after IEND`);
    return true;
  };
  if (mode === "header") {
    const len = await r.u32be(pos);
    if ((await r.fourcc(pos + 4)) !== "IHDR" || len !== 13) {
      throw new CorruptError("PNG does not start with an IHDR chunk");
    }
    return dimensions(await r.u32be(pos + 8), await r.u32be(pos + 12));
  }
  for (;;) {
    if (pos === r.size) throw new CorruptError("PNG ends without an IEND chunk");
    // Fast path: every chunk wholly inside the window is checked without awaiting.
    const w = await r.window(pos);
    const v = new DataView(w.buffer, w.byteOffset, w.byteLength);
    let off = 0;
    while (off + 12 <= w.length) {
      const len = v.getUint32(off);
      if (off + 12 + len > w.length) break;
      const type = String.fromCharCode(w[off + 4], w[off + 5], w[off + 6], w[off + 7]);
      const body = w.subarray(off + 8, off + 8 + len);
      if (n === 0 && type === "IHDR" && len === 13) {
        ({ width, height } = dimensions(v.getUint32(off + 8), v.getUint32(off + 12)));
      }
      const at = pos + off;
      if (
        chunk(
          at,
          len,
          type,
          crc32(w.subarray(off + 4, off + 8 + len)),
          v.getUint32(off + 8 + len),
          () => body,
        )
      ) {
        return exif ? { width, height, exif } : { width, height };
      }
      off += 12 + len;
    }
    if (off > 0) {
      pos += off;
      continue;
    }
    // A chunk larger than the window (or crossing its end): stream its data through the CRC.
    const len = await r.u32be(pos);
    const type = await r.fourcc(pos + 4);
    if (len > MAX_CHUNK) throw new CorruptError(`PNG chunk at offset ${pos} has length ${len} above 2^31-1`);
    if (n === 0 && type === "IHDR" && len === 13) {
      ({ width, height } = dimensions(await r.u32be(pos + 8), await r.u32be(pos + 12)));
    }
    let crc = crc32(await r.bytes(pos + 4, 4));
    await r.each(pos + 8, len, (part) => crc = crc32(part, crc));
    const stored = await r.u32be(pos + 8 + len);
    const data = type === "eXIf" && len <= MAX_EXIF_BYTES ? await r.copy(pos + 8, len) : new Uint8Array(0);
    if (chunk(pos, len, type, crc, stored, () => data)) {
      return exif ? { width, height, exif } : { width, height };
    }
    pos += 12 + len;
  }
}

function dimensions(width: number, height: number): { width: number; height: number } {
  if (width === 0 || height === 0 || width > MAX_CHUNK || height > MAX_CHUNK) {
    throw new CorruptError(`PNG declares invalid dimensions ${width}x${height}`);
  }
  return { width, height };
}

function hex(n: number): string {
  return n.toString(16).padStart(8, "0");
}
