import { FrameDecoder } from "../framing/decoder.ts";
import type { Connection } from "../runtime/transport.ts";
import { decodeMessage, encodeDataHeader, encodeMessage, type Message } from "./messages.ts";

/**
 * Messages over a {@linkcode Connection}: decodes incoming frames, however
 * TCP split them, and encodes outgoing messages. Used by both server and
 * client.
 *
 * @example
 * ```ts
 * import { Channel } from "./channel.ts";
 * import type { Connection } from "../runtime/transport.ts";
 * declare const conn: Connection;
 * const channel = new Channel(conn, { maxFrameSize: 1 << 20 });
 * await channel.send({ kind: "ping", token: 1n });
 * const reply = await channel.receive(); // e.g. { kind: "pong", token: 1n }
 * ```
 */
export class Channel {
  readonly conn: Connection;
  #decoder: FrameDecoder;
  /** `performance.now()` when bytes last arrived; the heartbeat reads it. */
  lastReceivedAt: number = performance.now();
  /** Called with the number of bytes each time bytes arrive. */
  onBytes?: (n: number) => void;

  constructor(conn: Connection, options: { maxFrameSize: number }) {
    this.conn = conn;
    this.#decoder = new FrameDecoder({ maxFrameSize: options.maxFrameSize });
  }

  /**
   * The next message, or `null` at a clean end of stream (between frames).
   * Throws `ProtocolError` for malformed input, `TRUNCATED_FRAME` when the
   * stream ends inside a frame.
   */
  async receive(): Promise<Message | null> {
    for (;;) {
      const frame = this.#decoder.next();
      if (frame) return decodeMessage(frame);
      const chunk = await this.conn.read();
      if (chunk === null) {
        this.#decoder.end();
        return null;
      }
      this.lastReceivedAt = performance.now();
      this.onBytes?.(chunk.length);
      this.#decoder.push(chunk);
    }
  }

  /** Sends one message. Resolves when the transport can take more. */
  send(message: Message): Promise<void> {
    return this.conn.write(encodeMessage(message));
  }

  /** Sends a DATA frame without copying `bytes`. */
  sendData(id: number, offset: number, bytes: Uint8Array): Promise<void> {
    return this.conn.write([encodeDataHeader(id, offset, bytes.length), bytes]);
  }
}
