/**
 * ferry: file and image transfer over TCP, for Deno 2 and Bun.
 *
 * Receive into a folder:
 *
 * ```ts
 * import { serve } from "./mod.ts";
 * const server = await serve({ dir: "./inbox", port: 9000 });
 * server.on("file", ({ receipt }) => console.log("stored", receipt.name, receipt.sha256));
 * // later: await server.close();
 * ```
 *
 * Send files, folders and messages, with resume after a dropped connection:
 *
 * ```ts
 * import { send } from "./mod.ts";
 * const { receipts, failures } = await send("127.0.0.1:9000", ["photo.jpg", "album/"], {
 *   messages: ["sent from my script"],
 * });
 * ```
 *
 * The wire protocol is specified byte by byte in docs/PROTOCOL.md.
 *
 * @module
 */
export { serve } from "./src/server/server.ts";
export type { ServerEvents, ServerHandle, ServerOptions } from "./src/server/server.ts";
export type { ConnectionInfo } from "./src/server/session.ts";
export { send } from "./src/client/sender.ts";
export type { SendEvent, SendFailure, SendOptions, SendReceipt, SendResult } from "./src/client/sender.ts";
export type { SendItem } from "./src/client/files.ts";
export { formatTarget, parseTarget } from "./src/client/target.ts";
export type { SendTarget } from "./src/client/target.ts";
export type { CollisionPolicy, Receipt, ReceiptImage, StoredMessage, SyncMode } from "./src/store/inbox.ts";
export type { DashboardHandle, DashboardOptions, FileEntry } from "./src/http/dashboard.ts";
export {
  DEFAULT_MAX_PIXELS,
  detectFormat,
  formatFromName,
  type ImageFormat,
  type ImageMeta,
  type ImagePolicy,
  inspectBytes,
  inspectFile,
} from "./src/images/mod.ts";
export { ERROR_CODES, FerryError, ProtocolError, RemoteError } from "./src/errors.ts";
export type { ErrorCode } from "./src/errors.ts";
export * from "./src/framing/mod.ts";
export * from "./src/protocol/mod.ts";
export { escapeForDisplay, validateRelativePath } from "./src/names/names.ts";
export { authMac } from "./src/server/auth.ts";
export { certificateFingerprint } from "./src/runtime/node_net.ts";
export { VERSION } from "./src/version.ts";
