/**
 * Images checked by content: format detection by magic bytes, structure
 * validation, dimensions and EXIF DateTimeOriginal, and the early check of
 * an upload's first bytes.
 *
 * @example Check a file before keeping it
 * ```ts ignore
 * import { inspectFile } from "./mod.ts";
 * const meta = await inspectFile("upload.tmp", "cat.jpg", { imagesOnly: true, maxPixels: 50_000_000 });
 * // meta: { format: "jpeg", width: 4032, height: 3024, takenAt: "2024-05-01T12:34:56" }
 * ```
 *
 * @module
 */
export {
  DEFAULT_MAX_PIXELS,
  DEFAULT_SNIFF_BYTES,
  type ImageMeta,
  type ImagePolicy,
  ImageSniffer,
  inspectBytes,
  inspectFile,
  judge,
} from "./inspect.ts";
export { detectFormat, formatFromName, IMAGE_MIME, type ImageFormat } from "./formats.ts";
export { exifTakenAt } from "./exif.ts";
