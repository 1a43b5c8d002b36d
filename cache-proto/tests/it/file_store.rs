//! The `file://` store: publish→fetch, tampering, missing files, trust, concurrency.

use std::fs;
use std::path::Path;

use cache_proto::compression::{self, Compression};
use cache_proto::hash::Sha256Hash;
use cache_proto::nar::NarLimits;
use cache_proto::narinfo::NarInfo;
use cache_proto::store_path::{self, StorePath};
use cache_proto::{FileStore, PublishOutcome, SecretKey, Store, StoreError, Trust};

use crate::common::{self, public, secret};

fn path(key: &str) -> StorePath {
    store_path::for_input_key(key, "mytool-result").unwrap()
}

fn dep() -> StorePath {
    StorePath::parse("/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep").unwrap()
}

fn trusted(dir: &Path) -> FileStore {
    FileStore::new(dir).with_trust(Trust::Keys(vec![public()]))
}

fn narinfo_file(dir: &Path, p: &StorePath) -> std::path::PathBuf {
    dir.join(format!("{}.narinfo", p.hash_part()))
}

fn read_narinfo(dir: &Path, p: &StorePath) -> NarInfo {
    NarInfo::parse(&fs::read_to_string(narinfo_file(dir, p)).unwrap()).unwrap()
}

fn no_temp_files(dir: &Path) {
    for d in [dir.to_owned(), dir.join("nar")] {
        for e in fs::read_dir(d).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "temporary file left: {name}");
        }
    }
}

#[tokio::test]
async fn publish_then_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let store = trusted(&dir);
    let p = path("mytool-v1:inputhash=0123abcd");
    let nar = common::vector2_tree().to_bytes().unwrap();

    assert!(store.narinfo(&p).await.unwrap().is_none());
    assert!(
        store
            .fetch(&p, &NarLimits::default())
            .await
            .unwrap()
            .is_none()
    );

    let outcome = store
        .publish(&p, &nar, &[dep()], &[secret()])
        .await
        .unwrap();
    assert_eq!(outcome, PublishOutcome::Uploaded);
    assert_eq!(
        fs::read_to_string(dir.join("nix-cache-info")).unwrap(),
        "StoreDir: /nix/store\n"
    );
    let info = read_narinfo(&dir, &p);
    assert_eq!(info.store_path, p);
    assert_eq!(info.compression.as_deref(), Some("zstd"));
    assert!(info.url.starts_with("nar/") && info.url.ends_with(".nar.zst"));
    let file = fs::read(dir.join(&info.url)).unwrap();
    assert_eq!(info.file_hash, Some(Sha256Hash::digest(&file)));
    assert_eq!(
        info.url,
        format!("nar/{}.nar.zst", Sha256Hash::digest(&file).nix32())
    );
    assert_eq!(info.file_size, Some(file.len() as u64));
    assert_eq!(info.nar_size, 1080);
    assert_eq!(info.references, [dep().base_name()]);
    assert_eq!(info.verify(&[public()]).as_deref(), Some("test-cache-1"));
    no_temp_files(&dir);

    let got = store.narinfo(&p).await.unwrap().unwrap();
    assert_eq!(got, info);
    let fetched = store
        .fetch(&p, &NarLimits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.nar, nar);
    assert_eq!(fetched.signed_by.as_deref(), Some("test-cache-1"));
    assert_eq!(fetched.narinfo, info);

    // Idempotent, and never overwrites.
    let before = fs::read(narinfo_file(&dir, &p)).unwrap();
    let other_key = SecretKey::generate("other-1").unwrap();
    assert_eq!(
        store.publish(&p, &nar, &[], &[other_key]).await.unwrap(),
        PublishOutcome::AlreadyPresent
    );
    assert_eq!(fs::read(narinfo_file(&dir, &p)).unwrap(), before);

    // Through the `Store` enum.
    let s = Store::open(&format!("file://{}", dir.display()))
        .unwrap()
        .with_trust(Trust::Keys(vec![public()]));
    assert_eq!(s.url(), format!("file://{}", dir.display()));
    assert_eq!(
        s.fetch(&p, &NarLimits::default())
            .await
            .unwrap()
            .unwrap()
            .nar,
        nar
    );
    assert!(s.ensure_cache_info().await.unwrap().store_dir == "/nix/store");
}

