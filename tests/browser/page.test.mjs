// Spillway's web page in a real browser: Debian's headless Chromium driven by
// playwright-core. Run by scripts/e2e-browser.sh, which starts the node and
// passes:
//   SPILLWAY_URL               the node, e.g. http://127.0.0.1:43121
//   SPILLWAY_MAX_DATASET_SIZE  its max_dataset_size (e.g. 150MiB)
//   BROWSER_OUT                where screenshots go (test-output/browser)
//   BROWSER_WORK               a temp dir for generated files
//   CHROMIUM                   the browser (/usr/bin/chromium)
// The tests run in order and share one page: 1 uploads what 3 deletes; 7
// uploads two versions of one key, restores the first and removes them all;
// 8-11 upload folders (a real drag of a directory, and the folder picker),
// resume one cut by a reload, answer the replace question both ways; 12
// sorts the table.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { createBLAKE3, createSHA256 } from "hash-wasm";

const BASE = need("SPILLWAY_URL").replace(/\/$/, "");
const OUT = need("BROWSER_OUT");
const WORK = need("BROWSER_WORK");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const MiB = 1024 * 1024;
const CHUNK = 8 * MiB; // the page's PATCH size
const MAX_SIZE = parseSize(need("SPILLWAY_MAX_DATASET_SIZE"));
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run scripts/e2e-browser.sh)`);
  return v;
}

function parseSize(text) {
  const m = /^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$/i.exec(text);
  if (!m) throw new Error(`cannot read the size ${text}`);
  const unit = { b: 1, kib: 1024, mib: MiB, gib: 1024 * MiB }[(m[2] || "b").toLowerCase()];
  return Number(m[1]) * unit;
}

// ------------------------------------------------------------------ helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value; fails after `ms`. */
async function until(what, check, ms = 30000, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

/** A file of random bytes, written in 1 MiB blocks. */
function makeFile(name, size) {
  const file = path.join(WORK, name);
  const fd = fs.openSync(file, "w");
  try {
    for (let done = 0; done < size; ) {
      const n = Math.min(MiB, size - done);
      fs.writeSync(fd, crypto.randomBytes(n));
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

async function hashes(file) {
  const blake3 = await createBLAKE3();
  const sha256 = await createSHA256();
  blake3.init();
  sha256.init();
  for await (const chunk of fs.createReadStream(file, { highWaterMark: MiB })) {
    blake3.update(chunk);
    sha256.update(chunk);
  }
  return { blake3: blake3.digest("hex"), sha256: sha256.digest("hex") };
}

async function node(pathname, options = {}) {
  const res = await fetch(BASE + pathname, { ...options, signal: AbortSignal.timeout(15000) });
  return res;
}

/** spillway_resumable_upload_bytes_total from GET /metrics. */
async function receivedBytes() {
  const res = await node("/metrics");
  assert.equal(res.status, 200, "GET /metrics");
  const text = await res.text();
  let total = null;
  for (const line of text.split("\n")) {
    const m = /^spillway_resumable_upload_bytes_total(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) total = (total || 0) + Number(m[2]);
  }
  assert.notEqual(total, null, "/metrics has spillway_resumable_upload_bytes_total");
  return total;
}

async function headUpload(url) {
  const res = await node(new URL(url).pathname, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
  return { status: res.status, offset: Number(res.headers.get("upload-offset")) };
}

const keyPath = (key) => key.split("/").map(encodeURIComponent).join("/");

// -------------------------------------------------------------- the browser

let browser;
let context;
let page;
const consoleErrors = [];
// Console errors that a test expects (Chromium logs every 4xx answer to a
// fetch/XHR as "Failed to load resource"): pattern -> how many may come.
const expected = [];

function shot(name) {
  return page.screenshot({ path: path.join(OUT, name), fullPage: false });
}

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  fs.mkdirSync(WORK, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60000,
    // Stopped from outside (the script's time limit): close the browser, then go.
    handleSIGTERM: false,
    handleSIGINT: false,
    // A desktop's UTF-8 locale (the script runs under LC_ALL=C): under C,
    // Chromium cannot open a dropped file whose name is not ASCII.
    env: { ...process.env, LC_ALL: "C.UTF-8", LANG: "C.UTF-8" },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true, locale: "en-GB", timezoneId: "UTC" });
  context.setDefaultTimeout(30000);
  page = await context.newPage();
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    const i = expected.findIndex((e) => e.count > 0 && e.pattern.test(text));
    if (i >= 0) {
      expected[i].count -= 1;
      expected[i].seen += 1;
      return;
    }
    consoleErrors.push(`console: ${text} (${msg.location().url || "?"})`);
  });
  page.on("pageerror", (err) => consoleErrors.push(`pageerror: ${err.message}`));
  page.on("crash", () => consoleErrors.push("the page crashed"));
});

after(async () => {
  if (browser) await browser.close();
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.once(signal, () => {
    const done = () => process.exit(signal === "SIGINT" ? 130 : 143);
    setTimeout(done, 5000).unref();
    (browser ? browser.close() : Promise.resolve()).then(done, done);
  });
}

/** Upload throughput of the page, in bytes per second (null: unthrottled). */
let cdp;
async function throttle(bytesPerSecond) {
  await cdpSession();
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: bytesPerSecond || -1,
  });
}

const uploadItem = (fileName) => page.locator(`#uploads li.upload[data-file="${fileName}"]`).first();
const row = (key) => page.locator(`#rows tr[data-key="${key}"]`);

async function progressOf(item) {
  return Number(await item.locator("progress").evaluate((p) => p.value));
}

/** The resume state the page keeps for a file name (localStorage). */
async function savedUpload(fileName) {
  return page.evaluate((name) => {
    for (let i = 0; i < localStorage.length; i += 1) {
      const k = localStorage.key(i);
      if (k.startsWith("spillway.upload:") && JSON.parse(k.slice("spillway.upload:".length))[0] === name) {
        return JSON.parse(localStorage.getItem(k));
      }
    }
    return null;
  }, fileName);
}

// --------------------------------------------------------------- the tests

const SMALL = { name: "sample-20mib.bin", size: 20 * MiB, prefix: "browser/run", display: "Sample (20 MiB)" };
SMALL.key = `${SMALL.prefix}/${SMALL.name}`;

