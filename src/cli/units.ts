/**
 * Parses a byte size: `1048576`, `64K`, `10M`, `1.5G`, `2GiB`, `512kb`.
 * Units are powers of 1024. Throws `TypeError` naming the flag.
 *
 * @example
 * ```ts
 * import { parseSize } from "./units.ts";
 * parseSize("64M", "--min-free"); // 67108864
 * ```
 */
export function parseSize(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new TypeError(`Invalid value for ${flag}: "${text}" is not a size like 512K, 10M or 2G`);
  const power = { "": 0, k: 1, m: 2, g: 3, t: 4 }[m[2].toLowerCase() as "" | "k" | "m" | "g" | "t"];
  const value = Math.round(Number(m[1]) * 1024 ** power);
  if (!Number.isSafeInteger(value)) throw new TypeError(`Invalid value for ${flag}: "${text}" is too large`);
  return value;
}

/**
 * Parses a duration: `500ms`, `10s`, `5m`, `24h`, `7d`; a bare number is
 * seconds. Returns milliseconds.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./units.ts";
 * parseDuration("5m", "--idle-timeout"); // 300000
 * ```
 */
export function parseDuration(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(text);
  if (!m) {
    throw new TypeError(`Invalid value for ${flag}: "${text}" is not a duration like 500ms, 10s, 5m or 24h`);
  }
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86400_000 }[
    (m[2] ?? "s").toLowerCase() as "ms" | "s" | "m" | "h" | "d"
  ];
  return Math.round(Number(m[1]) * factor);
}

/** Parses a whole number ≥ `min`. */
export function parseCount(text: string, flag: string, min = 0): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new TypeError(`Invalid value for ${flag}: "${text}" is not a whole number ≥ ${min}`);
  }
  return n;
}

/** Formats bytes for people: `1.2 MB` (powers of 1000, like most tools show rates). */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/** Formats seconds as `1h02m`, `3m05s`, `42s`. */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--";
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}
