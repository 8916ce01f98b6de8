/**
 * EXIF DateTimeOriginal from a TIFF block, decoded by the `exif-reader`
 * package (each walker finds the block in its own container).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import exifReader from "exif-reader";

const OFFSET = /^[+-](?:[01]\d|2[0-3]):[0-5]\d$/;

/**
 * When the photo was taken, as an ISO 8601 local time `2024-05-01T12:34:56`,
 * with the offset appended (`+02:00`) when the EXIF block records
 * OffsetTimeOriginal. Undefined when absent or unreadable: EXIF is metadata,
 * so a damaged block never fails the image.
 *
 * @example
 * ```ts ignore
 * exifTakenAt(tiffBlock); // "2024-05-01T12:34:56"
 * ```
 */
export function exifTakenAt(tiff: Uint8Array): string | undefined {
  let parsed;
  try {
    parsed = exifReader(Buffer.from(tiff.buffer, tiff.byteOffset, tiff.byteLength));
  } catch {
    return undefined;
  }
  // exif-reader reads the wall-clock time as if it were UTC.
  const d = parsed.Photo?.DateTimeOriginal;
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) return undefined;
  // "0000:00:00 00:00:00" (unset) comes out in 1899.
  if (d.getUTCFullYear() < 1900) return undefined;
  const wall = d.toISOString().slice(0, 19);
  const offset = parsed.Photo?.OffsetTimeOriginal;
  return typeof offset === "string" && OFFSET.test(offset) ? wall + offset : wall;
}
