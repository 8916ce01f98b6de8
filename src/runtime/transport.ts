/**
 * The one transport interface the core speaks. Each runtime's socket code
 * lives behind it (see `node_net.ts`); the server and client never touch a
 * runtime API directly.
 *
 * @module
 */

/** A connected, bidirectional byte stream. */
export interface Connection {
  /** Peer address, e.g. "127.0.0.1" or "::1". */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /**
   * The next chunk of received bytes, or `null` at end of stream. While the
   * caller does not call `read()`, the transport stops reading from the
   * socket (backpressure reaches the peer through TCP's window).
   */
  read(): Promise<Uint8Array | null>;
  /**
   * Optional. Hands back a chunk `read()` returned: the caller will never
   * touch it, nor any view of it, again, so the transport may reuse or free
   * its memory at once instead of leaving it to the garbage collector.
   */
  release?(chunk: Uint8Array): void;
  /**
   * Optional, with {@linkcode release}: each read comes in fresh memory that is costly to hold across
   * event-loop turns, so a reader that waits for more bytes should first copy what it still needs of
   * earlier reads into buffers of its own and release the reads at once (see `Channel`). On Bun, whose
   * allocator hands the pages of a buffer freed in a later turn back to the OS: with 200 connections,
   * each holding the start of its next frame until its next read many turns later, the server took
   * 46,000-54,000 page faults for 800 MiB, against 23,000-27,000 with the copy.
   */
  readonly compactPending?: boolean;
  /**
   * Queues bytes for sending; several parts go out in one write. Resolves when
   * the runtime can take more (its buffer is below the high-water mark).
   * Rejects if the connection failed.
   */
  write(parts: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /** Sends FIN after queued bytes are flushed; reading continues. */
  closeWrite(): Promise<void>;
  /** Tears the connection down at once. Pending `read()` calls get `null`. */
  close(): void;
  /** A promise that settles when the connection is fully closed. */
  readonly closed: Promise<void>;
  /** Bytes written to the socket so far. */
  readonly bytesWritten: number;
  /**
   * Optional, with {@linkcode bytesFlushed}: bytes passed to `write()` so far, counted as one
   * outgoing stream (small frames joined into one write count as what they were). A `write()` call
   * counts as soon as it returns; one that rejects at once (the connection is closed) does not.
   */
  readonly bytesQueued?: number;
  /**
   * Optional. Every byte of the outgoing stream before this offset (see {@linkcode bytesQueued})
   * has left the transport's hands: handed to the OS, or dropped because the connection failed. The
   * transport holds no reference to the buffers they came from, so the writer may refill them. Never
   * more than `bytesQueued`; after a close it may stop short of it for good. A writer that reuses
   * buffers must check this; without it, it must not.
   */
  readonly bytesFlushed?: number;
  /** Bytes read from the socket so far. */
  readonly bytesRead: number;
}

/** A listening socket. */
export interface Listener {
  /** The bound address; `port` is the real port when 0 was asked for. */
  readonly hostname: string;
  readonly port: number;
  /** Stops accepting. Open connections stay open. */
  close(): Promise<void>;
}

/** TLS settings for listen/connect (PEM strings). */
export interface TlsServerOptions {
  cert: string;
  key: string;
}
export interface TlsClientOptions {
  /** Extra CA certificates (PEM); the system store is used otherwise. */
  ca?: string;
  /** Server name for SNI and verification. */
  serverName?: string;
  /** `sha256:<hex>` fingerprint of the expected certificate; replaces CA verification. */
  pin?: string;
}

/** What a runtime adapter provides. */
export interface Runtime {
  /** "deno", "bun" or "node". */
  readonly name: string;
  listen(
    options: { hostname: string; port: number; tls?: TlsServerOptions; handshakeTimeoutMs?: number },
    onConnection: (conn: Connection) => void,
  ): Promise<Listener>;
  connect(options: { hostname: string; port: number; tls?: TlsClientOptions }): Promise<Connection>;
}
