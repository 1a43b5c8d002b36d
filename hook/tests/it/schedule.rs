//! The order misses start in: the longest expected check first, from the durations of earlier
//! runs (and of cached results); a check never seen before first of all.
use crate::support::TestRepo;

/// Segment names in the order their verdict lines were printed (`-j 1`: the order they ran).
fn run_order(repo: &TestRepo) -> Vec<String> {
    let out = repo.checkdef_env(&["run", "-j", "1"], &[]);
    out.expect_code(0);
    out.stderr
        .lines()
        .filter(|l| !l.contains("cached ("))
        .filter_map(|l| l.strip_prefix("✅ "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

fn config(segments: &[(&str, &str)]) -> String {
    let mut s = String::from("version = 1\n\n[defaults]\ninclude = [\"common\"]\n");
    for (name, sleep) in segments {
        s.push_str(&format!(
            "\n[[segment]]\nname = \"{name}\"\ninclude = [\"{name}/**\"]\ncommand = \"sleep {sleep}\"\n"
        ));
    }
    s
}

#[test]
fn misses_start_longest_expected_first_and_new_segments_before_known_ones() {
    let repo = TestRepo::new();
    let segments = [("quick", "0"), ("medium", "0.3"), ("long", "0.8")];
    for (name, _) in &segments {
        repo.write(&format!("{name}/x"), "x\n");
    }
    // Never run before: the segment with more inputs first, then the order of the file.
    repo.write("medium/y", "y\n")
        .write("common", "1\n")
        .write("checkdef.toml", &config(&segments));
    repo.commit("init");
    assert_eq!(run_order(&repo), ["medium", "quick", "long"]);

    // Every segment misses again (a shared input changed); a new one joins.
    repo.write("common", "2\n").write("fresh/x", "x\n").write(
        "checkdef.toml",
        &config(&[
            ("quick", "0"),
            ("medium", "0.3"),
            ("long", "0.8"),
            ("fresh", "0"),
        ]),
    );
    assert_eq!(
        run_order(&repo),
        ["fresh", "long", "medium", "quick"],
        "unknown first, then by the durations the last run recorded"
    );

    // A cached result's original duration counts too: with the history gone, a run whose only
    // miss is `quick` learns the others' durations from their hits.
    std::fs::remove_file(repo.cache.join("checkdef-durations.json")).unwrap();
    repo.write("quick/x", "changed\n");
    assert_eq!(run_order(&repo), ["quick"]);
    repo.write("quick/x", "changed again\n")
        .write("medium/x", "changed\n")
        .write("long/x", "changed\n");
    assert_eq!(run_order(&repo), ["long", "medium", "quick"]);
}
