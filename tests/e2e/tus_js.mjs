#!/usr/bin/env node
// End-to-end tests of Spillway's tus server with the real tus-js-client
// (its Node.js build: fs.ReadStream input, Node's http stack). Run by
// scripts/e2e.sh, each scenario against a fresh node:
//
//   node tus_js.mjs resume   --base URL --work DIR --data-dir DIR [--size-mib 100] [--chunk-mib 5]
//   node tus_js.mjs parallel --base URL --work DIR --data-dir DIR [--size-mib 100] [--chunk-mib 5]
//   node tus_js.mjs restart  --base URL --work DIR --data-dir DIR [--size-mib 100] [--chunk-mib 5]
//   node tus_js.mjs cluster  --bases URL,URL[,...] --work DIR [--size-mib 24] [--chunk-mib 3]
//
// resume:   upload.abort() in the middle of a PATCH; a new Upload of the same
//           file finds it with findPreviousUploads() (FileUrlStorage) and
//           resumeFromPreviousUpload(), resumes at the server's offset and
//           finishes; blake3 via GET /datasets/{key}, bytes via GET /data/{key}.
//           Then termination: abort(true) sends DELETE; the bytes are gone.
// parallel: parallelUploads: 4, i.e. 4 partial uploads and a final
//           concatenation; blake3 and bytes as above; the partials are gone.
//           Then a parallel upload aborted at ~40% and resumed by a new
//           Upload from the URL storage (each part resumed with HEAD).
// restart:  the runner (scripts/e2e.sh) SIGKILLs the node while this client
//           uploads and restarts it on the same port and data dir; the
//           client's own retries resume and finish. Protocol with the runner,
//           one line each on stdout: `URL <upload url>` once, `SEND <offset>`
//           when a PATCH from <offset> starts, `ACK <offset>` on each 204.
//           The runner kills the node after a SEND at >= 4 chunks.
// cluster:  (run by scripts/e2e-cluster.sh, against nodes sharing one S3
//           bucket and one PostgreSQL index) tus-js-client talks to a
//           round-robin proxy in this script that sends every request to the
//           next node, with no affinity (each request on its own connection,
//           `Connection: close` added), and retries are off. An upload
//           aborted mid-PATCH and resumed by a new Upload (its HEAD on
//           another node); parallelUploads: 3 (partials made on different
//           nodes, concatenated on another); abort(true) (the DELETE on
//           another node). Every dataset is checked on every node directly.
//
// The tus protocol is spoken by tus-js-client only; the checks use fetch and
// hash-wasm's blake3. Options used are tus-js-client's documented ones; the
// only pacing is an `onBeforeRequest` delay before PATCHes, so that an abort
// or a kill lands mid-upload. Every wait is bounded. Exit 0: all checks passed.

import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { parseArgs } from 'node:util'

import { createBLAKE3 } from 'hash-wasm'
import { FileUrlStorage, Upload } from 'tus-js-client'

const MiB = 1 << 20

class Failure extends Error {}

function check(cond, msg) {
  if (!cond) throw new Failure(msg)
}

