/**
 * The dashboard in a real browser: headless Chromium (Debian's `chromium`,
 * driven by playwright-core) watches a real server.ts process (on the
 * runtime running this file) while send.ts (on the other runtime) delivers
 * three generated images, a text file and a message, and while a scripted
 * client holds an upload half-way so its connection row is visible. Saves a
 * screenshot to tests/artifacts/dashboard.png.
 *
 * Chromium is required: without /usr/bin/chromium this test fails, unless
 * FERRY_SKIP_BROWSER=1 says to skip it.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { CURRENT_RUNTIME, ROOT, runSender, tempDir } from "../helpers/process.ts";
import { fileHeader, RawClient } from "../helpers/raw_client.ts";
import { exifBlock, gif, jpeg, png, stripes, sunset, waves } from "../fixtures/images.ts";
import { type DashboardServer, startDashboardServer } from "./dashboard_util.ts";
import { OTHER_RUNTIME } from "./e2e_util.ts";

const CHROMIUM = "/usr/bin/chromium";
const skip = !existsSync(CHROMIUM) && process.env.FERRY_SKIP_BROWSER === "1"
  ? `${CHROMIUM} is missing and FERRY_SKIP_BROWSER=1`
  : false;

describe(`dashboard in Chromium (server ${CURRENT_RUNTIME}, sender ${OTHER_RUNTIME})`, { skip }, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>;
  let d: DashboardServer;
  let context: BrowserContext;
  let page: Page;
  let slow: RawClient | undefined;

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} not found: install it (apt-get install -y chromium) or set FERRY_SKIP_BROWSER=1 to skip`,
      );
    }
    tmp = await tempDir("ferry-dash-browser-");
    d = await startDashboardServer(CURRENT_RUNTIME, ["--dir", join(tmp.path, "inbox")]);
    context = await chromium.launchPersistentContext(join(tmp.path, "profile"), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1280, height: 820 },
      timeout: 30_000,
    });
    page = context.pages()[0] ?? await context.newPage();
  });

  after(async () => {
    await slow?.destroy();
    await context?.close();
    await d?.server.stop();
    await tmp?.cleanup();
  });

  test("shows the gallery, a live upload and the messages", { timeout: 90_000 }, async () => {
    await page.goto(`http://127.0.0.1:${d.httpPort}/`);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 15_000 });

    const local = join(tmp.path, "photos");
    await mkdir(local);
    await writeFile(
      join(local, "sunset.jpg"),
      jpeg(640, 420, { paint: sunset, exif: exifBlock("2024:06:21 21:04:00", "+02:00") }),
    );
    await writeFile(join(local, "waves.png"), png(480, 320, { paint: waves }));
    await writeFile(join(local, "stripes.gif"), gif(240, 160, { paint: stripes }));
    await writeFile(join(local, "notes.txt"), "Packing list: camera, charger, tripod.\n");
    const sent = await runSender(
      OTHER_RUNTIME,
      [
        "-q",
        "--message",
        "Photos from the beach are in!",
        "sunset.jpg",
        "waves.png",
        "stripes.gif",
        "notes.txt",
      ],
      d.server,
      { cwd: local },
    );
    assert.equal(sent.code, 0, sent.stdout + sent.stderr);

    // The three images are in the gallery and the browser decoded them.
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll<HTMLImageElement>("#gallery img")]
          .filter((img) => img.complete && img.naturalWidth > 0).length === 3,
      undefined,
      { timeout: 15_000 },
    );
    const names = await page.$$eval("#gallery figcaption .name", (els) => els.map((e) => e.textContent));
    assert.deepEqual([...names].sort(), ["stripes.gif", "sunset.jpg", "waves.png"]);
    const widths = await page.$$eval(
      "#gallery img",
      (imgs) =>
        Object.fromEntries(
          imgs.map((i) => [(i as HTMLImageElement).alt, (i as HTMLImageElement).naturalWidth]),
        ),
    );
    assert.deepEqual(widths, { "sunset.jpg": 640, "waves.png": 480, "stripes.gif": 240 });
    await page.waitForFunction(
      () => document.querySelector("#messages")?.textContent?.includes("Photos from the beach are in!"),
      undefined,
      { timeout: 10_000 },
    );
    assert.match((await page.textContent("#files tbody")) ?? "", /notes\.txt/);

    // A slow upload: HELLO, FILE, the first 3 of 8 MiB, then a pause.
    const video = randomBytes(8 * 1024 * 1024);
    slow = await RawClient.connect(d.server.port);
    await slow.handshake();
    await slow.send(fileHeader(1, "holiday-video.mp4", video));
    await slow.expect("accept");
    const half = 3 * 1024 * 1024;
    for (let at = 0; at < half; at += 256 * 1024) {
      await slow.send({ kind: "data", id: 1, offset: at, bytes: video.subarray(at, at + 256 * 1024) });
    }
    const row = page.locator("#connections tbody tr", { hasText: "holiday-video.mp4" });
    await row.waitFor({ timeout: 15_000 });
    assert.match((await row.textContent()) ?? "", /receiving/);
    await page.waitForFunction(
      () =>
        (document.querySelector("#connections progress") as HTMLProgressElement | null)?.value ===
          3 * 1024 * 1024,
      undefined,
      { timeout: 10_000 },
    );

    await mkdir(join(ROOT, "tests", "artifacts"), { recursive: true });
    await page.screenshot({ path: join(ROOT, "tests", "artifacts", "dashboard.png"), fullPage: true });

    // Finish it: the row goes away and the file is listed.
    for (let at = half; at < video.length; at += 512 * 1024) {
      await slow.send({ kind: "data", id: 1, offset: at, bytes: video.subarray(at, at + 512 * 1024) });
    }
    await slow.send({ kind: "end", id: 1 });
    assert.equal((await slow.expect("receipt", 15_000)).storedName, "holiday-video.mp4");
    await slow.destroy();
    slow = undefined;
    await page.waitForFunction(
      () =>
        document.querySelector("#connections tbody")?.children.length === 0 &&
        document.querySelector("#files tbody")?.textContent?.includes("holiday-video.mp4"),
      undefined,
      { timeout: 15_000 },
    );
  });
});