#[tokio::test]
async fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let store = Store::File(FileStore::new("/nonexistent"));
    let p = path("k");
    let limits = NarLimits::default();
    let f1 = store.fetch(&p, &limits);
    assert_send(&f1);
    let f2 = store.publish(&p, b"", &[], &[]);
    assert_send(&f2);
    let f3 = store.narinfo(&p);
    assert_send(&f3);
}

#[tokio::test]
async fn trust_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let p = path("trust");
    let nar = common::vector2_tree().to_bytes().unwrap();
    FileStore::new(&dir)
        .publish(&p, &nar, &[], &[secret()])
        .await
        .unwrap();
    let limits = NarLimits::default();

    // Default trust accepts nothing.
    let err = FileStore::new(&dir).fetch(&p, &limits).await.unwrap_err();
    assert!(matches!(err, StoreError::Untrusted { .. }), "{err}");
    // Another key with the same name does not verify.
    let impostor = SecretKey::generate("test-cache-1").unwrap().to_public();
    let err = FileStore::new(&dir)
        .with_trust(Trust::Keys(vec![impostor]))
        .narinfo(&p)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Untrusted { .. }), "{err}");
    // Local trust: no signature needed.
    let fetched = FileStore::new(&dir)
        .with_trust(Trust::Local)
        .fetch(&p, &limits)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.signed_by, None);
    // An unsigned publish is only readable under Local trust.
    let q = path("unsigned");
    FileStore::new(&dir)
        .publish(&q, &nar, &[], &[])
        .await
        .unwrap();
    assert!(trusted(&dir).fetch(&q, &limits).await.is_err());
    assert!(
        FileStore::new(&dir)
            .with_trust(Trust::Local)
            .fetch(&q, &limits)
            .await
            .unwrap()
            .is_some()
    );
    // A signed field changed: the signature breaks.
    let mut info = read_narinfo(&dir, &p);
    info.references.push(common_ref());
    fs::write(narinfo_file(&dir, &p), info.render()).unwrap();
    assert!(matches!(
        trusted(&dir).fetch(&p, &limits).await,
        Err(StoreError::Untrusted { .. })
    ));
}

fn common_ref() -> String {
    dep().base_name()
}

#[tokio::test]
async fn tampering_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let store = trusted(&dir);
    let p = path("tamper");
    let nar = common::vector2_tree().to_bytes().unwrap();
    store.publish(&p, &nar, &[], &[secret()]).await.unwrap();
    let info = read_narinfo(&dir, &p);
    let nar_file = dir.join(&info.url);
    let original = fs::read(&nar_file).unwrap();
    let limits = NarLimits::default();

    // Other bytes in the NAR file: FileHash catches it.
    let mut evil_nar = nar.clone();
    let pos = evil_nar.windows(2).position(|w| w == b"ok").unwrap();
    evil_nar[pos] = b'O';
    fs::write(&nar_file, compression::compress_zstd(&evil_nar)).unwrap();
    let err = store.fetch(&p, &limits).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::FileHashMismatch { .. } | StoreError::FileSizeMismatch { .. }
        ),
        "{err}"
    );

    // Without FileHash/FileSize (unsigned fields): NarHash catches it.
    let mut stripped = info.clone();
    stripped.file_hash = None;
    stripped.file_size = None;
    fs::write(narinfo_file(&dir, &p), stripped.render()).unwrap();
    let err = store.fetch(&p, &limits).await.unwrap_err();
    assert!(matches!(err, StoreError::NarHashMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&p.to_string()));

    // Flipped bytes inside the compressed file.
    let mut broken = original.clone();
    let n = broken.len();
    broken[n / 2] ^= 0xff;
    fs::write(&nar_file, &broken).unwrap();
    assert!(store.fetch(&p, &limits).await.is_err());

    // Truncated compressed file.
    fs::write(&nar_file, &original[..original.len() / 2]).unwrap();
    assert!(store.fetch(&p, &limits).await.is_err());

    // Restored: works again.
    fs::write(&nar_file, &original).unwrap();
    fs::write(narinfo_file(&dir, &p), info.render()).unwrap();
    assert_eq!(store.fetch(&p, &limits).await.unwrap().unwrap().nar, nar);
}