const say = (msg) => process.stdout.write(`${msg}\n`)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function withTimeout(promise, ms, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what}: no result within ${ms / 1000}s`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// ----------------------------------------------------------------- helpers --

async function generate(file, size, tag) {
  const h = await createBLAKE3()
  h.init()
  const fd = fs.openSync(file, 'w')
  try {
    let left = size
    let first = true
    while (left > 0) {
      const buf = crypto.randomBytes(Math.min(MiB, left))
      if (first) {
        // A distinct first block per file, whatever the random source does.
        crypto.createHash('sha256').update(tag).digest().copy(buf)
        first = false
      }
      fs.writeSync(fd, buf)
      h.update(buf)
      left -= buf.length
    }
  } finally {
    fs.closeSync(fd)
  }
  return h.digest('hex')
}

const quoteKey = (key) => key.split('/').map(encodeURIComponent).join('/')

async function tusHead(url) {
  const res = await fetch(url, {
    method: 'HEAD',
    headers: { 'Tus-Resumable': '1.0.0' },
    signal: AbortSignal.timeout(30000),
  })
  return res
}

async function headOffset(url) {
  const res = await tusHead(url)
  check(res.status === 200, `HEAD ${url}: ${res.status}, expected 200`)
  return Number(res.headers.get('upload-offset'))
}

async function verifyDataset(base, key, file, size, digest, meta) {
  let res = await fetch(`${base}/datasets/${quoteKey(key)}`, { signal: AbortSignal.timeout(30000) })
  if (res.status !== 200) throw new Failure(`GET /datasets/${key}: ${res.status} ${(await res.text()).slice(0, 300)}`)
  const rec = await res.json()
  check(rec.key === key, `record key ${rec.key}, expected ${key}`)
  check(rec.size === size, `record size ${rec.size}, expected ${size}`)
  check(rec.blake3 === digest, `record blake3 ${rec.blake3}, expected ${digest}`)
  for (const [field, want] of Object.entries(meta)) {
    check(rec[field] === want, `record ${field} ${JSON.stringify(rec[field])}, expected ${JSON.stringify(want)}`)
  }
  say(
    `  ok: GET /datasets/${key}: size ${size}, blake3 ${digest.slice(0, 16)}...` +
      Object.entries(meta)
        .map(([k, v]) => `, ${k}=${JSON.stringify(v)}`)
        .join(''),
  )

  res = await fetch(`${base}/data/${quoteKey(key)}`, { signal: AbortSignal.timeout(120000) })
  check(res.status === 200, `GET /data/${key}: ${res.status}`)
  check(res.headers.get('etag') === `"${digest}"`, `GET /data/${key}: ETag ${res.headers.get('etag')}`)
  check(
    Number(res.headers.get('content-length')) === size,
    `GET /data/${key}: Content-Length ${res.headers.get('content-length')}`,
  )
  const h = await createBLAKE3()
  h.init()
  const fd = fs.openSync(file, 'r')
  let got = 0
  try {
    for await (const chunk of res.body) {
      const want = Buffer.alloc(chunk.length)
      const n = fs.readSync(fd, want, 0, chunk.length, got)
      check(n === chunk.length && Buffer.compare(want, chunk) === 0, `GET /data/${key}: bytes differ near offset ${got}`)
      h.update(chunk)
      got += chunk.length
    }
  } finally {
    fs.closeSync(fd)
  }
  check(got === size, `GET /data/${key}: ${got} bytes, expected ${size}`)
  check(h.digest('hex') === digest, `GET /data/${key}: blake3 of the download differs`)
  say(`  ok: GET /data/${key}: ${got} bytes, byte-identical to the source`)
}

function uploadsDirFiles(dataDir) {
  const dir = path.join(dataDir, 'uploads')
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []
}

// Options shared by every Upload here, and a log of its HTTP exchanges.
function commonOptions(args, log, { metadata, paceMs = 0, onPatch = null }) {
  return {
    endpoint: `${args.base}/uploads`,
    chunkSize: args.chunkMiB * MiB,
    metadata,
    retryDelays: [0, 250, 500, 1000, 1000, 2000, 2000, 3000, 5000],
    onBeforeRequest: async (req) => {
      if (req.getMethod() === 'PATCH') {
        if (paceMs) await sleep(paceMs)
        if (onPatch) onPatch(req)
      }
      log.push({ dir: '>', method: req.getMethod(), url: req.getURL(), concat: req.getHeader('Upload-Concat') })
    },
    onAfterResponse: (req, res) => {
      log.push({
        dir: '<',
        method: req.getMethod(),
        url: req.getURL(),
        status: res.getStatus(),
        offset: res.getHeader('Upload-Offset'),
      })
    },
    onShouldRetry: (err, attempt) => {
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0
      const retry = status < 400 || status >= 500 || status === 409 || status === 423
      const cause = err.causingError ? String(err.causingError.code || err.causingError.message) : `HTTP ${status}`
      log.push({ dir: '!', retry, attempt, status, cause })
      say(`RETRY ${attempt} ${cause}${retry ? '' : ' (giving up)'}`)
      return retry
    },
  }
}

function runUpload(upload, ms, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      upload.options.onSuccess = resolve
      upload.options.onError = reject
      upload.start()
    }),
    ms,
    what,
  )
}

// --------------------------------------------------------------- scenarios --

async function scenarioResume(args) {
  const size = args.sizeMiB * MiB
  const chunk = args.chunkMiB * MiB
  const key = 'e2e/tus-js-client/resume.bin'
  const meta = { key, name: 'tus-js-client resume', description: 'aborted and resumed', filetype: 'application/x-e2e' }
  const file = path.join(args.work, 'js-resume.bin')
  const digest = await generate(file, size, 'js-resume')
  say(`  generated ${args.sizeMiB} MiB, blake3 ${digest.slice(0, 16)}...`)
  const storagePath = path.join(args.work, 'tus-js-urls.json')

  // Upload 1: aborted in the middle of the PATCH that crosses 40% + 2 MiB.
  const abortAt = Math.floor(size * 0.4) + 2 * MiB
  const log1 = []
  let lastAck = 0
  let sentAtAbort = null
  const up1 = new Upload(fs.createReadStream(file), {
    ...commonOptions(args, log1, { metadata: meta, paceMs: 100 }),
    urlStorage: new FileUrlStorage(storagePath),
    onChunkComplete: (_n, accepted) => {
      lastAck = accepted
    },
  })
  const aborted = new Promise((resolve, reject) => {
    up1.options.onProgress = (sent) => {
      // Progress at a chunk boundary is reported before the PATCH is sent;
      // progress inside a chunk comes from its body on the way: abort then,
      // so that the PATCH breaks off.
      if (sentAtAbort === null && sent >= abortAt && sent % chunk !== 0) {
        sentAtAbort = sent
        up1.abort().then(resolve, reject)
      }
    }
    up1.options.onSuccess = () => reject(new Failure('upload 1 finished before it was aborted'))
    up1.options.onError = reject
  })
  up1.start()
  await withTimeout(aborted, 120000, 'upload 1 (until the abort)')
  const url = up1.url
  check(url && url.startsWith(`${args.base}/uploads/`), `upload URL ${url}`)
  await sleep(300) // the server notices the dropped connection and keeps what arrived
  const serverOffset = await headOffset(url)
  check(serverOffset >= lastAck, `server offset ${serverOffset} after abort is below the last 204 (${lastAck})`)
  check(serverOffset < size, `server offset ${serverOffset}: complete already`)
  say(
    `  upload 1 aborted at ~${sentAtAbort} bytes sent (last 204 at ${lastAck}); ` +
      `HEAD offset ${serverOffset}${serverOffset % chunk ? ' (mid-chunk: the partial PATCH was kept)' : ''}`,
  )

  // Upload 2: a new Upload of the same file finds the previous one.
  const log2 = []
  const up2 = new Upload(fs.createReadStream(file), {
    ...commonOptions(args, log2, { metadata: meta }),
    urlStorage: new FileUrlStorage(storagePath),
  })
  const previous = await withTimeout(up2.findPreviousUploads(), 10000, 'findPreviousUploads')
  check(previous.length === 1, `findPreviousUploads found ${previous.length} uploads`)
  check(previous[0].uploadUrl === url, `findPreviousUploads: ${previous[0].uploadUrl}, expected ${url}`)
  up2.resumeFromPreviousUpload(previous[0])
  await runUpload(up2, 180000, 'upload 2')
  check(up2.url === url, `upload 2 finished ${up2.url}, expected ${url}`)
  check(!log2.some((e) => e.method === 'POST'), 'upload 2 created a new upload instead of resuming')
  const firstHead = log2.find((e) => e.dir === '<' && e.method === 'HEAD')
  check(firstHead && firstHead.status === 200, 'upload 2 did not start with a HEAD')
  // A 409 retry is allowed if the HEAD raced the server's handling of the
  // aborted PATCH; the resumed offset is the one the first PATCH used.
  say(
    `  upload 2 (findPreviousUploads + resumeFromPreviousUpload) resumed ${url} at HEAD offset ${firstHead.offset}; ` +
      `${log2.filter((e) => e.dir === '>' && e.method === 'PATCH').length} PATCHes; ` +
      `retries: ${log2.filter((e) => e.dir === '!').length}`,
  )
  check(Number(firstHead.offset) === serverOffset, `upload 2 resumed at ${firstHead.offset}, expected ${serverOffset}`)

  const res = await tusHead(url)
  check(Number(res.headers.get('upload-offset')) === size, `HEAD after completion: offset ${res.headers.get('upload-offset')}`)
  check(res.headers.get('etag') === `"${digest}"`, `HEAD after completion: ETag ${res.headers.get('etag')}`)
  say('  ok: HEAD after completion: offset = size, ETag = blake3')
  await verifyDataset(args.base, key, file, size, digest, {
    name: meta.name,
    description: meta.description,
    content_type: meta.filetype,
  })
  check(uploadsDirFiles(args.dataDir).length === 0, `left under uploads/: ${uploadsDirFiles(args.dataDir)}`)
  say('  ok: nothing left under <data-dir>/uploads/')
  fs.rmSync(file)

  // Termination: abort(true) after the first chunk sends DELETE; a Buffer input.
  const tkey = 'e2e/tus-js-client/terminated.bin'
  const log3 = []
  const buf = crypto.randomBytes(3 * chunk)
  const up3 = new Upload(buf, { ...commonOptions(args, log3, { metadata: { key: tkey } }) })
  const terminated = new Promise((resolve, reject) => {
    up3.options.onChunkComplete = () => up3.abort(true).then(resolve, reject)
    up3.options.onSuccess = () => reject(new Failure('upload 3 finished before it was terminated'))
    up3.options.onError = reject
  })
  up3.start()
  await withTimeout(terminated, 60000, 'upload 3 (until abort(true))')
  const del = log3.find((e) => e.dir === '<' && e.method === 'DELETE')
  check(del && del.status === 204, `abort(true): DELETE answered ${del && del.status}, expected 204`)
  const head3 = await tusHead(up3.url)
  check([404, 410].includes(head3.status), `HEAD after DELETE: ${head3.status}, expected 404 or 410`)
  const left3 = uploadsDirFiles(args.dataDir)
  check(left3.length === 0, `the terminated upload's bytes are still under uploads/: ${left3}`)
  const ds3 = await fetch(`${args.base}/datasets/${quoteKey(tkey)}`, { signal: AbortSignal.timeout(30000) })
  check(ds3.status === 404, `GET /datasets/${tkey}: ${ds3.status}, expected 404`)
  say(`  ok: abort(true) after 1 of 3 chunks (Buffer input): DELETE 204, then HEAD ${head3.status}, bytes gone, no dataset`)
}

