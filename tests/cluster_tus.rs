//! Resumable uploads on stateless nodes (issue 18). With the S3 store and a
//! shared PostgreSQL index, a tus upload's bytes go to the bucket as they
//! arrive and its offset, hash state and lease live in the index, so:
//! PATCHes of one upload may go to any node in turn and make one exact
//! dataset; a HEAD through another node takes an upload over from a live
//! PATCH at once, and a client whose node died mid-PATCH resumes through
//! another after at most `tus_lease`; two PATCHes of one upload at once let one
//! through and refuse the other with 409 at once, never a wrong offset;
//! any node sweeps an expired upload of a dead node; and nothing of a
//! finished, terminated or swept upload stays in the bucket (no object
//! under `tus/` or `staging/`, no unfinished multipart upload).
//!
//! Every node here writes below the prefix [`PREFIX`] of the bucket, so a
//! node that ignored it would show up as objects outside it.
//!
//! Each test skips (with a line on stderr) when Garage or PostgreSQL is not
//! installed, unless `SPILLWAY_REQUIRE_CLUSTER=1`.

mod common;

use std::time::{Duration, Instant};

use common::pair::*;
use common::reply::{fed_body, Reply};
use common::*;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// Bound on any one request, and on the node taking the next body bytes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The prefix of the bucket every node writes below.
const PREFIX: &str = "spw";
const WITH_PREFIX: (&str, &str) = ("SPILLWAY_S3__PREFIX", PREFIX);
/// Pieces the test feeds a streamed PATCH body in.
const FEED_CHUNK: usize = 256 * KIB;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `POST /uploads` of `length` bytes for `key` on `node`, expecting 201;
/// returns the upload's path.
async fn create(node: &TestNode, key: &str, length: usize) -> String {
    let (length, metadata) = (length.to_string(), tus_metadata(&[("key", key)]));
    let r =
        call(node, "POST", "/uploads", &[TUS, ("Upload-Length", &length), ("Upload-Metadata", &metadata)], None).await;
    assert_eq!(r.status, 201, "POST /uploads for `{key}` on {}: {}", node.base, r.describe());
    location_path(&r)
}

async fn patch(node: &TestNode, loc: &str, offset: usize, bytes: &[u8]) -> Reply {
    let offset = offset.to_string();
    call(node, "PATCH", loc, &[TUS, OCTET, ("Upload-Offset", &offset)], Some(bytes.to_vec())).await
}

/// A PATCH that must be 204 at `offset + bytes.len()`.
async fn patch_ok(node: &TestNode, name: &str, loc: &str, offset: usize, bytes: &[u8]) -> Reply {
    let r = patch(node, loc, offset, bytes).await;
    assert_eq!(r.status, 204, "PATCH {loc} at {offset} (+{}) on {name}: {}", bytes.len(), r.describe());
    assert_eq!(r.offset(), Some((offset + bytes.len()) as u64), "PATCH on {name}: {}", r.describe());
    r
}

async fn head(node: &TestNode, loc: &str) -> Reply {
    call(node, "HEAD", loc, &[TUS], None).await
}

/// HEAD, expecting 200 at `offset`.
async fn assert_offset(node: &TestNode, name: &str, loc: &str, offset: usize, when: &str) {
    let r = head(node, loc).await;
    assert_eq!(
        (r.status, r.offset()),
        (200, Some(offset as u64)),
        "{when}: HEAD {loc} on {name}: {}\n--- {name}'s warnings ---\n{}",
        r.describe(),
        log_lines(node, &["WARN", "ERROR"])
    );
}

fn upload_id(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap()
}

