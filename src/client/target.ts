/** Where to send: a host and a TCP port. */
export interface SendTarget {
  hostname: string;
  port: number;
}

/**
 * Parses `host:port`, `[v6]:port` or a bare `host` (port defaults to 9000).
 * Throws `TypeError` with a clear message on anything else.
 *
 * @example
 * ```ts
 * import { parseTarget } from "./target.ts";
 * parseTarget("[::1]:9000"); // { hostname: "::1", port: 9000 }
 * parseTarget("example.org:7000"); // { hostname: "example.org", port: 7000 }
 * ```
 */
export function parseTarget(text: string, defaultPort = 9000): SendTarget {
  const bracketed = /^\[([0-9a-fA-F:.%\w]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) return { hostname: bracketed[1], port: parsePort(bracketed[2], defaultPort, text) };
  if ((text.match(/:/g) ?? []).length > 1) {
    throw new TypeError(`Cannot parse target "${text}": write IPv6 addresses in brackets, e.g. [::1]:9000`);
  }
  const [hostname, port] = text.split(":");
  if (!hostname || !/^[\w.-]+$/.test(hostname)) {
    throw new TypeError(`Cannot parse target "${text}": expected host:port`);
  }
  return { hostname, port: parsePort(port, defaultPort, text) };
}

function parsePort(port: string | undefined, fallback: number, text: string): number {
  if (port === undefined) return fallback;
  const n = Number(port);
  if (!/^\d+$/.test(port) || n < 1 || n > 65535) {
    throw new TypeError(`Cannot parse target "${text}": port must be 1..65535`);
  }
  return n;
}

/** Formats a target back as `host:port` (brackets for IPv6). */
export function formatTarget(target: SendTarget): string {
  return target.hostname.includes(":")
    ? `[${target.hostname}]:${target.port}`
    : `${target.hostname}:${target.port}`;
}
