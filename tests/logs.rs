//! The node's log: access lines are written in batches, in order, and
//! within a bounded time without any further request.

mod common;

use std::time::Duration;

use common::*;

/// Requests with their own ids, one after another: every access line
/// reaches the file on its own (no later request pushes it out), and in
/// the order the requests were answered.
#[tokio::test]
async fn access_lines_reach_the_log_in_order_without_another_request() {
    let node = TestNode::start();
    let ids: Vec<String> = (0..50).map(|i| format!("order-check-{i:03}")).collect();
    for id in &ids {
        let resp = node.client.get(node.url("/health")).header("X-Request-Id", id).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-request-id"], id.as_str());
    }
    let last = ids.last().unwrap().clone();
    let written = eventually(Duration::from_secs(10), async || node.log_as_written().contains(&last)).await;
    assert!(written, "the last access line was not written within 10 s:\n{}", node.log_as_written());
    let log = node.log_as_written();
    let seen: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("request_id=").nth(1)?.split(' ').next())
        .filter(|id| id.starts_with("order-check-"))
        .collect();
    assert_eq!(seen, ids, "access lines missing, repeated or out of order");
    for line in log.lines().filter(|l| l.contains("request_id=order-check-")) {
        assert!(line.contains("route=/health status=200"), "access line: {line}");
    }
}