/// Sends a request and reads its answer, each within [`REQUEST_TIMEOUT`];
/// `Err` says why there is none (a node killed under it, say).
async fn try_send(req: reqwest::RequestBuilder) -> Result<Reply, String> {
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, req.send())
        .await
        .map_err(|_| format!("no answer in {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("{e:?}"))?;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.bytes())
        .await
        .map_err(|_| format!("{status}: body not read in {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("{status}: body: {e:?}"))?;
    Ok(Reply { status, headers, body: body.to_vec() })
}

/// A PATCH whose body the test feeds as it likes. It carries its
/// `Content-Length`, as tus clients send, so the node knows from the
/// start how much is coming, however slowly it comes.
struct FedPatch {
    what: String,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    /// Turns `true` once the PATCH has its answer (or has failed).
    done: watch::Receiver<bool>,
    answer: JoinHandle<Result<Reply, String>>,
}

impl FedPatch {
    fn start(node: &TestNode, name: &str, loc: &str, offset: usize, length: usize) -> FedPatch {
        let (offset_text, length_text) = (offset.to_string(), length.to_string());
        let (tx, body) = fed_body();
        let req = request(node, "PATCH", loc, &[TUS, OCTET, ("Upload-Offset", &offset_text)])
            .header("Content-Length", length_text)
            .body(body);
        let (done_tx, done) = watch::channel(false);
        let answer = tokio::spawn(async move {
            let answer = try_send(req).await;
            let _ = done_tx.send(true);
            answer
        });
        FedPatch { what: format!("PATCH {loc} at {offset} (+{length}) on {name}"), tx: Some(tx), done, answer }
    }

    /// Sends `bytes` as more of the body; `false` (and the rest unsent) once
    /// the PATCH was answered or its connection went away.
    async fn feed(&mut self, bytes: &[u8]) -> bool {
        for chunk in bytes.chunks(FEED_CHUNK) {
            let Some(tx) = &self.tx else {
                return false;
            };
            let mut done = self.done.clone();
            tokio::select! {
                sent = tx.send(chunk.to_vec()) => if sent.is_err() { return false; },
                _ = done.wait_for(|d| *d) => return false,
                _ = tokio::time::sleep(REQUEST_TIMEOUT) => {
                    panic!("{}: the node took no more body bytes for {REQUEST_TIMEOUT:?}", self.what)
                }
            }
        }
        true
    }

    /// Waits (bounded) until the PATCH has its answer.
    async fn answered(&self) {
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, done.wait_for(|d| *d)).await;
    }

    fn is_answered(&self) -> bool {
        *self.done.borrow()
    }

    /// Ends the body (whatever was fed so far) and returns the answer.
    async fn answer(mut self) -> Result<Reply, String> {
        self.tx = None;
        match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), self.answer).await {
            Ok(joined) => joined.unwrap_or_else(|e| panic!("{}: {e}", self.what)),
            Err(_) => panic!("{}: no answer in {REQUEST_TIMEOUT:?}", self.what),
        }
    }
}

/// `spillway_resumable_upload_bytes_total` of `node`: the body bytes its
/// PATCHes have read so far (0 where it is not exported).
async fn tus_bytes_read(node: &TestNode) -> u64 {
    node.metric("spillway_resumable_upload_bytes_total").await.unwrap_or(0.0) as u64
}

/// A [`try_send`] result, for messages.
fn outcome(answer: &Result<Reply, String>) -> String {
    match answer {
        Ok(r) => r.describe(),
        Err(e) => format!("no answer: {e}"),
    }
}

fn is_gone(r: &Reply) -> bool {
    r.status == 404 || r.status == 410
}

// ---------------------------------------------------------------------------
// The harness itself, on what already works on one node
// ---------------------------------------------------------------------------