test("1. upload 20 MiB through the file input, see it listed, download it back", { timeout: 120000 }, async () => {
  const file = makeFile(SMALL.name, SMALL.size);
  const want = await hashes(file);

  await page.goto(`${BASE}/`, { waitUntil: "load" });
  await page.locator("#empty").waitFor({ state: "visible" });
  assert.equal(await page.locator("#rows tr").count(), 0, "the node starts empty");
  await shot("1-empty-1280x800.png");

  // Keyboard: the first Tab stops are the skip link and real controls, with labels.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input:not([aria-hidden=true]), button")]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
      .map((el) => el.id || el.outerHTML.slice(0, 60))
  );
  assert.deepEqual(unlabelled, [], "every control has a label");

  await page.fill("#key-prefix", `${SMALL.prefix}/`);
  await page.fill("#display-name", SMALL.display);
  // Slow the upload down (Chromium's network emulation) to watch it progress.
  await throttle(6 * MiB);
  await page.setInputFiles("#file-input", file);
  const item = uploadItem(SMALL.name);
  await item.waitFor();
  assert.match(await item.locator(".up-key").textContent(), new RegExp(SMALL.key.replace(/[.()]/g, "\\$&")));

  // Midway: the bar moves, the status line has bytes, rate and time left.
  await until("the bar past 25%", async () => (await progressOf(item)) >= 25, 30000);
  const status = await item.locator(".up-status").textContent();
  assert.match(status, /MiB of 20\.0 MiB/, `bytes in "${status}"`);
  assert.match(status, /\/s/, `a rate in "${status}"`);
  assert.match(status, /left/, `time left in "${status}"`);
  await shot("2-uploading-1280x800.png");
  const resumeEntry = await savedUpload(SMALL.name);
  assert.ok(resumeEntry && /\/uploads\//.test(resumeEntry.url), "the upload URL is kept in localStorage while it runs");

  await until("the upload to finish", async () => (await item.getAttribute("data-state")) === "done", 60000);
  await throttle(null);
  assert.equal(await progressOf(item), 100, "the bar reaches 100%");
  assert.match(await item.locator(".up-status").textContent(), /Done/);
  assert.equal(await savedUpload(SMALL.name), null, "the resume state is dropped once done");

  // The new row.
  const r = row(SMALL.key);
  await r.waitFor();
  assert.equal((await r.locator(".c-name").textContent()).trim(), SMALL.display);
  assert.equal((await r.locator(".c-size").textContent()).trim(), "20.0 MiB");
  assert.equal((await r.locator(".c-hash code").textContent()).trim(), want.blake3.slice(0, 12));
  assert.equal(await r.locator(".c-hash code").getAttribute("title"), want.blake3);
  await shot("3-listed-1280x800.png");

  // Download it back through the link, as a user would.
  const [download] = await Promise.all([page.waitForEvent("download"), r.locator("a.act-download").click()]);
  const got = await download.path();
  assert.equal(download.suggestedFilename(), SMALL.name);
  assert.equal(fs.statSync(got).size, SMALL.size);
  assert.equal((await hashes(got)).sha256, want.sha256, "downloaded bytes are the uploaded bytes");

  // Search by prefix.
  await page.fill("#search", "nothing-here/");
  await page.locator("#empty").waitFor({ state: "visible" });
  await page.fill("#search", "browser/");
  await row(SMALL.key).waitFor();

  // Phone size.
  await page.setViewportSize(PHONE);
  // Reading scrollWidth lays the page out at the new width.
  await until("the page at phone width", async () => (await page.evaluate(() => window.innerWidth)) === PHONE.width);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at 390 px (${overflow} px too wide)`);
  await shot("4-listed-390x844.png");
  await page.locator(".data-panel").screenshot({ path: path.join(OUT, "5-datasets-390x844.png") });
  await page.setViewportSize(DESKTOP);
  await page.fill("#search", "");

  // Copy path: a message with the URL (the clipboard may be refused headless; the page says so).
  await r.locator("button.act-copy").click();
  await until("the copy message", async () => {
    const t = await page.locator("#toast").textContent();
    return t.includes(`${BASE}/data/${SMALL.key}`) ? t : null;
  });
});

test("2. a 100 MiB upload cut by a reload resumes, and the node gets each byte once", { timeout: 180000 }, async (t) => {
  const name = "resume-100mib.bin";
  const size = 100 * MiB;
  const file = makeFile(name, size);
  const want = await hashes(file);
  await page.fill("#key-prefix", "");
  assert.equal(await page.inputValue("#display-name"), "", "a display name is used once");
  const before = await receivedBytes();

  const patches = [];
  let midway = 0;
  let offset = -1;
  const onRequest = (req) => {
    if (req.method() === "PATCH") patches.push(Number(req.headers()["upload-offset"]));
  };
  page.on("request", onRequest);
  try {
    await throttle(20 * MiB);
    await page.setInputFiles("#file-input", file);
    const saved = await until("the upload URL in localStorage", () => savedUpload(name), 20000);

    // Midway, as the node's metrics see it. (Not by HEAD: like tusd, the
    // node lets a HEAD take an upload over from the PATCH that holds it.)
    midway = await until(
      "the node to receive 20 MiB",
      async () => {
        const got = (await receivedBytes()) - before;
        return got >= 20 * MiB && got < size - 20 * MiB ? got : null;
      },
      60000,
      50
    );
    await page.reload({ waitUntil: "load" });
    await throttle(null);

    // The node keeps what arrived; wait for its offset to settle (the cut PATCH ends).
    offset = -1;
    await until(
      "the node's offset to settle",
      async () => {
        const h = await headUpload(saved.url);
        const same = h.offset === offset;
        offset = h.offset;
        return same && h.status === 200;
      },
      20000,
      300
    );
    assert.ok(offset >= midway && offset < size, `cut midway (the node has ${offset} of ${size} bytes)`);

    // After the reload the page lists the unfinished upload and asks for the file again.
    const pending = page.locator("#pending-list li", { hasText: name });
    await pending.waitFor();
    await until("the pending entry to show how far it got", async () => /sent/.test(await pending.textContent()));
    await shot("6-resume-offered-1280x800.png");

    // Choosing the same file resumes it from the node's offset.
    patches.length = 0;
    await page.setInputFiles("#file-input", file);
    const item = uploadItem(name);
    await item.waitFor();
    await until("the resumed upload to finish", async () => {
      const state = await item.getAttribute("data-state");
      if (state === "error") throw new Error(await item.locator(".up-error").textContent());
      return state === "done";
    }, 90000);
    assert.equal(await progressOf(item), 100);
    assert.ok(patches.length > 0, "the page sent PATCHes after the reload");
    assert.equal(patches[0], offset, `the first PATCH after the reload starts at the node's offset (${patches.join(", ")})`);
    assert.equal(await pending.count(), 0, "the pending entry is gone");
    assert.equal(await savedUpload(name), null, "the resume state is dropped once done");
  } finally {
    page.off("request", onRequest);
    await throttle(null);
  }

  const received = (await receivedBytes()) - before;
  t.diagnostic(`reload at ${midway} bytes received; the node kept ${offset}; the page resumed at ${patches[0]}; received in all ${received} for ${size}`);
  assert.ok(received >= size, `the node received every byte (${received} of ${size})`);
  assert.ok(received <= size + CHUNK, `the node received ${received} bytes for ${size}: at most one chunk twice`);

  const res = await node(`/datasets/${keyPath(name)}`);
  assert.equal(res.status, 200);
  const record = await res.json();
  assert.equal(record.size, size);
  assert.equal(record.blake3, want.blake3, "the stored blake3 is the file's");
  await row(name).waitFor();
  assert.equal((await row(name).locator(".c-hash code").getAttribute("title")), want.blake3);
});

