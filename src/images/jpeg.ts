/**
 * JPEG structure walk: SOI, marker segments, entropy-coded scans, EOI.
 *
 * @module
 */
import { type ByteReader, CorruptError, tiffBlock, type WalkMode, type WalkResult } from "./reader.ts";

const SOS = 0xda;
const EOI = 0xd9;
const APP1 = 0xe1;

/** Start-of-frame markers: every SOFn except DHT (C4), JPG (C8) and DAC (CC). */
function isSof(m: number): boolean {
  return m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
}

/**
 * Walks a JPEG from SOI through every segment and scan to EOI. Data after
 * EOI is tolerated: cameras append previews and motion-photo videos there.
 * Dimensions come from the first SOFn; EXIF from the first `Exif` APP1.
 *
 * @example
 * ```ts ignore
 * const { width, height } = await walkJpeg(reader, "header"); // stops at SOFn
 * ```
 */
export async function walkJpeg(r: ByteReader, mode: WalkMode): Promise<WalkResult> {
  let pos = 2; // after SOI (checked by detection)
  let width = 0;
  let height = 0;
  let exif: Uint8Array | undefined;
  let scans = 0;
  for (;;) {
    if (pos >= r.size) throw new CorruptError("JPEG ends without an EOI marker");
    if ((await r.u8(pos)) !== 0xff) throw new CorruptError(`JPEG has no marker at offset ${pos}`);
    let marker = await r.u8(pos + 1);
    while (marker === 0xff) marker = await r.u8(++pos + 1); // fill bytes
    pos += 2;
    if (marker === EOI) {
      if (width === 0) throw new CorruptError("JPEG has no frame header (SOFn)");
      if (scans === 0) throw new CorruptError("JPEG has no scan (SOS)");
      return exif ? { width, height, exif } : { width, height };
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no length
    if (marker === 0x00 || marker === 0xd8) {
      throw new CorruptError(`JPEG has an unexpected marker 0xFF${hex(marker)} at offset ${pos - 2}`);
    }
    const len = await r.u16be(pos);
    if (len < 2) {
      throw new CorruptError(`JPEG segment 0xFF${hex(marker)} at offset ${pos - 2} has length ${len}`);
    }
    const body = pos + 2;
    const end = pos + len;
    if (isSof(marker) && width === 0) {
      if (len < 8) throw new CorruptError("JPEG frame header is too short");
      height = await r.u16be(body + 1);
      width = await r.u16be(body + 3);
      if (width === 0 || height === 0) {
        throw new CorruptError(`JPEG declares invalid dimensions ${width}x${height}`);
      }
      if (mode === "header") return { width, height };
    } else if (marker === APP1 && exif === undefined && mode === "full" && len >= 8) {
      const data = await r.bytes(body, len - 2);
      if (data[0] === 0x45 && data[1] === 0x78 && data[2] === 0x69 && data[3] === 0x66) {
        exif = tiffBlock(data.slice());
      }
    }
    pos = end;
    if (marker === SOS) {
      if (width === 0) throw new CorruptError("JPEG scan comes before the frame header");
      pos = await skipEntropyData(r, pos);
      scans++;
    }
  }
}

/** Finds the marker that ends a scan: 0xFF not followed by 0x00 (stuffing), RSTn or fill 0xFF. */
async function skipEntropyData(r: ByteReader, pos: number): Promise<number> {
  for (;;) {
    // Synchronous within a window: a stuffed 0xFF comes every few hundred bytes.
    const w = await r.window(pos);
    if (w.length === 0) throw new CorruptError("JPEG ends inside a scan, without an EOI marker");
    let i = w.indexOf(0xff);
    while (i !== -1 && i + 1 < w.length) {
      const next = w[i + 1];
      if (next !== 0x00 && next !== 0xff && (next < 0xd0 || next > 0xd7)) return pos + i;
      i = w.indexOf(0xff, i + (next === 0xff ? 1 : 2));
    }
    if (i === -1) {
      pos += w.length;
    } else {
      if (pos + i + 1 >= r.size) throw new CorruptError("JPEG ends inside a scan, without an EOI marker");
      pos += i; // a 0xFF at the window's edge: look again with its next byte in view
      if (i === 0) {
        // The window holds only this byte; read the pair directly.
        const next = await r.u8(pos + 1);
        if (next !== 0x00 && next !== 0xff && (next < 0xd0 || next > 0xd7)) return pos;
        pos += next === 0xff ? 1 : 2;
      }
    }
  }
}

function hex(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, "0");
}
