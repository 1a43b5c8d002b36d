//! The default Python environment fingerprint: a result from one environment (a venv with one
//! more package) is a miss in another, and a no-op reuses the kept answer without starting the
//! interpreter.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::have_pytest;
use crate::support::{TestRepo, seed_layout};

/// The real interpreter behind `python3` on this machine (not a pyenv shim).
fn real_python() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3");
    assert!(out.status.success());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `python3 -m venv --without-pip --system-site-packages DIR` (pytest comes from the system):
/// the venv's `site-packages` directory.
fn venv(dir: &Path) -> PathBuf {
    let st = Command::new(real_python())
        .args(["-m", "venv", "--without-pip", "--system-site-packages"])
        .arg(dir)
        .status()
        .expect("python3 -m venv");
    assert!(st.success(), "python3 -m venv failed");
    let out = Command::new(dir.join("bin/python3"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A distribution's metadata, as pip leaves it.
fn install_fake_distribution(site: &Path, name: &str, version: &str) {
    let d = site.join(format!("{name}-{version}.dist-info"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nreadme\n"),
    )
    .unwrap();
    std::fs::write(site.join(format!("{name}.py")), "X = 1\n").unwrap();
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_result_from_one_python_environment_is_a_miss_in_another() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    seed_layout(&repo); // `python3 -m pytest …` commands, no fingerprint declared
    repo.commit("init");
    let v = repo.tmp.path().join("venv");
    let site = venv(&v);
    let in_venv = path_with(&v.join("bin"));
    let hash = |env: &[(&str, &str)]| {
        let out = repo.checkdef_env(&["plan", "--json"], env);
        out.expect_code(0);
        out.json["segments"][0]["input_hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let outside = hash(&[]);
    // The same packages (the venv adds none of its own): the same environment.
    assert_eq!(hash(&[("PATH", &in_venv)]), outside);

    install_fake_distribution(&site, "extra_pkg", "1.0");
    let with_extra = hash(&[("PATH", &in_venv)]);
    assert_ne!(
        with_extra, outside,
        "one more package is another environment"
    );
    install_fake_distribution(&site, "extra_pkg", "1.1");
    std::fs::remove_dir_all(site.join("extra_pkg-1.0.dist-info")).unwrap();
    let upgraded = hash(&[("PATH", &in_venv)]);
    assert_ne!(
        upgraded, with_extra,
        "an upgraded package is another environment"
    );

    // What is importable without being a distribution: a directory a `.pth` puts on
    // `sys.path` (`conda develop`, a hand-written one), a module dropped into site-packages.
    // Both used to keep the hash, and a cached PASS for a test that imports them.
    let extra = repo.tmp.path().join("extra-dir");
    std::fs::create_dir(&extra).unwrap();
    std::fs::write(extra.join("fastcalc.py"), "X = 1\n").unwrap();
    std::fs::write(site.join("extra.pth"), format!("{}\n", extra.display())).unwrap();
    let with_pth = hash(&[("PATH", &in_venv)]);
    assert_ne!(
        with_pth, upgraded,
        "a .pth's directory is part of the environment"
    );
    std::fs::write(extra.join("another.py"), "X = 2\n").unwrap();
    let another = hash(&[("PATH", &in_venv)]);
    assert_ne!(another, with_pth, "a module in a .pth's directory is");
    std::fs::remove_file(site.join("extra.pth")).unwrap();
    assert_eq!(hash(&[("PATH", &in_venv)]), upgraded);
    std::fs::write(site.join("loose_module.py"), "X = 1\n").unwrap();
    assert_ne!(
        hash(&[("PATH", &in_venv)]),
        upgraded,
        "a module of no distribution is part of the environment"
    );
    std::fs::remove_file(site.join("loose_module.py")).unwrap();

    // A pass inside the venv is not served outside it (nor the other way round).
    let run = repo.run_json(&[], &[("PATH", &in_venv)]);
    run.expect_code(0);
    assert_eq!(run.source("foo-tests"), "run");
    let run = repo.run_json(&[], &[]);
    run.expect_code(0);
    assert_eq!(run.source("foo-tests"), "run", "{}", run.stderr);
    let run = repo.run_json(&[], &[("PATH", &in_venv)]);
    assert_eq!(run.source("foo-tests"), "local");

    // The manifest says what was hashed.
    let out = repo.checkdef_env(&["explain", "foo-tests"], &[("PATH", &in_venv)]);
    assert!(
        out.stdout.contains("fingerprint { python = \"python3\" }")
            && out.stdout.contains("distribution extra-pkg==1.1")
            && out.stdout.contains("version "),
        "{}",
        out.stdout
    );
}

#[test]
fn a_no_op_reuses_the_environment_without_starting_python() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    seed_layout(&repo);
    repo.commit("init");
    let v = repo.tmp.path().join("venv");
    let site = venv(&v);
    // A python3 that counts its starts.
    let bin = repo.tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = repo.tmp.path().join("calls");
    let wrapper = bin.join("python3");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho start >> '{}'\nexec '{}' \"$@\"\n",
            calls.display(),
            v.join("bin/python3").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = path_with(&bin);
    let starts = || {
        std::fs::read_to_string(&calls)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let plan = || {
        let out = repo.checkdef_env(&["plan", "--json"], &[("PATH", &path)]);
        out.expect_code(0);
        out.json["segments"][0]["input_hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = plan();
    assert_eq!(
        starts(),
        1,
        "the first plan asks python3 once for both segments"
    );
    assert_eq!(plan(), first);
    assert_eq!(starts(), 1, "a no-op starts no python3");
    // pip install: a new *.dist-info changes site-packages' mtime → asked again, new hash.
    std::thread::sleep(std::time::Duration::from_millis(20));
    install_fake_distribution(&site, "late", "2.0");
    let after = plan();
    assert_ne!(after, first);
    assert_eq!(starts(), 2);
    assert_eq!(plan(), after);
    assert_eq!(starts(), 2);
}

#[test]
fn fingerprint_empty_list_turns_the_default_off_and_a_missing_interpreter_is_exit_2() {
    let repo = TestRepo::new();
    seed_layout(&repo);
    repo.commit("init");
    // No python3 on PATH at all (plan needs nothing else from PATH: git is read in-process).
    let empty = repo.tmp.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let no_python: &[(&str, &str)] = &[("PATH", empty.to_str().unwrap())];
    let out = repo.checkdef_env(&["plan"], no_python);
    out.expect_code(2);
    assert!(
        out.stderr.contains("no Python interpreter `python3`")
            && out.stderr.contains("fingerprint = []"),
        "{}",
        out.stderr
    );
    let config =
        crate::support::SEED_CONFIG.replace("[defaults]\n", "[defaults]\nfingerprint = []\n");
    repo.write("checkdef.toml", &config);
    let out = repo.checkdef_env(&["plan"], no_python);
    out.expect_code(0);
}

/// The Python fingerprint lists the environment, never the repository: with `PYTHONPATH` into
/// the work tree (relative or absolute), the probe neither runs a `sitecustomize` found there
/// outside the sandbox nor writes bytecode into the work tree; the check itself, a fresh
/// interpreter in its sandbox, still runs it.
#[test]
fn the_python_fingerprint_runs_no_repository_code_and_writes_nothing_into_the_work_tree() {
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let root = repo.root.canonicalize().unwrap();
    repo.write(
        "src/sitecustomize.py",
        "import os\nos.environ['SITE_RAN'] = '1'\ntry:\n    open(os.path.join(os.path.dirname(__file__), 'ran-outside'), 'a').close()\nexcept OSError:\n    pass\n",
    )
    .write(
        "tests/test_site.py",
        "import os\n\n\ndef test_site_ran():\n    assert os.environ.get('SITE_RAN') == '1'\n",
    )
    .write(
        "checkdef.toml",
        &format!(
            "version = 1\n\n[[segment]]\nname = \"rel\"\ninclude = [\"src/**\"]\ntests = [\"tests/test_site.py\"]\nenv = {{ PYTHONPATH = \"src\" }}\n\n[[segment]]\nname = \"abs\"\ninclude = [\"src/**\"]\ntests = [\"tests/test_site.py\"]\nenv = {{ PYTHONPATH = \"{}/src\" }}\n",
            root.display()
        ),
    );
    repo.commit("a sitecustomize on PYTHONPATH");
    let out = repo.run_json(&["--rev", "HEAD"], &[]);
    out.expect_code(0);
    assert!(
        !repo.root.join("src/ran-outside").exists() && !repo.root.join("src/__pycache__").exists(),
        "the fingerprint ran src/sitecustomize.py outside the sandbox: {:?}",
        std::fs::read_dir(repo.root.join("src"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_spelling_of_a_python_command_hashes_its_environment() {
    // Only a command whose first word was an interpreter got the default fingerprint: `pytest
    // -q`, `PYTHONPATH=src python3 -m pytest`, `cd src && python3 …` kept a cached PASS after
    // a package upgrade.
    if !have_pytest() {
        return;
    }
    let repo = TestRepo::new();
    let v = repo.tmp.path().join("venv");
    let site = venv(&v);
    // A pytest whose own venv is not `python3`'s (pipx installs them so).
    let bin = repo.tmp.path().join("pytest-bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("pytest");
    std::fs::write(
        &script,
        format!(
            "#!{}\nimport sys, pytest\nsys.exit(pytest.console_main())\n",
            v.join("bin/python3").display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let commands = [
        "pytest -q tests/test_foo.py",
        "PYTHONPATH=src python3 -m pytest -q tests/test_foo.py",
        "cd tests && python3 -m pytest -q test_foo.py",
        "env PYTHONPATH=src python3 -m pytest -q tests/test_foo.py",
    ];
    let mut config = String::from("version = 1\n");
    for (i, c) in commands.iter().enumerate() {
        config.push_str(&format!(
            "\n[[segment]]\nname = \"s{i}\"\ninclude = [\"tests/**\"]\ncommand = {c:?}\n"
        ));
    }
    repo.write("tests/test_foo.py", "def test_foo(): pass\n")
        .write("checkdef.toml", &config);
    repo.commit("init");
    let path = format!("{}:{}", bin.display(), path_with(&v.join("bin")));
    // The pytest script alone ahead of the machine's PATH: `python3` there is not its venv's.
    let pipx_path = path_with(&bin);
    let hashes_with = |path: &str| {
        let out = repo.checkdef_env(&["plan", "--json"], &[("PATH", path)]);
        out.expect_code(0);
        (0..commands.len())
            .map(|i| {
                out.json["segments"][i]["input_hash"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let before = hashes_with(&path);
    let pipx_before = hashes_with(&pipx_path);
    install_fake_distribution(&site, "extra_pkg", "1.0");
    let after = hashes_with(&path);
    for (i, c) in commands.iter().enumerate() {
        assert_ne!(before[i], after[i], "`{c}` kept its hash after an install");
    }
    assert_ne!(
        pipx_before[0],
        hashes_with(&pipx_path)[0],
        "`pytest` is hashed with its own interpreter's environment, not python3's"
    );
    let run = repo.run_json(&[], &[("PATH", &path)]);
    run.expect_code(0);
}

/// A shim in the manner of pyenv's `python3`: the nearest `.python-version` from the directory
/// it runs in up picks the interpreter, `old` a venv (where `t.py` fails), anything else (an
/// unreadable file too, as pyenv reads one as no version) the real one. Its directory.
fn version_shim(repo: &TestRepo) -> PathBuf {
    let old = repo.tmp.path().join("old");
    venv(&old);
    let shims = repo.tmp.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    crate::support::write_executable(
        &shims.join("python3"),
        &format!(
            "#!/bin/sh\nd=$(pwd)\nv=\nwhile :; do\n  if [ -f \"$d/.python-version\" ]; then v=$(cat \"$d/.python-version\" 2>/dev/null); break; fi\n  [ \"$d\" = / ] && break\n  d=$(dirname \"$d\")\ndone\ncase \"$v\" in old) exec {} \"$@\";; *) exec {} \"$@\";; esac\n",
            old.join("bin/python3").display(),
            real_python().display()
        ),
    );
    shims
}

/// Passes in the real interpreter, fails in a venv (the `old` one of [`version_shim`]).
const NOT_IN_A_VENV: &str = "import sys\nsys.exit(1 if sys.prefix != sys.base_prefix else 0)\n";

/// The version file a shim reads is the snapshot's: a commit is checked (`--rev`, the pre-push
/// hook) with its own `.python-version`, never with the work tree's over it, and a fingerprint
/// that could only describe the work tree's interpreter stops the run instead of keying the
/// result on another environment; one below the root is read in the view, not an unreadable
/// placeholder. (Wrong PASSes from outside trial 8: `pyenv local` left uncommitted let a push
/// through that a clean clone fails; a committed `sub/.python-version` read as "no version".)
#[test]
fn a_shim_picks_the_interpreter_by_the_snapshot_s_version_files() {
    let repo = TestRepo::new();
    let shims = version_shim(&repo);
    let path = path_with(&shims);
    let env = [("PATH", path.as_str())];
    repo.write("t.py", NOT_IN_A_VENV)
        .write(".python-version", "old\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"t\"\ninclude = [\"t.py\"]\ncommand = \"python3 t.py\"\n",
        );
    repo.commit("pinned to old");
    repo.checkdef_env(&["run", "--rev", "HEAD"], &env)
        .expect_code(1);
    // `pyenv local` in the work tree, not committed.
    repo.write(".python-version", "new\n");
    repo.checkdef_env(&["run"], &env).expect_code(0);
    let out = repo.checkdef_env(&["run", "--rev", "HEAD", "--force"], &env);
    out.expect_code(2);
    assert!(
        out.stderr.contains("`.python-version` of commit") && out.stderr.contains("hint: "),
        "{}",
        out.stderr
    );
    // The hook checks what is pushed: it stops the push the same way.
    repo.add_bare_remote("origin", "remote");
    repo.checkdef_env(&["install"], &env).expect_code(0);
    let push = repo.git_out(&["push", "-q", "origin", "main"], &env);
    assert_ne!(push.code, 0, "{}", push.stderr);
    assert!(
        push.stderr.contains("`.python-version` of commit"),
        "{}",
        push.stderr
    );

    // Below the root, where the command runs: read in the view as the commit has it.
    repo.remove(".python-version");
    repo.write("sub/t.py", NOT_IN_A_VENV).write("sub/.python-version", "old\n")
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"t\"\ninclude = [\"sub/t.py\"]\ncommand = \"cd sub && python3 t.py\"\n\n[[segment]]\nname = \"ghost\"\ninclude = [\"no/such/**\"]\ncommand = \"true\"\n",
        );
    repo.commit("pinned below");
    for args in [&["run"][..], &["run", "--rev", "HEAD", "--force"]] {
        let out = repo.checkdef_env(args, &env);
        out.expect_code(1);
        // Its version files are not what a segment's globs matched.
        assert!(
            out.stderr.contains("segment ghost matches no files"),
            "{}",
            out.stderr
        );
    }
    // An ignored one is the environment, as a virtual environment is: the check and the
    // fingerprint both see the work tree's.
    repo.write(".gitignore", ".python-version\n")
        .write("t.py", NOT_IN_A_VENV)
        .write(
            "checkdef.toml",
            "version = 1\n\n[[segment]]\nname = \"t\"\ninclude = [\"t.py\"]\ncommand = \"python3 t.py\"\n",
        );
    repo.commit("root again, version file ignored");
    repo.write(".python-version", "old\n");
    repo.checkdef_env(&["run", "--rev", "HEAD"], &env)
        .expect_code(1);
    repo.write(".python-version", "new\n");
    repo.checkdef_env(&["run", "--rev", "HEAD"], &env)
        .expect_code(0);

    // Not ignored, not in the commit (`pyenv local` where the commit has none): the fingerprint
    // would see it and the check would not (from outside trial 9).
    repo.write(".gitignore", "");
    repo.git(&["add", ".gitignore"]);
    repo.git(&["commit", "-qm", "no longer ignored"]);
    let out = repo.checkdef_env(&["run", "--rev", "HEAD", "--force"], &env);
    out.expect_code(2);
    assert!(
        out.stderr.contains("not ignored, and not in commit"),
        "{}",
        out.stderr
    );
    // A symbolic link: its target is not followed into the view.
    repo.remove(".python-version");
    repo.write("conf/pyver", "old\n");
    repo.symlink("conf/pyver", ".python-version");
    repo.commit("a linked version file");
    for args in [&["run"][..], &["run", "--rev", "HEAD", "--force"]] {
        let out = repo.checkdef_env(args, &env);
        out.expect_code(2);
        assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    }
    // Checked out with CRLF (`eol=crlf`): the same file as the commit's, no error.
    repo.remove(".python-version");
    repo.write(".gitattributes", ".python-version text eol=crlf\n")
        .write(".python-version", "new\n");
    repo.commit("a CRLF version file");
    repo.remove(".python-version");
    repo.git(&["checkout", "--", ".python-version"]);
    assert_eq!(
        std::fs::read(repo.path(".python-version")).unwrap(),
        b"new\r\n"
    );
    repo.checkdef_env(&["run", "--rev", "HEAD", "--force"], &env)
        .expect_code(0);
}
