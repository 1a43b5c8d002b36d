//! The HTTP store against the in-test server: the upload protocol of §8, fetch, misses,
//! retries, trust, timeouts, auth and body caps.

use std::time::{Duration, Instant};

use cache_proto::nar::NarLimits;
use cache_proto::narinfo::NarInfo;
use cache_proto::store_path::{self, StorePath};
use cache_proto::{HttpConfig, HttpStore, PublishOutcome, SecretKey, Store, StoreError, Trust};

use crate::common::{self, public, secret};
use crate::http_server::{Fault, Server};

fn path(key: &str) -> StorePath {
    store_path::for_input_key(key, "mytool-result").unwrap()
}

fn config(url: String) -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        retries: 2,
        ..HttpConfig::new(url)
    }
}

fn store(url: String) -> HttpStore {
    HttpStore::new(config(url))
        .unwrap()
        .with_trust(Trust::Keys(vec![public()]))
}

#[tokio::test]
async fn publish_follows_nix_protocol_then_fetch() {
    let server = Server::start().await;
    let s = store(server.url("/cache/"));
    let p = path("mytool-v1:inputhash=0123abcd");
    let dep = StorePath::parse("/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep").unwrap();
    let nar = common::vector2_tree().to_bytes().unwrap();

    let outcome = s
        .publish(&p, &nar, std::slice::from_ref(&dep), &[secret()])
        .await
        .unwrap();
    assert_eq!(outcome, PublishOutcome::Uploaded);
    let narinfo_path = format!("/cache/{}.narinfo", p.hash_part());
    let info =
        NarInfo::parse(std::str::from_utf8(&server.file(&narinfo_path).unwrap()).unwrap()).unwrap();
    let nar_path = format!("/cache/{}", info.url);
    assert_eq!(
        server.requests(),
        [
            "GET /cache/nix-cache-info".to_owned(),
            "PUT /cache/nix-cache-info".to_owned(),
            format!("GET {narinfo_path}"),
            format!("HEAD {nar_path}"),
            format!("PUT {nar_path}"),
            format!("PUT {narinfo_path}"),
        ]
    );
    let log = server.log();
    assert_eq!(
        log[1].content_type.as_deref(),
        Some("text/x-nix-cache-info")
    );
    assert_eq!(log[1].body_len, 21);
    assert_eq!(
        log[4].content_type.as_deref(),
        Some("application/x-nix-nar")
    );
    assert_eq!(log[5].content_type.as_deref(), Some("text/x-nix-narinfo"));
    assert_eq!(
        server.file("/cache/nix-cache-info").unwrap(),
        b"StoreDir: /nix/store\n"
    );
    assert_eq!(info.references, [dep.base_name()]);

    // A fresh client (no trailing slash this time) fetches and verifies it.
    server.clear_log();
    let reader = store(server.url("/cache"));
    let fetched = reader
        .fetch(&p, &NarLimits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.nar, nar);
    assert_eq!(fetched.signed_by.as_deref(), Some("test-cache-1"));
    assert_eq!(
        server.requests(),
        [format!("GET {narinfo_path}"), format!("GET {nar_path}")]
    );

    // Publishing again is a no-op after the narinfo check.
    server.clear_log();
    let again = reader.publish(&p, &nar, &[dep], &[secret()]).await.unwrap();
    assert_eq!(again, PublishOutcome::AlreadyPresent);
    assert_eq!(
        server.requests(),
        [
            "GET /cache/nix-cache-info".to_owned(),
            format!("GET {narinfo_path}")
        ]
    );

    // A second path reuses the NAR check (HEAD) but nix-cache-info is not asked again.
    server.clear_log();
    let q = path("second");
    reader.publish(&q, &nar, &[], &[secret()]).await.unwrap();
    assert_eq!(
        server.requests(),
        [
            format!("GET /cache/{}.narinfo", q.hash_part()),
            format!("HEAD {nar_path}"),
            format!("PUT /cache/{}.narinfo", q.hash_part()),
        ]
    );
}

#[tokio::test]
async fn misses_are_none_and_never_cached() {
    let server = Server::start().await;
    let s = store(server.url("/"));
    let p = path("absent");
    assert!(s.narinfo(&p).await.unwrap().is_none());
    assert!(s.fetch(&p, &NarLimits::default()).await.unwrap().is_none());
    let narinfo_path = format!("/{}.narinfo", p.hash_part());
    server.fault("GET", &narinfo_path, Fault::Status(403), 1);
    assert!(s.narinfo(&p).await.unwrap().is_none());
    // Published by someone else afterwards: seen at once.
    let other = store(server.url("/"));
    other
        .publish(
            &p,
            &common::vector2_tree().to_bytes().unwrap(),
            &[],
            &[secret()],
        )
        .await
        .unwrap();
    assert!(s.narinfo(&p).await.unwrap().is_some());
}

