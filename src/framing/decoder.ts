import { ProtocolError } from "../errors.ts";
import {
  DEFAULT_MAX_FRAME_SIZE,
  type Frame,
  FRAME_HEADER_SIZE,
  type FrameParts,
  joinBytes,
} from "./frame.ts";

/** Options for {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest payload accepted, in bytes. Larger length prefixes raise `FRAME_TOO_LARGE` before any allocation. */
  maxFrameSize?: number;
  /**
   * Called with each pushed chunk once all of its bytes have been handed out
   * in frames (or consumed as headers). Frames taken may still be using it:
   * the caller decides when its memory may be reused.
   */
  onConsumed?: (chunk: Uint8Array) => void;
}

/**
 * An incremental frame decoder: push bytes as they arrive, however TCP split
 * or glued them, and take out whole frames.
 *
 * Pending bytes are kept as a list of chunks. {@linkcode nextParts} hands a
 * whole frame out as zero-copy views of the chunks it arrived in (views of
 * one buffer that touch are merged), so bulk payloads are never copied.
 * {@linkcode next} returns one buffer: a `subarray` when the frame lies in
 * one chunk, otherwise a join allocated only once the whole frame has
 * arrived. Either way a hostile length prefix allocates nothing.
 *
 * @example Decode a stream split at awkward places
 * ```ts
 * import { FrameDecoder } from "./decoder.ts";
 * const decoder = new FrameDecoder();
 * decoder.push(new Uint8Array([0, 0, 0, 2, 0x30, 0x68]));
 * decoder.next(); // undefined: the frame is not complete yet
 * decoder.push(new Uint8Array([0x69]));
 * decoder.next(); // { type: 0x30, payload: Uint8Array [0x68, 0x69] }
 * ```
 */
export class FrameDecoder {
  readonly maxFrameSize: number;
  #chunks: Uint8Array[] = [];
  /** Read offset inside `#chunks[0]`. */
  #head = 0;
  #buffered = 0;
  #header = new Uint8Array(FRAME_HEADER_SIZE);
  #onConsumed: ((chunk: Uint8Array) => void) | undefined;

  constructor(options: FrameDecoderOptions = {}) {
    const max = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
    if (!Number.isInteger(max) || max < 0 || max > 0xffffffff) {
      throw new RangeError(`Cannot create decoder: maxFrameSize ${max} is not a u32`);
    }
    this.maxFrameSize = max;
    this.#onConsumed = options.onConsumed;
  }

  /** Bytes received but not yet returned as frames. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Adds received bytes. The decoder keeps a reference; do not reuse the buffer. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
  }

  /**
   * Returns the next whole frame, or `undefined` if more bytes are needed.
   * Throws `ProtocolError` (`FRAME_TOO_LARGE`) as soon as a length prefix
   * exceeds the limit.
   */
  next(): Frame | undefined {
    const frame = this.nextParts();
    if (!frame) return undefined;
    const { parts, length } = frame;
    return { type: frame.type, payload: joinBytes(parts, length) };
  }

