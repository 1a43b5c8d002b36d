//! The verified vectors of the reference document (NAR, nix32, store paths, signatures,
//! narinfo examples).

use cache_proto::hash::Sha256Hash;
use cache_proto::narinfo::{NarInfo, NarInfoError};
use cache_proto::store_path::{self, StorePath, StorePathError};
use cache_proto::{nar, nix32};

use crate::common::{self, PUBLIC, dump, public, secret};

#[test]
fn nar_vector_1_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hello.txt");
    common::write_file(&f, b"hello binary cache\n", 0o644);
    let bytes = dump(&f);
    assert_eq!(bytes.len(), 136);
    let h = Sha256Hash::digest(&bytes);
    assert_eq!(
        h.to_hex(),
        "819a98f92c3d6b263f3fc3a29c019f340e4cfc89fc1465fa6144495ca738768a"
    );
    assert_eq!(
        h.to_nix_string(),
        "sha256:12kn72kmqja4c7x6a57wi7y4q3ilkw0rr8n37wzjcsrx5kwri6l1"
    );
    assert_eq!(
        h.to_sri(),
        "sha256-gZqY+Sw9ayY/P8OinAGfNA5M/In8FGX6YURJXKc4doo="
    );
    // `nix-store --add hello.txt` (§3.2).
    let p = store_path::make_fixed_output_path(true, &h, "hello.txt", &[], false).unwrap();
    assert_eq!(
        p.to_string(),
        "/nix/store/5m5ci15djpxd4bs7xa0208nhkhi6cbp3-hello.txt"
    );
}

#[test]
fn nar_vector_2_tree() {
    let dir = tempfile::tempdir().unwrap();
    let t = common::vector2_dir(dir.path());
    let bytes = dump(&t);
    assert_eq!(bytes.len(), 1080);
    let h = Sha256Hash::digest(&bytes);
    assert_eq!(
        h.to_hex(),
        "009757b7c64967ed2bcd55812745b222656d5f406641a1d1013de008a7ec3cc6"
    );
    assert_eq!(
        h.nix32(),
        "1iiwxjkhiq1x078s2hb681gnsr92n92jg0amrlmysrs9qsvmg5q0"
    );
    assert_eq!(
        h.to_sri(),
        "sha256-AJdXt8ZJZ+0rzVWBJ0WyImVtX0BmQaHRAT3gCKfsPMY="
    );
    // Points called out by the reference.
    assert_eq!(&bytes[0x250..0x258], &10u64.to_le_bytes());
    assert_eq!(&bytes[0x258..0x262], b"executable");
    assert_eq!(&bytes[0x268..0x270], &[0u8; 8]);
    assert_eq!(&bytes[0x0e8..0x0f0], b"hi\n\0\0\0\0\0");
    // The in-memory writer agrees, and the reader gives the tree back.
    assert_eq!(common::vector2_tree().to_bytes().unwrap(), bytes);
    assert_eq!(
        nar::parse(&bytes[..], &nar::NarLimits::default()).unwrap(),
        common::vector2_tree()
    );
    // `nix-store --add t`.
    let p = store_path::make_fixed_output_path(true, &h, "t", &[], false).unwrap();
    assert_eq!(
        p.to_string(),
        "/nix/store/71vvaqsil2pq2l78nhq464ykihb5vkkz-t"
    );
}

#[test]
fn nar_sort_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir(&d).unwrap();
    for name in ["b", "a b", "a", "_", "B", "A", "1"] {
        common::write_file(&d.join(name), b"", 0o644);
    }
    let tree = nar::parse(&dump(&d)[..], &nar::NarLimits::default()).unwrap();
    let nar::NarNode::Directory(entries) = tree else {
        panic!("not a directory")
    };
    let names: Vec<&[u8]> = entries.keys().map(Vec::as_slice).collect();
    assert_eq!(names, [&b"1"[..], b"A", b"B", b"_", b"a", b"a b", b"b"]);
}

