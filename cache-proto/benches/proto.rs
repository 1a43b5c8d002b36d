//! Micro-benchmarks of the formats on checkdef's hit path: NAR writing and reading (a stored
//! result is a small NAR directory; a 1,000-file tree for scale), nix-base32 and the store-path
//! computation. `cargo bench -p cache-proto` (divan; `-- --help` for its options).
use std::collections::BTreeMap;

use cache_proto::nar::{self, NarLimits, NarNode};
use cache_proto::{Sha256Hash, nix32, store_path};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

fn file(len: usize, seed: u8) -> NarNode {
    NarNode::Regular {
        executable: false,
        contents: (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect(),
    }
}

/// The shape checkdef stores: result.json, a manifest of `inputs` lines and a 4 KiB log.
fn result_nar(inputs: usize) -> NarNode {
    let mut dir = BTreeMap::new();
    dir.insert(b"result.json".to_vec(), file(400, 1));
    dir.insert(b"manifest".to_vec(), file(200 + inputs * 75, 2));
    dir.insert(b"log".to_vec(), file(4096, 3));
    NarNode::Directory(dir)
}

/// 1,000 files of 100 bytes in 10 directories.
fn tree_nar() -> NarNode {
    let mut top = BTreeMap::new();
    for d in 0..10u8 {
        let mut dir = BTreeMap::new();
        for f in 0..100u8 {
            dir.insert(format!("mod{f:03}.py").into_bytes(), file(100, f ^ d));
        }
        top.insert(format!("sub{d:02}").into_bytes(), NarNode::Directory(dir));
    }
    NarNode::Directory(top)
}

fn shape(name: &str) -> NarNode {
    match name {
        "result-10" => result_nar(10),
        "result-1000" => result_nar(1000),
        _ => tree_nar(),
    }
}

const SHAPES: [&str; 3] = ["result-10", "result-1000", "tree-1000-files"];

#[divan::bench(args = SHAPES)]
fn nar_write(bencher: Bencher, name: &str) {
    let node = shape(name);
    let len = node.to_bytes().unwrap().len();
    bencher
        .counter(divan::counter::BytesCount::new(len))
        .bench_local(|| black_box(&node).to_bytes().unwrap());
}

#[divan::bench(args = SHAPES)]
fn nar_parse(bencher: Bencher, name: &str) {
    let bytes = shape(name).to_bytes().unwrap();
    let limits = NarLimits::default();
    bencher
        .counter(divan::counter::BytesCount::new(bytes.len()))
        .bench_local(|| nar::parse(black_box(&bytes[..]), &limits).unwrap());
}

#[divan::bench(args = SHAPES)]
fn nar_validate(bencher: Bencher, name: &str) {
    let bytes = shape(name).to_bytes().unwrap();
    let limits = NarLimits::default();
    bencher
        .counter(divan::counter::BytesCount::new(bytes.len()))
        .bench_local(|| nar::validate(black_box(&bytes[..]), &limits).unwrap());
}

#[divan::bench(args = SHAPES)]
fn nar_hash(bencher: Bencher, name: &str) {
    let node = shape(name);
    bencher.bench_local(|| black_box(&node).nar_hash().unwrap());
}

#[divan::bench]
fn nix32_encode_sha256(bencher: Bencher) {
    let hash = Sha256Hash::digest(b"checkdef");
    bencher.bench_local(|| nix32::encode(black_box(hash.as_bytes())));
}

#[divan::bench]
fn nix32_decode_sha256(bencher: Bencher) {
    let text = nix32::encode(Sha256Hash::digest(b"checkdef").as_bytes());
    bencher.bench_local(|| nix32::decode(black_box(&text)).unwrap());
}

#[divan::bench]
fn store_path_for_input_key(bencher: Bencher) {
    let key = format!("checkdef-v1:{}", "0123456789abcdef".repeat(4));
    bencher.bench_local(|| {
        store_path::for_input_key(black_box(&key), "checkdef-pkg0000-tests").unwrap()
    });
}