  /**
   * Like {@linkcode next}, but the payload comes as the zero-copy views it
   * arrived in, in order, and is never joined: one part when it arrived in
   * one chunk (or in chunks that are adjacent views of one buffer), none for
   * an empty payload. The views stay valid as long as the pushed chunks do.
   */
  nextParts(): FrameParts | undefined {
    if (this.#buffered < FRAME_HEADER_SIZE) return undefined;
    const header = this.#peek(FRAME_HEADER_SIZE);
    const length = ((header[0] << 24) | (header[1] << 16) | (header[2] << 8) | header[3]) >>> 0;
    const type = header[4];
    if (length > this.maxFrameSize) {
      throw new ProtocolError(
        "FRAME_TOO_LARGE",
        `Cannot read frame: length ${length} exceeds limit ${this.maxFrameSize}`,
      );
    }
    if (this.#buffered < FRAME_HEADER_SIZE + length) return undefined;
    this.#skip(FRAME_HEADER_SIZE);
    return { type, length, parts: this.#takeParts(length) };
  }

  /**
   * Moves the pending bytes (the start of a frame not yet whole) out of the chunks they arrived in, so
   * the caller can reuse or free those at once: appended to the first pending chunk if `isOwn(chunk)`
   * says it is a buffer from `into` with room left after its view, else copied into `into(n)`, a
   * buffer of at least `n` bytes the caller owns. Every chunk moved out of goes to `onConsumed` now.
   * Appending keeps the copying linear when a large frame arrives in many small reads.
   */
  compact(into: (n: number) => Uint8Array, isOwn: (chunk: Uint8Array) => boolean): void {
    const n = this.#buffered;
    if (n === 0) return;
    const first = this.#chunks[0];
    const rest = this.#chunks.slice(1);
    const extra = n - (first.length - this.#head);
    let target: Uint8Array;
    let at: number;
    if (isOwn(first) && first.byteOffset + first.length + extra <= first.buffer.byteLength) {
      if (extra === 0) return;
      target = new Uint8Array(first.buffer, first.byteOffset, first.length + extra);
      at = first.length;
    } else {
      target = into(n).subarray(0, n);
      target.set(first.subarray(this.#head), 0);
      at = first.length - this.#head;
      this.#head = 0;
      rest.unshift(first);
    }
    for (const chunk of this.#chunks.slice(1)) {
      target.set(chunk, at);
      at += chunk.length;
    }
    this.#chunks = [target];
    for (const chunk of rest) this.#onConsumed?.(chunk);
  }

  /** Decodes every whole frame from `chunk` plus what was pending. */
  *decode(chunk: Uint8Array): Generator<Frame> {
    this.push(chunk);
    for (let frame = this.next(); frame; frame = this.next()) yield frame;
  }

  /**
   * Declares end of input. Throws `TRUNCATED_FRAME` if a partial frame is
   * pending: a frame cut by EOF is an error, never silently dropped.
   */
  end(): void {
    if (this.#buffered > 0) {
      throw new ProtocolError(
        "TRUNCATED_FRAME",
        `Cannot read frame: stream ended with ${this.#buffered} bytes of an incomplete frame`,
      );
    }
  }

  /**
   * Drops every pending byte (the start of a frame that will never be whole: the stream failed or the
   * reader gave up) and hands each chunk they were in to `onConsumed`, so its memory can be reused.
   * The decoder is empty afterwards.
   */
  discard(): void {
    const chunks = this.#chunks;
    this.#chunks = [];
    this.#head = 0;
    this.#buffered = 0;
    for (const chunk of chunks) this.#onConsumed?.(chunk);
  }

  /** Copies the first `n` bytes (n <= 5) without consuming them. */
  #peek(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first.length - this.#head >= n) return first.subarray(this.#head, this.#head + n);
    const out = this.#header;
    let filled = 0;
    let offset = this.#head;
    for (const chunk of this.#chunks) {
      const take = Math.min(n - filled, chunk.length - offset);
      out.set(chunk.subarray(offset, offset + take), filled);
      filled += take;
      offset = 0;
      if (filled === n) break;
    }
    return out;
  }

  #skip(n: number): void {
    this.#buffered -= n;
    while (n > 0) {
      const available = this.#chunks[0].length - this.#head;
      if (n < available) {
        this.#head += n;
        return;
      }
      n -= available;
      this.#drop();
    }
  }

  /** Drops the fully consumed first chunk. */
  #drop(): void {
    const chunk = this.#chunks.shift()!;
    this.#head = 0;
    this.#onConsumed?.(chunk);
  }

  /** Consumes `n` buffered bytes as views, merging views of one buffer that touch. */
  #takeParts(n: number): Uint8Array[] {
    this.#buffered -= n;
    const parts: Uint8Array[] = [];
    while (n > 0) {
      const chunk = this.#chunks[0];
      const take = Math.min(n, chunk.length - this.#head);
      let part = chunk.subarray(this.#head, this.#head + take);
      const last = parts[parts.length - 1];
      if (last && last.buffer === part.buffer && last.byteOffset + last.length === part.byteOffset) {
        part = new Uint8Array(part.buffer, last.byteOffset, last.length + take);
        parts[parts.length - 1] = part;
      } else {
        parts.push(part);
      }
      n -= take;
      this.#head += take;
      if (this.#head === chunk.length) this.#drop();
    }
    return parts;
  }
}

/**
 * A `TransformStream` from bytes to {@linkcode Frame}s. A stream that ends
 * inside a frame errors with `TRUNCATED_FRAME`.
 *
 * @example
 * ```ts
 * import { FrameDecoderStream } from "./decoder.ts";
 * const bytes = ReadableStream.from([new Uint8Array([0, 0, 0, 0, 0x20])]);
 * for await (const frame of bytes.pipeThrough(new FrameDecoderStream())) {
 *   frame.type; // 0x20
 * }
 * ```
 */
export class FrameDecoderStream extends TransformStream<Uint8Array, Frame> {
  constructor(options: FrameDecoderOptions = {}) {
    const decoder = new FrameDecoder(options);
    super({
      transform(chunk, controller) {
        for (const frame of decoder.decode(chunk)) controller.enqueue(frame);
      },
      flush() {
        decoder.end();
      },
    });
  }
}
