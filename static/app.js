// Spillway's web page: the catalog (list, search, pages, sorting, download,
// copy, delete, a dataset's versions with restore, its blake3 and download
// commands) and uploads of files and whole folders through the node's tus
// 1.0.0 endpoint, in pieces, several at once, resumable across reloads, asking
// before a key that holds a dataset is replaced. Plain JavaScript, no libraries.
"use strict";

(() => {
  const CHUNK_SIZE = 8 * 1024 * 1024; // bytes per PATCH
  const PAGE_SIZE = 50; // datasets per page
  const SORT_LIMIT = 10000; // records fetched to sort by anything but the key (the node's order)
  const VERSIONS_PAGE = 20; // versions per request ("Show older versions" asks for more)
  // Uploads sent at once: a file that fits in one PATCH spends most of its time
  // on round trips, so six of those run together; a big one takes half of the
  // slots (two at a time), as its PATCHes already keep the connection busy.
  const SLOTS = 6;
  const BIG_WEIGHT = 3;
  const CHECK_PARALLEL = 6; // catalog look-ups at once when checking keys one by one
  const RETRIES = 8; // attempts after a dropped connection before giving up
  const STALL_MS = 60000; // no upload progress for this long: reconnect
  const RESUME_PREFIX = "spillway.upload:"; // localStorage: fingerprint -> upload URL
  const TOKEN_KEY = "spillway.token"; // sessionStorage
  const TAB_KEY = "spillway.tab"; // sessionStorage: this tab's id, kept across reloads
  const BEAT_MS = 2000; // an uploading tab marks its resume state this often...
  const BEAT_STALE_MS = 10000; // ...and another tab leaves an upload alone while the mark is this fresh
  const TUS = { "Tus-Resumable": "1.0.0" };

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------ formatting

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  function humanBytes(n) {
    if (!Number.isFinite(n) || n < 0) return "?";
    let i = 0;
    let v = n;
    while (v >= 1024 && i < UNITS.length - 1) {
      v /= 1024;
      i += 1;
    }
    if (i === 0) return `${n} B`;
    return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${UNITS[i]}`;
  }

  function humanDuration(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) return "";
    const s = Math.ceil(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  /** Local time as `2026-11-28 09:00`: short, sortable, unambiguous. */
  function humanDate(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso || "");
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  // Each segment of a key encoded once, slashes kept: the node decodes once.
  function keyPath(key) {
    return key.split("/").map(encodeURIComponent).join("/");
  }

  function base64Utf8(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ----------------------------------------------------- storage, token

  function store(kind) {
    try {
      const s = kind === "session" ? window.sessionStorage : window.localStorage;
      const probe = "spillway.probe";
      s.setItem(probe, "1");
      s.removeItem(probe);
      return s;
    } catch {
      return null; // storage disabled: uploads still work, without resume
    }
  }
  const local = store("local");
  const session = store("session");

  const TAB_ID = (() => {
    let id = session && session.getItem(TAB_KEY);
    if (!id) {
      id = Math.random().toString(36).slice(2) + Date.now().toString(36);
      if (session) session.setItem(TAB_KEY, id);
    }
    return id;
  })();

  /** Whether another tab is sending this upload now (a HEAD from here would cut its PATCH off). */
  function busyElsewhere(saved) {
    return Boolean(saved && saved.tab && saved.tab !== TAB_ID && Date.now() - (saved.beat || 0) < BEAT_STALE_MS);
  }

  function token() {
    return (session && session.getItem(TOKEN_KEY)) || "";
  }

  function withAuth(headers = {}) {
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    return headers;
  }

  // ------------------------------------------------------------ messages

  let toastTimer = 0;
  function toast(text, kind = "info") {
    const el = $("toast");
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      el.hidden = true;
    }, 4000);
  }

  function announce(text) {
    const el = $("announce");
    el.textContent = "";
    // A fresh text node so that screen readers read a repeated message again.
    setTimeout(() => {
      el.textContent = text;
    }, 30);
  }

  /** An HTTP failure, with what an RFC 9457 problem body said. */
  class HttpError extends Error {
    constructor(status, problem, retryAfter) {
      const detail = (problem && (problem.detail || problem.title)) || "";
      super(describeStatus(status, detail));
      this.status = status;
      this.code = (problem && problem.code) || "";
      this.detail = detail;
      this.retryAfter = retryAfter;
    }
  }

  class NetworkError extends Error {}
  class Stopped extends Error {}

  function describeStatus(status, detail) {
    const what = {
      0: "The node cannot be reached",
      401: "This node needs an access token",
      403: "The access token does not allow this",
      404: "Not found",
      413: "Too large for this node",
      507: "The node is out of space",
    }[status];
    if (detail) return detail.charAt(0).toUpperCase() + detail.slice(1);
    return what || `The node answered ${status}`;
  }

  function parseProblem(contentType, text) {
    if (!text) return null;
    if (!/json/i.test(contentType || "")) return { detail: text.trim().slice(0, 300) };
    try {
      const body = JSON.parse(text);
      return body && typeof body === "object" ? body : null;
    } catch {
      return null;
    }
  }

  async function errorFromResponse(res) {
    let text = "";
    try {
      text = await res.text();
    } catch {
      // the body broke off: the status says enough
    }
    if (res.status === 401 || res.status === 403) showAuth(res.status);
    return new HttpError(res.status, parseProblem(res.headers.get("Content-Type"), text), res.headers.get("Retry-After"));
  }

  async function request(url, options = {}) {
    let res;
    try {
      res = await fetch(url, { ...options, headers: withAuth({ ...(options.headers || {}) }) });
    } catch (e) {
      if (e && e.name === "AbortError") throw new Stopped("stopped");
      throw new NetworkError("The node cannot be reached");
    }
    return res;
  }

  // ------------------------------------------------------------------ access

  function showAuth(status) {
    const box = $("auth");
    box.hidden = false;
    const hint = $("token-hint");
    if (status === 401) {
      hint.textContent = token()
        ? "The node did not accept this token. Enter another one."
        : "This node needs a bearer token. It is kept for this tab only (sessionStorage).";
      box.classList.add("attention");
    } else if (status === 403) {
      hint.textContent =
        "This token is valid but its scope does not allow that (uploading and restoring need write, deleting needs admin).";
    }
  }

  function initAuth() {
    if (token()) {
      $("auth").hidden = false;
      $("token").value = token();
    }
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("token").value.trim();
      if (session) {
        if (value) session.setItem(TOKEN_KEY, value);
        else session.removeItem(TOKEN_KEY);
      }
      $("auth").classList.remove("attention");
      toast(value ? "Token saved for this tab" : "Token cleared");
      list.refresh();
      refreshPending();
    });
    $("token-clear").addEventListener("click", () => {
      if (session) session.removeItem(TOKEN_KEY);
      $("token").value = "";
      toast("Token forgotten");
      list.refresh();
    });
  }

  // ---------------------------------------------------------------- catalog

  // The node lists by key (bytewise). Any other order needs every record under
  // the prefix, so the page fetches them all (up to SORT_LIMIT) and pages itself.
  const sort = { by: "key", dir: "ascending" };
  const SORT_FIRST = { name: "ascending", key: "ascending", size: "descending", created: "descending" };
  const nodeOrder = () => sort.by === "key" && sort.dir === "ascending";

  const list = {
    prefix: "",
    pages: [], // the URL of each page visited so far (page 1 first), in the node's order
    index: 0,
    next: null,
    generation: 0,
    records: [],
    all: null, // sorted here: every record under the prefix (null in the node's order)
    truncated: false, // sorted here, and the prefix holds more than SORT_LIMIT records

    firstUrl(limit = PAGE_SIZE) {
      let url = `/datasets?limit=${limit}`;
      if (this.prefix) url += `&prefix=${encodeURIComponent(this.prefix)}`;
      return url;
    },

    reset() {
      this.pages = [this.firstUrl()];
      this.index = 0;
      return nodeOrder() ? this.load(this.pages[0]) : this.loadAll();
    },

    /** One page as the node orders it. */
    async load(url, lastPage = false) {
      const generation = ++this.generation;
      this.all = null;
      const table = $("datasets");
      table.setAttribute("aria-busy", "true");
      try {
        const res = await request(url, { headers: { Accept: "application/json" }, cache: "no-store" });
        if (!res.ok) throw await errorFromResponse(res);
        const records = await res.json();
        if (generation !== this.generation) return;
        this.next = lastPage ? null : nextLink(res.headers.get("Link"));
        // An empty page after a full one (the node cannot know a page is the
        // last until it asks), or a page whose rows were all deleted: step back.
        if (records.length === 0 && this.index > 0) {
          this.index -= 1;
          this.pages.length = this.index + 1;
          await this.load(this.pages[this.index], true);
          return;
        }
        this.show(records);
      } catch (e) {
        if (generation === this.generation) this.failed(e);
      } finally {
        if (generation === this.generation) {
          table.removeAttribute("aria-busy");
          this.updatePager();
        }
      }
    },

    /** Every record under the prefix (following Link), sorted here; shows page `index`. */
    async loadAll() {
      const generation = ++this.generation;
      const table = $("datasets");
      table.setAttribute("aria-busy", "true");
      try {
        const all = [];
        let url = this.firstUrl(1000);
        while (url && all.length < SORT_LIMIT) {
          const res = await request(url, { headers: { Accept: "application/json" }, cache: "no-store" });
          if (!res.ok) throw await errorFromResponse(res);
          const records = await res.json();
          if (generation !== this.generation) return;
          all.push(...records);
          url = records.length > 0 ? nextLink(res.headers.get("Link")) : null;
        }
        this.truncated = Boolean(url) || all.length > SORT_LIMIT;
        all.length = Math.min(all.length, SORT_LIMIT);
        this.all = all.sort(compareRecords);
        this.index = Math.max(0, Math.min(this.index, Math.ceil(all.length / PAGE_SIZE) - 1));
        this.showLocal();
      } catch (e) {
        if (generation === this.generation) {
          this.all = null;
          this.failed(e);
        }
      } finally {
        if (generation === this.generation) {
          table.removeAttribute("aria-busy");
          this.updatePager();
        }
      }
    },

    showLocal() {
      const from = this.index * PAGE_SIZE;
      this.next = from + PAGE_SIZE < this.all.length ? "local" : null;
      this.show(this.all.slice(from, from + PAGE_SIZE));
    },

    show(records) {
      this.records = records;
      $("list-error").hidden = true;
      render(records);
    },

    failed(e) {
      const box = $("list-error");
      box.textContent = `Could not load the datasets: ${e.message}`;
      box.hidden = false;
      render([]);
      $("empty").hidden = true;
      this.next = null;
    },

    updatePager() {
      $("first-page").disabled = this.index === 0;
      $("prev-page").disabled = this.index === 0;
      $("next-page").disabled = !this.next;
      const n = this.records.length;
      const from = this.index * PAGE_SIZE + 1;
      let info;
      if (n === 0) info = this.prefix ? `Nothing under “${this.prefix}”` : "";
      else if (this.index === 0 && !this.next) info = `${n} dataset${n === 1 ? "" : "s"}`;
      else if (this.all) info = `${from}–${from + n - 1} of ${this.all.length.toLocaleString()}${this.truncated ? "+" : ""}`;
      else info = `${from}–${from + n - 1}${this.next ? "" : " (last page)"}`;
      if (this.all && this.truncated) info += ` (sorted among the first ${SORT_LIMIT.toLocaleString()} keys)`;
      $("page-info").textContent = info;
      document.querySelector(".pager").hidden = this.index === 0 && !this.next;
    },

    nextPage() {
      if (!this.next) return;
      if (this.all) {
        this.index += 1;
        this.showLocal();
        this.updatePager();
        return;
      }
      this.pages.length = this.index + 1;
      this.pages.push(this.next);
      this.index += 1;
      return this.load(this.next);
    },

    prevPage() {
      if (this.index === 0) return;
      this.index -= 1;
      if (this.all) {
        this.showLocal();
        this.updatePager();
        return;
      }
      return this.load(this.pages[this.index]);
    },

    firstPage() {
      this.index = 0;
      if (this.all) {
        this.showLocal();
        this.updatePager();
        return;
      }
      return this.load(this.pages[0]);
    },

    refresh() {
      if (!nodeOrder()) return this.loadAll();
      return this.load(this.pages[this.index] || this.firstUrl());
    },
  };

  const byteOrder = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  const displayName = (r) => r.name || r.key.split("/").pop();
  const SORT_KEYS = {
    key: (a, b) => byteOrder(a.key, b.key),
    name: (a, b) => displayName(a).localeCompare(displayName(b), undefined, { numeric: true, sensitivity: "base" }),
    size: (a, b) => Number(a.size) - Number(b.size),
    created: (a, b) => (Date.parse(a.created_at) || 0) - (Date.parse(b.created_at) || 0),
  };

  /** The chosen order; ties go by key, so equal rows keep a stable place. */
  function compareRecords(a, b) {
    const c = SORT_KEYS[sort.by](a, b);
    const first = c !== 0 ? c : byteOrder(a.key, b.key);
    return sort.dir === "descending" ? -first : first;
  }

  /** Sorts the table by a column (the headers' buttons and, on phones, the select). */
  function setSort(by, dir) {
    sort.by = by;
    sort.dir = dir;
    for (const th of document.querySelectorAll("#datasets th[data-sort]")) {
      if (th.dataset.sort === by) th.setAttribute("aria-sort", dir);
      else th.removeAttribute("aria-sort");
    }
    $("sort").value = `${by}:${dir}`;
    const label = { key: "key", name: "name", size: "size", created: "date created" }[by];
    announce(`Sorted by ${label}, ${dir}`);
    list.reset();
  }

  /** The target of `rel="next"` in a Link header, or null. */
  function nextLink(header) {
    if (!header) return null;
    for (const part of header.split(/,(?=\s*<)/)) {
      const m = /^\s*<([^>]*)>(.*)$/.exec(part);
      if (m && /;\s*rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?/i.test(m[2])) return m[1];
    }
    return null;
  }

  /** Shows a key with line-break chances after each `/` (text nodes only: keys are untrusted). */
  function setBreakable(el, key) {
    const parts = key.split("/");
    el.replaceChildren();
    parts.forEach((part, i) => {
      el.append(i < parts.length - 1 ? `${part}/` : part);
      if (i < parts.length - 1) el.append(document.createElement("wbr"));
    });
  }

  function render(records) {
    const body = $("rows");
    const template = $("row-template");
    const frag = document.createDocumentFragment();
    const reopen = []; // rows whose versions were shown before this render
    const reopenDetails = []; // rows whose details were shown
    for (const r of records) {
      const row = template.content.firstElementChild.cloneNode(true);
      row.dataset.key = r.key;
      row.querySelector(".c-name").textContent = displayName(r);
      setBreakable(row.querySelector(".c-key code"), r.key);
      const size = row.querySelector(".c-size");
      size.textContent = humanBytes(r.size);
      size.title = `${Number(r.size).toLocaleString()} bytes`;
      const hash = row.querySelector(".c-hash code");
      hash.textContent = (r.blake3 || "").slice(0, 12);
      hash.title = r.blake3 || "";
      const time = row.querySelector(".c-created time");
      time.dateTime = r.created_at || "";
      const [day, clock] = humanDate(r.created_at).split(" ");
      time.replaceChildren(day || "");
      if (clock) {
        const c = document.createElement("span");
        c.className = "clock";
        c.textContent = clock;
        time.append(" ", c);
      }
      time.title = r.created_at || "";
      const path = r.path || `/data/${keyPath(r.key)}`;
      const download = row.querySelector(".act-download");
      download.href = path;
      download.setAttribute("download", r.key.split("/").pop());
      download.setAttribute("aria-label", `Download ${r.key}`);
      download.addEventListener("click", (e) => onDownload(e, r));
      const details = row.querySelector(".act-details");
      details.setAttribute("aria-label", `Details of ${r.key}: full blake3 and download commands`);
      details.addEventListener("click", () => toggleDetails(row, r, details));
      if (openDetails.has(r.key)) reopenDetails.push([row, r, details]);
      const versions = row.querySelector(".act-versions");
      versions.setAttribute("aria-label", `Versions of ${r.key}`);
      versions.addEventListener("click", () => toggleVersions(row, r, versions));
      if (openVersions.has(r.key)) reopen.push([row, r, versions]);
      const copy = row.querySelector(".act-copy");
      copy.setAttribute("aria-label", `Copy path of ${r.key}`);
      copy.addEventListener("click", () => copyPath(path));
      const del = row.querySelector(".act-delete");
      del.setAttribute("aria-label", `Delete ${r.key}`);
      del.addEventListener("click", () => removeDataset(r.key, del));
      frag.appendChild(row);
    }
    body.replaceChildren(frag);
    for (const [row, r, button] of reopenDetails) showDetails(row, r, button);
    for (const [row, r, button] of reopen) showVersions(row, r, button);
    $("empty").hidden = records.length > 0;
    $("datasets").classList.toggle("is-empty", records.length === 0);
  }

  // A plain link cannot carry a bearer token: with one, ask the node for a
  // signed download URL (of a version, when one is given) and follow that instead.
  async function onDownload(event, record, version) {
    if (!token()) return;
    event.preventDefault();
    try {
      const body = { expires_in: 300 };
      if (version) body.version = version;
      const res = await request(`/datasets/${keyPath(record.key)}/download-url`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!res.ok) throw await errorFromResponse(res);
      const { url } = await res.json();
      const a = document.createElement("a");
      a.href = url;
      a.download = record.key.split("/").pop();
      document.body.appendChild(a);
      a.click();
      a.remove();
    } catch (e) {
      toast(`Download failed: ${e.message}`, "error");
    }
  }

  async function copyPath(path) {
    const url = new URL(path, window.location.href).href;
    const copied = await copyText(url);
    toast(copied ? `Copied ${url}` : `Copy this URL: ${url}`, copied ? "info" : "warn");
  }

  /** Puts text on the clipboard (the API where allowed, else a selected textarea); whether it worked. */
  async function copyText(text) {
    let copied = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        copied = true;
      }
    } catch {
      copied = false;
    }
    if (!copied) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      const focused = document.activeElement;
      document.body.appendChild(area);
      area.select();
      try {
        copied = document.execCommand("copy");
      } catch {
        copied = false;
      }
      area.remove();
      if (focused && focused.focus) focused.focus();
    }
    return copied;
  }

  async function removeDataset(key, button) {
    if (!window.confirm(`Delete “${key}”?\n\nIts bytes and its record are removed for good.`)) return;
    button.disabled = true;
    try {
      const res = await request(`/datasets/${keyPath(key)}`, { method: "DELETE" });
      if (!res.ok && res.status !== 404) throw await errorFromResponse(res);
      const row = button.closest("tr");
      if (row) {
        while (row.nextElementSibling && row.nextElementSibling.classList.contains("panel-row")) row.nextElementSibling.remove();
        row.remove();
      }
      openVersions.delete(key);
      openDetails.delete(key);
      announce(`Deleted ${key}`);
      toast(`Deleted ${key}`);
      await list.refresh();
      $("datasets-heading").focus();
    } catch (e) {
      button.disabled = false;
      toast(`Could not delete ${key}: ${e.message}`, "error");
    }
  }

  /** The panel row of a kind (versions, details) shown below a dataset's row, or null. */
  function panelOf(row, kind) {
    for (let n = row.nextElementSibling; n && n.classList.contains("panel-row"); n = n.nextElementSibling) {
      if (n.classList.contains(kind)) return n;
    }
    return null;
  }

  // ----------------------------------------------------------------- details

  const openDetails = new Set(); // keys whose details are shown (kept across re-renders)

  /** A word for a POSIX shell: single-quoted unless it is plainly safe. */
  function shellQuote(word) {
    return /^[A-Za-z0-9_./:@%+=,-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
  }

  /** The commands that fetch a dataset: curl (plain HTTP) and `spillway get` (resumable, checks blake3). */
  function downloadCommands(record) {
    const origin = window.location.origin;
    const url = new URL(record.path || `/data/${keyPath(record.key)}`, window.location.href).href;
    const out = record.key.split("/").pop();
    // The token is a secret: the commands name the variable, never its value.
    const auth = token() ? ' -H "Authorization: Bearer $SPILLWAY_TOKEN"' : "";
    const curl = `curl -fL${auth} -o ${shellQuote(out)} ${shellQuote(url)}`;
    const dash = record.key.startsWith("-") ? "-- " : "";
    const spillway = `spillway get --url ${shellQuote(origin)} ${dash}${shellQuote(record.key)}`;
    return { curl, spillway };
  }

  function toggleDetails(row, record, button) {
    const shown = panelOf(row, "details-row");
    if (shown) {
      shown.remove();
      openDetails.delete(record.key);
      button.setAttribute("aria-expanded", "false");
      return;
    }
    openDetails.add(record.key);
    showDetails(row, record, button).querySelector(".details-title").focus();
  }

  function showDetails(row, record, button) {
    const tr = $("details-template").content.firstElementChild.cloneNode(true);
    tr.id = `details-${++versionsCounter}`;
    tr.dataset.key = record.key;
    const title = tr.querySelector(".details-title");
    title.id = `${tr.id}-title`;
    title.textContent = `Get ${record.key}`;
    tr.querySelector(".details").setAttribute("aria-labelledby", title.id);
    const { curl, spillway } = downloadCommands(record);
    const values = { blake3: record.blake3 || "", curl, spillway };
    tr.querySelector(".d-blake3").textContent = values.blake3;
    tr.querySelector(".d-curl").textContent = curl;
    tr.querySelector(".d-spillway").textContent = spillway;
    tr.querySelector(".d-token-hint").hidden = !token();
    for (const copy of tr.querySelectorAll(".d-copy")) {
      const what = copy.dataset.what;
      copy.setAttribute("aria-label", `Copy the ${what === "blake3" ? "blake3" : `${what} command`} of ${record.key}`);
      copy.addEventListener("click", async () => {
        const ok = await copyText(values[what]);
        toast(ok ? `Copied the ${what === "blake3" ? "blake3" : `${what} command`}` : `Copy this: ${values[what]}`, ok ? "info" : "warn");
      });
    }
    const hide = tr.querySelector(".details-hide");
    hide.setAttribute("aria-label", `Hide the details of ${record.key}`);
    hide.addEventListener("click", () => {
      toggleDetails(row, record, button);
      button.focus();
    });
    button.setAttribute("aria-controls", tr.id);
    button.setAttribute("aria-expanded", "true");
    row.after(tr);
    return tr;
  }

  // ---------------------------------------------------------------- versions

  const openVersions = new Set(); // keys whose versions are shown (kept across re-renders)
  let versionsCounter = 0; // ids of the panels (keys are untrusted: never in an id)
  let focusVersionsOf = null; // after a restore: the key whose panel takes the focus

  /** Shows or hides the versions of a row's dataset, in a row of its own below it. */
  function toggleVersions(row, record, button) {
    focusVersionsOf = null;
    const next = panelOf(row, "versions-row");
    if (next) {
      next.remove();
      openVersions.delete(record.key);
      button.setAttribute("aria-expanded", "false");
      return;
    }
    openVersions.add(record.key);
    showVersions(row, record, button);
  }

  function showVersions(row, record, button) {
    const tr = $("versions-template").content.firstElementChild.cloneNode(true);
    tr.id = `versions-${++versionsCounter}`;
    tr.dataset.key = record.key;
    const section = tr.querySelector(".versions");
    const title = tr.querySelector(".versions-title");
    title.id = `${tr.id}-title`;
    title.textContent = `Versions of ${record.key}`;
    section.setAttribute("aria-labelledby", title.id);
    const hide = tr.querySelector(".versions-hide");
    hide.setAttribute("aria-label", `Hide the versions of ${record.key}`);
    hide.addEventListener("click", () => {
      toggleVersions(row, record, button);
      button.focus();
    });
    const more = tr.querySelector(".versions-more");
    more.addEventListener("click", () => loadVersions(section, record, more.dataset.next, true));
    button.setAttribute("aria-controls", tr.id);
    button.setAttribute("aria-expanded", "true");
    row.after(tr);
    loadVersions(section, record, `/versions/${keyPath(record.key)}?limit=${VERSIONS_PAGE}`, false);
  }

  /** Loads a page of versions into a panel (appended for "Show older versions"). */
  async function loadVersions(section, record, url, append) {
    const status = section.querySelector(".versions-status");
    const list = section.querySelector(".versions-list");
    const more = section.querySelector(".versions-more");
    section.setAttribute("aria-busy", "true");
    status.classList.remove("is-error");
    status.textContent = "Loading versions…";
    status.hidden = false;
    more.disabled = true;
    try {
      const res = await request(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!res.ok) throw await errorFromResponse(res);
      const versions = await res.json();
      if (!section.isConnected) return;
      const frag = document.createDocumentFragment();
      for (const v of versions) frag.append(versionItem(v, record));
      if (append) list.append(frag);
      else list.replaceChildren(frag);
      const next = versions.length > 0 ? nextLink(res.headers.get("Link")) : null;
      more.dataset.next = next || "";
      more.hidden = !next;
      status.textContent = list.children.length ? "" : "No versions are kept of this dataset.";
      status.hidden = list.children.length > 0;
    } catch (e) {
      if (!section.isConnected) return;
      status.textContent = `Could not load the versions: ${e.message}`;
      status.classList.add("is-error");
    } finally {
      section.removeAttribute("aria-busy");
      more.disabled = false;
      if (section.isConnected && focusVersionsOf === record.key) {
        focusVersionsOf = null;
        section.querySelector(".versions-title").focus();
      }
    }
  }

  /** One version: number, current marker, date, size, who, blake3, download and restore. */
  function versionItem(v, record) {
    const li = $("version-template").content.firstElementChild.cloneNode(true);
    const what = `version ${v.version} of ${record.key}`;
    li.dataset.version = String(v.version);
    li.dataset.current = String(Boolean(v.current));
    li.querySelector(".v-number").textContent = `Version ${v.version}`;
    li.querySelector(".v-current").hidden = !v.current;
    const date = li.querySelector(".v-date");
    date.dateTime = v.created_at || "";
    date.textContent = humanDate(v.created_at);
    date.title = v.created_at || "";
    const size = li.querySelector(".v-size");
    size.textContent = humanBytes(v.size);
    size.title = `${Number(v.size).toLocaleString()} bytes`;
    const who = li.querySelector(".v-who");
    who.textContent = v.uploaded_by ? `by ${v.uploaded_by}` : "";
    who.hidden = !v.uploaded_by;
    const hash = li.querySelector(".v-hash");
    hash.textContent = (v.blake3 || "").slice(0, 12);
    hash.title = v.blake3 || "";
    const download = li.querySelector(".v-download");
    download.href = `/data/${keyPath(record.key)}?version=${encodeURIComponent(v.version)}`;
    download.setAttribute("download", record.key.split("/").pop());
    download.setAttribute("aria-label", `Download ${what}`);
    download.addEventListener("click", (e) => onDownload(e, record, v.version));
    const restore = li.querySelector(".v-restore");
    restore.hidden = Boolean(v.current);
    restore.setAttribute("aria-label", `Restore ${what}`);
    restore.title = "Make these bytes current again (as a new version)";
    restore.addEventListener("click", () => restoreVersion(record.key, v.version, restore));
    return li;
  }

  /** Makes a version current again (a new version with its bytes), then shows the result. */
  async function restoreVersion(key, version, button) {
    button.disabled = true;
    try {
      const res = await request(`/datasets/${keyPath(key)}/action/restore`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ version }),
      });
      if (!res.ok) throw await errorFromResponse(res);
      announce(`Restored version ${version} of ${key}`);
      toast(`Restored version ${version} of ${key}`);
      focusVersionsOf = key;
      await list.refresh();
    } catch (e) {
      button.disabled = false;
      toast(`Could not restore version ${version} of ${key}: ${e.message}`, "error");
    }
  }

  function initCatalog() {
    let timer = 0;
    $("search").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        list.prefix = $("search").value;
        list.reset();
      }, 200);
    });
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      clearTimeout(timer);
      list.prefix = $("search").value;
      list.reset();
    });
    $("refresh").addEventListener("click", () => list.refresh());
    $("next-page").addEventListener("click", () => list.nextPage());
    $("prev-page").addEventListener("click", () => list.prevPage());
    $("first-page").addEventListener("click", () => list.firstPage());
    for (const th of document.querySelectorAll("#datasets th[data-sort]")) {
      th.querySelector("button").addEventListener("click", () => {
        const by = th.dataset.sort;
        const dir = sort.by === by ? (sort.dir === "ascending" ? "descending" : "ascending") : SORT_FIRST[by];
        setSort(by, dir);
      });
    }
    $("sort").addEventListener("change", () => {
      const [by, dir] = $("sort").value.split(":");
      setSort(by, dir);
    });
    list.reset();
  }

  let refreshTimer = 0;
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => list.refresh(), 150);
  }

  // ------------------------------------------------------------ resume state

  /**
   * Uploads are remembered by file name, size and modification time, and for
   * a file of a folder by its path in the folder too (a folder may hold many
   * files of one name, size and time: shards, `.keep` files).
   */
  function fingerprint(file, rel) {
    const parts = [file.name, file.size, file.lastModified];
    if (rel) parts.push(rel);
    return RESUME_PREFIX + JSON.stringify(parts);
  }

  function readSaved(fp) {
    if (!local) return null;
    try {
      const saved = JSON.parse(local.getItem(fp) || "null");
      return saved && typeof saved.url === "string" ? saved : null;
    } catch {
      return null;
    }
  }

  function writeSaved(fp, value) {
    if (!local) return;
    try {
      local.setItem(fp, JSON.stringify(value));
    } catch {
      // storage full: this upload just won't survive a reload
    }
  }

  function forget(fp) {
    if (local) local.removeItem(fp);
  }

  function savedUploads() {
    if (!local) return [];
    const out = [];
    for (let i = 0; i < local.length; i += 1) {
      const fp = local.key(i);
      if (!fp || !fp.startsWith(RESUME_PREFIX)) continue;
      const saved = readSaved(fp);
      if (saved) out.push({ fp, ...saved });
    }
    return out.sort((a, b) => (a.started || 0) - (b.started || 0));
  }

  async function headUpload(url) {
    const res = await request(url, { method: "HEAD", headers: { ...TUS }, cache: "no-store" });
    if (!res.ok) throw await errorFromResponse(res);
    return {
      offset: Number(res.headers.get("Upload-Offset")),
      length: res.headers.has("Upload-Length") ? Number(res.headers.get("Upload-Length")) : null,
      location: res.headers.get("Content-Location"),
      etag: (res.headers.get("ETag") || "").replace(/"/g, ""),
    };
  }

  // ----------------------------------------------------------------- uploads

  const uploads = []; // every Upload shown on the page
  let counter = 0;

  class Upload {
    constructor(file, key, name, rel = null) {
      this.id = `u${++counter}`;
      this.file = file;
      this.key = key;
      this.name = name;
      this.rel = rel; // the path from the dropped or chosen folder (its name first), or null
      this.label = rel || file.name; // how the page names this file
      this.batch = null;
      this.fp = fingerprint(file, rel);
      this.url = null;
      this.offset = 0; // what the node has, as far as we know
      this.sent = 0; // what the browser has sent (for the bar)
      this.state = "queued";
      this.xhr = null;
      this.samples = [];
      this.resumedFrom = null;
      this.startedAt = 0;
      this.etag = "";
      this.location = "";
      this.el = this.build();
    }

    build() {
      const li = $("upload-template").content.firstElementChild.cloneNode(true);
      li.id = this.id;
      li.dataset.file = this.file.name;
      li.dataset.key = this.key;
      li.querySelector(".up-name").textContent = this.label;
      li.querySelector(".up-key").textContent = `→ ${this.key}`;
      const bar = li.querySelector(".up-bar");
      bar.setAttribute("aria-label", `Upload of ${this.label}`);
      const status = li.querySelector(".up-status");
      status.id = `${this.id}-status`;
      bar.setAttribute("aria-describedby", status.id);
      li.querySelector(".up-pause").addEventListener("click", () => this.pause());
      li.querySelector(".up-resume").addEventListener("click", () => this.resume());
      li.querySelector(".up-cancel").addEventListener("click", () => this.cancel());
      li.querySelector(".up-dismiss").addEventListener("click", () => this.dismiss());
      for (const b of li.querySelectorAll("button")) {
        b.setAttribute("aria-label", `${b.textContent} ${this.label}`);
      }
      return li;
    }

    // --- the view

    setState(state, message) {
      this.state = state;
      this.el.dataset.state = state;
      const q = (sel) => this.el.querySelector(sel);
      const active = state === "queued" || state === "uploading";
      q(".up-pause").hidden = !active;
      q(".up-resume").hidden = !(state === "paused" || (state === "error" && this.retryable));
      q(".up-resume").textContent = state === "error" ? "Retry" : "Resume";
      q(".up-resume").setAttribute("aria-label", `${q(".up-resume").textContent} ${this.label}`);
      q(".up-cancel").hidden = !(active || state === "paused" || (state === "error" && this.url));
      q(".up-dismiss").hidden = !FINISHED.includes(state);
      if (state !== "error") q(".up-error").hidden = true;
      if (message !== undefined) this.say([message], true);
      else this.paint();
    }

    showError(message) {
      const box = this.el.querySelector(".up-error");
      box.textContent = message;
      box.hidden = false;
    }

    progress(sent) {
      this.heartbeat();
      this.sent = Math.min(sent, this.file.size);
      const now = performance.now();
      this.samples.push([now, this.sent]);
      while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
      this.paint();
    }

    /** Bytes this upload still counts for in its folder's overall bar. */
    counted() {
      return this.state === "cancelled" || this.state === "skipped" ? 0 : this.file.size;
    }

    rate() {
      if (this.samples.length < 2) return 0;
      const [t0, b0] = this.samples[0];
      const [t1, b1] = this.samples[this.samples.length - 1];
      return t1 - t0 >= 250 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
    }

    paint() {
      const size = this.file.size;
      const pct = size === 0 ? (this.state === "done" ? 100 : 0) : (this.sent / size) * 100;
      const bar = this.el.querySelector(".up-bar");
      bar.value = Math.min(100, Math.floor(pct * 10) / 10);
      const bytes = `${humanBytes(this.sent)} of ${humanBytes(size)}`;
      let parts;
      switch (this.state) {
        case "checking":
          parts = ["Checking the catalog", humanBytes(size)];
          break;
        case "skipped":
          parts = ["Not sent: kept the dataset already at this key"];
          break;
        case "queued":
          parts = ["Waiting", humanBytes(size)];
          break;
        case "uploading": {
          const rate = this.rate();
          parts = [bytes, rate > 0 ? `${humanBytes(rate)}/s` : "starting…"];
          if (rate > 0) parts.push(`${humanDuration((size - this.sent) / rate)} left`);
          if (this.resumedFrom) parts.push(`resumed at ${humanBytes(this.resumedFrom)}`);
          break;
        }
        case "paused":
          parts = ["Paused", bytes];
          break;
        case "done": {
          const secs = (performance.now() - this.startedAt) / 1000;
          parts = ["Done", `${humanBytes(size)}${secs > 0.05 ? ` in ${humanDuration(secs)}` : ""}`];
          if (this.etag) parts.push(`blake3 ${this.etag.slice(0, 12)}`);
          break;
        }
        case "cancelled":
          parts = ["Cancelled"];
          break;
        case "error":
          parts = ["Stopped", bytes];
          break;
        default:
          parts = [];
      }
      this.say(parts);
      if (this.batch) this.batch.changed();
    }

    /** The status line: parts joined by " · ", each kept on one line. */
    say(parts, wrap = false) {
      const status = this.el.querySelector(".up-status");
      status.replaceChildren();
      parts.forEach((part, i) => {
        if (i > 0) status.append(" · ");
        const span = document.createElement("span");
        if (!wrap) span.className = "part";
        span.textContent = part;
        status.append(span);
      });
    }

    /** Marks the resume state as being sent by this tab (or, with `stop`, no longer). */
    heartbeat(stop = false) {
      const now = Date.now();
      if (!this.url || (!stop && now - (this.lastBeat || 0) < BEAT_MS)) return;
      this.lastBeat = stop ? 0 : now;
      const saved = readSaved(this.fp);
      if (saved && saved.url === this.url) writeSaved(this.fp, { ...saved, tab: TAB_ID, beat: stop ? 0 : now });
    }

    // --- the controls

    pause(focus = true) {
      if (this.state !== "queued" && this.state !== "uploading") return;
      this.setState("paused");
      this.abortRequest();
      this.heartbeat(true);
      pump();
      if (focus) this.el.querySelector(".up-resume").focus();
    }

    resume(focus = true) {
      if (this.state !== "paused" && this.state !== "error") return;
      this.samples = [];
      this.setState("queued");
      pump();
      if (focus) this.el.querySelector(".up-pause").focus();
    }

    async cancel(focus = true) {
      // Nothing to cancel once done, and nothing sent yet while checking or when skipped.
      if (["done", "cancelled", "skipped", "checking"].includes(this.state)) return;
      this.setState("cancelled", "Cancelling…");
      this.abortRequest();
      forget(this.fp);
      const url = this.url || (readSaved(this.fp) || {}).url;
      if (url) await terminate(url);
      this.setState("cancelled");
      if (!this.batch) announce(`Cancelled ${this.label}`);
      pump();
      if (focus) this.el.querySelector(".up-dismiss").focus();
    }

    dismiss() {
      const i = uploads.indexOf(this);
      if (i >= 0) uploads.splice(i, 1);
      const next = this.el.nextElementSibling || this.el.previousElementSibling;
      this.el.remove();
      if (this.batch) this.batch.forget(this);
      const target = next && next.querySelector("button:not([hidden])");
      (target || $("choose")).focus();
    }

    abortRequest() {
      const xhr = this.xhr;
      if (!xhr) return;
      xhr.stoppedByUser = true;
      xhr.abort();
    }

    // --- the protocol

    /** Drives the upload until it is done, paused, cancelled or failed. */
    async run() {
      this.generation = (this.generation || 0) + 1;
      this.setState("uploading");
      if (!this.startedAt) this.startedAt = performance.now();
      const me = this.generation;
      // This run ends once the upload is paused, cancelled or failed, or a newer run took over.
      const stopped = () => this.state !== "uploading" || this.generation !== me;
      let attempt = 0;
      let sync = true;
      while (!stopped()) {
        try {
          if (!this.url) await this.locate();
          else if (sync) await this.sync();
          sync = false;
          if (stopped()) break;
          if (this.location) {
            this.finish();
            break;
          }
          await this.sendChunk();
          attempt = 0;
        } catch (e) {
          if (stopped() || e instanceof Stopped) break;
          const wait = this.retryDelay(e, attempt);
          if (wait === null) {
            this.fail(e);
            break;
          }
          attempt += 1;
          sync = true;
          this.setState("uploading", `${e.message} · trying again in ${humanDuration(wait / 1000)} (${attempt}/${RETRIES})`);
          await sleep(wait);
          if (!stopped()) this.samples = [];
        }
      }
    }

    retryDelay(e, attempt) {
      if (attempt >= RETRIES) return null;
      const backoff = Math.min(30000, 500 * 2 ** attempt);
      if (e instanceof NetworkError) return backoff;
      if (!(e instanceof HttpError)) return null;
      if (e.status === 409 || e.status === 460) return 0; // offset or checksum: resync at once
      // The node saw the body break off (e.g. a HEAD from elsewhere took the upload over): resync.
      if (e.status === 400 && e.code === "truncated-body") return Math.min(backoff, 2000);
      if (e.status === 423 || e.status === 408) return Math.min(backoff, 2000);
      // 429: too many uploads open; places free up as others finish.
      if (e.status === 429 || e.status === 503 || e.status === 502 || e.status === 504 || e.status === 500) {
        const after = Number(e.retryAfter);
        return Number.isFinite(after) && after > 0 ? Math.min(after * 1000, 60000) : backoff;
      }
      return null; // 400, 401, 403, 404, 410, 413, 415, 507, ...: say so and stop
    }

    /** Finds the upload this file started before (HEAD), or creates one (POST). */
    async locate() {
      const saved = readSaved(this.fp);
      if (busyElsewhere(saved)) {
        throw new HttpError(423, { detail: "this file is being uploaded in another tab; close it or pause it there first" });
      }
      if (saved) {
        try {
          const info = await headUpload(saved.url);
          if (info.length === this.file.size && Number.isFinite(info.offset)) {
            this.url = saved.url;
            this.key = saved.key || this.key;
            this.el.querySelector(".up-key").textContent = `→ ${this.key}`;
            this.adopt(info);
            if (info.offset > 0) this.resumedFrom = info.offset;
            removePending(this.fp);
            return;
          }
          forget(this.fp); // another file with the same fingerprint: start over
        } catch (e) {
          if (e instanceof HttpError && (e.status === 404 || e.status === 410)) forget(this.fp); // expired
          else throw e;
        }
      }
      removePending(this.fp);
      await this.create();
    }

    async create() {
      const meta = [["key", this.key]];
      if (this.name) meta.push(["name", this.name]);
      if (this.file.type) meta.push(["filetype", this.file.type]);
      const res = await request("/uploads", {
        method: "POST",
        headers: {
          ...TUS,
          "Upload-Length": String(this.file.size),
          "Upload-Metadata": meta.map(([k, v]) => `${k} ${base64Utf8(v)}`).join(","),
          ...(this.createOnly ? { "If-None-Match": "*" } : {}),
        },
      });
      if (res.status !== 201) throw await errorFromResponse(res);
      const location = res.headers.get("Location");
      if (!location) throw new HttpError(res.status, { detail: "the node did not say where the upload is" });
      this.url = new URL(location, window.location.href).href;
      writeSaved(this.fp, {
        url: this.url,
        key: this.key,
        name: this.label,
        size: this.file.size,
        lastModified: this.file.lastModified,
        started: Date.now(),
      });
      if (this.state === "cancelled") {
        // Cancelled while the node was creating it.
        forget(this.fp);
        terminate(this.url);
        throw new Stopped("cancelled");
      }
      this.adopt({ offset: Number(res.headers.get("Upload-Offset")) || 0 });
    }

    async sync() {
      try {
        this.adopt(await headUpload(this.url));
      } catch (e) {
        if (e instanceof HttpError && (e.status === 404 || e.status === 410)) {
          // The node no longer has it (expired or removed): start over.
          forget(this.fp);
          this.url = null;
          this.offset = 0;
          this.sent = 0;
          throw new HttpError(e.status, { detail: "the node no longer has this upload; press Retry to start over" });
        }
        throw e;
      }
    }

    adopt(info) {
      if (Number.isFinite(info.offset)) {
        // After a reconnect the node may have fewer bytes than were sent: the rate starts afresh.
        if (info.offset !== this.sent) this.samples = [];
        this.offset = info.offset;
        this.sent = info.offset;
      }
      if (info.location) {
        this.location = info.location;
        this.etag = info.etag || "";
      }
      this.paint();
    }

    /** One PATCH of at most CHUNK_SIZE bytes from the node's offset. */
    sendChunk() {
      const start = this.offset;
      const end = Math.min(start + CHUNK_SIZE, this.file.size);
      const body = this.file.slice(start, end);
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        this.xhr = xhr;
        let stallTimer = 0;
        let sending = true;
        const watch = () => {
          clearTimeout(stallTimer);
          if (sending) stallTimer = setTimeout(() => xhr.abort(), STALL_MS);
        };
        const done = (fn, value) => {
          clearTimeout(stallTimer);
          if (this.xhr === xhr) this.xhr = null;
          fn(value);
        };
        xhr.open("PATCH", this.url);
        const headers = withAuth({
          ...TUS,
          "Upload-Offset": String(start),
          "Content-Type": "application/offset+octet-stream",
        });
        for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
        xhr.upload.onprogress = (e) => {
          watch();
          this.progress(start + e.loaded);
        };
        xhr.upload.onload = () => {
          sending = false;
          clearTimeout(stallTimer);
        };
        xhr.onload = () => {
          if (xhr.status === 204 || xhr.status === 200) {
            const offset = Number(xhr.getResponseHeader("Upload-Offset"));
            if (!Number.isFinite(offset) || xhr.getResponseHeader("Upload-Offset") === null) {
              done(reject, new HttpError(xhr.status, { detail: "the node sent no Upload-Offset" }));
              return;
            }
            this.progress(offset);
            this.adopt({
              offset,
              location: xhr.getResponseHeader("Content-Location"),
              etag: (xhr.getResponseHeader("ETag") || "").replace(/"/g, ""),
            });
            done(resolve);
            return;
          }
          if (xhr.status === 401 || xhr.status === 403) showAuth(xhr.status);
          const problem = parseProblem(xhr.getResponseHeader("Content-Type"), xhr.responseText);
          done(reject, new HttpError(xhr.status, problem, xhr.getResponseHeader("Retry-After")));
        };
        xhr.onerror = () => done(reject, new NetworkError("The connection broke off"));
        xhr.onabort = () =>
          done(reject, xhr.stoppedByUser ? new Stopped("stopped") : new NetworkError("The upload stalled"));
        watch();
        xhr.send(body);
      });
    }

    finish() {
      forget(this.fp);
      this.sent = this.file.size;
      this.setState("done");
      this.el.querySelector(".up-bar").value = 100;
      // A folder says so once, when its last file is done.
      if (!this.batch) announce(`Uploaded ${this.label} as ${this.key}`);
      refreshSoon();
    }

    fail(e) {
      let message = e.message;
      if (e instanceof HttpError && e.code === "too-large") {
        message = `Too large: ${e.detail || e.message}`;
        const limit = /(\d+) bytes/.exec(e.detail || "");
        if (limit) message += ` (${humanBytes(Number(limit[1]))}; this file is ${humanBytes(this.file.size)})`;
      }
      else if (e instanceof HttpError && e.status === 507) message = `No space: ${e.detail || e.message}`;
      if (e instanceof HttpError && [400, 413, 415, 507].includes(e.status) && this.offset === 0) {
        // Refused outright: nothing to resume.
        forget(this.fp);
      }
      // Retrying helps after a lost connection, a new token or freed space; not when refused outright.
      this.retryable = !(e instanceof HttpError && [400, 413, 415].includes(e.status));
      this.heartbeat(true);
      this.setState("error");
      this.showError(message);
      announce(`${this.label}: ${message}`);
      if (this.batch) this.batch.failedOne();
    }
  }

  async function terminate(url) {
    for (let i = 0; i < 5; i += 1) {
      try {
        const res = await request(url, { method: "DELETE", headers: { ...TUS } });
        if (res.ok || res.status === 404 || res.status === 410) return true;
        if (res.status !== 423 && res.status !== 409 && res.status !== 503) return false;
      } catch {
        // unreachable: try again shortly
      }
      await sleep(300 * (i + 1));
    }
    return false;
  }

  const FINISHED = ["done", "cancelled", "error", "skipped"];
  const weight = (u) => (u.file.size < CHUNK_SIZE ? 1 : BIG_WEIGHT);

  /** Starts waiting uploads while slots are free: six small files at once, or two big ones. */
  function pump() {
    let used = 0;
    for (const u of uploads) if (u.state === "uploading") used += weight(u);
    for (const u of uploads) {
      if (used >= SLOTS) break;
      // A big file waits for room; small ones behind it may go first.
      if (u.state === "queued" && used + weight(u) <= SLOTS) {
        used += weight(u);
        u.run().finally(pump);
      }
    }
  }

  function normalisePrefix(raw) {
    return raw
      .trim()
      .split("/")
      .filter((s) => s !== "")
      .join("/");
  }

  // ------------------------------------------------------- folders, batches

  /**
   * The files of one drop or one choice: a folder's (or several files'), with
   * one overall bar above a bar per file.
   */
  class Batch {
    constructor(label, target) {
      this.label = label;
      this.uploads = [];
      this.samples = [];
      this.announced = false;
      this.timer = 0;
      const li = $("batch-template").content.firstElementChild.cloneNode(true);
      li.id = `b${++counter}`;
      li.querySelector(".batch-name").textContent = label;
      li.querySelector(".batch-key").textContent = target ? `→ ${target}` : "";
      const bar = li.querySelector(".batch-bar");
      bar.setAttribute("aria-label", `Upload of ${label}, overall`);
      const status = li.querySelector(".batch-status");
      status.id = `${li.id}-status`;
      bar.setAttribute("aria-describedby", status.id);
      li.querySelector(".batch-pause").addEventListener("click", () => {
        for (const u of this.uploads) u.pause(false);
        li.querySelector(".batch-resume").focus();
      });
      li.querySelector(".batch-resume").addEventListener("click", () => {
        for (const u of this.uploads) if (u.state === "paused" || (u.state === "error" && u.retryable)) u.resume(false);
        li.querySelector(".batch-pause").focus();
      });
      li.querySelector(".batch-cancel").addEventListener("click", async () => {
        await Promise.all(this.uploads.map((u) => u.cancel(false)));
        announce(`Cancelled ${label}`);
        li.querySelector(".batch-dismiss").focus();
      });
      li.querySelector(".batch-dismiss").addEventListener("click", () => this.dismiss());
      for (const b of li.querySelectorAll(".up-buttons button")) {
        b.setAttribute("aria-label", `${b.textContent} of ${label}`);
      }
      this.el = li;
    }

    add(upload) {
      upload.batch = this;
      this.uploads.push(upload);
      this.el.querySelector(".batch-list").append(upload.el);
    }

    /** A file of the batch changed: repaint soon (many files report many times a second). */
    changed() {
      if (this.timer) return;
      this.timer = setTimeout(() => {
        this.timer = 0;
        this.paint();
      }, 100);
    }

    failedOne() {
      // A failure is worth seeing: show the files.
      this.el.querySelector(".batch-files").open = true;
    }

    forget(upload) {
      const i = this.uploads.indexOf(upload);
      if (i >= 0) this.uploads.splice(i, 1);
      if (this.uploads.length === 0) this.el.remove();
      else this.paint();
    }

    dismiss() {
      for (const u of this.uploads) {
        const i = uploads.indexOf(u);
        if (i >= 0) uploads.splice(i, 1);
      }
      const next = this.el.nextElementSibling || this.el.previousElementSibling;
      this.el.remove();
      const target = next && next.querySelector("button:not([hidden])");
      (target || $("choose")).focus();
    }

    paint() {
      const count = (...states) => this.uploads.filter((u) => states.includes(u.state)).length;
      const n = this.uploads.length;
      const done = count("done");
      const failed = count("error");
      const skipped = count("skipped");
      const cancelled = count("cancelled");
      const active = count("queued", "uploading");
      const paused = count("paused");
      const checking = count("checking");
      let total = 0;
      let sent = 0;
      for (const u of this.uploads) {
        const size = u.counted();
        total += size;
        sent += size === 0 ? 0 : u.state === "done" ? size : Math.min(u.sent, size);
      }
      const now = performance.now();
      this.samples.push([now, sent]);
      while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
      let state;
      if (checking) state = "checking";
      else if (active) state = "uploading";
      else if (paused) state = "paused";
      else if (failed) state = "error";
      else if (done === 0 && cancelled > 0) state = "cancelled";
      else state = "done";
      this.el.dataset.state = state;
      const bar = this.el.querySelector(".batch-bar");
      const toSend = n - skipped - cancelled;
      bar.value = total === 0 ? (state === "done" ? 100 : 0) : Math.min(100, Math.floor((sent / total) * 1000) / 10);
      const files = (k) => `${k} file${k === 1 ? "" : "s"}`;
      const parts = [];
      if (state === "checking") parts.push(`Checking ${files(n)} against the catalog`);
      else if (state === "done" || state === "error" || state === "cancelled") {
        parts.push(`${files(done)} uploaded`, humanBytes(sent));
        if (this.startedAt && done > 0) parts.push(`in ${humanDuration((now - this.startedAt) / 1000)}`);
      } else {
        if (!this.startedAt) this.startedAt = now;
        parts.push(`${done} of ${files(toSend)}`, `${humanBytes(sent)} of ${humanBytes(total)}`);
        const [t0, b0] = this.samples[0];
        const rate = now - t0 >= 250 ? ((sent - b0) * 1000) / (now - t0) : 0;
        if (state === "uploading" && rate > 0) parts.push(`${humanBytes(rate)}/s`, `${humanDuration((total - sent) / rate)} left`);
        if (state === "paused") parts.push("paused");
      }
      if (skipped) parts.push(`${skipped} kept as they were`);
      if (cancelled) parts.push(`${cancelled} cancelled`);
      if (failed) parts.push(`${failed} failed`);
      const status = this.el.querySelector(".batch-status");
      status.replaceChildren();
      parts.forEach((part, i) => {
        if (i > 0) status.append(" · ");
        const span = document.createElement("span");
        span.className = "part";
        span.textContent = part;
        status.append(span);
      });
      this.el.querySelector(".batch-summary").textContent = `Files (${n})`;
      const q = (sel) => this.el.querySelector(sel);
      q(".batch-pause").hidden = !active;
      q(".batch-resume").hidden = !(paused || this.uploads.some((u) => u.state === "error" && u.retryable));
      q(".batch-resume").textContent = paused ? "Resume all" : "Retry failed";
      q(".batch-resume").setAttribute("aria-label", `${q(".batch-resume").textContent} of ${this.label}`);
      q(".batch-cancel").hidden = !(active || paused);
      q(".batch-dismiss").hidden = !(state === "done" || state === "error" || state === "cancelled");
      if ((state === "done" || state === "error") && !this.announced) {
        this.announced = true;
        announce(`${this.label}: ${parts.join(", ")}`);
      }
      if (state === "uploading" || state === "paused") this.announced = false;
    }
  }

  /**
   * Every file under what was dropped: a folder is walked (webkitGetAsEntry),
   * its files keyed by their path from the drop (the folder's name first).
   * `taken` must come from the drop event itself: the browser empties the
   * DataTransfer once the event handler returns.
   */
  async function walkDrop(taken) {
    const found = [];
    const unreadable = [];
    const fileOf = (entry) => new Promise((resolve, reject) => entry.file(resolve, reject));
    const readAll = async (dir) => {
      const reader = dir.createReader();
      const out = [];
      // readEntries answers in batches (100 at a time in Chromium) until an empty one.
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) return out;
        out.push(...batch);
      }
    };
    const walk = async (entry) => {
      const rel = entry.fullPath.replace(/^\/+/, "");
      if (entry.isFile) {
        try {
          found.push({ file: await fileOf(entry), rel });
        } catch {
          unreadable.push(rel);
        }
        return;
      }
      let children;
      try {
        children = await readAll(entry);
      } catch {
        unreadable.push(`${rel}/`);
        return;
      }
      await Promise.all(children.map(walk));
    };
    const folders = [];
    for (const { entry, file } of taken) {
      if (entry && entry.isDirectory) {
        folders.push(entry.name);
        await walk(entry);
      } else if (file) {
        found.push({ file, rel: null });
      }
    }
    return { found, unreadable, folders };
  }

  /** What a drop or a choice holds, in words: `shards/`, `2 folders, 1 file`, `3 files`. */
  function describeFiles(found, folders) {
    const loose = found.filter((f) => !f.rel).length;
    const words = [];
    if (folders.length === 1 && loose === 0) return `${folders[0]}/`;
    if (folders.length) words.push(`${folders.length} folder${folders.length === 1 ? "" : "s"}`);
    if (loose) words.push(`${loose} file${loose === 1 ? "" : "s"}`);
    return words.join(", ");
  }

  /** `found`: [{file, rel}], rel the path from a dropped or chosen folder, or null for a file on its own. */
  async function addFiles(found, folders = []) {
    if (found.length === 0) {
      if (folders.length) toast(`No files in ${folders.join(", ")}`, "warn");
      return;
    }
    const prefix = normalisePrefix($("key-prefix").value);
    const single = found.length === 1 && !found[0].rel;
    const name = single ? $("display-name").value.trim() : "";
    if (name) $("display-name").value = ""; // it named this file; the next one keeps its own
    const fresh = [];
    for (const { file, rel } of found.sort((a, b) => byteOrder(a.rel || a.file.name, b.rel || b.file.name))) {
      const fp = fingerprint(file, rel);
      const same = uploads.find((u) => u.fp === fp && !FINISHED.includes(u.state));
      if (same) {
        if (same.state === "paused") same.resume();
        else toast(`${rel || file.name} is already being uploaded`);
        continue;
      }
      const key = [prefix, rel || file.name].filter(Boolean).join("/");
      fresh.push(new Upload(file, key, name, rel));
    }
    if (fresh.length === 0) return;
    let batch = null;
    if (fresh.length > 1 || folders.length) {
      const target = folders.length === 1 && fresh.every((u) => u.rel) ? [prefix, folders[0]].filter(Boolean).join("/") : prefix;
      batch = new Batch(describeFiles(found, folders), target ? `${target}/` : "");
      for (const u of fresh) batch.add(u);
      // A few files are shown at once; a folder's many files fold away under the overall bar.
      batch.el.querySelector(".batch-files").open = fresh.length <= 8;
      $("uploads").prepend(batch.el);
    } else {
      $("uploads").prepend(fresh[0].el); // the latest on top
    }
    for (const u of fresh) {
      uploads.push(u);
      u.setState("checking");
    }

    // Ask before replacing: the page looks the keys up first. A key found
    // free is uploaded create-only (If-None-Match: *), so a dataset created
    // there between this look-up and the commit is never replaced (412).
    let choice = "replace";
    let existing = new Map();
    let looked = false;
    try {
      existing = await existingKeys(fresh.map((u) => u.key));
      looked = true;
      if (existing.size > 0) choice = await askReplace(fresh, existing, null);
    } catch (e) {
      choice = await askReplace(fresh, existing, e);
    }
    if (looked) for (const u of fresh) u.createOnly = !existing.has(u.key);
    if (choice === "cancel") {
      for (const u of fresh) {
        const i = uploads.indexOf(u);
        if (i >= 0) uploads.splice(i, 1);
      }
      (batch ? batch.el : fresh[0].el).remove();
      const kept = existing.size;
      toast(kept ? `Nothing uploaded: kept ${kept === 1 ? [...existing.keys()][0] : `${kept} existing datasets`}` : "Upload cancelled");
      return;
    }
    for (const u of fresh) {
      if (choice === "skip" && existing.has(u.key)) u.setState("skipped");
      else u.setState("queued");
    }
    if (batch) batch.paint();
    pump();
  }

  /** The records already at these keys (a Map key -> record). */
  async function existingKeys(keys) {
    const wanted = new Set(keys);
    const found = new Map();
    const unsure = [];
    // Many keys under one folder: list that prefix (in key order) rather than ask key by key.
    const dir = commonFolder(keys);
    if (keys.length > 8 && dir) {
      let url = `/datasets?limit=1000&prefix=${encodeURIComponent(dir)}`;
      let last = null;
      // Bounded: a prefix with far more datasets than files to send is looked up key by key past this.
      for (let pages = 0; url && pages < Math.max(5, Math.ceil(keys.length / 500)); pages += 1) {
        const res = await request(url, { headers: { Accept: "application/json" }, cache: "no-store" });
        if (!res.ok) throw await errorFromResponse(res);
        const records = await res.json();
        for (const r of records) if (wanted.has(r.key)) found.set(r.key, r);
        if (records.length) last = records[records.length - 1].key;
        url = records.length ? nextLink(res.headers.get("Link")) : null;
      }
      // Listed up to `last`: only keys after it are still open.
      if (url) for (const k of keys) if (!found.has(k) && last !== null && byteOrder(k, last) > 0) unsure.push(k);
    } else {
      unsure.push(...keys);
    }
    let next = 0;
    const worker = async () => {
      while (next < unsure.length) {
        const key = unsure[next++];
        // A listing from the key itself (it sorts first under its own prefix):
        // a new key answers 200 [], not a 404 that the console would log.
        const url = `/datasets?limit=1&prefix=${encodeURIComponent(key)}`;
        const res = await request(url, { headers: { Accept: "application/json" }, cache: "no-store" });
        if (!res.ok) throw await errorFromResponse(res);
        const [first] = await res.json();
        if (first && first.key === key) found.set(key, first);
      }
    };
    await Promise.all(Array.from({ length: Math.min(CHECK_PARALLEL, unsure.length) }, worker));
    return found;
  }

  /** The folder (ending in `/`) every key is under, or "". */
  function commonFolder(keys) {
    let common = keys[0].slice(0, keys[0].lastIndexOf("/") + 1);
    for (const k of keys) {
      while (common && !k.startsWith(common)) common = common.slice(0, common.lastIndexOf("/", common.length - 2) + 1);
    }
    return common;
  }

  let asking = Promise.resolve(); // one question at a time

  /**
   * Asks, in the page's own dialog, whether to replace the datasets at these
   * keys: "replace", "skip" (send only the new files) or "cancel". One question
   * for all of a folder. With `failure`, the look-up failed: upload anyway?
   */
  function askReplace(fresh, existing, failure) {
    const question = asking.then(
      () =>
        new Promise((resolve) => {
          const dialog = $("replace-dialog");
          const conflicts = fresh.filter((u) => existing.has(u.key));
          const fresher = fresh.length - conflicts.length;
          const listEl = $("replace-list");
          listEl.replaceChildren();
          const skip = $("replace-skip");
          const confirm = $("replace-confirm");
          const cancel = $("replace-cancel");
          if (failure) {
            $("replace-title").textContent = "Could not check for existing datasets";
            $("replace-text").textContent = `${failure.message}. Upload anyway? A file whose key already holds a dataset replaces it.`;
            confirm.textContent = "Upload anyway";
            skip.hidden = true;
          } else {
            const many = conflicts.length > 1;
            $("replace-title").textContent = many ? `Replace ${conflicts.length} datasets?` : "Replace a dataset?";
            $("replace-text").textContent = many
              ? `${conflicts.length} of the ${fresh.length} files would replace datasets already on the node:`
              : `${conflicts[0].key} already holds a dataset:`;
            const shown = conflicts.slice(0, 8);
            for (const u of shown) {
              const r = existing.get(u.key);
              const li = document.createElement("li");
              const code = document.createElement("code");
              code.textContent = u.key;
              const what = document.createElement("span");
              what.className = "replace-what";
              what.textContent = `on the node: ${humanBytes(r.size)}, ${humanDate(r.created_at)} · new: ${humanBytes(u.file.size)}, ${u.label}`;
              li.append(code, what);
              listEl.append(li);
            }
            if (conflicts.length > shown.length) {
              const li = document.createElement("li");
              li.textContent = `and ${conflicts.length - shown.length} more`;
              listEl.append(li);
            }
            confirm.textContent = many ? `Replace ${conflicts.length}` : "Replace";
            skip.textContent = `Upload only the ${fresher} new file${fresher === 1 ? "" : "s"}`;
            // Keeping the existing ones is the same as cancelling when every file has one.
            skip.hidden = fresher === 0;
            cancel.textContent = fresher === 0 ? (many ? "Keep them" : "Keep it") : "Cancel upload";
          }
          const focused = document.activeElement;
          dialog.returnValue = "";
          dialog.addEventListener(
            "close",
            () => {
              if (focused && focused.isConnected && focused.focus) focused.focus();
              else $("choose").focus();
              resolve(["replace", "skip"].includes(dialog.returnValue) ? dialog.returnValue : "cancel");
            },
            { once: true }
          );
          dialog.showModal();
          // The safe answer has the focus, as Enter may follow out of habit.
          (skip.hidden ? cancel : skip).focus();
        })
    );
    asking = question.catch(() => {});
    return question;
  }

  function initUploads() {
    const input = $("file-input");
    $("choose").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      addFiles(Array.from(input.files || [], (file) => ({ file, rel: null })));
      input.value = "";
    });
    const folderInput = $("folder-input");
    if ("webkitdirectory" in folderInput) {
      $("choose-folder").addEventListener("click", () => folderInput.click());
      folderInput.addEventListener("change", () => {
        // Each file's webkitRelativePath starts with the chosen folder's name.
        const found = Array.from(folderInput.files || [], (file) => ({ file, rel: file.webkitRelativePath || null }));
        const folders = [...new Set(found.filter((f) => f.rel).map((f) => f.rel.split("/")[0]))];
        addFiles(found, folders);
        folderInput.value = "";
      });
    } else {
      $("choose-folder").hidden = true; // no folder picker here (dropping a folder may still work)
    }

    const zone = $("dropzone");
    const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
    let depth = 0;
    zone.addEventListener("dragenter", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth += 1;
      zone.classList.add("over");
    });
    zone.addEventListener("dragover", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) zone.classList.remove("over");
    });
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      depth = 0;
      zone.classList.remove("over");
      const items = Array.from(e.dataTransfer.items || []).filter((i) => i.kind === "file");
      if (items.length === 0) {
        addFiles(Array.from(e.dataTransfer.files || [], (file) => ({ file, rel: null })));
        return;
      }
      // Now, inside the event: the items are gone once it returns.
      const taken = items.map((i) => ({ entry: i.webkitGetAsEntry ? i.webkitGetAsEntry() : null, file: i.getAsFile() }));
      walkDrop(taken).then(({ found, unreadable, folders }) => {
        if (unreadable.length) {
          const some = unreadable.slice(0, 3).join(", ");
          toast(`Could not read ${unreadable.length} item${unreadable.length === 1 ? "" : "s"}: ${some}${unreadable.length > 3 ? ", …" : ""}`, "error");
        }
        addFiles(found, folders);
      });
    });
    // A file dropped next to the zone must not replace the page.
    window.addEventListener("dragover", (e) => {
      if (hasFiles(e)) e.preventDefault();
    });
    window.addEventListener("drop", (e) => {
      if (hasFiles(e)) e.preventDefault();
    });

    const example = () => {
      const prefix = normalisePrefix($("key-prefix").value);
      $("key-example").textContent = prefix ? `${prefix}/‹file name›` : "‹file name›";
      $("key-example-folder").textContent = prefix ? `${prefix}/‹folder›/‹path in it›` : "‹folder›/‹path in it›";
    };
    $("key-prefix").addEventListener("input", example);
    example();
    refreshPending();
  }

  // ------------------------------------------------ unfinished, from before

  function removePending(fp) {
    for (const li of $("pending-list").children) {
      if (li.dataset.fp === fp) li.remove();
    }
    $("pending").hidden = $("pending-list").children.length === 0;
  }

  /** Lists uploads a previous visit left unfinished, with how far they got. */
  async function refreshPending() {
    const active = new Set(uploads.map((u) => u.fp));
    const entries = savedUploads().filter((s) => !active.has(s.fp));
    const ul = $("pending-list");
    ul.replaceChildren();
    for (const saved of entries) {
      const li = document.createElement("li");
      li.dataset.fp = saved.fp;
      const text = document.createElement("span");
      text.className = "pending-text";
      const name = document.createElement("strong");
      name.textContent = saved.name || saved.key;
      const detail = document.createElement("span");
      detail.className = "pending-detail";
      detail.textContent = `→ ${saved.key} · ${humanBytes(saved.size)}`;
      text.append(name, detail);
      const discard = document.createElement("button");
      discard.type = "button";
      discard.className = "btn btn-small btn-quiet";
      discard.textContent = "Discard";
      discard.setAttribute("aria-label", `Discard the unfinished upload of ${saved.name || saved.key}`);
      discard.addEventListener("click", async () => {
        discard.disabled = true;
        forget(saved.fp);
        await terminate(saved.url);
        removePending(saved.fp);
        toast(`Discarded ${saved.name || saved.key}`);
      });
      li.append(text, discard);
      ul.appendChild(li);
      if (busyElsewhere(saved)) {
        detail.textContent = `→ ${saved.key} · being uploaded in another tab`;
        discard.hidden = true;
        continue;
      }
      headUpload(saved.url).then(
        (info) => {
          if (info.location) {
            // It finished after all: nothing to resume.
            forget(saved.fp);
            removePending(saved.fp);
            return;
          }
          const pct = saved.size > 0 ? Math.floor((info.offset / saved.size) * 100) : 0;
          detail.textContent = `→ ${saved.key} · ${humanBytes(info.offset)} of ${humanBytes(saved.size)} (${pct}%) sent`;
        },
        (e) => {
          if (e instanceof HttpError && (e.status === 404 || e.status === 410)) {
            forget(saved.fp);
            removePending(saved.fp);
          }
        }
      );
    }
    $("pending").hidden = ul.children.length === 0;
  }

  // Leaving or reloading the page: the uploads stop here, so another tab
  // (or this one, reloaded) may pick them up at once.
  window.addEventListener("pagehide", () => {
    for (const u of uploads) if (u.state === "uploading") u.heartbeat(true);
  });

  // ------------------------------------------------------------------ start

  initAuth();
  initCatalog();
  initUploads();
})();
