import { createHash } from "node:crypto";
import { open, readdir, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { FerryError } from "../errors.ts";

/** One local file and the relative name it is sent under. */
export interface SendItem {
  /** Local path. */
  path: string;
  /** Name on the receiver, `/`-separated. Defaults to the file's base name. */
  name?: string;
}

/** A file ready to offer: its identity as the receiver will check it. */
export interface LocalFile {
  path: string;
  name: string;
  size: number;
  mtimeMs: number;
  sha256: Uint8Array;
}

/** Read size for hashing and sending: large, so the hot path makes few calls. */
export const READ_CHUNK = 1024 * 1024;

/**
 * Expands files and folders into a flat list. A folder `photos` yields
 * `photos/a.jpg`, `photos/2024/b.jpg`, … Symlinks inside folders are skipped
 * (reported through `onSkip`), so a send never leaves the chosen tree.
 *
 * @example
 * ```ts
 * import { expandItems } from "./files.ts";
 * const items = await expandItems(["photo.jpg", "album/"]);
 * ```
 */
export async function expandItems(
  inputs: ReadonlyArray<string | SendItem>,
  onSkip?: (path: string, reason: string) => void,
): Promise<Array<Required<SendItem>>> {
  const out: Array<Required<SendItem>> = [];
  for (const input of inputs) {
    const item = typeof input === "string" ? { path: input } : input;
    let info;
    try {
      info = await stat(item.path);
    } catch (e) {
      throw new FerryError("IO_ERROR", `Cannot read ${item.path}: ${(e as Error).message}`, { cause: e });
    }
    const name = item.name ?? basename(resolve(item.path));
    if (info.isFile()) out.push({ path: item.path, name });
    else if (info.isDirectory()) await walk(item.path, name, out, onSkip);
    else throw new FerryError("IO_ERROR", `Cannot send ${item.path}: not a regular file or folder`);
  }
  return out;
}

async function walk(
  dir: string,
  prefix: string,
  out: Array<Required<SendItem>>,
  onSkip?: (path: string, reason: string) => void,
): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const path = join(dir, entry.name);
    const name = `${prefix}/${entry.name}`;
    if (entry.isSymbolicLink()) onSkip?.(path, "symbolic link");
    else if (entry.isDirectory()) await walk(path, name, out, onSkip);
    else if (entry.isFile()) out.push({ path, name });
    else onSkip?.(path, "not a regular file");
  }
}

/**
 * Stats and hashes a file (SHA-256 over large reads).
 *
 * @example
 * ```ts
 * import { describeFile } from "./files.ts";
 * const file = await describeFile({ path: "photo.jpg", name: "photo.jpg" });
 * file.size; file.sha256; // 32 bytes
 * ```
 */
export async function describeFile(item: Required<SendItem>): Promise<LocalFile> {
  const hash = createHash("sha256");
  const handle = await open(item.path, "r");
  try {
    // Two buffers: the next chunk is read (off the main thread) while this one is hashed.
    let buffer = new Uint8Array(READ_CHUNK);
    let spare = new Uint8Array(READ_CHUNK);
    let position = 0;
    let reading = handle.read(buffer, 0, buffer.length, 0);
    for (;;) {
      const { bytesRead } = await reading;
      if (bytesRead === 0) break;
      position += bytesRead;
      reading = handle.read(spare, 0, spare.length, position);
      hash.update(buffer.subarray(0, bytesRead));
      [buffer, spare] = [spare, buffer];
    }
    const after = await handle.stat();
    if (after.size !== position || after.mtimeMs !== (await stat(item.path)).mtimeMs) {
      throw new FerryError("IO_ERROR", `Cannot send ${item.path}: it changed while being read`);
    }
    return {
      path: item.path,
      name: item.name,
      size: position,
      mtimeMs: Math.max(0, Math.floor(after.mtimeMs)),
      sha256: new Uint8Array(hash.digest()),
    };
  } finally {
    await handle.close();
  }
}

/** True if the file on disk no longer matches what was offered (size or mtime). */
export async function fileChanged(file: LocalFile): Promise<boolean> {
  try {
    const info = await stat(file.path);
    return info.size !== file.size || Math.floor(info.mtimeMs) !== file.mtimeMs;
  } catch {
    return true;
  }
}