#[tokio::test]
async fn missing_nar_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let store = trusted(&dir);
    let p = path("missing");
    store
        .publish(
            &p,
            &common::vector2_tree().to_bytes().unwrap(),
            &[],
            &[secret()],
        )
        .await
        .unwrap();
    let info = read_narinfo(&dir, &p);
    fs::remove_file(dir.join(&info.url)).unwrap();
    let err = store.fetch(&p, &NarLimits::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::MissingNar { .. }), "{err}");
    assert!(err.to_string().contains(&info.url));
    // The narinfo alone is still there.
    assert!(store.narinfo(&p).await.unwrap().is_some());
}

#[tokio::test]
async fn wrong_store_path_and_unsafe_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let store = FileStore::new(&dir).with_trust(Trust::Local);
    let p = path("a");
    let q = path("b");
    let nar = common::vector2_tree().to_bytes().unwrap();
    store.publish(&p, &nar, &[], &[]).await.unwrap();
    fs::copy(narinfo_file(&dir, &p), narinfo_file(&dir, &q)).unwrap();
    let err = store.narinfo(&q).await.unwrap_err();
    assert!(matches!(err, StoreError::StorePathMismatch { .. }), "{err}");

    fs::write(tmp.path().join("secret"), b"outside").unwrap();
    let mut info = read_narinfo(&dir, &p);
    for url in [
        "../secret",
        "/etc/passwd",
        "nar/../../secret",
        "http://evil.example/x",
    ] {
        info.url = url.to_owned();
        fs::write(narinfo_file(&dir, &p), info.render()).unwrap();
        let err = store.fetch(&p, &NarLimits::default()).await.unwrap_err();
        assert!(
            matches!(err, StoreError::UnsafeNarUrl { .. }),
            "{url}: {err}"
        );
    }

    // A corrupt narinfo is an error, not a miss.
    fs::write(narinfo_file(&dir, &p), "StorePath: x\r\n").unwrap();
    let err = store.narinfo(&p).await.unwrap_err();
    assert!(matches!(err, StoreError::NarInfo { .. }), "{err}");
}

#[tokio::test]
async fn concurrent_publish_of_the_same_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let p = path("race");
    let nar = common::vector2_tree().to_bytes().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = trusted(&dir);
        let p = p.clone();
        let nar = nar.clone();
        tasks.spawn(async move { store.publish(&p, &nar, &[dep()], &[secret()]).await });
    }
    let mut uploaded = 0;
    while let Some(r) = tasks.join_next().await {
        if r.unwrap().unwrap() == PublishOutcome::Uploaded {
            uploaded += 1;
        }
    }
    assert!(uploaded >= 1);
    let fetched = trusted(&dir)
        .fetch(&p, &NarLimits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.nar, nar);
    no_temp_files(&dir);
    assert_eq!(fs::read_dir(dir.join("nar")).unwrap().count(), 1);
}

/// Writes a narinfo + NAR file by hand, the way other producers (or Nix) might.
fn write_entry(
    dir: &Path,
    p: &StorePath,
    nar: &[u8],
    file: &[u8],
    compression: Option<&str>,
    url: &str,
) {
    fs::create_dir_all(dir.join("nar")).unwrap();
    fs::write(dir.join(url), file).unwrap();
    let mut info = NarInfo {
        store_path: p.clone(),
        url: url.to_owned(),
        compression: compression.map(str::to_owned),
        file_hash: Some(Sha256Hash::digest(file)),
        file_size: Some(file.len() as u64),
        nar_hash: Sha256Hash::digest(nar),
        nar_size: nar.len() as u64,
        references: vec![],
        deriver: None,
        sigs: vec![],
        ca: None,
        system: None,
    };
    info.sign(&secret());
    let mut text = info.render();
    if compression.is_none() {
        text = text.replace("Compression: bzip2\n", "");
    }
    fs::write(narinfo_file(dir, p), text).unwrap();
}

