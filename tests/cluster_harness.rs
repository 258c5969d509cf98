//! The harness for the S3 and PostgreSQL suites works: a real Garage (one
//! node, and a three-node cluster that survives losing a node) and a real
//! PostgreSQL start on loopback, answer, and go away when dropped.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{self, http_get, Garage, Postgres};

const WITHIN: Duration = Duration::from_secs(5);

#[test]
fn garage_single_node_serves_s3_and_admin() {
    if cluster::skip_without_garage() {
        return;
    }
    let started = Instant::now();
    let garage = Garage::single();
    eprintln!("Garage::single() ready in {:?}", started.elapsed());

    let (status, body) = http_get(&format!("{}/health", garage.admin_endpoint_of(0)), &[], WITHIN).unwrap();
    assert_eq!(status, 200, "admin /health: {body}");

    // The S3 API is up: an anonymous, unsigned request is refused in S3's
    // XML error format.
    for path in ["/", &format!("/{}/", garage.bucket), &format!("/{}/some-object", garage.bucket)] {
        let (status, body) = http_get(&format!("{}{path}", garage.endpoint()), &[], WITHIN).unwrap();
        assert!((400..500).contains(&status), "anonymous GET {path}: {status} {body}");
        assert!(body.contains("<Error>") && body.contains("<Code>"), "anonymous GET {path}: {status} {body}");
    }

    let settings = garage.settings();
    let get = |k: &str| settings.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("SPILLWAY_STORAGE"), Some("s3"));
    assert_eq!(get("SPILLWAY_S3__ENDPOINT"), Some(garage.endpoint().as_str()));
    assert_eq!(get("SPILLWAY_S3__BUCKET"), Some(garage.bucket.as_str()));
    assert_eq!(get("SPILLWAY_S3__PATH_STYLE"), Some("true"));
    assert!(garage.access_key.starts_with("GK") && garage.access_key.len() == 26);

    let root = garage.root().to_path_buf();
    let s3 = garage.endpoint();
    drop(garage);
    assert!(!root.exists(), "temp dir {} left behind", root.display());
    assert!(http_get(&s3, &[], Duration::from_secs(1)).is_err(), "garage still answers after drop");
}

#[test]
fn garage_cluster_of_three_survives_losing_a_node() {
    if cluster::skip_without_garage() {
        return;
    }
    let started = Instant::now();
    let mut garage = Garage::cluster3();
    eprintln!("Garage::cluster3() ready in {:?}", started.elapsed());
    assert_eq!(garage.len(), 3);

    for i in 0..3 {
        let (status, body) = http_get(&format!("{}/health", garage.admin_endpoint_of(i)), &[], WITHIN).unwrap();
        assert_eq!(status, 200, "node {i} /health: {body}");
        let health = garage.cluster_health(i).unwrap();
        assert_eq!(health["status"], "healthy", "node {i}: {health}");
        assert_eq!(health["connectedNodes"], 3, "node {i}: {health}");
        // Every node serves S3 for the same bucket.
        let (status, body) = http_get(&format!("{}/{}/x", garage.endpoint_of(i), garage.bucket), &[], WITHIN).unwrap();
        assert!((400..500).contains(&status) && body.contains("<Error>"), "node {i} S3: {status} {body}");
    }

    garage.kill_node(2);
    assert!(!garage.is_running(2));
    assert!(http_get(&format!("{}/health", garage.admin_endpoint_of(2)), &[], WITHIN).is_err());
    let started = Instant::now();
    garage.wait_converged();
    eprintln!("the others noticed node 2 down in {:?}", started.elapsed());
    for i in 0..2 {
        // Two of three replicas are still a quorum: the cluster is degraded,
        // not unavailable, and both nodes still answer.
        let health = garage.cluster_health(i).unwrap();
        assert_eq!(health["status"], "degraded", "node {i} with node 2 down: {health}");
        assert_eq!(health["connectedNodes"], 2, "node {i} with node 2 down: {health}");
        assert_eq!(health["partitionsQuorum"], health["partitions"], "node {i} with node 2 down: {health}");
        let (status, body) = http_get(&format!("{}/health", garage.admin_endpoint_of(i)), &[], WITHIN).unwrap();
        assert_eq!(status, 200, "node {i} /health with node 2 down: {body}");
        let (status, body) = http_get(&garage.endpoint_of(i), &[], WITHIN).unwrap();
        assert!(body.contains("<Error>"), "node {i} S3 with node 2 down: {status} {body}");
    }

    // Back on its old ports and data, it rejoins: healthy again everywhere.
    let started = Instant::now();
    garage.restart_node(2);
    eprintln!("restart_node(2): healthy again in {:?}", started.elapsed());
    assert!(garage.is_running(2));
    for i in 0..3 {
        let health = garage.cluster_health(i).unwrap();
        assert_eq!(health["status"], "healthy", "node {i} after the restart: {health}");
        assert_eq!(health["connectedNodes"], 3, "node {i} after the restart: {health}");
    }
}

#[test]
fn postgres_accepts_connections_and_makes_databases() {
    if cluster::skip_without_postgres() {
        return;
    }
    let started = Instant::now();
    let pg = Postgres::start();
    eprintln!("Postgres::start() ready in {:?}", started.elapsed());

    assert!(pg.url.starts_with("postgres://") && pg.url.ends_with("/spillway"), "{}", pg.url);
    assert_eq!(pg.sql(&pg.url, "SELECT 1").trim(), "1");
    assert_eq!(pg.sql(&pg.url, "SELECT current_database()").trim(), "spillway");

    let other = pg.new_database("isolated_one");
    assert_ne!(other, pg.url);
    pg.sql(&other, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)");
    assert_eq!(pg.sql(&other, "SELECT x FROM t").trim(), "42");
    // The databases are separate.
    assert_eq!(pg.sql(&pg.url, "SELECT count(*) FROM pg_tables WHERE tablename = 't'").trim(), "0");

    assert_eq!(
        pg.settings(),
        vec![
            ("SPILLWAY_INDEX".to_string(), "postgres".to_string()),
            ("SPILLWAY_POSTGRES_URL".to_string(), pg.url.clone())
        ]
    );

    let port = pg.port;
    drop(pg);
    assert!(
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err(),
        "postgres still listens after drop"
    );
}