test("3. delete from the page: cancel keeps it, confirm removes the row and the dataset", { timeout: 60000 }, async () => {
  const r = row(SMALL.key);
  await r.waitFor();

  // Dismissing the confirmation keeps everything.
  let message = "";
  let kind = "";
  page.once("dialog", (d) => {
    message = d.message();
    kind = d.type();
    d.dismiss().catch(() => {});
  });
  await r.locator("button.act-delete").click();
  await until("the confirmation", () => message);
  assert.equal(kind, "confirm");
  assert.match(message, new RegExp(SMALL.key.replace(/[.()]/g, "\\$&")));
  await sleep(300);
  assert.equal(await r.count(), 1, "dismissed: the row stays");
  assert.equal((await node(`/datasets/${keyPath(SMALL.key)}`)).status, 200, "dismissed: the dataset stays");

  page.once("dialog", (d) => d.accept().catch(() => {}));
  await r.locator("button.act-delete").click();
  await r.waitFor({ state: "detached" });
  assert.equal((await node(`/datasets/${keyPath(SMALL.key)}`)).status, 404, "the record is gone");
  assert.equal((await node(`/data/${keyPath(SMALL.key)}`)).status, 404, "the bytes are gone");
  await page.reload({ waitUntil: "load" });
  await row("resume-100mib.bin").waitFor();
  assert.equal(await row(SMALL.key).count(), 0, "still gone after a reload");
});

test("4. an upload over max_dataset_size shows the node's problem detail next to the file", { timeout: 60000 }, async () => {
  const name = "too-large.bin";
  const file = path.join(WORK, name);
  fs.closeSync(fs.openSync(file, "w"));
  fs.truncateSync(file, MAX_SIZE + MiB); // sparse: only its size matters

  // What the node says to such an upload.
  const probe = await node("/uploads", {
    method: "POST",
    headers: {
      "Tus-Resumable": "1.0.0",
      "Upload-Length": String(MAX_SIZE + MiB),
      "Upload-Metadata": `key ${Buffer.from("probe-too-large.bin").toString("base64")}`,
    },
  });
  assert.equal(probe.status, 413);
  assert.match(probe.headers.get("content-type") || "", /application\/problem\+json/);
  const problem = await probe.json();
  assert.equal(problem.code, "too-large");
  assert.ok(problem.detail, "the problem has a detail");

  // Chromium logs the refused request itself; that one console error is expected.
  const allowance = { pattern: /status of 413/, count: 1, seen: 0 };
  expected.push(allowance);
  await page.setInputFiles("#file-input", file);
  const item = uploadItem(name);
  await item.waitFor();
  await until("the error state", async () => (await item.getAttribute("data-state")) === "error", 20000);
  const error = item.locator(".up-error");
  assert.ok(await error.isVisible(), "the error is shown");
  const text = await error.textContent();
  assert.ok(text.includes(problem.detail), `"${text}" has the node's detail "${problem.detail}"`);
  assert.equal(await error.getAttribute("role"), "alert");
  assert.equal(await savedUpload(name), null, "nothing to resume");
  await item.scrollIntoViewIfNeeded();
  await shot("7-too-large-1280x800.png");
  await sleep(200); // let a late console message arrive while it is still allowed
  expected.splice(expected.indexOf(allowance), 1);
  // Nothing stored.
  assert.equal((await node(`/datasets/${keyPath(name)}`)).status, 404);
});

test("5. drag and drop: two files dropped on the zone are uploaded", { timeout: 60000 }, async () => {
  const files = [
    { name: "dropped-a.csv", bytes: crypto.randomBytes(300 * 1024), type: "text/csv" },
    { name: "dropped-b.bin", bytes: crypto.randomBytes(1024 * 1024 + 7), type: "" },
  ];
  const dataTransfer = await page.evaluateHandle((list) => {
    const dt = new DataTransfer();
    for (const f of list) {
      const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], f.name, { type: f.type }));
    }
    return dt;
  }, files.map((f) => ({ name: f.name, type: f.type, b64: f.bytes.toString("base64") })));
  await page.dispatchEvent("#dropzone", "dragenter", { dataTransfer });
  await page.dispatchEvent("#dropzone", "dragover", { dataTransfer });
  assert.ok(await page.locator("#dropzone.over").count(), "the zone shows it takes the drop");
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer });
  assert.equal(await page.locator("#dropzone.over").count(), 0);
  for (const f of files) {
    const item = uploadItem(f.name);
    await until(`${f.name} to finish`, async () => (await item.getAttribute("data-state")) === "done", 30000);
    const blake3 = await createBLAKE3();
    blake3.init();
    blake3.update(f.bytes);
    const res = await node(`/datasets/${keyPath(f.name)}`);
    assert.equal(res.status, 200);
    const record = await res.json();
    assert.equal(record.size, f.bytes.length);
    assert.equal(record.blake3, blake3.digest("hex"));
    if (f.type) assert.equal(record.content_type, f.type, "filetype metadata reaches the record");
    await row(f.name).waitFor();
  }
});

test("6. paging follows the node's Link header", { timeout: 60000 }, async () => {
  const keys = Array.from({ length: 55 }, (_, i) => `paging/item-${String(i).padStart(3, "0")}.txt`);
  for (const key of keys) {
    const res = await node(`/data/${keyPath(key)}`, { method: "PUT", body: key });
    assert.equal(res.status, 201, `PUT ${key}`);
  }
  const listed = [];
  const onRequest = (req) => {
    if (new URL(req.url()).pathname === "/datasets") listed.push(new URL(req.url()).search);
  };
  page.on("request", onRequest);
  try {
    await page.fill("#search", "paging/");
    await until("page 1", async () => (await page.locator("#rows tr").count()) === 50);
    assert.ok(await page.locator("#next-page").isEnabled(), "Next is offered");
    assert.ok(await page.locator("#prev-page").isDisabled());
    assert.equal(await page.locator("#rows tr").first().getAttribute("data-key"), keys[0]);
    await page.click("#next-page");
    await until("page 2", async () => (await page.locator("#rows tr").count()) === 5);
    assert.equal(await page.locator("#rows tr").first().getAttribute("data-key"), keys[50]);
    assert.ok(await page.locator("#next-page").isDisabled(), "no page after the last");
    assert.match(await page.locator("#page-info").textContent(), /51–55/);
    const second = listed.find((q) => q.includes("after="));
    assert.ok(second, `page 2 came from the Link URL (${listed.join(" ")})`);
    assert.match(decodeURIComponent(second), /after=paging\/item-049\.txt/);
    await page.click("#prev-page");
    await until("page 1 again", async () => (await page.locator("#rows tr").count()) === 50);
    await page.fill("#search", "");
    await until("everything", async () => (await page.locator("#rows tr").count()) === 50);
  } finally {
    page.off("request", onRequest);
    for (const key of keys) await node(`/datasets/${keyPath(key)}`, { method: "DELETE" });
  }
});