/// What the other tests rely on, where today's code already works: the
/// bucket check sees objects under `tus/` and unfinished multipart uploads
/// (planted behind the nodes' backs, then removed), a streamed PATCH with
/// its Content-Length goes through, and an upload finished (or terminated)
/// on the node that created it leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_check_sees_leftovers_and_one_node_leaves_none() {
    let Some(pair) = two_nodes(&[WITH_PREFIX]) else {
        return;
    };
    let (a, b, garage) = (&pair.a, &pair.b, &pair.garage);

    // Planted: an object under tus/ and an unfinished multipart upload.
    {
        use object_store::multipart::MultipartStore;
        use object_store::{ObjectStoreExt, PutPayload};
        let s3 = garage.s3();
        let tail = object_store::path::Path::from(format!("{PREFIX}/tus/planted/tail-0"));
        let data = object_store::path::Path::from(format!("{PREFIX}/tus/planted/data"));
        s3.put(&tail, PutPayload::from(vec![1u8; 10])).await.expect("plant an object");
        let id = s3.create_multipart(&data).await.expect("open a multipart upload");
        s3.put_part(&data, &id, 0, PutPayload::from(vec![2u8; 5 * MIB])).await.expect("send a part");
        let mut seen = Vec::new();
        let found = eventually(BUCKET_SETTLES, async || {
            seen = bucket_problems(garage, PREFIX, &[]).await;
            seen.iter().any(|p| p.contains("tus/planted/tail-0") && p.contains("under tus/"))
                && seen.iter().any(|p| p.contains("unfinishedMultipartUploads"))
        })
        .await;
        assert!(found, "the bucket check missed what was planted: {seen:?}");
        s3.abort_multipart(&data, &id).await.expect("abort the planted multipart upload");
        s3.delete(&tail).await.expect("delete the planted object");
        assert_bucket_holds_only(garage, PREFIX, &[], "after removing what was planted").await;
    }

    // One upload, all through A: a streamed PATCH over a part, then the rest.
    let data = generated(12 * MIB + 321, 100);
    let key = "alone/one-node.bin";
    let loc = create(a, key, data.len()).await;
    let first = 9 * MIB + 3;
    let mut fed = FedPatch::start(a, "A", &loc, 0, first);
    assert!(fed.feed(&data[..first]).await, "the streamed PATCH on A was answered before its body ended");
    let r = fed.answer().await.unwrap_or_else(|e| panic!("the streamed PATCH on A: {e}"));
    assert_eq!((r.status, r.offset()), (204, Some(first as u64)), "the streamed PATCH on A: {}", r.describe());
    assert_offset(a, "A", &loc, first, "after the streamed PATCH").await;
    let r = patch_ok(a, "A", &loc, first, &data[first..]).await;
    assert_eq!(r.etag(), Some(b3(&data)), "the last PATCH on A: ETag");
    assert_downloads(a, key, &data, &[]).await;
    assert_downloads(b, key, &data, &[]).await;

    // One terminated on A after a part's worth.
    let gone = create(a, "alone/terminated.bin", 20 * MIB).await;
    patch_ok(a, "A", &gone, 0, &generated(9 * MIB, 101)).await;
    let r = call(a, "DELETE", &gone, &[TUS], None).await;
    assert_eq!(r.status, 204, "DELETE {gone} on A: {}", r.describe());
    let r = head(a, &gone).await;
    assert!(is_gone(&r), "HEAD of a terminated upload on A: {}", r.describe());

    assert_bucket_holds_only(garage, PREFIX, &[(key, &data)], "after one upload finished and one terminated on A")
        .await;
    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

// ---------------------------------------------------------------------------
// a) PATCHes round robin
// ---------------------------------------------------------------------------

/// An upload of two parts and more (20 MiB + 333 bytes, parts of 8 MiB)
/// sent in PATCHes of 3 MiB, 5 MiB, 9 MiB, 1 byte and the rest, each to
/// the other node than the one before (the first to B, which did not
/// create it), with a HEAD on the other node before each: every HEAD has
/// the offset of the last 204, the last PATCH commits on B, and both nodes
/// serve exactly the bytes sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_round_robin_over_two_nodes_make_one_exact_dataset() {
    let Some(pair) = two_nodes(&[WITH_PREFIX]) else {
        return;
    };
    let (a, b, garage) = (&pair.a, &pair.b, &pair.garage);
    let nodes = [("A", a), ("B", b)];
    let data = generated(20 * MIB + 333, 110);
    let key = "rr/round-robin.bin";
    let loc = create(a, key, data.len()).await;
    let sizes = [3 * MIB, 5 * MIB, 9 * MIB, 1, data.len() - 17 * MIB - 1];
    let mut offset = 0;
    let mut last = None;
    for (i, size) in sizes.into_iter().enumerate() {
        let (patch_name, patch_node) = nodes[(i + 1) % 2];
        let (head_name, head_node) = nodes[i % 2];
        assert_offset(head_node, head_name, &loc, offset, &format!("before PATCH {i}")).await;
        last = Some(patch_ok(patch_node, patch_name, &loc, offset, &data[offset..offset + size]).await);
        offset += size;
    }
    assert_eq!(offset, data.len());
    let last = last.unwrap();
    assert_eq!(last.etag(), Some(b3(&data)), "the last PATCH (on B): ETag: {}", last.describe());

    for (name, node) in nodes {
        assert_downloads(node, key, &data, &[]).await;
        assert_offset(node, name, &loc, data.len(), "the finished upload").await;
    }
    assert_bucket_holds_only(garage, PREFIX, &[(key, &data)], "after the round-robin upload").await;
    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