#[tokio::test]
async fn other_compressions_and_autodetection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let store = trusted(&dir);
    let nar = common::vector2_tree().to_bytes().unwrap();
    let limits = NarLimits::default();
    let cases: [(&str, Compression, Option<&str>); 6] = [
        ("xz", Compression::Xz, Some("xz")),
        ("bz2", Compression::Bzip2, Some("bzip2")),
        ("none", Compression::None, Some("none")),
        ("missing-is-bzip2", Compression::Bzip2, None),
        // Declared xz but actually zstd: auto-detected, as Nix does.
        ("mislabelled", Compression::Zstd, Some("xz")),
        ("missing-but-zstd", Compression::Zstd, None),
    ];
    for (key, c, declared) in cases {
        let p = path(key);
        let file = c.compress(&nar).unwrap();
        write_entry(
            &dir,
            &p,
            &nar,
            &file,
            declared,
            &format!("nar/{key}{}", c.extension()),
        );
        let fetched = store.fetch(&p, &limits).await;
        assert_eq!(fetched.unwrap().unwrap().nar, nar, "{key}");
    }
    // Unsupported or wrong declarations.
    let p = path("brotli");
    write_entry(&dir, &p, &nar, &nar, Some("br"), "nar/brotli.nar.br");
    assert!(matches!(
        store.fetch(&p, &limits).await,
        Err(StoreError::Decompress { .. })
    ));
    let p = path("xz-on-plain");
    write_entry(&dir, &p, &nar, &nar, Some("xz"), "nar/plain.nar");
    assert!(matches!(
        store.fetch(&p, &limits).await,
        Err(StoreError::Decompress { .. })
    ));
    let p = path("none-on-zstd");
    let z = compression::compress_zstd(&nar);
    write_entry(&dir, &p, &nar, &z, Some("none"), "nar/z.nar");
    assert!(store.fetch(&p, &limits).await.is_err());
}

#[tokio::test]
async fn size_limits_and_bombs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let store = trusted(&dir);
    let nar = common::vector2_tree().to_bytes().unwrap();
    let p = path("limits");
    store.publish(&p, &nar, &[], &[secret()]).await.unwrap();
    let small = NarLimits {
        max_total: 1000,
        ..NarLimits::default()
    };
    assert!(matches!(
        store.fetch(&p, &small).await,
        Err(StoreError::NarOverLimit { size: 1080, .. })
    ));

    // A signed narinfo whose NAR file inflates far beyond NarSize.
    let bomb_nar = cache_proto::NarNode::Regular {
        executable: false,
        contents: vec![0; 32 << 20],
    }
    .to_bytes()
    .unwrap();
    let q = path("bomb");
    let z = compression::compress_zstd(&bomb_nar);
    assert!(z.len() < 64 * 1024);
    fs::create_dir_all(dir.join("nar")).unwrap();
    fs::write(dir.join("nar/bomb.nar.zst"), &z).unwrap();
    let mut info = NarInfo {
        store_path: q.clone(),
        url: "nar/bomb.nar.zst".into(),
        compression: Some("zstd".into()),
        file_hash: Some(Sha256Hash::digest(&z)),
        file_size: Some(z.len() as u64),
        nar_hash: Sha256Hash::digest(&nar),
        nar_size: 1080,
        references: vec![],
        deriver: None,
        sigs: vec![],
        ca: None,
        system: None,
    };
    info.sign(&secret());
    fs::write(narinfo_file(&dir, &q), info.render()).unwrap();
    let err = store.fetch(&q, &NarLimits::default()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NarTooLong { expected: 1080, .. }),
        "{err}"
    );

    // A NAR shorter than NarSize.
    info.nar_size = 5000;
    info.sigs.clear();
    let z = compression::compress_zstd(&nar);
    fs::write(dir.join("nar/bomb.nar.zst"), &z).unwrap();
    info.file_hash = Some(Sha256Hash::digest(&z));
    info.file_size = Some(z.len() as u64);
    info.sign(&secret());
    fs::write(narinfo_file(&dir, &q), info.render()).unwrap();
    let err = store.fetch(&q, &NarLimits::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NarSizeMismatch {
                expected: 5000,
                actual: 1080,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn cache_info_handling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    fs::create_dir_all(&dir).unwrap();
    let store = trusted(&dir);
    assert_eq!(store.cache_info().await.unwrap(), None);
    fs::write(dir.join("nix-cache-info"), "StoreDir: /gnu/store\n").unwrap();
    let err = store
        .publish(
            &path("x"),
            &common::vector2_tree().to_bytes().unwrap(),
            &[],
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::CacheInfo { .. }), "{err}");
    assert!(!narinfo_file(&dir, &path("x")).exists());
    fs::write(
        dir.join("nix-cache-info"),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
    )
    .unwrap();
    let info = trusted(&dir).ensure_cache_info().await.unwrap();
    assert!(info.want_mass_query);
    assert_eq!(info.priority, Some(30));
}