test("7. versions: two uploads of one key, the versions view, restore version 1, the download serves it", { timeout: 60000 }, async () => {
  const name = "versioned.bin";
  const key = `versions/${name}`;
  // Two files of one name (so one key), of different sizes (so the page does not take one for the other).
  const bodies = [crypto.randomBytes(64 * 1024), crypto.randomBytes(96 * 1024 + 3)];
  const b3s = [];
  for (const [i, body] of bodies.entries()) {
    const hasher = await createBLAKE3();
    hasher.init();
    hasher.update(body);
    b3s.push(hasher.digest("hex"));
    fs.mkdirSync(path.join(WORK, `v${i + 1}`), { recursive: true });
  }
  const sameBytes = (file, body, what) => assert.ok(fs.readFileSync(file).equals(body), `${what}: the bytes of the right version`);

  await page.fill("#search", "");
  await page.fill("#key-prefix", "versions/");
  for (const [i, body] of bodies.entries()) {
    const file = path.join(WORK, `v${i + 1}`, name);
    fs.writeFileSync(file, body);
    const items = page.locator(`#uploads li.upload[data-file="${name}"]`);
    const before = await items.count();
    await page.setInputFiles("#file-input", file);
    await until(`upload ${i + 1} listed`, async () => (await items.count()) === before + 1);
    if (i > 0) {
      // The key holds version 1: the page asks before replacing it.
      await page.locator("#replace-dialog[open]").waitFor();
      await page.click("#replace-confirm");
    }
    await until(`upload ${i + 1} to finish`, async () => (await items.first().getAttribute("data-state")) === "done");
    const record = await (await node(`/datasets/${keyPath(key)}`)).json();
    assert.equal(record.blake3, b3s[i], `upload ${i + 1} is the current version`);
  }
  await page.fill("#key-prefix", "");

  // The row shows version 2; its Versions button opens the list below it.
  const r = row(key);
  await until("the row to show version 2", async () => (await r.locator(".c-hash code").getAttribute("title")) === b3s[1]);
  const toggle = r.locator("button.act-versions");
  assert.equal(await toggle.getAttribute("aria-expanded"), "false");
  assert.equal(await toggle.getAttribute("aria-label"), `Versions of ${key}`);
  await toggle.click();
  assert.equal(await toggle.getAttribute("aria-expanded"), "true");
  const panel = page.locator(`tr.versions-row[data-key="${key}"]`);
  assert.equal(await toggle.getAttribute("aria-controls"), await panel.getAttribute("id"));
  const items = panel.locator("li.version");
  await until("two versions listed", async () => (await items.count()) === 2);
  assert.deepEqual(await items.evaluateAll((lis) => lis.map((li) => li.dataset.version)), ["2", "1"], "newest first");
  const version = (n) => panel.locator(`li.version[data-version="${n}"]`);
  assert.ok(await version(2).locator(".v-current").isVisible(), "version 2 is marked current");
  assert.ok(await version(1).locator(".v-current").isHidden(), "version 1 is not");
  assert.ok(await version(2).locator("button.v-restore").isHidden(), "no restore for the current version");
  assert.ok(await version(1).locator("button.v-restore").isVisible(), "restore for version 1");
  assert.equal(await version(1).locator("button.v-restore").getAttribute("aria-label"), `Restore version 1 of ${key}`);
  assert.equal((await version(1).locator(".v-size").textContent()).trim(), "64.0 KiB");
  assert.equal((await version(2).locator(".v-size").textContent()).trim(), "96.0 KiB");
  assert.equal((await version(1).locator(".v-hash").textContent()).trim(), b3s[0].slice(0, 12));
  assert.match(await version(1).locator(".v-date").getAttribute("datetime"), /^\d{4}-\d\d-\d\dT/);
  const link = version(1).locator("a.v-download");
  assert.equal(await link.getAttribute("href"), `/data/${keyPath(key)}?version=1`);
  const wide = await page.evaluate(() => {
    const wrap = document.querySelector(".table-wrap");
    return wrap.scrollWidth - wrap.clientWidth;
  });
  assert.ok(wide <= 0, `the table fits at 1280 px with the versions open (${wide} px too wide)`);
  await panel.scrollIntoViewIfNeeded();
  await shot("8-versions-1280x800.png");

  // Version 1's own link serves version 1, while version 2 is current.
  const [old] = await Promise.all([page.waitForEvent("download"), link.click()]);
  sameBytes(await old.path(), bodies[0], "version 1's link");

  // Restore version 1: a new version 3 with its bytes; the list follows, the focus lands on it.
  await version(1).locator("button.v-restore").click();
  await until("version 3 current", async () => (await panel.locator('li.version[data-version="3"][data-current="true"]').count()) === 1);
  assert.equal(await items.count(), 3);
  assert.ok(await panel.locator('li.version[data-version="2"] button.v-restore').isVisible(), "version 2 may be restored now");
  assert.equal(await r.locator("button.act-versions").getAttribute("aria-expanded"), "true", "still open after the refresh");
  await until("the focus on the versions", () =>
    page.evaluate(() => document.activeElement && document.activeElement.classList.contains("versions-title"))
  );
  const record = await (await node(`/datasets/${keyPath(key)}`)).json();
  assert.equal(record.blake3, b3s[0], "the node's current bytes are version 1's");
  assert.equal(await r.locator(".c-hash code").getAttribute("title"), b3s[0], "the row shows it");

  // The dataset's own Download link now serves version 1's bytes.
  const [current] = await Promise.all([page.waitForEvent("download"), r.locator("a.act-download").click()]);
  assert.equal(current.suggestedFilename(), name);
  sameBytes(await current.path(), bodies[0], "the restored dataset");

  // Phone size: the versions fit.
  await page.setViewportSize(PHONE);
  // Reading scrollWidth lays the page out at the new width.
  await until("the page at phone width", async () => (await page.evaluate(() => window.innerWidth)) === PHONE.width);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at 390 px with the versions open (${overflow} px too wide)`);
  await panel.scrollIntoViewIfNeeded();
  await shot("9-versions-390x844.png");
  await page.setViewportSize(DESKTOP);

  // Hide: the row goes, the button says so and has the focus.
  await panel.locator("button.versions-hide").click();
  await panel.waitFor({ state: "detached" });
  assert.equal(await r.locator("button.act-versions").getAttribute("aria-expanded"), "false");
  assert.ok(await r.locator("button.act-versions").evaluate((b) => b === document.activeElement), "the focus is back on Versions");

  const gone = await node(`/datasets/${keyPath(key)}?versions=all`, { method: "DELETE" });
  assert.equal(gone.status, 204);
  await page.click("#refresh");
  await r.waitFor({ state: "detached" });
});

// ------------------------------------------------- folders, replace, sorting

/** The page's CDP session (also used by throttle()). */
async function cdpSession() {
  if (!cdp) {
    cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
  }
  return cdp;
}

/**
 * Drags paths of this machine (files or directories) onto an element and
 * drops them, as a file manager would: Chromium hands the page real file
 * system entries, so a directory reaches the page's webkitGetAsEntry walk.
 */
async function dropPaths(selector, paths) {
  const session = await cdpSession();
  const target = page.locator(selector);
  await target.scrollIntoViewIfNeeded();
  const box = await target.boundingBox();
  const x = box.x + box.width / 2;
  const y = box.y + box.height / 2;
  const data = { items: [], files: paths, dragOperationsMask: 1 };
  for (const type of ["dragEnter", "dragOver", "drop"]) {
    await session.send("Input.dispatchDragEvent", { type, x, y, data });
  }
}

/** Writes a tree of files under `root`: {relative path: Buffer}. */
function writeTree(root, files) {
  fs.rmSync(root, { recursive: true, force: true });
  for (const [rel, bytes] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), bytes);
  }
}

async function blake3Of(bytes) {
  const h = await createBLAKE3();
  h.init();
  h.update(bytes);
  return h.digest("hex");
}

/** GETs a key from the node and compares its bytes with `bytes`. */
async function assertStored(key, bytes) {
  const res = await node(`/data/${keyPath(key)}`);
  assert.equal(res.status, 200, `GET /data/${key}`);
  const got = Buffer.from(await res.arrayBuffer());
  assert.equal(got.length, bytes.length, `${key}: ${got.length} bytes, want ${bytes.length}`);
  assert.ok(got.equals(bytes), `${key}: the node serves the file's bytes`);
}

/**
 * Watches the page's PATCHes: how many run at once, and how many of them
 * are for big files (8 MiB or more), with the weights the page gives them.
 */
function watchParallel(sizeOfKey) {
  const urlKey = new Map(); // upload URL path -> key
  const inflight = new Map(); // request -> key
  const seen = { count: 0, big: 0, weight: 0, patches: 0 };
  const onResponse = (res) => {
    const req = res.request();
    if (req.method() !== "POST" || new URL(req.url()).pathname !== "/uploads" || res.status() !== 201) return;
    const meta = req.headers()["upload-metadata"] || "";
    const pair = meta.split(",").map((p) => p.trim().split(" ")).find(([k]) => k === "key");
    const location = res.headers()["location"];
    if (pair && location) urlKey.set(new URL(location, BASE).pathname, Buffer.from(pair[1], "base64").toString("utf8"));
  };
  const onRequest = (req) => {
    if (req.method() !== "PATCH") return;
    seen.patches += 1;
    inflight.set(req, urlKey.get(new URL(req.url()).pathname));
    const sizes = [...inflight.values()].map((k) => sizeOfKey(k));
    const big = sizes.filter((n) => n >= CHUNK).length;
    seen.count = Math.max(seen.count, inflight.size);
    seen.big = Math.max(seen.big, big);
    seen.weight = Math.max(seen.weight, inflight.size - big + 3 * big);
  };
  // A PATCH is over for the page once its answer arrives (its body is empty).
  const answered = (res) => inflight.delete(res.request());
  const failed = (req) => inflight.delete(req);
  page.on("response", onResponse);
  page.on("response", answered);
  page.on("request", onRequest);
  page.on("requestfailed", failed);
  seen.stop = () => {
    page.off("response", onResponse);
    page.off("response", answered);
    page.off("request", onRequest);
    page.off("requestfailed", failed);
  };
  return seen;
}

const FOLDER_PREFIX = "browser/folders";

/** The entry of the next folder (or set of files) the page takes: batches are added on top. */
async function nextBatch(start) {
  const batches = page.locator("#uploads li.batch");
  const before = await batches.count();
  await start();
  await until("a new folder entry", async () => (await batches.count()) === before + 1);
  return batches.first();
}

test("8. a folder of 50 files in nested folders, dragged onto the page: every file under its path, byte-exact, several at once", { timeout: 180000 }, async (t) => {
  // 50 files, three levels deep, of sizes from 0 bytes to 2 big ones (>= 8 MiB, one PATCH each is not enough).
  const files = {};
  const dirs = ["", "year=2024/", "year=2024/month=01/", "year=2024/month=02/", "year=2025/month=01/day=07/", "images/cats/", "images/dogs/"];
  for (let i = 0; i < 46; i += 1) {
    const rel = `${dirs[i % dirs.length]}part-${String(i).padStart(3, "0")}.bin`;
    files[rel] = crypto.randomBytes(1024 + ((i * 7919) % (200 * 1024)));
  }
  files["_SUCCESS"] = Buffer.alloc(0); // Spark's marker: an empty file
  files["images/notes é ü.txt"] = Buffer.from("a key with a space and accents\n");
  files["big/a.bin"] = crypto.randomBytes(9 * MiB);
  files["big/b.bin"] = crypto.randomBytes(9 * MiB + 123);
  assert.equal(Object.keys(files).length, 50);
  const root = path.join(WORK, "drop");
  writeTree(path.join(root, "shards"), files);
  const keyOf = (rel) => `${FOLDER_PREFIX}/shards/${rel}`;
  const sizes = new Map(Object.entries(files).map(([rel, b]) => [keyOf(rel), b.length]));

  await page.fill("#search", "");
  await page.fill("#key-prefix", `${FOLDER_PREFIX}/`);
  assert.equal(await page.locator("#key-example-folder").textContent(), `${FOLDER_PREFIX}/‹folder›/‹path in it›`);
  const parallel = watchParallel((key) => sizes.get(key) || 0);
  // Slow enough that uploads overlap (and the bars can be seen), quick enough for a loaded machine.
  await throttle(12 * MiB);
  let batch;
  try {
    batch = await nextBatch(() => dropPaths("#dropzone", [path.join(root, "shards")]));
    assert.equal((await batch.locator(".batch-name").textContent()).trim(), "shards/");
    assert.equal((await batch.locator(".batch-key").textContent()).trim(), `→ ${FOLDER_PREFIX}/shards/`);
    assert.equal(await batch.locator("li.upload").count(), 50, "a bar per file");
    assert.equal(await batch.locator("progress.batch-bar").count(), 1, "one overall bar");
    await until("the overall bar to move", async () => {
      const v = Number(await batch.locator("progress.batch-bar").evaluate((p) => p.value));
      return v > 0 && v < 100;
    }, 30000, 50);
    await batch.locator(".batch-files summary").click(); // show the files' own bars
    await shot("10-folder-uploading-1280x800.png");
    await until("the folder to finish", async () => {
      const state = await batch.getAttribute("data-state");
      if (state === "error") throw new Error(await batch.locator(".up-error:visible").first().textContent());
      return state === "done";
    }, 150000);
    assert.equal(Number(await batch.locator("progress.batch-bar").evaluate((p) => p.value)), 100);
    assert.match(await batch.locator(".batch-status").textContent(), /50 files uploaded/);
  } finally {
    parallel.stop();
    await throttle(null);
  }
  const states = await batch.locator("li.upload").evaluateAll((lis) => lis.map((li) => [li.dataset.key, li.dataset.state]));
  assert.deepEqual(new Set(states.map(([k]) => k)), new Set(Object.keys(files).map(keyOf)), "the keys: prefix, folder name, path in the folder");
  assert.ok(states.every(([, s]) => s === "done"), `every file done (${states.filter(([, s]) => s !== "done").map(([k, s]) => `${k}: ${s}`).join(", ")})`);

  t.diagnostic(`PATCHes at once: at most ${parallel.count} (${parallel.big} big; weight ${parallel.weight} of 6), ${parallel.patches} in all`);
  // Uploads ran side by side: more than two small files at once, never more than two big ones.
  assert.ok(parallel.count >= 3, `at least 3 PATCHes at once (at most ${parallel.count} were)`);
  assert.ok(parallel.weight <= 6, `small files count 1, big ones 3, at most 6 in all (${parallel.weight})`);
  assert.ok(parallel.big <= 2, `at most two big files at once (${parallel.big})`);

  // Every byte, as the node serves it.
  for (const [rel, bytes] of Object.entries(files)) await assertStored(keyOf(rel), bytes);

  // All listed, with the right keys.
  await page.fill("#search", `${FOLDER_PREFIX}/shards/`);
  await until("50 rows", async () => (await page.locator("#rows tr").count()) === 50);
  const listed = await page.locator("#rows tr").evaluateAll((trs) => trs.map((tr) => tr.dataset.key));
  assert.deepEqual(new Set(listed), new Set(Object.keys(files).map(keyOf)));
  const toTop = () => batch.evaluate((b) => b.scrollIntoView({ block: "start" })); // its overall bar in the picture
  await toTop();
  await shot("11-folder-done-1280x800.png");

  await page.setViewportSize(PHONE);
  await until("the page at phone width", async () => (await page.evaluate(() => window.innerWidth)) === PHONE.width);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at 390 px with a folder's uploads shown (${overflow} px too wide)`);
  await toTop();
  await shot("12-folder-390x844.png");
  await page.setViewportSize(DESKTOP);
  await batch.locator(".batch-dismiss").click();
  await page.fill("#key-prefix", "");
});

test("9. the folder picker, and the replace question for a folder: one question, answered each way", { timeout: 120000 }, async () => {
  const root = path.join(WORK, "picked");
  const v1 = {
    "a.csv": Buffer.from("id,v\n1,one\n"),
    "sub/b.csv": Buffer.from("id,v\n2,two\n"),
    "sub/deeper/c.json": Buffer.from('{"c": 3}\n'),
    "sub/deeper/d.bin": crypto.randomBytes(40 * 1024),
  };
  writeTree(path.join(root, "picked"), v1);
  const keyOf = (rel) => `${FOLDER_PREFIX}/picked/${rel}`;
  await page.fill("#key-prefix", FOLDER_PREFIX);

  // Nothing there yet: no question, straight up.
  const posts = [];
  const onRequest = (req) => {
    if (req.method() === "POST" && new URL(req.url()).pathname === "/uploads") posts.push(req.headers()["upload-metadata"]);
  };
  page.on("request", onRequest);
  try {
    let batch = await nextBatch(() => page.setInputFiles("#folder-input", path.join(root, "picked")));
    await until("the picked folder to finish", async () => (await batch.getAttribute("data-state")) === "done", 60000);
    assert.equal((await batch.locator(".batch-name").textContent()).trim(), "picked/");
    for (const [rel, bytes] of Object.entries(v1)) await assertStored(keyOf(rel), bytes);
    await batch.locator(".batch-dismiss").click();

    // The same folder, two files changed and one new.
    const v2 = { ...v1, "a.csv": Buffer.from("id,v\n1,ONE\n"), "sub/deeper/d.bin": crypto.randomBytes(41 * 1024), "sub/new.txt": Buffer.from("new\n") };
    writeTree(path.join(root, "picked"), v2);

    // a) Cancel: nothing sent, nothing changed.
    posts.length = 0;
    const batches = await page.locator("#uploads li.batch").count();
    await page.setInputFiles("#folder-input", path.join(root, "picked"));
    const dialog = page.locator("#replace-dialog[open]");
    await dialog.waitFor();
    assert.match(await page.locator("#replace-title").textContent(), /Replace 4 datasets\?/);
    assert.match(await page.locator("#replace-text").textContent(), /4 of the 5 files/);
    assert.equal(await page.locator("#replace-list li").count(), 4, "each existing key is named");
    assert.match(await page.locator("#replace-list").textContent(), new RegExp(keyOf("sub/deeper/c.json").replace(/[.]/g, "\\.")));
    assert.equal(await page.locator("#replace-skip").textContent(), "Upload only the 1 new file");
    assert.ok(await page.locator("#replace-skip").evaluate((b) => b === document.activeElement), "the safe answer has the focus");
    await shot("13-replace-folder-1280x800.png");
    await page.click("#replace-cancel");
    await dialog.waitFor({ state: "detached" }).catch(() => {});
    await page.locator("#replace-dialog:not([open])").waitFor({ state: "attached" });
    await until("the folder's entry to go", async () => (await page.locator("#uploads li.batch").count()) === batches);
    assert.equal(posts.length, 0, "cancelled: no upload was created");
    for (const [rel, bytes] of Object.entries(v1)) await assertStored(keyOf(rel), bytes);
    assert.equal((await node(`/datasets/${keyPath(keyOf("sub/new.txt"))}`)).status, 404);

    // b) Keep the existing ones: only the new file is sent.
    batch = await nextBatch(() => page.setInputFiles("#folder-input", path.join(root, "picked")));
    await dialog.waitFor();
    await page.click("#replace-skip");
    await until("the new file to finish", async () => (await batch.getAttribute("data-state")) === "done", 60000);
    assert.equal(posts.length, 1, `only the new file was sent (${posts.length} uploads created)`);
    assert.match(await batch.locator(".batch-status").textContent(), /1 file uploaded.*4 kept as they were/);
    assert.equal(await batch.locator('li.upload[data-state="skipped"]').count(), 4);
    for (const [rel, bytes] of Object.entries(v1)) await assertStored(keyOf(rel), bytes);
    await assertStored(keyOf("sub/new.txt"), v2["sub/new.txt"]);
    await batch.locator(".batch-dismiss").click();

    // c) Replace: every file sent, the changed ones now served.
    posts.length = 0;
    batch = await nextBatch(() => page.setInputFiles("#folder-input", path.join(root, "picked")));
    await dialog.waitFor();
    assert.match(await page.locator("#replace-title").textContent(), /Replace 5 datasets\?/);
    assert.ok(await page.locator("#replace-skip").isHidden(), "no new file: keeping is cancelling");
    await page.click("#replace-confirm");
    await until("the replacement to finish", async () => (await batch.getAttribute("data-state")) === "done", 60000);
    assert.equal(posts.length, 5);
    for (const [rel, bytes] of Object.entries(v2)) await assertStored(keyOf(rel), bytes);
    await batch.locator(".batch-dismiss").click();
  } finally {
    page.off("request", onRequest);
    await page.fill("#key-prefix", "");
  }
});

test("10. a folder cut by a reload resumes: the finished files are kept, the cut ones continue from the node's offset", { timeout: 180000 }, async (t) => {
  const files = {
    "t1.txt": crypto.randomBytes(10 * 1024),
    "t2.txt": crypto.randomBytes(11 * 1024),
    "t3.txt": crypto.randomBytes(12 * 1024),
    "big/x.bin": crypto.randomBytes(6 * MiB),
    "big/y.bin": crypto.randomBytes(6 * MiB + 5),
  };
  const total = Object.values(files).reduce((n, b) => n + b.length, 0);
  const root = path.join(WORK, "resumable");
  writeTree(path.join(root, "resumable"), files);
  const keyOf = (rel) => `${FOLDER_PREFIX}/resumable/${rel}`;
  await page.fill("#key-prefix", FOLDER_PREFIX);
  const before = await receivedBytes();
  const urls = {};
  try {
    await throttle(3 * MiB);
    const batch = await nextBatch(() => page.setInputFiles("#folder-input", path.join(root, "resumable")));
    // Midway, as the node's metrics see it: the small files done, the big ones cut.
    await until("the small files done and 4 MiB of the big ones received", async () => {
      const small = await batch.locator('li.upload[data-state="done"]').count();
      const got = (await receivedBytes()) - before;
      return small >= 3 && got >= 4 * MiB && got < total - 2 * MiB;
    }, 60000, 50);
    for (const rel of ["big/x.bin", "big/y.bin"]) {
      const saved = await savedUpload(path.basename(rel));
      assert.ok(saved && saved.key === keyOf(rel), `the resume state of ${rel} is kept`);
      urls[rel] = saved.url;
    }
    await page.reload({ waitUntil: "load" });
  } finally {
    await throttle(null);
  }

  // The node keeps what arrived; wait for each cut PATCH to end.
  const offsets = {};
  for (const [rel, url] of Object.entries(urls)) {
    let last = -1;
    await until(`the node's offset of ${rel} to settle`, async () => {
      const h = await headUpload(url);
      const same = h.offset === last;
      last = h.offset;
      return same && h.status === 200;
    }, 20000, 300);
    assert.ok(last > 0 && last < files[rel].length, `${rel} cut midway (${last} of ${files[rel].length})`);
    offsets[rel] = last;
  }
  const pending = page.locator("#pending-list li");
  await until("both cut files offered for resuming", async () => (await pending.count()) === 2);
  assert.match(await pending.first().textContent(), /resumable\/big\//);

  // Choosing the folder again (with the same key prefix: the reload emptied the
  // field): the finished files exist (keep them), the cut ones go on.
  await page.fill("#key-prefix", FOLDER_PREFIX);
  const firstPatch = {};
  const onRequest = (req) => {
    if (req.method() !== "PATCH") return;
    const rel = Object.keys(urls).find((r) => new URL(urls[r]).pathname === new URL(req.url()).pathname);
    if (rel && !(rel in firstPatch)) firstPatch[rel] = Number(req.headers()["upload-offset"]);
  };
  page.on("request", onRequest);
  try {
    const batch = await nextBatch(() => page.setInputFiles("#folder-input", path.join(root, "resumable")));
    await page.locator("#replace-dialog[open]").waitFor();
    assert.match(await page.locator("#replace-text").textContent(), /3 of the 5 files/);
    await page.click("#replace-skip");
    await until("the folder to finish", async () => (await batch.getAttribute("data-state")) === "done", 90000);
    assert.match(await batch.locator(".batch-status").textContent(), /2 files uploaded.*3 kept as they were/);
  } finally {
    page.off("request", onRequest);
    await page.fill("#key-prefix", "");
  }
  assert.deepEqual(firstPatch, offsets, "each cut file's first PATCH after the reload starts at the node's offset");
  assert.equal(await pending.count(), 0, "nothing left to resume");
  for (const [rel, bytes] of Object.entries(files)) await assertStored(keyOf(rel), bytes);
  const received = (await receivedBytes()) - before;
  t.diagnostic(`cut at ${JSON.stringify(offsets)}; resumed at ${JSON.stringify(firstPatch)}; received ${received} for ${total}`);
  assert.ok(received >= total, `the node received every byte (${received} of ${total})`);
  assert.ok(received <= total + MiB, `the node received ${received} bytes for ${total}: the cut files were not sent again`);
  await page.locator("#uploads li.batch").first().locator(".batch-dismiss").click();
});

test("11. replacing one file: the page asks, Keep keeps the node's bytes, Replace replaces them", { timeout: 60000 }, async () => {
  const key = "replace/report.csv";
  const old = Buffer.from("the node's bytes\n");
  assert.equal((await node(`/data/${keyPath(key)}`, { method: "PUT", body: old })).status, 201);
  const dir = path.join(WORK, "replace");
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "report.csv");
  const fresh = Buffer.from("the page's new bytes\n");
  fs.writeFileSync(file, fresh);
  await page.fill("#key-prefix", "replace");
  const posts = [];
  const onRequest = (req) => {
    if (req.method() === "POST" && new URL(req.url()).pathname === "/uploads") posts.push(req.url());
  };
  page.on("request", onRequest);
  try {
    await page.setInputFiles("#file-input", file);
    const dialog = page.locator("#replace-dialog[open]");
    await dialog.waitFor();
    assert.equal(await page.locator("#replace-title").textContent(), "Replace a dataset?");
    assert.match(await page.locator("#replace-text").textContent(), /replace\/report\.csv already holds a dataset/);
    assert.ok(await page.locator("#replace-skip").isHidden());
    assert.equal(await page.locator("#replace-cancel").textContent(), "Keep it");
    assert.ok(await page.locator("#replace-cancel").evaluate((b) => b === document.activeElement), "Keep it has the focus");
    await shot("14-replace-1280x800.png");
    await page.setViewportSize(PHONE);
    await until("the page at phone width", async () => (await page.evaluate(() => window.innerWidth)) === PHONE.width);
    const box = await page.locator("#replace-dialog").boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= PHONE.width, `the dialog fits at 390 px (${box.x}+${box.width})`);
    await shot("15-replace-390x844.png");
    await page.setViewportSize(DESKTOP);

    // Keep it (Escape answers the same).
    await page.keyboard.press("Escape");
    await page.locator("#replace-dialog:not([open])").waitFor({ state: "attached" });
    await until("the entry to go", async () => (await page.locator(`#uploads li.upload[data-key="${key}"]`).count()) === 0);
    assert.equal(posts.length, 0, "kept: nothing sent");
    await assertStored(key, old);

    // Replace.
    await page.setInputFiles("#file-input", file);
    await dialog.waitFor();
    await page.click("#replace-confirm");
    const item = page.locator(`#uploads li.upload[data-key="${key}"]`).first();
    await until("the replacement to finish", async () => (await item.getAttribute("data-state")) === "done", 30000);
    assert.equal(posts.length, 1);
    await assertStored(key, fresh);
  } finally {
    page.off("request", onRequest);
    await page.fill("#key-prefix", "");
  }
});