#[tokio::test]
async fn retries_on_5xx_and_429_but_not_on_4xx() {
    let server = Server::start().await;
    let s = store(server.url("/"));
    let p = path("retry");
    s.publish(
        &p,
        &common::vector2_tree().to_bytes().unwrap(),
        &[],
        &[secret()],
    )
    .await
    .unwrap();
    let narinfo_path = format!("/{}.narinfo", p.hash_part());
    let count = |server: &Server| {
        server
            .requests()
            .iter()
            .filter(|r| r.ends_with(&narinfo_path))
            .count()
    };

    server.clear_log();
    server.fault("GET", &narinfo_path, Fault::Status(500), 1);
    assert!(s.narinfo(&p).await.unwrap().is_some());
    assert_eq!(count(&server), 2);

    server.clear_log();
    server.fault("GET", &narinfo_path, Fault::Status(429), 1);
    server.fault("GET", &narinfo_path, Fault::Close, 1);
    assert!(s.fetch(&p, &NarLimits::default()).await.unwrap().is_some());
    assert_eq!(count(&server), 3);

    server.clear_log();
    server.fault("GET", &narinfo_path, Fault::Status(503), 3);
    let err = s.narinfo(&p).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Status { status: 503, .. }),
        "{err}"
    );
    assert_eq!(count(&server), 3, "1 try + 2 retries");

    server.clear_log();
    server.fault("GET", &narinfo_path, Fault::Status(400), 1);
    let err = s.narinfo(&p).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Status { status: 400, .. }),
        "{err}"
    );
    assert_eq!(count(&server), 1);

    // A failing PUT is retried too.
    server.clear_log();
    let q = path("retry-put");
    let q_path = format!("/{}.narinfo", q.hash_part());
    server.fault("PUT", &q_path, Fault::Status(502), 1);
    s.publish(
        &q,
        &common::vector2_tree().to_bytes().unwrap(),
        &[],
        &[secret()],
    )
    .await
    .unwrap();
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| **r == format!("PUT {q_path}"))
            .count(),
        2
    );
}

#[tokio::test]
async fn untrusted_and_tampered() {
    let server = Server::start().await;
    let p = path("untrusted");
    let nar = common::vector2_tree().to_bytes().unwrap();
    let rogue = SecretKey::generate("test-cache-1").unwrap();
    store(server.url("/"))
        .publish(&p, &nar, &[], &[rogue])
        .await
        .unwrap();
    let err = store(server.url("/"))
        .fetch(&p, &NarLimits::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Untrusted { .. }), "{err}");
    assert!(err.to_string().contains(&p.to_string()));

    // Signed correctly, but the NAR on the server was swapped.
    let q = path("swapped");
    store(server.url("/"))
        .publish(&q, &nar, &[], &[secret()])
        .await
        .unwrap();
    let info = store(server.url("/")).narinfo(&q).await.unwrap().unwrap();
    let mut other = nar.clone();
    let last = other.len() - 20;
    other[last] ^= 1;
    server.put_file(
        &format!("/{}", info.url),
        cache_proto::compression::compress_zstd(&other),
    );
    assert!(
        store(server.url("/"))
            .fetch(&q, &NarLimits::default())
            .await
            .is_err()
    );

    // The NAR is gone.
    server.remove_file(&format!("/{}", info.url));
    let err = store(server.url("/"))
        .fetch(&q, &NarLimits::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MissingNar { .. }), "{err}");
}