// ---------------------------------------------------------------------------
// b) The node dies mid-PATCH
// ---------------------------------------------------------------------------

/// Node A is SIGKILLed while a PATCH streams into it (10 MiB of 17 MiB
/// sent, read by A), and its data directory is deleted. A HEAD on B
/// answers within `tus_lease` (3 s here) and some slack, with an offset
/// between the last 204 and what was sent; the client resumes there
/// through B, and the dataset is exact. A, started again on an empty data
/// directory, serves it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_through_b_after_a_dies_mid_patch() {
    const LEASE: Duration = Duration::from_secs(3);
    let Some(mut pair) = two_nodes(&[WITH_PREFIX, ("SPILLWAY_TUS_LEASE", "3")]) else {
        return;
    };
    let data = generated(26 * MIB + 4321, 120);
    let key = "kill/resumed.bin";
    let loc = create(&pair.a, key, data.len()).await;
    // Over a part: one part in the store, a tail beside it.
    let acked = 9 * MIB + 17;
    patch_ok(&pair.a, "A", &loc, 0, &data[..acked]).await;

    // The PATCH A dies in: all the rest announced, 10 MiB and a bit sent,
    // past the next part boundary (16 MiB).
    let sent = 10 * MIB + 12_345;
    let read_before = tus_bytes_read(&pair.a).await;
    let mut fed = FedPatch::start(&pair.a, "A", &loc, acked, data.len() - acked);
    assert!(fed.feed(&data[acked..acked + sent]).await, "A answered the PATCH before its body ended");
    // Killed once A has read what was sent (the kill must find bytes past
    // the last 204 in A's hands); where the metric is missing, at once.
    let read = eventually(REQUEST_TIMEOUT, async || tus_bytes_read(&pair.a).await >= read_before + sent as u64).await;
    let read_by_a = tus_bytes_read(&pair.a).await.saturating_sub(read_before);
    if fed.is_answered() {
        panic!("A answered the PATCH before it was killed: {}", outcome(&fed.answer().await));
    }
    pair.a.kill9();
    let cut = fed.answer().await;
    eprintln!(
        "A killed with {read_by_a} of the {sent} bytes sent read (all read: {read}); the PATCH got {}",
        outcome(&cut)
    );
    assert!(cut.is_err(), "the PATCH A was killed in has an answer: {}", outcome(&cut));
    std::fs::remove_dir_all(&pair.a.data_dir).expect("delete A's data directory");

    let b = &pair.b;
    let started = Instant::now();
    let r = head(b, &loc).await;
    let took = started.elapsed();
    eprintln!("HEAD on B after A died: {} in {took:?}", r.describe());
    assert_eq!(
        r.status,
        200,
        "HEAD {loc} on B after A died mid-PATCH: {}\n--- B's warnings ---\n{}",
        r.describe(),
        log_lines(b, &["WARN", "ERROR"])
    );
    let offset = r.offset().unwrap_or_else(|| panic!("HEAD on B: no Upload-Offset: {}", r.describe())) as usize;
    assert!(
        (acked..=acked + sent).contains(&offset),
        "HEAD on B: offset {offset}, not between the last 204 ({acked}) and what was sent ({})",
        acked + sent
    );
    let slack = Duration::from_secs(10);
    assert!(took <= LEASE + slack, "HEAD on B took {took:?}: more than tus_lease ({LEASE:?}) and {slack:?} of slack");
    assert_offset(b, "B", &loc, offset, "a second HEAD").await;

    // The client resumes through B, in two PATCHes.
    let middle = offset + 5 * MIB;
    patch_ok(b, "B", &loc, offset, &data[offset..middle]).await;
    let r = patch_ok(b, "B", &loc, middle, &data[middle..]).await;
    assert_eq!(r.etag(), Some(b3(&data)), "the last PATCH on B: ETag: {}", r.describe());
    assert_downloads(b, key, &data, &[]).await;

    pair.a.launch();
    assert_downloads(&pair.a, key, &data, &[]).await;
    assert_offset(&pair.a, "A", &loc, data.len(), "the finished upload, on A started again").await;
    assert_bucket_holds_only(&pair.garage, PREFIX, &[(key, &data)], "after the upload resumed through B").await;
    assert_no_panic(&pair.a, "A");
    assert_no_panic(&pair.b, "B");
}