#[tokio::test]
async fn publish_rejects_invalid_nars() {
    let tmp = tempfile::tempdir().unwrap();
    let store = trusted(tmp.path());
    for bad in [&b""[..], b"not a nar"] {
        let err = store
            .publish(&path("bad"), bad, &[], &[secret()])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidNar { .. }), "{err}");
    }
    assert!(!narinfo_file(tmp.path(), &path("bad")).exists());
}

/// `import` copies what Nix wrote (xz, with `CA:` and references) byte for byte: the file as
/// served and the narinfo with its signature, which still verifies in the copy.
#[tokio::test]
async fn import_keeps_nix_written_paths_and_their_signatures() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let key = cache_proto::PublicKey::parse(
        fs::read_to_string(data.join("golden-key.pub"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let src = FileStore::new(data.join("cache-xz")).with_trust(Trust::Keys(vec![key.clone()]));
    let tmp = tempfile::tempdir().unwrap();
    let dst_dir = tmp.path().join("copy");
    let dst = FileStore::new(&dst_dir).with_trust(Trust::Keys(vec![key]));
    let mut n = 0;
    for e in fs::read_dir(data.join("cache-xz")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let Some(hash) = name.strip_suffix(".narinfo") else {
            continue;
        };
        let original =
            NarInfo::parse(&fs::read_to_string(data.join("cache-xz").join(&name)).unwrap())
                .unwrap();
        assert_eq!(original.store_path.hash_part(), hash);
        let p = original.store_path.clone();
        let fetched = src.fetch(&p, &NarLimits::default()).await.unwrap().unwrap();
        assert_eq!(
            dst.import(&fetched).await.unwrap(),
            PublishOutcome::Uploaded
        );
        assert_eq!(
            dst.import(&fetched).await.unwrap(),
            PublishOutcome::AlreadyPresent
        );
        let copied = read_narinfo(&dst_dir, &p);
        // Nix names the file by its hash too, so the copy's narinfo is the original.
        assert_eq!(copied, original);
        assert_eq!(
            fs::read(dst_dir.join(&copied.url)).unwrap(),
            fs::read(data.join("cache-xz").join(&original.url)).unwrap(),
            "the file is copied as served, not recompressed"
        );
        let again = dst.fetch(&p, &NarLimits::default()).await.unwrap().unwrap();
        assert_eq!(again.nar, fetched.nar);
        assert_eq!(again.signed_by.as_deref(), Some("checkdef-golden-1"));
        n += 1;
    }
    assert_eq!(n, 3);
    no_temp_files(&dst_dir);
}

/// The copy names the file by its content, whatever `URL` (unsigned) says, and always writes
/// it, so a damaged file of that name never ends up behind the copied narinfo.
#[tokio::test]
async fn import_names_the_file_by_its_hash_and_replaces_a_damaged_one() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    let src = trusted(&src_dir);
    let p = path("mytool-v1:inputhash=import");
    let nar = common::vector2_tree().to_bytes().unwrap();
    src.publish(&p, &nar, &[], &[secret()]).await.unwrap();
    let mut fetched = src.fetch(&p, &NarLimits::default()).await.unwrap().unwrap();
    let expected_url = fetched.narinfo.url.clone();
    // A narinfo whose (unsigned) URL points elsewhere still verifies.
    fetched.narinfo.url = "checkdef-stamps/elsewhere".to_owned();
    fetched.narinfo.file_hash = None;
    fetched.narinfo.file_size = None;
    let dst_dir = tmp.path().join("dst");
    let dst = trusted(&dst_dir);
    // A damaged leftover where the file belongs.
    fs::create_dir_all(dst_dir.join("nar")).unwrap();
    fs::write(dst_dir.join(&expected_url), b"damaged").unwrap();
    assert_eq!(
        dst.import(&fetched).await.unwrap(),
        PublishOutcome::Uploaded
    );
    let copied = read_narinfo(&dst_dir, &p);
    assert_eq!(copied.url, expected_url);
    assert_eq!(copied.file_hash, Some(Sha256Hash::digest(&fetched.file)));
    assert!(!dst_dir.join("checkdef-stamps").exists());
    let again = dst.fetch(&p, &NarLimits::default()).await.unwrap().unwrap();
    assert_eq!(again.nar, nar);
    assert_eq!(again.signed_by.as_deref(), Some("test-cache-1"));
}
