/**
 * The frame format: a 4-byte big-endian payload length, a 1-byte type, then
 * the payload. See docs/PROTOCOL.md, "Framing".
 *
 * @module
 */

/** Bytes before the payload: u32 length + u8 type. */
export const FRAME_HEADER_SIZE = 5;

/** Default largest payload a peer accepts: 1 MiB. */
export const DEFAULT_MAX_FRAME_SIZE = 1024 * 1024;

/** Hard ceiling for any configured max frame size: 16 MiB. */
export const MAX_FRAME_SIZE_CEILING = 16 * 1024 * 1024;

/** One decoded frame. `payload` may be a view into a larger buffer. */
export interface Frame {
  /** The frame type byte (0–255). */
  type: number;
  /** The payload bytes, without the 5-byte header. */
  payload: Uint8Array;
}

/** One decoded frame whose payload is left in the pieces it arrived in. */
export interface FrameParts {
  /** The frame type byte (0–255). */
  type: number;
  /** Payload length in bytes: the sum of the parts' lengths. */
  length: number;
  /** The payload as zero-copy views, in order; empty for an empty payload. */
  parts: Uint8Array[];
}

/**
 * Writes the 5-byte header for a frame of `type` whose payload is
 * `payloadLength` bytes long.
 *
 * @example
 * ```ts
 * import { encodeFrameHeader } from "./frame.ts";
 * encodeFrameHeader(0x20, 8); // Uint8Array [0, 0, 0, 8, 0x20]
 * ```
 */
export function encodeFrameHeader(type: number, payloadLength: number): Uint8Array {
  const header = new Uint8Array(FRAME_HEADER_SIZE);
  writeFrameHeader(header, 0, type, payloadLength);
  return header;
}

/** Writes a frame header into `target` at `offset`. */
export function writeFrameHeader(
  target: Uint8Array,
  offset: number,
  type: number,
  payloadLength: number,
): void {
  if (!Number.isInteger(type) || type < 0 || type > 0xff) {
    throw new RangeError(`Cannot encode frame: type ${type} is not a byte`);
  }
  if (!Number.isInteger(payloadLength) || payloadLength < 0 || payloadLength > 0xffffffff) {
    throw new RangeError(`Cannot encode frame: length ${payloadLength} does not fit in u32`);
  }
  target[offset] = payloadLength >>> 24;
  target[offset + 1] = (payloadLength >>> 16) & 0xff;
  target[offset + 2] = (payloadLength >>> 8) & 0xff;
  target[offset + 3] = payloadLength & 0xff;
  target[offset + 4] = type;
}

/**
 * Encodes one whole frame into a single new buffer (header + payload).
 *
 * @example
 * ```ts
 * import { encodeFrame } from "./frame.ts";
 * encodeFrame({ type: 0x30, payload: new TextEncoder().encode("hi") });
 * // Uint8Array [0, 0, 0, 2, 0x30, 0x68, 0x69]
 * ```
 */
export function encodeFrame(frame: Frame): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_SIZE + frame.payload.length);
  writeFrameHeader(out, 0, frame.type, frame.payload.length);
  out.set(frame.payload, FRAME_HEADER_SIZE);
  return out;
}

/**
 * One buffer holding `parts` in order: the part itself when there is only one (no copy), else a new
 * buffer of `length` bytes (the parts' total).
 *
 * @example
 * ```ts
 * import { joinBytes } from "./frame.ts";
 * joinBytes([new Uint8Array([1]), new Uint8Array([2, 3])], 3); // Uint8Array [1, 2, 3]
 * ```
 */
export function joinBytes(parts: readonly Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let filled = 0;
  for (const part of parts) {
    out.set(part, filled);
    filled += part.length;
  }
  return out;
}