/// The other half of a resume through another node: A is alive, its PATCH
/// stalled mid-body (9 MiB of 14 sent and read, the client gone silent).
/// A HEAD on B asks A to stop and answers in about a second, well before
/// `tus_lease` (10 s, the default) would run out, with an offset between 0
/// and what A read; the client finishes through B from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_on_b_takes_an_upload_over_from_a_live_patch_on_a() {
    const LEASE: Duration = Duration::from_secs(10);
    // A must not end the stalled PATCH by itself meanwhile.
    let Some(pair) = two_nodes(&[WITH_PREFIX, ("SPILLWAY_STALL_TIMEOUT", "60"), ("SPILLWAY_TUS_LEASE", "10")]) else {
        return;
    };
    let (a, b, garage) = (&pair.a, &pair.b, &pair.garage);
    let data = generated(14 * MIB + 99, 125);
    let key = "takeover/across.bin";
    let loc = create(a, key, data.len()).await;
    let sent = 9 * MIB + 5;
    let read_before = tus_bytes_read(a).await;
    let mut stalled = FedPatch::start(a, "A", &loc, 0, data.len());
    assert!(stalled.feed(&data[..sent]).await, "A answered the PATCH before its body ended");
    let read = eventually(REQUEST_TIMEOUT, async || tus_bytes_read(a).await >= read_before + sent as u64).await;
    eprintln!("A read all {sent} bytes sent before the HEAD on B: {read}");

    let started = Instant::now();
    let r = head(b, &loc).await;
    let took = started.elapsed();
    eprintln!("HEAD on B while A's PATCH stalls: {} in {took:?}", r.describe());
    assert_eq!(
        r.status,
        200,
        "HEAD {loc} on B while A's PATCH stalls: {}\n--- B's warnings ---\n{}",
        r.describe(),
        log_lines(b, &["WARN", "ERROR"])
    );
    let offset = r.offset().unwrap_or_else(|| panic!("HEAD on B: no Upload-Offset: {}", r.describe())) as usize;
    assert!(offset <= sent, "HEAD on B: offset {offset}, past the {sent} bytes sent");
    assert!(
        took < LEASE - Duration::from_secs(2),
        "HEAD on B took {took:?}: A, alive, was not asked to stop (the lease is {LEASE:?})"
    );
    stalled.answered().await;
    let cut = stalled.answer().await;
    eprintln!("the stalled PATCH on A, taken over: {}", outcome(&cut));
    assert!(cut.as_ref().map_or(true, |r| r.status != 204), "the stalled PATCH on A: {}", outcome(&cut));

    let r = patch_ok(b, "B", &loc, offset, &data[offset..]).await;
    assert_eq!(r.etag(), Some(b3(&data)), "the last PATCH on B: ETag: {}", r.describe());
    assert_downloads(a, key, &data, &[]).await;
    assert_downloads(b, key, &data, &[]).await;
    assert_bucket_holds_only(garage, PREFIX, &[(key, &data)], "after the takeover through B").await;
    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

// ---------------------------------------------------------------------------
// c) Two PATCHes of one upload at once
// ---------------------------------------------------------------------------

