//! `checkdef explain`, `checkdef plan --explain` and the `explain` field of `checkdef run --json`:
//! what changed since a segment's most recent local result, one snapshot per kind of change.
use crate::support::{CmdOut, TestRepo};

const CONFIG: &str = r#"version = 1

[[segment]]
name = "s"
include = ["src/**"]
env = { MODE = "a" }
fingerprint = ["cat fp.txt"]
command = "test -f src/a.txt"

[[segment]]
name = "t"
include = ["other/**"]
command = "true"
"#;

/// A committed repository with segment `s` (src/a.txt, src/b.txt; env MODE=a; fingerprint
/// `cat fp.txt`) whose result is in the local cache.
fn repo_with_result() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("src/a.txt", "a\n")
        .write("src/b.txt", "b\n")
        .write("fp.txt", "v1\n")
        .write("other/x", "x\n")
        .write("checkdef.toml", CONFIG);
    repo.commit("init");
    repo.checkdef_env(&["run", "-s", "s"], &[]).expect_code(0);
    repo
}

/// Replace what differs between runs: store path hashes, the input hash, commit ids and the
/// cache directory.
fn normalize(repo: &TestRepo, s: &str) -> String {
    let s = s.replace(repo.cache.to_str().unwrap(), "CACHE");
    let mut out = String::new();
    for line in s.lines() {
        let mut l = line.to_owned();
        if let Some(rest) = l.strip_prefix("input hash ") {
            assert_eq!(rest.len(), 64, "{l}");
            l = "input hash HASH".to_owned();
        }
        while let Some(i) = l.find("/nix/store/").map(|i| i + "/nix/store/".len()) {
            if l[i..].starts_with("HASH") {
                break;
            }
            l.replace_range(i..i + 32, "HASH");
        }
        if let Some(i) = l.find(", commit ").map(|i| i + ", commit ".len()) {
            let end = l[i..]
                .find(|c: char| !c.is_ascii_hexdigit())
                .map_or(l.len(), |e| i + e);
            l.replace_range(i..end, "COMMIT");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn explain(repo: &TestRepo, args: &[&str]) -> (CmdOut, String) {
    let mut full = vec!["explain", "s"];
    full.extend_from_slice(args);
    let out = repo.checkdef_text(&full, &[]);
    out.expect_code(0);
    let text = normalize(repo, &out.stderr);
    snapshot(args, &text);
    (out, text)
}

/// The normalised human output as an insta snapshot (`tests/it/snapshots/`), named after the
/// test and the extra arguments; the explicit assertions of each test stay.
fn snapshot(args: &[&str], text: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("explain")
        .rsplit("::")
        .next()
        .unwrap_or("explain")
        .to_owned();
    let mut name = test;
    for a in args {
        name.push('_');
        name.push_str(a.trim_start_matches('-'));
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, text));
}

fn miss_report(details: &[&str], summary: &str) -> String {
    let mut s = String::from(
        "input hash HASH\nstore path /nix/store/HASH-checkdef-s\nmiss: compared with the most recent local result of s (/nix/store/HASH-checkdef-s, commit COMMIT+worktree):\n",
    );
    for d in details {
        s.push_str("  ");
        s.push_str(d);
        s.push('\n');
    }
    s.push_str(&format!("summary: {summary}\n"));
    s
}

#[test]
fn explain_file_modified() {
    let repo = repo_with_result();
    repo.write("src/a.txt", "x\n");
    let (out, text) = explain(&repo, &[]);
    assert!(
        out.stdout.starts_with("checkdef-manifest 1\nsegment s\n"),
        "manifest on stdout"
    );
    assert_eq!(
        text,
        miss_report(
            &["modified     src/a.txt (blob 78981922613b → 587be6b4c3f9)"],
            "1 modified (src/a.txt)"
        )
    );
}

#[test]
fn explain_file_added() {
    let repo = repo_with_result();
    repo.write("src/new.txt", "a\n");
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(&["added        src/new.txt"], "1 added (src/new.txt)")
    );
}

#[test]
fn explain_file_removed() {
    let repo = repo_with_result();
    repo.remove("src/b.txt");
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(&["removed      src/b.txt"], "1 removed (src/b.txt)")
    );
}

#[test]
fn explain_mode_change() {
    let repo = repo_with_result();
    repo.chmod("src/b.txt", 0o755);
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(
            &["mode         src/b.txt 100644 → 100755"],
            "1 mode change (src/b.txt 100644→100755)"
        )
    );
}

#[test]
fn explain_env_change() {
    let repo = repo_with_result();
    repo.write(
        "checkdef.toml",
        &CONFIG.replace("MODE = \"a\"", "MODE = \"b\", EXTRA = \"1\""),
    );
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(
            &[
                "env          EXTRA: (unset) → \"1\"",
                "env          MODE: \"a\" → \"b\""
            ],
            "env EXTRA added, env MODE changed"
        )
    );
}

