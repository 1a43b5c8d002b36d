//! Property tests: NAR write→parse→write, nix32 encode/decode, narinfo render→parse.

use std::collections::BTreeMap;

use cache_proto::hash::Sha256Hash;
use cache_proto::nar::{self, NarLimits, NarNode};
use cache_proto::narinfo::NarInfo;
use cache_proto::nix32;
use cache_proto::store_path::StorePath;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no / or nul", |b| *b != 0 && *b != b'/'),
        1..12,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn tree() -> impl Strategy<Value = NarNode> {
    let leaf = prop_oneof![
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..80)).prop_map(
            |(executable, contents)| NarNode::Regular {
                executable,
                contents
            }
        ),
        proptest::collection::vec(1u8..=255, 1..40).prop_map(|target| NarNode::Symlink { target }),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        proptest::collection::btree_map(name(), inner, 0..6).prop_map(NarNode::Directory)
    })
}

fn store_path() -> impl Strategy<Value = StorePath> {
    (
        "[0-9a-df-np-sv-z]{32}",
        "[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]{0,40}",
    )
        .prop_map(|(h, n)| StorePath::from_parts(&h, &n).unwrap())
}

fn hash() -> impl Strategy<Value = Sha256Hash> {
    any::<[u8; 32]>().prop_map(Sha256Hash)
}

fn narinfo() -> impl Strategy<Value = NarInfo> {
    (
        store_path(),
        "nar/[a-z0-9]{1,52}\\.nar(\\.zst|\\.xz)?",
        proptest::option::of(prop_oneof![
            Just("zstd".to_owned()),
            Just("xz".to_owned()),
            Just("none".to_owned())
        ]),
        proptest::option::of(hash()),
        proptest::option::of(any::<u64>()),
        hash(),
        1u64..,
        proptest::collection::vec(store_path(), 0..4),
        proptest::option::of(store_path()),
        proptest::collection::btree_set("[a-z0-9-]{1,10}:[A-Za-z0-9+/]{4,20}==", 0..3),
        proptest::option::of("fixed:r:sha256:[0-9a-df-np-sv-z]{52}"),
        proptest::option::of("[a-z0-9_]{1,12}-linux"),
    )
        .prop_map(
            |(
                sp,
                url,
                compression,
                file_hash,
                file_size,
                nar_hash,
                nar_size,
                refs,
                deriver,
                sigs,
                ca,
                system,
            )| {
                let mut references: Vec<String> = refs.iter().map(StorePath::base_name).collect();
                references.sort();
                references.dedup();
                NarInfo {
                    store_path: sp,
                    url,
                    // `render` writes bzip2 for None, which parses back as Some("bzip2").
                    compression: Some(compression.unwrap_or_else(|| "bzip2".to_owned())),
                    file_hash,
                    file_size,
                    nar_hash,
                    nar_size,
                    references,
                    deriver: deriver.map(|d| format!("{}.drv", d.base_name())),
                    sigs: sigs.into_iter().collect(),
                    ca,
                    system,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nar_roundtrip(t in tree()) {
        let bytes = t.to_bytes().unwrap();
        let parsed = nar::parse(&bytes[..], &NarLimits::default()).unwrap();
        prop_assert_eq!(&parsed, &t);
        prop_assert_eq!(parsed.to_bytes().unwrap(), bytes.clone());
        prop_assert_eq!(nar::validate(&bytes[..], &NarLimits::default()).unwrap(), bytes.len() as u64);
        let (h, n) = t.nar_hash().unwrap();
        prop_assert_eq!(h, Sha256Hash::digest(&bytes));
        prop_assert_eq!(n, bytes.len() as u64);
    }

    #[test]
    fn nar_unpack_dump_roundtrip(t in tree()) {
        let bytes = t.to_bytes().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("x");
        nar::unpack(&bytes[..], &dest, &NarLimits::default()).unwrap();
        let mut again = Vec::new();
        nar::dump_path(&dest, &mut again).unwrap();
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn nar_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = nar::parse(&bytes[..], &NarLimits::default());
    }

    #[test]
    fn nix32_roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..70)) {
        let s = nix32::encode(&bytes);
        prop_assert_eq!(s.len(), nix32::encoded_len(bytes.len()));
        prop_assert_eq!(nix32::decode(&s).unwrap(), bytes);
    }

    #[test]
    fn nix32_decode_is_canonical(s in "[0-9a-z]{0,60}") {
        if let Ok(bytes) = nix32::decode(&s) {
            prop_assert_eq!(nix32::encode(&bytes), s);
        }
    }

    #[test]
    fn narinfo_roundtrip(info in narinfo()) {
        let text = info.render();
        let parsed = NarInfo::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &info);
        prop_assert_eq!(parsed.render(), text);
    }

    #[test]
    fn narinfo_parse_never_panics(text in "(?s).{0,400}") {
        let _ = NarInfo::parse(&text);
    }

    #[test]
    fn narinfo_signature_roundtrip(mut info in narinfo()) {
        info.sigs.clear();
        info.sign(&crate::common::secret());
        let parsed = NarInfo::parse(&info.render()).unwrap();
        let signer = parsed.verify(&[crate::common::public()]);
        prop_assert_eq!(signer.as_deref(), Some("test-cache-1"));
    }
}

#[test]
fn btree_order_is_nar_order() {
    let mut m = BTreeMap::new();
    for n in [&b"b"[..], b"a b", b"a", b"_", b"B", b"A", b"1", b"\xff"] {
        m.insert(
            n.to_vec(),
            NarNode::Symlink {
                target: b"t".to_vec(),
            },
        );
    }
    let keys: Vec<_> = m.keys().cloned().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}
