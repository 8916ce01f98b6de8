/**
 * AVIF / HEIC (ISO-BMFF, HEIF) structure walk: top-level boxes must tile the
 * file exactly, the `meta` box must describe a picture with its size in an
 * `ispe` property, and every item's data must lie inside the file.
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

/** Largest `meta` box read into memory; real ones are a few KiB, even for tiled iPhone photos. */
export const MAX_META_BYTES = 4 * 1024 * 1024;

interface Extent {
  offset: number;
  length: number;
}

interface Meta {
  handler?: string;
  primary?: number;
  /** Item id → item type, e.g. "av01", "hvc1", "grid", "Exif". */
  items: Map<number, string>;
  /** Item id → construction method and extents (file offsets for method 0). */
  locations: Map<number, { method: number; extents: Extent[] }>;
  /** Properties in `ipco`, in order: associations index them from 1. */
  props: Array<{ type: string; width?: number; height?: number }>;
  /** Item id → property indices. */
  assoc: Map<number, number[]>;
}

/**
 * Walks an AVIF or HEIC file. Dimensions are the primary item's `ispe`
 * (before any `irot` rotation); `pixels` is the largest `ispe` of any item,
 * so the pixel limit also covers tiles and hidden items.
 *
 * @example
 * ```ts ignore
 * const { width, height } = await walkIsobmff(reader, "header");
 * ```
 */
export async function walkIsobmff(r: ByteReader, mode: WalkMode): Promise<WalkResult> {
  let pos = 0;
  let meta: Meta | undefined;
  while (pos < r.size) {
    const box = await boxAt(r, pos, r.size);
    if (pos === 0 && box.type !== "ftyp") throw new CorruptError("HEIF file does not start with an ftyp box");
    if (box.type === "meta") {
      if (meta) throw new CorruptError("HEIF file has two top-level meta boxes");
      if (box.size - box.header > MAX_META_BYTES) {
        throw new CorruptError(`HEIF meta box of ${box.size} bytes exceeds ${MAX_META_BYTES}`);
      }
      meta = parseMeta(await r.copy(pos + box.header, box.size - box.header));
      if (mode === "header") return dimensions(meta);
    }
    pos += box.size;
  }
  if (!meta) throw new CorruptError("HEIF file has no meta box");
  const result = dimensions(meta);
  for (const [id, loc] of meta.locations) {
    if (loc.method !== 0) continue; // data in idat or another item: covered by the meta box itself
    for (const e of loc.extents) {
      if (e.offset + e.length > r.size) {
        throw new CorruptError(
          `HEIF item ${id} data at ${e.offset}+${e.length} lies past the end (${r.size})`,
        );
      }
    }
  }
  const exif = await exifOf(r, meta);
  return exif ? { ...result, exif } : result;
}

async function boxAt(r: ByteReader, pos: number, end: number) {
  const size32 = await r.u32be(pos);
  const type = await r.fourcc(pos + 4);
  let size = size32;
  let header = 8;
  if (size32 === 1) {
    size = (await r.u32be(pos + 8)) * 2 ** 32 + (await r.u32be(pos + 12));
    header = 16;
  } else if (size32 === 0) {
    size = end - pos; // extends to the end of the file
  }
  if (size < header) {
    throw new CorruptError(`HEIF box "${printable(type)}" at offset ${pos} has size ${size}`);
  }
  if (pos + size > end) throw new TruncatedError(pos, size, end);
  return { type, size, header };
}

function dimensions(meta: Meta): WalkResult {
  if (meta.handler !== "pict") {
    throw new CorruptError(`HEIF meta box handler is "${printable(meta.handler ?? "")}", not "pict"`);
  }
  const sizes = meta.props.filter((p) => p.type === "ispe" && p.width! > 0 && p.height! > 0);
  if (sizes.length === 0) throw new CorruptError("HEIF file has no image size (ispe) property");
  const primary = meta.primary ?? meta.items.keys().next().value;
  const own = (meta.assoc.get(primary ?? -1) ?? []).map((i) => meta.props[i - 1]).find((p) =>
    p?.type === "ispe"
  );
  const main = own ?? sizes.reduce((a, b) => (a.width! * a.height! >= b.width! * b.height! ? a : b));
  const pixels = Math.max(...sizes.map((p) => p.width! * p.height!));
  const width = main.width!;
  const height = main.height!;
  return pixels > width * height ? { width, height, pixels } : { width, height };
}

async function exifOf(r: ByteReader, meta: Meta): Promise<Uint8Array | undefined> {
  for (const [id, type] of meta.items) {
    if (type !== "Exif") continue;
    const loc = meta.locations.get(id);
    if (!loc || loc.method !== 0 || loc.extents.length !== 1) return undefined;
    const { offset, length } = loc.extents[0];
    if (length < 8 || length > MAX_EXIF_BYTES) return undefined;
    const data = await r.copy(offset, length);
    const skip = new DataView(data.buffer).getUint32(0); // exif_tiff_header_offset
    return skip + 4 < data.length ? tiffBlock(data.subarray(4 + skip)) : undefined;
  }
  return undefined;
}