#[test]
fn explain_fingerprint_change() {
    let repo = repo_with_result();
    repo.write("fp.txt", "v2\n");
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(
            &["fingerprint  `cat fp.txt`: \"v1\\n\" → \"v2\\n\""],
            "fingerprint `cat fp.txt` output changed"
        )
    );
}

#[test]
fn explain_command_change() {
    let repo = repo_with_result();
    repo.write(
        "checkdef.toml",
        &CONFIG.replace("test -f src/a.txt", "test -s src/a.txt"),
    );
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(
            &["command      \"test -f src/a.txt\" → \"test -s src/a.txt\""],
            "command changed"
        )
    );
}

#[test]
fn explain_hit_and_no_earlier_result() {
    let repo = repo_with_result();
    assert_eq!(
        explain(&repo, &[]).1,
        "input hash HASH\nstore path /nix/store/HASH-checkdef-s\nhit: the local cache has this result\n"
    );
    let out = repo.checkdef_text(&["explain", "t"], &[]);
    out.expect_code(0);
    assert!(
        normalize(&repo, &out.stderr)
            .ends_with("miss: no earlier result of t in the local cache CACHE to compare with\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn explain_compares_with_the_most_recent_result() {
    let repo = repo_with_result();
    repo.write("src/a.txt", "x\n");
    repo.checkdef_env(&["run", "-s", "s"], &[]).expect_code(0);
    repo.write("src/b.txt", "x\n");
    // Against the second result (a.txt already x), not the first.
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(
            &["modified     src/b.txt (blob 61780798228d → 587be6b4c3f9)"],
            "1 modified (src/b.txt)"
        )
    );
    // --rev reads the commit: it matches the first result exactly.
    let (_, text) = explain(&repo, &["--rev", "HEAD"]);
    assert!(
        text.ends_with("hit: the local cache has this result\n"),
        "{text}"
    );
}

/// "Most recent" is the most recently *used* result, by the rule `cache gc` evicts by: a hit
/// refreshes the entry's stamp (never its narinfo, which would void the stamp). Going back to
/// the first inputs (a hit on the first result) and then changing a file compares with the
/// first result, not with the second one, written later but not used since.
#[test]
fn explain_compares_with_the_most_recently_used_result() {
    let repo = repo_with_result();
    let first = crate::support::segment_field(&repo.plan_json(&[]), "s", "store_path");
    let first = first.trim_start_matches("/nix/store/")[..32].to_owned();
    repo.write("src/a.txt", "x\n");
    repo.checkdef_env(&["run", "-s", "s"], &[]).expect_code(0);
    // Both results written days ago, the first one earlier; their stamps as old.
    let day = std::time::Duration::from_secs(24 * 3600);
    let set = |p: &std::path::Path, ago: std::time::Duration| {
        std::fs::File::options()
            .append(true)
            .open(p)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - ago)
            .unwrap();
    };
    for ni in repo.cached_narinfos() {
        let hash = ni.file_stem().unwrap().to_str().unwrap().to_owned();
        let ago = if hash == first { 3 * day } else { 2 * day };
        set(&ni, ago);
        set(&repo.cache.join("checkdef-stamps").join(&hash), ago);
    }
    // Back to the first inputs: a hit on the first result.
    repo.write("src/a.txt", "a\n");
    let hit = repo.run_json(&["-s", "s"], &[]);
    assert_eq!(hit.source("s"), "local", "{}", hit.stderr);
    repo.write("src/b.txt", "x\n");
    assert_eq!(
        explain(&repo, &[]).1,
        miss_report(
            &["modified     src/b.txt (blob 61780798228d → 587be6b4c3f9)"],
            "1 modified (src/b.txt)"
        )
    );
}

#[test]
fn plan_explain_one_line_per_miss() {
    let repo = repo_with_result();
    repo.write("src/a.txt", "x\n");
    let out = repo.checkdef_env(&["plan", "--explain"], &[]);
    out.expect_code(0);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("s: "))
        .collect();
    assert_eq!(
        lines,
        [
            "s: 1 modified (src/a.txt)",
            "t: no earlier result in the local cache"
        ],
        "{}",
        out.stderr
    );
    // --json keeps stdout one document; the lines stay on stderr.
    let out = repo.checkdef_env(&["plan", "--json", "--explain"], &[]);
    out.expect_code(0);
    assert_eq!(out.json["version"], 1);
    assert!(out.stderr.contains("s: 1 modified (src/a.txt)"));
}

#[test]
fn run_json_carries_explain_for_segments_that_ran() {
    let repo = repo_with_result();
    repo.write("src/a.txt", "x\n");
    let out = repo.run_json(&[], &[]);
    out.expect_code(0);
    assert_eq!(out.seg("s")["explain"], "1 modified (src/a.txt)");
    assert_eq!(
        out.seg("t")["explain"],
        serde_json::Value::Null,
        "first run"
    );
    let again = repo.run_json(&[], &[]);
    again.expect_code(0);
    assert_eq!(again.source("s"), "local");
    assert_eq!(again.seg("s")["explain"], serde_json::Value::Null, "cached");
}