#[tokio::test]
async fn stalled_server_times_out_within_bound() {
    let server = Server::start().await;
    server.stall_all();
    let cfg = HttpConfig {
        request_timeout: Duration::from_millis(400),
        retries: 1,
        ..config(server.url("/"))
    };
    let s = HttpStore::new(cfg).unwrap().with_trust(Trust::Local);
    let start = Instant::now();
    let err = s.narinfo(&path("stall")).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
    // 2 attempts of 400 ms plus at most 125 ms of backoff, with slack for a slow machine.
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(server.log().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let s = HttpStore::new(HttpConfig {
        retries: 1,
        ..config(format!("http://{addr}/"))
    })
    .unwrap();
    let err = s.narinfo(&path("refused")).await.unwrap_err();
    assert!(matches!(err, StoreError::Http { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()));
}

#[tokio::test]
async fn oversized_bodies_are_errors() {
    let server = Server::start().await;
    let p = path("big");
    let big = format!(
        "StorePath: {p}\nURL: nar/x.nar\nNarHash: sha256:{}\nNarSize: 1\n{}",
        "0".repeat(52),
        "X-Pad: y\n".repeat(10_000)
    );
    server.put_file(&format!("/{}.narinfo", p.hash_part()), big.into_bytes());
    let err = store(server.url("/")).narinfo(&p).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { limit: 65536, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn netrc_and_bearer_auth() {
    let server = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let netrc = tmp.path().join("netrc");
    std::fs::write(
        &netrc,
        "machine elsewhere login bob password nope\nmachine 127.0.0.1 login alice password s3cret\n",
    )
    .unwrap();
    let s = HttpStore::new(HttpConfig {
        netrc: Some(netrc.clone()),
        ..config(server.url("/"))
    })
    .unwrap();
    s.narinfo(&path("auth")).await.unwrap();
    // base64("alice:s3cret"), sent pre-emptively.
    assert_eq!(
        server.log()[0].authorization.as_deref(),
        Some("Basic YWxpY2U6czNjcmV0")
    );

    server.clear_log();
    let s = HttpStore::new(HttpConfig {
        netrc: Some(netrc),
        bearer_token: Some("tok-123".into()),
        ..config(server.url("/"))
    })
    .unwrap();
    s.narinfo(&path("auth")).await.unwrap();
    assert_eq!(
        server.log()[0].authorization.as_deref(),
        Some("Bearer tok-123")
    );

    server.clear_log();
    let s = HttpStore::new(HttpConfig {
        netrc: Some(tmp.path().join("missing")),
        ..config(server.url("/"))
    })
    .unwrap();
    s.narinfo(&path("auth")).await.unwrap();
    assert_eq!(server.log()[0].authorization, None);

    let bad = tmp.path().join("bad");
    std::fs::write(&bad, "machine\n").unwrap();
    assert!(matches!(
        HttpStore::new(HttpConfig {
            netrc: Some(bad),
            ..config(server.url("/"))
        }),
        Err(StoreError::Netrc { .. })
    ));
}

#[tokio::test]
async fn many_concurrent_lookups_share_one_client() {
    let server = Server::start().await;
    let s = Store::Http(store(server.url("/")));
    let nar = common::vector2_tree().to_bytes().unwrap();
    let paths: Vec<StorePath> = (0..5).map(|i| path(&format!("c{i}"))).collect();
    for p in &paths {
        s.publish(p, &nar, &[], &[secret()]).await.unwrap();
    }
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let s = s.clone();
        let p = if i % 2 == 0 {
            paths[i % 5].clone()
        } else {
            path(&format!("miss{i}"))
        };
        set.spawn(async move { (i, s.fetch(&p, &NarLimits::default()).await) });
    }
    while let Some(r) = set.join_next().await {
        let (i, res) = r.unwrap();
        let got = res.unwrap();
        assert_eq!(got.is_some(), i % 2 == 0);
    }
}

#[tokio::test]
async fn cache_info_from_server() {
    let server = Server::start().await;
    server.put_file("/nix-cache-info", b"StoreDir: /gnu/store\n".to_vec());
    let s = store(server.url("/"));
    let err = s.ensure_cache_info().await.unwrap_err();
    assert!(matches!(err, StoreError::CacheInfo { .. }), "{err}");
    assert!(
        s.publish(
            &path("x"),
            &common::vector2_tree().to_bytes().unwrap(),
            &[],
            &[]
        )
        .await
        .is_err()
    );
    assert_eq!(server.paths(), ["/nix-cache-info"]);
    server.put_file(
        "/nix-cache-info",
        b"StoreDir: /nix/store\nPriority: 40\n".to_vec(),
    );
    let info = Store::open(&server.url("/"))
        .unwrap()
        .cache_info()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.priority, Some(40));
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let server = Server::start().await;
    let p = path("slow-once");
    store(server.url("/"))
        .publish(
            &p,
            &common::vector2_tree().to_bytes().unwrap(),
            &[],
            &[secret()],
        )
        .await
        .unwrap();
    let narinfo_path = format!("/{}.narinfo", p.hash_part());
    server.fault("GET", &narinfo_path, Fault::Stall, 1);
    let s = HttpStore::new(HttpConfig {
        request_timeout: Duration::from_millis(300),
        retries: 1,
        ..config(server.url("/"))
    })
    .unwrap()
    .with_trust(Trust::Keys(vec![public()]));
    let start = Instant::now();
    assert!(s.narinfo(&p).await.unwrap().is_some());
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn server_without_head_still_gets_the_nar() {
    let server = Server::start().await;
    let s = store(server.url("/"));
    let p = path("no-head");
    let nar = common::vector2_tree().to_bytes().unwrap();
    let file = cache_proto::compression::compress_zstd(&nar);
    let nar_path = format!(
        "/nar/{}.nar.zst",
        cache_proto::hash::Sha256Hash::digest(&file).nix32()
    );
    server.fault("HEAD", &nar_path, Fault::Status(405), 1);
    s.publish(&p, &nar, &[], &[secret()]).await.unwrap();
    assert!(server.file(&nar_path).is_some());
    let fetched = s.fetch(&p, &NarLimits::default()).await.unwrap().unwrap();
    assert!(format!("{fetched:?}").contains("<1080 bytes>"));
}
