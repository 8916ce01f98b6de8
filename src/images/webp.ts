/**
 * WebP structure walk: the RIFF length must match the file, and the chunks
 * must tile it exactly.
 *
 * @module
 */
import {
  type ByteReader,
  CorruptError,
  MAX_EXIF_BYTES,
  tiffBlock,
  TruncatedError,
  type WalkMode,
  type WalkResult,
} from "./reader.ts";

/**
 * Walks a WebP file (simple lossy `VP8 `, lossless `VP8L`, or extended
 * `VP8X`). The RIFF length is checked against the declared size even in
 * `"header"` mode, so a wrong length is refused before the body arrives.
 *
 * @example
 * ```ts ignore
 * const { width, height, exif } = await walkWebp(reader, "full");
 * ```
 */
export async function walkWebp(r: ByteReader, mode: WalkMode): Promise<WalkResult> {
  const riffLength = await r.u32le(4);
  if (riffLength + 8 !== r.size) {
    throw new CorruptError(`WebP RIFF length says ${riffLength + 8} bytes, the file has ${r.size}`);
  }
  const first = await r.fourcc(12);
  const data = 20;
  let width: number;
  let height: number;
  if (first === "VP8 ") {
    const tag = await r.bytes(data, 10);
    if ((tag[0] & 1) !== 0 || tag[3] !== 0x9d || tag[4] !== 0x01 || tag[5] !== 0x2a) {
      throw new CorruptError("WebP VP8 key frame header is damaged");
    }
    width = (tag[6] | (tag[7] << 8)) & 0x3fff;
    height = (tag[8] | (tag[9] << 8)) & 0x3fff;
  } else if (first === "VP8L") {
    if ((await r.u8(data)) !== 0x2f) throw new CorruptError("WebP VP8L signature is damaged");
    const bits = await r.u32le(data + 1);
    if (bits >>> 29 !== 0) throw new CorruptError("WebP VP8L version is not 0");
    width = (bits & 0x3fff) + 1;
    height = ((bits >>> 14) & 0x3fff) + 1;
  } else if (first === "VP8X") {
    width = (await r.u24le(data + 4)) + 1;
    height = (await r.u24le(data + 7)) + 1;
  } else {
    throw new CorruptError(`WebP starts with an unknown chunk "${printable(first)}"`);
  }
  if (width === 0 || height === 0) {
    throw new CorruptError(`WebP declares invalid dimensions ${width}x${height}`);
  }
  if (mode === "header") return { width, height };

  let pos = 12;
  let exif: Uint8Array | undefined;
  let frames = 0;
  while (pos < r.size) {
    const type = await r.fourcc(pos);
    const len = await r.u32le(pos + 4);
    const next = pos + 8 + len + (len & 1); // chunks are padded to even length
    if (next > r.size) throw new TruncatedError(pos + 8, len + (len & 1), r.size);
    if (type === "VP8 " || type === "VP8L" || type === "ANMF") frames++;
    if (type === "EXIF" && exif === undefined && len <= MAX_EXIF_BYTES) {
      exif = tiffBlock(await r.copy(pos + 8, len));
    }
    pos = next;
  }
  if (frames === 0) throw new CorruptError("WebP has no image data chunk");
  return exif ? { width, height, exif } : { width, height };
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?");
}
