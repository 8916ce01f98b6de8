import { encodeFrame, type Frame } from "./frame.ts";

/**
 * A `TransformStream` from {@linkcode Frame}s to bytes, one buffer per frame.
 *
 * @example
 * ```ts
 * import { FrameEncoderStream } from "./encoder.ts";
 * const frames = ReadableStream.from([{ type: 0x20, payload: new Uint8Array(8) }]);
 * const bytes = frames.pipeThrough(new FrameEncoderStream());
 * ```
 */
export class FrameEncoderStream extends TransformStream<Frame, Uint8Array> {
  constructor() {
    super({
      transform(frame, controller) {
        controller.enqueue(encodeFrame(frame));
      },
    });
  }
}