async function scenarioParallel(args) {
  const size = args.sizeMiB * MiB + 777 // not a multiple of 4 or of the chunk size
  const key = 'e2e/tus-js-client/parallel.bin'
  const meta = { key, name: 'tus-js-client parallel', filetype: 'application/x-e2e' }
  const file = path.join(args.work, 'js-parallel.bin')
  const digest = await generate(file, size, 'js-parallel')
  say(`  generated ${size} bytes, blake3 ${digest.slice(0, 16)}...`)
  const log = []
  const up = new Upload(fs.createReadStream(file), {
    ...commonOptions(args, log, { metadata: meta }),
    parallelUploads: 4,
  })
  await runUpload(up, 180000, 'parallel upload')
  const posts = log.filter((e) => e.dir === '>' && e.method === 'POST')
  const partials = posts.filter((e) => e.concat === 'partial')
  const finals = posts.filter((e) => (e.concat || '').startsWith('final;'))
  check(partials.length === 4, `${partials.length} partial creations, expected 4`)
  check(finals.length === 1, `${finals.length} final creations, expected 1`)
  const patches = log.filter((e) => e.dir === '>' && e.method === 'PATCH').length
  const finalResp = log.filter((e) => e.dir === '<' && e.method === 'POST').at(-1)
  check(finalResp.status === 201, `final POST: ${finalResp.status}`)
  say(`  ok: 4 POSTs with Upload-Concat: partial, ${patches} PATCHes, then POST ${finals[0].concat.slice(0, 40)}... -> 201`)
  const res = await tusHead(up.url)
  check(res.status === 200, `HEAD of the final upload: ${res.status}`)
  check(res.headers.get('upload-concat') === 'final', `HEAD: Upload-Concat ${res.headers.get('upload-concat')}`)
  check(Number(res.headers.get('upload-offset')) === size, `HEAD: Upload-Offset ${res.headers.get('upload-offset')}`)
  check(res.headers.get('etag') === `"${digest}"`, `HEAD: ETag ${res.headers.get('etag')}`)
  say(`  ok: HEAD ${up.url}: Upload-Concat final, offset ${size}, ETag = blake3`)
  await verifyDataset(args.base, key, file, size, digest, { name: meta.name, content_type: meta.filetype })
  const left = uploadsDirFiles(args.dataDir)
  check(left.length === 0, `the partial uploads' bytes are still under uploads/: ${left}`)
  say('  ok: the partial uploads are gone from <data-dir>/uploads/')
  fs.rmSync(file)

  // A parallel upload aborted at ~40% and resumed by a new Upload from the
  // URL storage: every part is resumed with HEAD, none created again.
  const rsize = Math.max(4 * args.chunkMiB, Math.floor(args.sizeMiB / 2)) * MiB + 555
  const rkey = 'e2e/tus-js-client/parallel-resumed.bin'
  const rfile = path.join(args.work, 'js-parallel-resumed.bin')
  const rdigest = await generate(rfile, rsize, 'js-parallel-resumed')
  const storagePath = path.join(args.work, 'tus-js-parallel-urls.json')
  const log1 = []
  let progressAtAbort = null
  const up1 = new Upload(fs.createReadStream(rfile), {
    ...commonOptions(args, log1, { metadata: { key: rkey }, paceMs: 100 }),
    parallelUploads: 4,
    urlStorage: new FileUrlStorage(storagePath),
  })
  const storedParts = () => {
    try {
      const stored = Object.values(JSON.parse(fs.readFileSync(storagePath, 'utf8')))
      return stored.some((u) => (u.parallelUploadUrls || []).filter(Boolean).length === 4)
    } catch {
      return false
    }
  }
  const aborted = new Promise((resolve, reject) => {
    up1.options.onProgress = (sent, total) => {
      // Abort only once the URL storage holds the 4 part URLs (it is written
      // when all 4 exist; a part's first PATCH can come before that).
      if (progressAtAbort === null && sent >= total * 0.4 && storedParts()) {
        progressAtAbort = sent
        up1.abort().then(resolve, reject)
      }
    }
    up1.options.onSuccess = () => reject(new Failure('parallel upload 1 finished before it was aborted'))
    up1.options.onError = reject
  })
  up1.start()
  await withTimeout(aborted, 120000, 'parallel upload 1 (until the abort)')
  await sleep(300)
  const log2 = []
  const up2 = new Upload(fs.createReadStream(rfile), {
    ...commonOptions(args, log2, { metadata: { key: rkey } }),
    parallelUploads: 4,
    urlStorage: new FileUrlStorage(storagePath),
  })
  const previous = await withTimeout(up2.findPreviousUploads(), 10000, 'findPreviousUploads')
  check(previous.length === 1, `findPreviousUploads found ${previous.length} uploads`)
  const partUrls = previous[0].parallelUploadUrls || []
  check(partUrls.length === 4, `the stored upload has ${partUrls.length} part URLs, expected 4`)
  const partOffsets = []
  for (const u of partUrls) partOffsets.push(await headOffset(u))
  up2.resumeFromPreviousUpload(previous[0])
  await runUpload(up2, 180000, 'parallel upload 2')
  const created = log2.filter((e) => e.dir === '>' && e.method === 'POST')
  check(created.length === 1 && (created[0].concat || '').startsWith('final;'),
    `upload 2 sent ${created.length} POSTs (${created.map((e) => e.concat)}), expected only the final one`)
  const heads = log2.filter((e) => e.dir === '<' && e.method === 'HEAD')
  check(heads.length === 4, `upload 2 sent ${heads.length} HEADs, expected 4 (one per part)`)
  say(
    `  ok: parallel upload aborted at ${progressAtAbort} of ${rsize} bytes (parts at ${partOffsets.join(', ')}); ` +
      'a new Upload resumed all 4 parts (4 HEADs, no new partial POST) and concatenated them',
  )
  await verifyDataset(args.base, rkey, rfile, rsize, rdigest, {})
  check(uploadsDirFiles(args.dataDir).length === 0, `left under uploads/: ${uploadsDirFiles(args.dataDir)}`)
  fs.rmSync(rfile)
}

