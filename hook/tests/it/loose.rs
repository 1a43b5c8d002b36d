//! Trees read from loose objects (a repository between two `git gc` runs) and from a pack give
//! the same inputs and hashes; a damaged loose tree is an error, never a silently shorter tree.
use crate::support::TestRepo;

fn layout(repo: &TestRepo) {
    repo.write("src/a/x.py", "x\n")
        .write("src/a/deep/er/y.py", "y\n")
        .write("src/b/z.py", "z\n")
        .write("big/many.txt", &"line\n".repeat(5000))
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"a\"\ninclude = [\"src/a/**\"]\ncommand = \"true\"\n\n[[segment]]\nname = \"all\"\ninclude = [\"**\"]\ncommand = \"true\"\n",
        );
    // A directory with many entries makes a tree bigger than one read or inflate step.
    for i in 0..400 {
        repo.write(
            &format!("src/b/wide/file_with_a_long_name_{i:04}.py"),
            "w\n",
        );
    }
}

fn loose_trees(repo: &TestRepo) -> usize {
    let out = repo.git(&["count-objects", "-v"]);
    out.lines()
        .find_map(|l| l.strip_prefix("count: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn loose_and_packed_trees_give_the_same_hashes() {
    for repo in [TestRepo::new(), TestRepo::sha256()] {
        layout(&repo);
        repo.commit("init");
        assert!(loose_trees(&repo) > 0, "git commit writes loose objects");
        let loose = repo.hashes(&["--rev", "HEAD"]);
        let manifest_loose = repo.checkdef_text(&["explain", "all", "--rev", "HEAD"], &[]);
        repo.git(&["gc", "-q", "--prune=now"]);
        assert_eq!(loose_trees(&repo), 0, "everything packed");
        assert_eq!(repo.hashes(&["--rev", "HEAD"]), loose);
        let manifest_packed = repo.checkdef_text(&["explain", "all", "--rev", "HEAD"], &[]);
        assert_eq!(manifest_packed.stdout, manifest_loose.stdout);
    }
}

#[test]
fn a_damaged_loose_tree_is_an_error() {
    let repo = TestRepo::new();
    layout(&repo);
    repo.commit("init");
    let tree = repo.git(&["rev-parse", "HEAD:src/a"]).trim().to_owned();
    let path = repo
        .root
        .join(".git/objects")
        .join(&tree[..2])
        .join(&tree[2..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let keep = bytes.len() / 2;
    bytes.truncate(keep);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let out = repo.checkdef_text(&["plan", "--rev", "HEAD"], &[]);
    assert_ne!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&tree[..7]),
        "names the object: {}",
        out.stderr
    );
}