#[test]
fn nix32_table() {
    let table: [(&str, &str); 5] = [
        (
            "0000000000000000000000000000000000000000000000000000000000000001",
            "0080000000000000000000000000000000000000000000000000",
        ),
        (
            "0102030405060708090a0b0c0d0e0f1011121314",
            "2h9i448h1w70s30b184hh1q60l2060h1",
        ),
        (
            "d41d8cd98f00b204e9800998ecf8427e",
            "3y8bwfr609h3lh9ch0izcqq7fl",
        ),
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
        ),
        (
            "009757b7c64967ed2bcd55812745b222656d5f406641a1d1013de008a7ec3cc6",
            "1iiwxjkhiq1x078s2hb681gnsr92n92jg0amrlmysrs9qsvmg5q0",
        ),
    ];
    for (hex_in, want) in table {
        let bytes = hex::decode(hex_in).unwrap();
        assert_eq!(nix32::encode(&bytes), want);
        assert_eq!(nix32::decode(want).unwrap(), bytes);
    }
    assert!(nix32::decode("0080000000000000000000000000000000000000000000000u00").is_err());
}

#[test]
fn store_path_vectors() {
    let p = store_path::for_input_key("mytool-v1:inputhash=0123abcd", "mytool-result").unwrap();
    assert_eq!(
        p.to_string(),
        "/nix/store/8dbh9dxr2mncgjrnqzj4nk6hlf49p3wp-mytool-result"
    );
    let inner = Sha256Hash::digest(b"mytool-v1:inputhash=0123abcd");
    assert_eq!(
        store_path::make_store_path("output:out", &inner, "mytool-result").unwrap(),
        p
    );
    assert_eq!(StorePath::parse(&p.to_string()).unwrap(), p);
    assert_eq!(StorePath::from_base_name(&p.base_name()).unwrap(), p);

    let g = store_path::make_text_path("greeting", b"hello binary cache\n", &[]).unwrap();
    assert_eq!(
        g.to_string(),
        "/nix/store/9l7mn1pmcxp3s01cbqy8x07chs55b7cr-greeting"
    );
    let w = store_path::make_text_path(
        "withref",
        format!("see {g}\n").as_bytes(),
        std::slice::from_ref(&g),
    )
    .unwrap();
    assert_eq!(
        w.to_string(),
        "/nix/store/clkyqf8a0rxyvv16j2y426wjbvsfscnx-withref"
    );
    let flat = Sha256Hash::digest(b"hello binary cache\n");
    assert!(flat.to_hex().starts_with("b3c1e85c"));
    assert!(flat.to_hex().ends_with("5457aaf"));
    assert_eq!(
        store_path::make_fixed_output_path(false, &flat, "hello.txt", &[], false)
            .unwrap()
            .to_string(),
        "/nix/store/xalih81zqmzdn3wxkyp4a97bvyl79yyw-hello.txt"
    );
}

#[test]
fn store_path_names() {
    let ok = "a".repeat(211);
    assert!(store_path::for_input_key("k", &ok).is_ok());
    assert!(matches!(
        store_path::for_input_key("k", &"a".repeat(212)),
        Err(StorePathError::NameTooLong { len: 212, .. })
    ));
    for bad in ["", ".a", "a b", "a/b", "a:b", "a\u{0}b", "ü", "a*b", "a\nb"] {
        assert!(store_path::for_input_key("k", bad).is_err(), "{bad:?}");
    }
    assert!(store_path::for_input_key("k", "A-z.0_9+?=").is_ok());
    let long = format!("/nix/store/{}-{}", "0".repeat(32), "a".repeat(212));
    assert!(StorePath::parse(&long).is_err());
}