async function scenarioRestart(args) {
  const size = args.sizeMiB * MiB
  const key = 'e2e/tus-js-client/restart.bin'
  const meta = { key, name: 'tus-js-client restart' }
  const file = path.join(args.work, 'js-restart.bin')
  const digest = await generate(file, size, 'js-restart')
  say(`  generated ${args.sizeMiB} MiB, blake3 ${digest.slice(0, 16)}...`)
  const log = []
  let lastAck = 0
  const acks = []
  const up = new Upload(fs.createReadStream(file), {
    ...commonOptions(args, log, {
      metadata: meta,
      paceMs: 150,
      onPatch: (req) => say(`SEND ${req.getHeader('Upload-Offset')}`),
    }),
    onUploadUrlAvailable: () => say(`URL ${up.url}`),
    onChunkComplete: (_n, accepted) => {
      lastAck = accepted
      acks.push(accepted)
      say(`ACK ${accepted}`)
    },
  })
  // Each HEAD after a failure must report at least every byte acknowledged so far.
  const heads = []
  const origAfter = up.options.onAfterResponse
  up.options.onAfterResponse = (req, res) => {
    origAfter(req, res)
    if (req.getMethod() === 'HEAD') heads.push({ offset: Number(res.getHeader('Upload-Offset')), lastAck })
  }
  await runUpload(up, 240000, 'upload across the restart')
  const retries = log.filter((e) => e.dir === '!')
  check(retries.length > 0, 'the client saw no failure: the node was not killed during the upload')
  check(heads.length > 0, 'the client never asked HEAD after the failure')
  for (const h of heads) {
    check(h.offset >= h.lastAck, `after the restart HEAD said ${h.offset}, below the acknowledged ${h.lastAck}`)
  }
  const h = heads[0]
  say(
    `  ok: ${retries.length} retries (${[...new Set(retries.map((r) => r.cause))].join(', ')}); ` +
      `HEAD after the restart: ${h.offset} (last 204 before: ${h.lastAck}` +
      `${h.offset > h.lastAck ? `; ${h.offset - h.lastAck} bytes of the interrupted PATCH kept` : ''})`,
  )
  await verifyDataset(args.base, key, file, size, digest, { name: meta.name })
  fs.rmSync(file)
}