/// Two PATCHes of 12 MiB each, of different bytes, from the same offset
/// at once: through A and B, then both through B. Both bodies are held
/// after their first MiB until one PATCH is answered: that one must be
/// 409 `upload-in-use` (or `offset-mismatch`), at once, and the other then
/// goes on to 204. Both nodes' HEADs then agree on the winner's offset, and
/// the finished dataset holds the winner's bytes, none of the loser's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_patches_of_one_upload_at_once_let_exactly_one_through() {
    // The winner waits, with 1 MiB sent, for the loser's answer: more
    // than the default stall timeout on a loaded machine.
    let Some(pair) = two_nodes(&[WITH_PREFIX, ("SPILLWAY_STALL_TIMEOUT", "60")]) else {
        return;
    };
    let (a, b, garage) = (&pair.a, &pair.b, &pair.garage);
    const RACING: usize = 12 * MIB;
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    // Round 0 all on B; round 1 created on A, begun on B, raced through A and B.
    let rounds = [[("B", b), ("B", b), ("B", b)], [("A", a), ("B", b), ("A", a)]];
    for (round, [(creator_name, creator), (starter_name, starter), (x_name, x)]) in rounds.into_iter().enumerate() {
        let (y_name, y) = ("B", b);
        let seed = 130 + 10 * round as u64;
        let start = generated(MIB + 7, seed);
        let bodies = [generated(RACING, seed + 1), generated(RACING, seed + 2)];
        let rest = generated(2 * MIB + 5, seed + 3);
        let length = start.len() + RACING + rest.len();
        let key = format!("race/round-{round}.bin");
        let loc = create(creator, &key, length).await;
        eprintln!("round {round}: created on {creator_name}, first PATCH on {starter_name}");
        patch_ok(starter, starter_name, &loc, 0, &start).await;

        let at = start.len();
        let mut racers = [FedPatch::start(x, x_name, &loc, at, RACING), FedPatch::start(y, y_name, &loc, at, RACING)];
        let names = [x_name, y_name];
        let [rx, ry] = &mut racers;
        let (_, _) = tokio::join!(rx.feed(&bodies[0][..MIB]), ry.feed(&bodies[1][..MIB]));
        let started = Instant::now();
        let first = tokio::select! {
            _ = racers[0].answered() => 0,
            _ = racers[1].answered() => 1,
        };
        let took = started.elapsed();
        let (loser, winner) = (first, 1 - first);
        assert!(
            racers[loser].is_answered(),
            "round {round}: neither PATCH was answered within {REQUEST_TIMEOUT:?} with both holding the upload"
        );
        let fed_all = racers[winner].feed(&bodies[winner][MIB..]).await;
        let [r0, r1] = racers;
        let answers = [r0.answer().await, r1.answer().await];
        let describe = |i: usize| outcome(&answers[i]);
        eprintln!(
            "round {round}: through {} and {} at once: {} answered first, after {took:?}: {}; then {}: {}",
            x_name,
            y_name,
            names[loser],
            describe(loser),
            names[winner],
            describe(winner)
        );
        let refused = answers[loser].as_ref().is_ok_and(|r| {
            r.status == 409 && matches!(r.code().as_deref(), Some("upload-in-use") | Some("offset-mismatch"))
        });
        assert!(
            refused,
            "round {round}: the PATCH answered first (through {}) must be 409 `upload-in-use` \
             (or `offset-mismatch`): {}\n  the other (through {}): {}",
            names[loser],
            describe(loser),
            names[winner],
            describe(winner)
        );
        assert!(
            fed_all,
            "round {round}: the winner (through {}) was answered mid-body: {}",
            names[winner],
            describe(winner)
        );
        let won = answers[winner].as_ref().unwrap_or_else(|e| panic!("round {round}: the winner: {e}"));
        assert_eq!(
            (won.status, won.offset()),
            (204, Some((at + RACING) as u64)),
            "round {round}: the winner (through {}): {}",
            names[winner],
            won.describe()
        );

        for (name, node) in [("A", a), ("B", b)] {
            assert_offset(node, name, &loc, at + RACING, &format!("round {round}: after the race")).await;
        }
        // Finished through the node that refused.
        let intended = [start.as_slice(), &bodies[winner], &rest].concat();
        let finisher = if names[loser] == "A" { a } else { b };
        let r = patch_ok(finisher, names[loser], &loc, at + RACING, &rest).await;
        assert_eq!(r.etag(), Some(b3(&intended)), "round {round}: the last PATCH: ETag: {}", r.describe());
        assert_downloads(a, &key, &intended, &[]).await;
        assert_downloads(b, &key, &intended, &[]).await;
        stored.push((key, intended));
    }
    let datasets: Vec<(&str, &[u8])> = stored.iter().map(|(k, d)| (k.as_str(), d.as_slice())).collect();
    assert_bucket_holds_only(garage, PREFIX, &datasets, "after both races").await;
    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

