//! Micro-benchmarks of the per-path and per-segment work of a plan: rendering and hashing a
//! segment's manifest, escaping paths, and matching paths against the segments' globs.
//! `cargo bench -p checkdef` (divan; `-- --help` for its options).
use std::collections::BTreeMap;

use checkdef::config::{Config, MatchScratch};
use checkdef::git::{FileMode, Input};
use checkdef::manifest::{self, ManifestSpec};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

fn inputs(n: usize) -> Vec<Input> {
    (0..n)
        .map(|i| Input {
            mode: FileMode::Regular,
            id: gix::ObjectId::from_hex(format!("{:040x}", i * 7919 + 1).as_bytes()).unwrap(),
            path: format!("src/pkg0000/sub{:03}/mod{i:05}.py", i / 100).into(),
        })
        .collect()
}

fn with_spec<R>(n: usize, f: impl FnOnce(&ManifestSpec<'_>) -> R) -> R {
    let inputs = inputs(n);
    let env = BTreeMap::from([("PYTHONPATH".to_owned(), "src".to_owned())]);
    let fingerprints = BTreeMap::new();
    f(&ManifestSpec {
        segment: "pkg0000-tests",
        platform: "x86_64-linux",
        object_format: gix::hash::Kind::Sha1,
        sandbox: checkdef::config::Sandbox::Filtered,
        network: false,
        command: "python3 -m pytest -q tests/test_pkg0000.py",
        no_tests: checkdef::config::NoTests::Fail,
        env: &env,
        fingerprints: &fingerprints,
        listings: &[],
        inputs: &inputs,
    })
}

#[divan::bench(args = [10, 1_000, 10_000])]
fn manifest_render(bencher: Bencher, n: usize) {
    with_spec(n, |spec| {
        bencher.bench_local(|| manifest::render(black_box(spec)));
    });
}

/// What a plan does per segment: render and hash in one pass, never holding the whole text.
#[divan::bench(args = [10, 1_000, 10_000])]
fn manifest_spec_hash(bencher: Bencher, n: usize) {
    with_spec(n, |spec| {
        bencher.bench_local(|| manifest::spec_hash(black_box(spec)));
    });
}

#[divan::bench(args = [10, 1_000, 10_000])]
fn manifest_hash(bencher: Bencher, n: usize) {
    let text: String = inputs(n)
        .iter()
        .map(|i| format!("100644 {} {}\n", i.id, i.path))
        .collect();
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench_local(|| manifest::input_hash(black_box(&text)));
}

#[divan::bench(args = ["src/pkg0000/sub003/mod00345.py", "src/ünïcode/tab\there.py"])]
fn escape_path(bencher: Bencher, path: &str) {
    let mut out = String::with_capacity(64);
    bencher.bench_local(|| {
        out.clear();
        manifest::escape_into(black_box(path.as_bytes()), &mut out);
        out.len()
    });
}

fn config(segments: usize, extra: &str) -> Config {
    let mut text = String::from("version = 1\n[defaults]\ninclude = [\"pytest.ini\"]\n");
    for s in 0..segments {
        text.push_str(&format!(
            "[[segment]]\nname = \"pkg{s:04}-tests\"\ninclude = [\"src/pkg{s:04}/**\", \"tests/test_pkg{s:04}.py\"{extra}]\ncommand = \"true\"\n"
        ));
    }
    Config::parse(&text, "checkdef.toml".as_ref()).unwrap()
}

/// Matching 10,000 paths of 100 packages (in tree-walk order) against 100 segments; `plain`
/// has only plain paths and `DIR/**` globs, `globs` adds a `**/*.cfg` glob to every segment.
#[divan::bench(args = ["plain", "globs"])]
fn match_10k_paths(bencher: Bencher, kind: &str) {
    let c = config(
        100,
        if kind == "globs" {
            ", \"**/*.cfg\""
        } else {
            ""
        },
    );
    let paths: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "src/pkg{:04}/sub{:03}/mod{i:05}.py",
                i / 100,
                (i % 100) / 10
            )
        })
        .collect();
    let m = c.matcher();
    bencher
        .counter(divan::counter::ItemsCount::new(paths.len()))
        .bench_local(|| {
            let mut scratch = MatchScratch::default();
            let mut out = Vec::new();
            let mut hits = 0;
            for p in &paths {
                m.segments_for(p.as_bytes(), &mut scratch, &mut out);
                hits += out.len();
            }
            hits
        });
}
