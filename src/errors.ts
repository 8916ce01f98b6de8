/**
 * Typed errors and the stable error codes shared by the wire protocol, the
 * library API and the CLIs. The numeric value of each code is what travels in
 * an ERROR frame (see docs/PROTOCOL.md, "Error codes"); the string name is what
 * callers match on.
 *
 * @module
 */

/** Every error code ferry can report, with its wire number. Never renumber. */
export const ERROR_CODES = {
  // Framing and connection-level protocol errors (1–19).
  BAD_FRAME: 1,
  FRAME_TOO_LARGE: 2,
  TRUNCATED_FRAME: 3,
  UNKNOWN_FRAME_TYPE: 4,
  BAD_MAGIC: 5,
  UNSUPPORTED_VERSION: 6,
  UNEXPECTED_FRAME: 7,
  AUTH_REQUIRED: 8,
  AUTH_FAILED: 9,
  RATE_LIMITED: 10,
  SERVER_BUSY: 11,
  HANDSHAKE_TIMEOUT: 12,
  IDLE_TIMEOUT: 13,
  PEER_DEAD: 14,
  SHUTTING_DOWN: 15,
  TLS_MISMATCH: 16,
  /** Local only: the connection could not be made or was lost for good. */
  CONNECTION_FAILED: 17,
  // Per-file errors (20–39).
  BAD_NAME: 20,
  NAME_EXISTS: 21,
  FILE_TOO_LARGE: 22,
  INSUFFICIENT_STORAGE: 23,
  DISK_FULL: 24,
  SIZE_MISMATCH: 25,
  HASH_MISMATCH: 26,
  BAD_OFFSET: 27,
  FILE_BUSY: 28,
  BAD_HEADER: 29,
  NOT_AN_IMAGE: 30,
  TYPE_MISMATCH: 31,
  TOO_MANY_PIXELS: 32,
  CORRUPT_IMAGE: 33,
  UNKNOWN_FILE: 34,
  // Messages (40–49).
  MESSAGE_TOO_LARGE: 40,
  // Anything else (50+).
  INTERNAL: 50,
  IO_ERROR: 51,
} as const;

/** The name of an error code, e.g. `"HASH_MISMATCH"`. */
export type ErrorCode = keyof typeof ERROR_CODES;

const NAMES_BY_NUMBER: ReadonlyMap<number, ErrorCode> = new Map(
  Object.entries(ERROR_CODES).map(([name, n]) => [n, name as ErrorCode]),
);

/**
 * Looks up the name of a wire error number. Unknown numbers map to `INTERNAL`
 * so that a newer peer's code never crashes an older one.
 *
 * @example Decode a wire number
 * ```ts
 * import { errorCodeFromNumber } from "./errors.ts";
 * errorCodeFromNumber(26); // "HASH_MISMATCH"
 * ```
 */
export function errorCodeFromNumber(n: number): ErrorCode {
  return NAMES_BY_NUMBER.get(n) ?? "INTERNAL";
}

/**
 * An error with a stable {@linkcode ErrorCode}. Everything ferry raises on
 * purpose is a `FerryError` (or the `ProtocolError` subclass).
 *
 * @example Match on the code
 * ```ts
 * import { FerryError } from "./errors.ts";
 * try {
 *   throw new FerryError("DISK_FULL", "Cannot write file: no space left");
 * } catch (e) {
 *   if (e instanceof FerryError && e.code === "DISK_FULL") {
 *     // free some space and retry
 *   }
 * }
 * ```
 */
export class FerryError extends Error {
  /** The stable code, e.g. `"FRAME_TOO_LARGE"`. */
  readonly code: ErrorCode;
  /** Set when the error names one file or message on a connection. */
  readonly id?: number;

  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; id?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FerryError";
    this.code = code;
    if (options?.id !== undefined) this.id = options.id;
  }

  /** The code's number on the wire. */
  get wireCode(): number {
    return ERROR_CODES[this.code];
  }
}

/**
 * A violation of the wire protocol: a bad frame, an oversized length prefix,
 * a frame cut short by EOF, a frame in the wrong state.
 *
 * @example
 * ```ts
 * import { ProtocolError } from "./errors.ts";
 * const e = new ProtocolError("FRAME_TOO_LARGE", "Cannot read frame: length 4294967295 exceeds limit 1048576");
 * e.code; // "FRAME_TOO_LARGE"
 * ```
 */
export class ProtocolError extends FerryError {
  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; id?: number },
  ) {
    super(code, message, options);
    this.name = "ProtocolError";
  }
}

/**
 * An error reported by the remote peer in an ERROR frame.
 *
 * @example
 * ```ts
 * import { RemoteError } from "./errors.ts";
 * const e = new RemoteError("NAME_EXISTS", "photo.jpg already exists", 3);
 * e.code; // "NAME_EXISTS"
 * ```
 */
export class RemoteError extends FerryError {
  constructor(code: ErrorCode, message: string, id?: number) {
    super(code, message, id === undefined ? undefined : { id });
    this.name = "RemoteError";
  }
}