// A TCP proxy on 127.0.0.1 in front of several nodes: each connection goes to
// the next node in turn, and each request head gets `Connection: close` (any
// Connection or Keep-Alive header dropped), so that no connection carries a
// second request and consecutive requests reach different nodes. `routed`
// lists { node, line } (node index, request line) in order.
function roundRobinProxy(bases) {
  const upstreams = bases.map((b) => new URL(b))
  const routed = []
  const sockets = new Set()
  let next = 0
  const track = (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  }
  const server = net.createServer((client) => {
    track(client)
    client.setTimeout(300000, () => client.destroy())
    client.on('error', () => client.destroy())
    let head = Buffer.alloc(0)
    const onData = (data) => {
      head = Buffer.concat([head, data])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) {
        if (head.length > 64 * 1024) client.destroy()
        return
      }
      client.off('data', onData)
      client.pause()
      const lines = head.subarray(0, end).toString('latin1').split('\r\n')
      const kept = lines.slice(1).filter((l) => !/^(connection|keep-alive)\s*:/i.test(l))
      const i = next++ % upstreams.length
      routed.push({ node: i, line: lines[0] })
      const node = net.connect(Number(upstreams[i].port), upstreams[i].hostname)
      track(node)
      node.on('connect', () => {
        node.write(Buffer.from([lines[0], ...kept, 'Connection: close', '', ''].join('\r\n'), 'latin1'))
        node.write(head.subarray(end + 4))
        client.pipe(node)
        node.pipe(client) // ends the client's side once the node closes after its answer
        client.resume()
      })
      node.on('error', () => client.destroy())
      client.on('close', () => node.destroy())
    }
    client.on('data', onData)
  })
  return new Promise((resolve, reject) => {
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () =>
      resolve({
        base: `http://127.0.0.1:${server.address().port}`,
        routed,
        close: () => {
          server.close()
          for (const s of sockets) s.destroy()
        },
      }),
    )
  })
}