test("12. sorting by name, key, size and date, across pages; a dataset's full blake3 and download commands", { timeout: 90000 }, async () => {
  // zz-big sorts last by key (page 2 of 53 rows), first by size; it is the oldest.
  const put = async (key, body, name) => {
    const res = await node(`/data/${keyPath(key)}${name ? `?name=${encodeURIComponent(name)}` : ""}`, { method: "PUT", body });
    assert.equal(res.status, 201, `PUT ${key}`);
    return res.json();
  };
  const big = await put("sorting/zz-big.bin", crypto.randomBytes(5000), "Mike");
  // A later second for the rest (created_at has whole seconds): wait for the clock, not a fixed time.
  await until("the next second", async () => new Date().toISOString().slice(0, 19) + "Z" > big.created_at, 3000, 20);
  await put("sorting/a.bin", crypto.randomBytes(300), "Zulu");
  await put("sorting/b.bin", crypto.randomBytes(10), "alpha");
  const fillers = Array.from({ length: 50 }, (_, i) => `sorting/f-${String(i).padStart(3, "0")}.txt`);
  for (const key of fillers) await put(key, `${key}\n`);

  await page.fill("#search", "sorting/");
  await until("page 1 in key order", async () => (await page.locator("#rows tr").count()) === 50);
  const header = (label) => page.locator("#datasets thead th", { hasText: label });
  assert.equal(await header("Key").getAttribute("aria-sort"), "ascending", "the node's order: by key");
  const firstKey = () => page.locator("#rows tr").first().getAttribute("data-key");
  const column = (sel, attr) =>
    page.locator(`#rows tr ${sel}`).evaluateAll((els, a) => els.map((e) => (a ? e.getAttribute(a) : e.textContent.trim())), attr);
  const sorted = (values, cmp) => values.every((v, i) => i === 0 || cmp(values[i - 1], v) <= 0);
  const bytesOf = (t) => Number(t.replace(/\D/g, ""));

  const sortBy = async (label, dir, first) => {
    await header(label).locator("button").click();
    await until(`${label} ${dir}`, async () => (await header(label).getAttribute("aria-sort")) === dir && (await firstKey()) === first);
    const others = await page.locator("#datasets thead th[aria-sort]").count();
    assert.equal(others, 1, "aria-sort on one header only");
  };

  await sortBy("Size", "descending", "sorting/zz-big.bin"); // from page 2 in key order
  assert.ok(sorted(await column(".c-size", "title"), (a, b) => bytesOf(b) - bytesOf(a)), "sizes largest first");
  await shot("16-sorted-size-1280x800.png");
  await sortBy("Size", "ascending", "sorting/b.bin");
  assert.ok(sorted(await column(".c-size", "title"), (a, b) => bytesOf(a) - bytesOf(b)), "sizes smallest first");
  assert.match(await page.locator("#page-info").textContent(), /1–50 of 53/);
  await page.click("#next-page");
  await until("page 2 of the sorted rows", async () => (await firstKey()) !== "sorting/b.bin" && (await page.locator("#rows tr").count()) === 3);
  assert.equal(await page.locator("#rows tr").last().getAttribute("data-key"), "sorting/zz-big.bin", "the largest is last");
  await page.click("#first-page");

  await sortBy("Name", "ascending", "sorting/b.bin"); // "alpha"
  const names = await column(".c-name");
  assert.ok(sorted(names, (a, b) => a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" })), "names A to Z");
  await sortBy("Name", "descending", "sorting/a.bin"); // "Zulu"

  // Dates (and sizes) start with the newest (largest) first.
  await header("Created").locator("button").click();
  await until("newest first", async () => (await header("Created").getAttribute("aria-sort")) === "descending" && (await firstKey()) !== "sorting/a.bin");
  assert.ok(sorted(await column(".c-created time", "datetime"), (a, b) => Date.parse(b) - Date.parse(a)), "newest first");
  await sortBy("Created", "ascending", "sorting/zz-big.bin"); // the oldest
  assert.ok(sorted(await column(".c-created time", "datetime"), (a, b) => Date.parse(a) - Date.parse(b)), "oldest first");

  await sortBy("Key", "ascending", "sorting/a.bin");
  await sortBy("Key", "descending", "sorting/zz-big.bin");

  // At phone width the headers are gone; the select sorts.
  await page.setViewportSize(PHONE);
  await until("the page at phone width", async () => (await page.evaluate(() => window.innerWidth)) === PHONE.width);
  assert.ok(await page.locator("#sort").isVisible(), "a sort select at 390 px");
  await page.selectOption("#sort", "size:descending");
  await until("largest first from the select", async () => (await firstKey()) === "sorting/zz-big.bin");
  assert.equal(await header("Size").getAttribute("aria-sort"), "descending", "the headers follow the select");

  // Details: the full blake3 and the commands, copyable.
  const r = row("sorting/zz-big.bin");
  const toggle = r.locator("button.act-details");
  await toggle.click();
  assert.equal(await toggle.getAttribute("aria-expanded"), "true");
  const panel = page.locator(`tr.details-row[data-key="sorting/zz-big.bin"]`);
  assert.equal(await toggle.getAttribute("aria-controls"), await panel.getAttribute("id"));
  assert.equal((await panel.locator(".d-blake3").textContent()).trim(), big.blake3, "the full blake3");
  const curl = (await panel.locator(".d-curl").textContent()).trim();
  assert.equal(curl, `curl -fL -o zz-big.bin ${BASE}/data/sorting/zz-big.bin`);
  assert.equal((await panel.locator(".d-spillway").textContent()).trim(), `spillway get --url ${BASE} sorting/zz-big.bin`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling at 390 px with the details open (${overflow} px too wide)`);
  await panel.scrollIntoViewIfNeeded();
  await shot("17-details-390x844.png");
  await page.setViewportSize(DESKTOP);
  await panel.scrollIntoViewIfNeeded();
  await shot("18-details-1280x800.png");

  // The curl command works as shown (run here by fetch: same URL, same bytes).
  const got = Buffer.from(await (await node(new URL(curl.split(" ").pop()).pathname)).arrayBuffer());
  assert.equal(await blake3Of(got), big.blake3);
  await panel.locator('button.d-copy[data-what="spillway"]').click();
  await until("the copy message", async () => /spillway/.test(await page.locator("#toast").textContent()));
  await panel.locator("button.details-hide").click();
  await panel.waitFor({ state: "detached" });
  assert.ok(await toggle.evaluate((b) => b === document.activeElement), "the focus is back on Details");

  await header("Key").locator("button").click();
  await until("the node's order again", async () => (await header("Key").getAttribute("aria-sort")) === "ascending");
  for (const key of ["sorting/zz-big.bin", "sorting/a.bin", "sorting/b.bin", ...fillers]) {
    await node(`/datasets/${keyPath(key)}`, { method: "DELETE" });
  }
  await page.fill("#search", "");
});

test("13. no console errors or page errors during the run", async () => {
  assert.deepEqual(consoleErrors, []);
});

test("14. screenshots were saved", async () => {
  const want = [
    "1-empty-1280x800.png",
    "2-uploading-1280x800.png",
    "3-listed-1280x800.png",
    "4-listed-390x844.png",
    "8-versions-1280x800.png",
    "9-versions-390x844.png",
    "10-folder-uploading-1280x800.png",
    "11-folder-done-1280x800.png",
    "12-folder-390x844.png",
    "13-replace-folder-1280x800.png",
    "14-replace-1280x800.png",
    "15-replace-390x844.png",
    "16-sorted-size-1280x800.png",
    "17-details-390x844.png",
    "18-details-1280x800.png",
  ];
  for (const f of want) {
    const p = path.join(OUT, f);
    assert.ok(fs.existsSync(p) && fs.statSync(p).size > 1000, `${p} exists`);
  }
});