/** Parses the body of a `meta` full box. */
function parseMeta(body: Uint8Array): Meta {
  const meta: Meta = { items: new Map(), locations: new Map(), props: [], assoc: new Map() };
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  try {
    for (const box of children(v, 4, body.length)) {
      const version = v.getUint8(box.start);
      switch (box.type) {
        case "hdlr":
          meta.handler = fourccAt(v, box.start + 8);
          break;
        case "pitm":
          meta.primary = version === 0 ? v.getUint16(box.start + 4) : v.getUint32(box.start + 4);
          break;
        case "iinf": {
          const first = box.start + (version === 0 ? 6 : 8);
          for (const infe of children(v, first, box.end)) {
            if (infe.type !== "infe") continue;
            const iv = v.getUint8(infe.start);
            if (iv === 2) meta.items.set(v.getUint16(infe.start + 4), fourccAt(v, infe.start + 8));
            else if (iv === 3) meta.items.set(v.getUint32(infe.start + 4), fourccAt(v, infe.start + 10));
          }
          break;
        }
        case "iloc":
          parseIloc(v, box.start, version, meta);
          break;
        case "iprp":
          for (const sub of children(v, box.start, box.end)) {
            if (sub.type === "ipco") {
              for (const prop of children(v, sub.start, sub.end)) {
                meta.props.push(
                  prop.type === "ispe"
                    ? {
                      type: "ispe",
                      width: v.getUint32(prop.start + 4),
                      height: v.getUint32(prop.start + 8),
                    }
                    : { type: prop.type },
                );
              }
            } else if (sub.type === "ipma") {
              parseIpma(v, sub.start, meta);
            }
          }
          break;
      }
    }
  } catch (e) {
    if (e instanceof RangeError) {
      throw new CorruptError("HEIF meta box is malformed: a length runs past its box");
    }
    throw e;
  }
  return meta;
}

function parseIloc(v: DataView, p: number, version: number, meta: Meta): void {
  const sizes = v.getUint16(p + 4);
  const offsetSize = sizes >> 12;
  const lengthSize = (sizes >> 8) & 0xf;
  const baseSize = (sizes >> 4) & 0xf;
  const indexSize = version === 1 || version === 2 ? sizes & 0xf : 0;
  p += 6;
  const count = version < 2 ? v.getUint16(p) : v.getUint32(p);
  p += version < 2 ? 2 : 4;
  const num = (n: number): number => {
    let value: number;
    if (n === 0) value = 0;
    else if (n === 4) value = v.getUint32(p);
    else if (n === 8) value = v.getUint32(p) * 2 ** 32 + v.getUint32(p + 4);
    else throw new CorruptError(`HEIF iloc uses a field size of ${n} bytes`);
    p += n;
    return value;
  };
  for (let i = 0; i < count; i++) {
    const id = version < 2 ? v.getUint16(p) : v.getUint32(p);
    p += version < 2 ? 2 : 4;
    let method = 0;
    if (version === 1 || version === 2) {
      method = v.getUint16(p) & 0xf;
      p += 2;
    }
    p += 2; // data_reference_index
    const base = num(baseSize);
    const extentCount = v.getUint16(p);
    p += 2;
    const extents: Extent[] = [];
    for (let e = 0; e < extentCount; e++) {
      num(indexSize);
      const offset = base + num(offsetSize);
      extents.push({ offset, length: num(lengthSize) });
    }
    meta.locations.set(id, { method, extents });
  }
}

function parseIpma(v: DataView, p: number, meta: Meta): void {
  const version = v.getUint8(p);
  const wide = (v.getUint8(p + 3) & 1) === 1;
  const count = v.getUint32(p + 4);
  p += 8;
  for (let i = 0; i < count; i++) {
    const id = version < 1 ? v.getUint16(p) : v.getUint32(p);
    p += version < 1 ? 2 : 4;
    const n = v.getUint8(p++);
    const list: number[] = [];
    for (let j = 0; j < n; j++) {
      list.push(wide ? v.getUint16(p) & 0x7fff : v.getUint8(p) & 0x7f);
      p += wide ? 2 : 1;
    }
    meta.assoc.set(id, list);
  }
}

/** Child boxes of a box body in `[start, end)`; each yields its type and body range. */
function* children(v: DataView, start: number, end: number) {
  let p = start;
  while (p + 8 <= end) {
    let size = v.getUint32(p);
    const type = fourccAt(v, p + 4);
    let header = 8;
    if (size === 1) {
      size = v.getUint32(p + 8) * 2 ** 32 + v.getUint32(p + 12);
      header = 16;
    } else if (size === 0) {
      size = end - p;
    }
    if (size < header || p + size > end) {
      throw new CorruptError(`HEIF box "${printable(type)}" has size ${size}, past the end of its parent`);
    }
    yield { type, start: p + header, end: p + size };
    p += size;
  }
}

function fourccAt(v: DataView, p: number): string {
  return String.fromCharCode(v.getUint8(p), v.getUint8(p + 1), v.getUint8(p + 2), v.getUint8(p + 3));
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?");
}