// ---------------------------------------------------------------------------
// d) Expired on a dead node, swept by the other
// ---------------------------------------------------------------------------

/// With `upload_expiry = 8`: an upload created on A, with 9 MiB PATCHed on
/// A (so a multipart upload is open in the bucket), then A SIGKILLed at
/// once (so that A cannot be the one that sweeps it). B's sweeper removes
/// it: its row goes from the index, HEAD and PATCH on B say 404 or 410,
/// and the bucket keeps nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_upload_of_a_dead_node_is_swept_by_the_other() {
    const EXPIRY: u64 = 8;
    let extra = [WITH_PREFIX, ("SPILLWAY_UPLOAD_EXPIRY", "8"), ("SPILLWAY_TUS_LEASE", "3")];
    let Some(mut pair) = two_nodes(&extra) else {
        return;
    };
    let loc = create(&pair.a, "expire/abandoned.bin", 30 * MIB).await;
    let id = upload_id(&loc).to_string();
    patch_ok(&pair.a, "A", &loc, 0, &generated(9 * MIB + 5, 150)).await;
    pair.a.kill9();

    // Checked, but not fatal yet: the sweep below is worth seeing either way.
    let mut problems = Vec::new();
    let mut info = None;
    let in_store = eventually(Duration::from_secs(EXPIRY / 2), async || {
        info = pair.garage.bucket_info().ok();
        info.as_ref().is_some_and(|i| i["unfinishedMultipartUploads"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    if !in_store {
        problems.push(format!(
            "after a 204 to 9 MiB PATCHed on A, the bucket has no unfinished multipart upload: the bytes are \
             not in the store (objects: {:?}; counters: {info:?})",
            pair.garage.list_objects("").await
        ));
    }
    let pg = &pair.pg;
    let rows =
        |id: &str| pg.sql(&pg.url, &format!("SELECT count(*) FROM uploads WHERE id = '{id}'")).trim().to_string();
    eprintln!("rows of the upload in the index once A died: {}", rows(&id));
    // Expiry, then a sweep (every second at this expiry) past the lease.
    let within = Duration::from_secs(EXPIRY + 3 + 30);
    let started = Instant::now();
    let swept = eventually(within, async || rows(&id) == "0").await;
    if swept {
        eprintln!("B's sweeper removed A's upload {:?} after A died", started.elapsed());
    } else {
        problems.push(format!(
            "B did not sweep A's expired upload within {within:?}: its row is still in the index\n\
             --- B's log about sweeping ---\n{}",
            log_lines(&pair.b, &["expired", "sweep", "WARN", "ERROR"])
        ));
    }
    let b = &pair.b;
    let r = head(b, &loc).await;
    if !is_gone(&r) {
        problems.push(format!("HEAD of the swept upload on B: {}", r.describe()));
    }
    let r = patch(b, &loc, 9 * MIB + 5, b"more").await;
    if !is_gone(&r) {
        problems.push(format!("PATCH of the swept upload on B: {}", r.describe()));
    }
    if swept {
        let mut left = Vec::new();
        let clean = eventually(BUCKET_SETTLES, async || {
            left = bucket_problems(&pair.garage, PREFIX, &[]).await;
            left.is_empty()
        })
        .await;
        if !clean {
            problems.push(format!("the bucket after the sweep: {}", left.join("; ")));
        }
    }
    assert!(problems.is_empty(), "an expired upload of a dead node, swept by B:\n{}", problems.join("\n"));
    assert_no_panic(&pair.b, "B");
}