#[test]
fn signature_vectors() {
    let sk = secret();
    assert_eq!(sk.to_public().to_string(), PUBLIC);
    let cases = [
        (
            "1;/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep;sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4;128;",
            "test-cache-1:xTRu5uoZemodoorTdc2jnkTRk6RfglZGz9GSmbsHge/6umf8PWPOrgO9CUB6Cg9D5fNz7tqxeY3eKI1D5krsCQ==",
        ),
        (
            "1;/nix/store/l9yxkc7y6q60r6f1dq2y9cf75hw2bcva-demo-out;sha256:1qsi7f37c5ar95n8zfdj6y4hxzwqsv9jjnrqfbgs6pml6y68wvkf;1144;/nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep",
            "test-cache-1:TPtt6p5Rnio71vJsw7BLB/NKzc1o4wndMUpEpzGnx+CTDZrWPBAxy59kNQ9myDRrowuuqh9hORHrcri5j7CgAQ==",
        ),
    ];
    for (fp, sig) in cases {
        assert_eq!(sk.sign(fp), sig);
        assert!(public().verify(fp, sig));
    }
}

pub const NARINFO_OUT: &str = "StorePath: /nix/store/l9yxkc7y6q60r6f1dq2y9cf75hw2bcva-demo-out
URL: nar/1dg1ypnll6nxvcpsrx7rhag1z8adl4iwk4hfs7z5sjsndgfrcs3v.nar.zst
Compression: zstd
FileHash: sha256:1dg1ypnll6nxvcpsrx7rhag1z8adl4iwk4hfs7z5sjsndgfrcs3v
FileSize: 324
NarHash: sha256:1qsi7f37c5ar95n8zfdj6y4hxzwqsv9jjnrqfbgs6pml6y68wvkf
NarSize: 1144
References: ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep
Deriver: pk75rs8x0dwfx0nrazxbrqdcxfa8lrs1-demo-out.drv
Sig: test-cache-1:TPtt6p5Rnio71vJsw7BLB/NKzc1o4wndMUpEpzGnx+CTDZrWPBAxy59kNQ9myDRrowuuqh9hORHrcri5j7CgAQ==
";

const NARINFO_CA: &str = "StorePath: /nix/store/5m5ci15djpxd4bs7xa0208nhkhi6cbp3-hello.txt
URL: nar/12kn72kmqja4c7x6a57wi7y4q3ilkw0rr8n37wzjcsrx5kwri6l1.nar
Compression: none
FileHash: sha256:12kn72kmqja4c7x6a57wi7y4q3ilkw0rr8n37wzjcsrx5kwri6l1
FileSize: 136
NarHash: sha256:12kn72kmqja4c7x6a57wi7y4q3ilkw0rr8n37wzjcsrx5kwri6l1
NarSize: 136
References: 
CA: fixed:r:sha256:12kn72kmqja4c7x6a57wi7y4q3ilkw0rr8n37wzjcsrx5kwri6l1
";

const NARINFO_MINIMAL: &str = "StorePath: /nix/store/ziazvcjkvjf2v53qi67g8fq2fq4gyk8d-demo-dep
URL: nar/1bpbj8ygbwi3nlsn2a83k0vnma1h0hkzblx5hxyl7w90ghwsikrc.nar.zst
NarHash: sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4
NarSize: 128
Sig: test-cache-1:xTRu5uoZemodoorTdc2jnkTRk6RfglZGz9GSmbsHge/6umf8PWPOrgO9CUB6Cg9D5fNz7tqxeY3eKI1D5krsCQ==
";

#[test]
fn narinfo_examples_roundtrip() {
    for text in [NARINFO_OUT, NARINFO_CA] {
        let info = NarInfo::parse(text).unwrap();
        assert_eq!(info.render(), text, "render is byte-identical to Nix's");
        assert_eq!(NarInfo::parse(&info.render()).unwrap(), info);
    }
    let out = NarInfo::parse(NARINFO_OUT).unwrap();
    assert_eq!(out.verify(&[public()]).as_deref(), Some("test-cache-1"));
    assert_eq!(
        out.deriver.as_deref(),
        Some("pk75rs8x0dwfx0nrazxbrqdcxfa8lrs1-demo-out.drv")
    );
    assert_eq!(out.file_size, Some(324));

    let ca = NarInfo::parse(NARINFO_CA).unwrap();
    assert!(ca.references.is_empty());
    assert!(ca.content_address_matches());
    assert_eq!(ca.verify(&[public()]), None);

    let min = NarInfo::parse(NARINFO_MINIMAL).unwrap();
    assert_eq!(min.compression, None);
    assert_eq!(min.verify(&[public()]).as_deref(), Some("test-cache-1"));
    let rendered = min.render();
    assert!(rendered.contains("\nCompression: bzip2\n"));
    assert!(rendered.contains("\nReferences: \n"));
    let again = NarInfo::parse(&rendered).unwrap();
    assert_eq!(again.verify(&[public()]).as_deref(), Some("test-cache-1"));
}