async function scenarioCluster(args) {
  check(args.bases.length >= 2, `--bases lists ${args.bases.length} node(s); a cluster needs 2 or more`)
  const proxy = await roundRobinProxy(args.bases)
  say(`  round-robin proxy ${proxy.base} over ${args.bases.join(', ')}`)
  try {
    await clusterUploads(args, proxy)
  } finally {
    proxy.close()
  }
}

async function clusterUploads(args, proxy) {
  const bases = args.bases
  const nodeName = (i) => String.fromCharCode(65 + i)
  // Retries off: a 409 or 503 from a node that does not hold the upload
  // must fail the scenario, not be retried until it lands on one that does.
  const options = (log, extra) => ({
    ...commonOptions({ ...args, base: proxy.base }, log, extra),
    retryDelays: null,
  })
  const onEveryNode = async (url, what, want) => {
    for (const [i, base] of bases.entries()) {
      const res = await tusHead(`${base}${new URL(url).pathname}`)
      want(res, `${what}: HEAD on node ${nodeName(i)}`)
    }
  }
  const chunk = args.chunkMiB * MiB

  // 1. Aborted mid-PATCH, resumed by a new Upload.
  const size = args.sizeMiB * MiB + 333 // over two 8 MiB parts, and a tail
  const key = 'e2e/tus-js-client/cluster.bin'
  const meta = { key, name: 'tus-js-client cluster', filetype: 'application/x-e2e' }
  const file = path.join(args.work, 'js-cluster.bin')
  const digest = await generate(file, size, 'js-cluster')
  const storagePath = path.join(args.work, 'tus-js-cluster-urls.json')
  const abortAt = Math.floor(size * 0.4) + MiB
  const log1 = []
  let lastAck = 0
  let sentAtAbort = null
  const up1 = new Upload(fs.createReadStream(file), {
    ...options(log1, { metadata: meta, paceMs: 50 }),
    urlStorage: new FileUrlStorage(storagePath),
    onChunkComplete: (_n, accepted) => {
      lastAck = accepted
    },
  })
  const aborted = new Promise((resolve, reject) => {
    up1.options.onProgress = (sent) => {
      if (sentAtAbort === null && sent >= abortAt && sent % chunk !== 0) {
        sentAtAbort = sent
        up1.abort().then(resolve, reject)
      }
    }
    up1.options.onSuccess = () => reject(new Failure('upload 1 finished before it was aborted'))
    up1.options.onError = reject
  })
  up1.start()
  await withTimeout(aborted, 120000, 'upload 1 (until the abort)')
  const url = up1.url
  check(url && url.startsWith(`${proxy.base}/uploads/`), `upload URL ${url}`)
  const log2 = []
  const up2 = new Upload(fs.createReadStream(file), {
    ...options(log2, { metadata: meta }),
    urlStorage: new FileUrlStorage(storagePath),
  })
  const previous = await withTimeout(up2.findPreviousUploads(), 10000, 'findPreviousUploads')
  check(previous.length === 1 && previous[0].uploadUrl === url, `findPreviousUploads: ${JSON.stringify(previous)}`)
  up2.resumeFromPreviousUpload(previous[0])
  await runUpload(up2, 180000, 'upload 2')
  check(up2.url === url, `upload 2 finished ${up2.url}, expected ${url}`)
  check(!log2.some((e) => e.method === 'POST'), 'upload 2 created a new upload instead of resuming')
  const firstHead = log2.find((e) => e.dir === '<' && e.method === 'HEAD')
  check(firstHead && firstHead.status === 200, `upload 2's first HEAD: ${JSON.stringify(firstHead)}`)
  const resumedAt = Number(firstHead.offset)
  check(
    resumedAt >= lastAck && resumedAt <= sentAtAbort,
    `upload 2 resumed at ${resumedAt}: not between the last 204 (${lastAck}) and what was sent (${sentAtAbort})`,
  )
  const patches2 = log2.filter((e) => e.dir === '>' && e.method === 'PATCH').length
  say(
    `  upload 1 aborted at ~${sentAtAbort} bytes sent (last 204 at ${lastAck}); a new Upload resumed at ` +
      `HEAD offset ${resumedAt} and finished in ${patches2} PATCHes`,
  )
  await onEveryNode(url, 'the finished upload', (res, what) => {
    const offset = res.headers.get('upload-offset')
    check(res.status === 200 && Number(offset) === size, `${what}: ${res.status} offset ${offset}`)
    check(res.headers.get('etag') === `"${digest}"`, `${what}: ETag ${res.headers.get('etag')}`)
  })
  for (const [i, base] of bases.entries()) {
    say(`  node ${nodeName(i)}:`)
    await verifyDataset(base, key, file, size, digest, { name: meta.name, content_type: meta.filetype })
  }
  fs.rmSync(file)

  // 2. parallelUploads: partials on different nodes, the final one on another.
  const psize = Math.max(3 * args.chunkMiB, 12) * MiB + 777
  const pkey = 'e2e/tus-js-client/cluster-parallel.bin'
  const pfile = path.join(args.work, 'js-cluster-parallel.bin')
  const pdigest = await generate(pfile, psize, 'js-cluster-parallel')
  const logP = []
  const upP = new Upload(fs.createReadStream(pfile), {
    ...options(logP, { metadata: { key: pkey } }),
    parallelUploads: 3,
  })
  await runUpload(upP, 180000, 'parallel upload')
  const partials = logP.filter((e) => e.dir === '>' && e.method === 'POST' && e.concat === 'partial').length
  check(partials === 3, `${partials} partial creations, expected 3`)
  const patchesP = logP.filter((e) => e.dir === '>' && e.method === 'PATCH').length
  say(`  ok: parallelUploads: 3 partial uploads, ${patchesP} PATCHes, one final concatenation`)
  for (const base of bases) await verifyDataset(base, pkey, pfile, psize, pdigest, {})
  fs.rmSync(pfile)

  // 3. Terminated: abort(true) after the first chunk sends DELETE.
  const tkey = 'e2e/tus-js-client/cluster-terminated.bin'
  const log3 = []
  const up3 = new Upload(crypto.randomBytes(3 * chunk), { ...options(log3, { metadata: { key: tkey } }) })
  const terminated = new Promise((resolve, reject) => {
    up3.options.onChunkComplete = () => up3.abort(true).then(resolve, reject)
    up3.options.onSuccess = () => reject(new Failure('upload 3 finished before it was terminated'))
    up3.options.onError = reject
  })
  up3.start()
  await withTimeout(terminated, 60000, 'upload 3 (until abort(true))')
  const del = log3.find((e) => e.dir === '<' && e.method === 'DELETE')
  check(del && del.status === 204, `abort(true): DELETE answered ${del && del.status}, expected 204`)
  await onEveryNode(up3.url, 'the terminated upload', (res, what) => {
    check([404, 410].includes(res.status), `${what}: ${res.status}, expected 404 or 410`)
  })
  say('  ok: abort(true) after 1 of 3 chunks: DELETE 204, then HEAD 404/410 on every node')

  const routed = proxy.routed
  check(routed.every((r, n) => r.node === n % bases.length), 'the proxy did not go round robin')
  const patched = new Set(routed.filter((r) => r.line.startsWith('PATCH ')).map((r) => r.node))
  check(patched.size === bases.length, `not every node got a PATCH: ${JSON.stringify(routed)}`)
  const counts = bases.map((_, i) => routed.filter((r) => r.node === i).length)
  const perNode = counts.map((c, i) => `${nodeName(i)}: ${c}`).join(', ')
  say(`  ok: ${routed.length} requests round robin over ${bases.length} nodes (${perNode})`)
}

