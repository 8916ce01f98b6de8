/**
 * GIF structure walk: header, logical screen, then blocks up to the 0x3B
 * trailer.
 *
 * @module
 */
import { type ByteReader, CorruptError, TruncatedError, type WalkMode, type WalkResult } from "./reader.ts";

/**
 * Walks a GIF. In `"full"` mode follows every extension and image block
 * (each a chain of sub-blocks) and requires the trailer; bytes after the
 * trailer are tolerated, as browsers do.
 *
 * @example
 * ```ts ignore
 * const { width, height } = await walkGif(reader, "header");
 * ```
 */
export async function walkGif(r: ByteReader, mode: WalkMode): Promise<WalkResult> {
  const width = await r.u16le(6);
  const height = await r.u16le(8);
  if (width === 0 || height === 0) {
    throw new CorruptError(`GIF declares invalid dimensions ${width}x${height}`);
  }
  if (mode === "header") return { width, height };
  const flags = await r.u8(10);
  let pos = 13 + colorTableSize(flags);
  let images = 0;
  for (;;) {
    if (pos >= r.size) throw new CorruptError("GIF ends without the trailer byte 0x3B");
    const block = await r.u8(pos);
    if (block === 0x3b) {
      if (images === 0) throw new CorruptError("GIF has no image");
      return { width, height };
    } else if (block === 0x21) {
      pos = await skipSubBlocks(r, pos + 2); // introducer, label
    } else if (block === 0x2c) {
      const imageFlags = await r.u8(pos + 9);
      pos += 10 + colorTableSize(imageFlags);
      const minCodeSize = await r.u8(pos);
      if (minCodeSize < 2 || minCodeSize > 11) {
        throw new CorruptError(`GIF image at offset ${pos} has LZW code size ${minCodeSize}`);
      }
      pos = await skipSubBlocks(r, pos + 1);
      images++;
    } else {
      throw new CorruptError(`GIF has an unknown block 0x${block.toString(16)} at offset ${pos}`);
    }
  }
}

function colorTableSize(flags: number): number {
  return flags & 0x80 ? 3 * (1 << ((flags & 7) + 1)) : 0;
}

/** Skips a chain of sub-blocks (length byte, data) ending with a zero length; returns the position after it. */
async function skipSubBlocks(r: ByteReader, pos: number): Promise<number> {
  for (;;) {
    // Synchronous within a window: sub-blocks are at most 256 bytes, a hostile file makes them 2.
    const w = await r.window(pos);
    if (w.length === 0) throw new TruncatedError(pos, 1, r.size);
    let off = 0;
    while (off < w.length) {
      const n = w[off];
      if (n === 0) return pos + off + 1;
      off += 1 + n;
    }
    pos += off;
  }
}