#[test]
fn narinfo_accepts_other_hash_notations_and_unknown_keys() {
    let h =
        Sha256Hash::parse("sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4").unwrap();
    for notation in [format!("sha256:{}", h.to_hex()), h.to_sri()] {
        let text = NARINFO_MINIMAL.replace(
            "sha256:13w19wwvpfqyfq1fixzqjphj7dil4vlv9gada02f9kpl04qnmkw4",
            &notation,
        ) + "X-Custom: 1\nSystem: x86_64-linux\n";
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.nar_hash, h);
        assert_eq!(info.system.as_deref(), Some("x86_64-linux"));
        // The fingerprint normalises to nix32, so Nix's signature still verifies.
        assert_eq!(info.verify(&[public()]).as_deref(), Some("test-cache-1"));
    }
}

#[test]
fn narinfo_errors_name_line_and_key() {
    assert_eq!(
        NarInfo::parse(&NARINFO_OUT.replace('\n', "\r\n")),
        Err(NarInfoError::CarriageReturn { line: 1 })
    );
    assert_eq!(
        NarInfo::parse(&NARINFO_OUT.replace("Compression: zstd\n", "Compression: zstd\r\n")),
        Err(NarInfoError::CarriageReturn { line: 3 })
    );
    for (line, key) in [
        (
            "StorePath: /nix/store/l9yxkc7y6q60r6f1dq2y9cf75hw2bcva-demo-out\n",
            "StorePath",
        ),
        (
            "URL: nar/1dg1ypnll6nxvcpsrx7rhag1z8adl4iwk4hfs7z5sjsndgfrcs3v.nar.zst\n",
            "URL",
        ),
        (
            "NarHash: sha256:1qsi7f37c5ar95n8zfdj6y4hxzwqsv9jjnrqfbgs6pml6y68wvkf\n",
            "NarHash",
        ),
        ("NarSize: 1144\n", "NarSize"),
    ] {
        assert_eq!(
            NarInfo::parse(&NARINFO_OUT.replace(line, "")),
            Err(NarInfoError::MissingKey { key }),
        );
    }
    let err = NarInfo::parse(&NARINFO_OUT.replace("NarHash: sha256:1q", "NarHash: sha256:eq"))
        .unwrap_err();
    assert!(matches!(
        err,
        NarInfoError::Hash {
            line: 6,
            key: "NarHash",
            ..
        }
    ));
    assert!(err.to_string().contains("line 6"));
    assert!(matches!(
        NarInfo::parse(&NARINFO_OUT.replace("FileSize: 324", "FileSize: -1")),
        Err(NarInfoError::Number {
            line: 5,
            key: "FileSize",
            ..
        })
    ));
    assert!(matches!(
        NarInfo::parse(&format!("{NARINFO_OUT}NarSize: 1\n")),
        Err(NarInfoError::Duplicate { line: 11, .. })
    ));
    assert!(matches!(
        NarInfo::parse(&NARINFO_OUT.replace("Deriver: ", "Deriver:")),
        Err(NarInfoError::BadSeparator { line: 9, .. })
    ));
    assert!(matches!(
        NarInfo::parse(&format!("{NARINFO_OUT}\n")),
        Err(NarInfoError::MissingColon { line: 11, .. })
    ));
    // Two Sig lines are fine.
    let two = format!("{NARINFO_OUT}Sig: other:AAAA\n");
    assert_eq!(NarInfo::parse(&two).unwrap().sigs.len(), 2);
}