// -------------------------------------------------------------------- main --

async function main() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      base: { type: 'string' },
      bases: { type: 'string' },
      work: { type: 'string' },
      'data-dir': { type: 'string' },
      'size-mib': { type: 'string', default: '100' },
      'chunk-mib': { type: 'string', default: '5' },
      'time-limit': { type: 'string', default: '280' },
    },
  })
  const scenarios = {
    resume: scenarioResume,
    parallel: scenarioParallel,
    restart: scenarioRestart,
    cluster: scenarioCluster,
  }
  const name = positionals[0]
  const where = name === 'cluster' ? values.bases : values.base && values['data-dir']
  if (!scenarios[name] || !where || !values.work) {
    process.stderr.write(
      'usage: tus_js.mjs resume|parallel|restart --base URL --work DIR --data-dir DIR\n' +
        '       tus_js.mjs cluster --bases URL,URL[,...] --work DIR\n',
    )
    return 2
  }
  const args = {
    base: (values.base || '').replace(/\/+$/, ''),
    bases: (values.bases || '').split(',').filter(Boolean).map((b) => b.replace(/\/+$/, '')),
    work: values.work,
    dataDir: values['data-dir'],
    sizeMiB: Number(values['size-mib']),
    chunkMiB: Number(values['chunk-mib']),
  }
  fs.mkdirSync(args.work, { recursive: true })
  // A last bound on the whole scenario, besides the per-step ones.
  setTimeout(() => {
    say(`FAIL: tus-js-client ${name}: still running after ${values['time-limit']}s`)
    process.exit(1)
  }, Number(values['time-limit']) * 1000).unref()
  try {
    await scenarios[name](args)
  } catch (e) {
    say(`FAIL: tus-js-client ${name}: ${e instanceof Failure ? e.message : e.stack || e}`)
    return 1
  }
  say(`PASS: tus-js-client ${name}`)
  return 0
}

process.exit(await main())
