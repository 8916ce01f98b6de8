import process from "node:process";
import type { SendEvent } from "../client/sender.ts";
import { escapeForDisplay } from "../names/names.ts";
import { formatBytes, formatEta } from "./units.ts";

/**
 * A one-line progress display on stderr: the current file and the total,
 * with bytes, rate and ETA. Only used when stderr is a terminal.
 */
export class ProgressDisplay {
  #files = 0;
  #doneFiles = 0;
  #totalBytes = 0;
  #lastLine = "";
  #lastDraw = 0;
  #samples: Array<{ t: number; bytes: number }> = [];

  update(event: SendEvent): void {
    switch (event.type) {
      case "start":
        this.#files = event.files;
        this.#totalBytes = event.bytes;
        return;
      case "done":
        this.#doneFiles++;
        return;
      case "reconnect":
        this.#print(
          `connection lost (${
            escapeForDisplay(event.reason)
          }); retry ${event.attempt} in ${event.delayMs} ms`,
        );
        return;
      case "error":
        this.#print(`failed: "${escapeForDisplay(event.name)}": ${event.code}`);
        return;
      case "progress":
        this.#progress(event);
        return;
    }
  }

  #progress(e: Extract<SendEvent, { type: "progress" }>): void {
    const now = performance.now();
    this.#samples.push({ t: now, bytes: e.totalSent });
    while (this.#samples.length > 2 && now - this.#samples[0].t > 3000) this.#samples.shift();
    if (now - this.#lastDraw < 100 && e.sent !== e.size) return;
    this.#lastDraw = now;
    const first = this.#samples[0];
    const rate = now > first.t ? ((e.totalSent - first.bytes) * 1000) / (now - first.t) : 0;
    const filePct = e.size === 0 ? 100 : Math.floor((e.sent / e.size) * 100);
    const totalPct = this.#totalBytes === 0 ? 100 : Math.floor((e.totalSent / this.#totalBytes) * 100);
    const eta = rate > 0 ? (this.#totalBytes - e.totalSent) / rate : Infinity;
    const name = escapeForDisplay(e.name);
    const shortName = name.length > 32 ? "…" + name.slice(-31) : name;
    this.#draw(
      `[${
        Math.min(this.#doneFiles + 1, this.#files)
      }/${this.#files}] ${shortName} ${filePct}% | total ${totalPct}% ${formatBytes(e.totalSent)}/${
        formatBytes(this.#totalBytes)
      } ${formatBytes(Math.round(rate))}/s ETA ${formatEta(eta)}`,
    );
  }

  #draw(line: string): void {
    const width = (process.stderr as { columns?: number }).columns ?? 100;
    const text = line.length >= width ? line.slice(0, width - 1) : line;
    process.stderr.write("\r\x1b[2K" + text);
    this.#lastLine = text;
  }

  #print(line: string): void {
    process.stderr.write("\r\x1b[2K" + line + "\n" + this.#lastLine);
  }

  /** Clears the progress line. */
  finish(): void {
    if (this.#lastLine) process.stderr.write("\r\x1b[2K");
    this.#lastLine = "";
  }
}
