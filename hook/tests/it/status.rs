//! `checkdef status`: hook, configuration, caches and keys, on a fresh repository and on a
//! configured one.
use std::io::{Read, Write};
use std::net::TcpListener;

use crate::support::{CmdOut, TestRepo, shell_layout};

/// The value of the row `label` in status output.
fn row<'a>(out: &'a CmdOut, label: &str) -> &'a str {
    out.stderr
        .lines()
        .find(|l| l.starts_with(label) && l.as_bytes().get(13) == Some(&b' '))
        .map(|l| l[14..].trim_end())
        .unwrap_or_else(|| panic!("no {label} row in\n{}", out.stderr))
}

#[test]
fn status_on_a_fresh_repository() {
    let repo = TestRepo::new();
    let out = repo.checkdef_env(&["status"], &[]);
    out.expect_code(0);
    assert!(out.stdout.is_empty(), "status writes to stderr only");
    assert!(out.stderr.starts_with("checkdef "), "{}", out.stderr);
    assert!(
        row(&out, "repository").ends_with("(no commits yet)"),
        "{}",
        out.stderr
    );
    assert!(row(&out, "hook").starts_with("not installed ("));
    assert_eq!(
        row(&out, "config"),
        "no checkdef.toml at the repository root; `checkdef init` drafts one"
    );
    let cache = repo.cache.display().to_string();
    assert_eq!(
        row(&out, "local cache"),
        format!("{cache} (CHECKDEF_CACHE_DIR): 0 entries, 0 B")
    );
    assert!(row(&out, "remote").starts_with("none: results stay on this machine"));
    assert!(row(&out, "trusted keys").starts_with("none: no remote result is accepted"));
    assert!(row(&out, "secret key").starts_with("not set (CHECKDEF_SECRET_KEY_FILE)"));
    let sandbox = row(&out, "sandbox");
    assert!(
        sandbox.starts_with("isolated (") || sandbox.starts_with("NOT isolated ("),
        "{sandbox}"
    );
    if testkit::in_ci() {
        assert!(
            sandbox.starts_with("isolated ("),
            "CI must isolate checks: {sandbox}"
        );
    }
    // Forced off, status says so and why.
    let off = repo.checkdef_env(&["status"], &[("CHECKDEF_ISOLATION", "off")]);
    assert!(
        row(&off, "sandbox").starts_with("NOT isolated (CHECKDEF_ISOLATION=off)"),
        "{}",
        off.stderr
    );
}

#[test]
fn status_counts_entries_and_sees_the_hook() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.commit("init");
    repo.checkdef_env(&["run"], &[]).expect_code(0);
    repo.checkdef_env(&["install"], &[]).expect_code(0);
    let out = repo.checkdef_env(&["status"], &[]);
    out.expect_code(0);
    assert!(row(&out, "repository").contains("(HEAD "), "{}", out.stderr);
    assert!(
        row(&out, "hook").starts_with("installed at ") && row(&out, "hook").contains(", calls "),
        "{}",
        out.stderr
    );
    assert!(row(&out, "config").ends_with("checkdef.toml: 2 segments (foo, bar)"));
    let cache = row(&out, "local cache");
    assert!(cache.contains(": 2 entries, "), "{cache}");
    assert!(!cache.ends_with(" 0 B"), "{cache}");
}

/// The entries status counts are the ones `cache gc` and `cache verify` count: checkdef's
/// results. A narinfo another tool wrote to a shared `file://` directory (`nix copy`) is
/// mentioned apart, never counted as a result.
#[test]
fn status_counts_results_as_cache_gc_does() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.commit("init");
    repo.checkdef_env(&["run"], &[]).expect_code(0);
    let hash = "0".repeat(32);
    std::fs::write(
        repo.cache.join(format!("{hash}.narinfo")),
        format!(
            "StorePath: /nix/store/{hash}-hello-2.12\nURL: nar/{hash}.nar.xz\nCompression: xz\nNarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\nNarSize: 120\n"
        ),
    )
    .unwrap();
    std::fs::write(repo.cache.join(format!("nar/{hash}.nar.xz")), "xz").unwrap();
    let gc = repo.checkdef_env(&["cache", "gc", "--max-size", "1G"], &[]);
    gc.expect_code(0);
    assert!(gc.stderr.contains(" 2 entries, "), "{}", gc.stderr);
    let out = repo.checkdef_env(&["status"], &[]);
    out.expect_code(0);
    let cache = row(&out, "local cache");
    assert!(cache.contains(": 2 entries, "), "{cache}");
    assert!(
        cache.ends_with("; 1 entry of other tools (not checkdef results)"),
        "{cache}"
    );
}

/// A one-shot HTTP server on 127.0.0.1 answering every request with `nix-cache-info`.
fn cache_info_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).expect("blocking listener");
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, handle)
}

#[test]
fn status_probes_the_remote_and_checks_keys() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.checkdef_text(&["keygen", "ci.example-1", "--out", "ci.secret"], &[])
        .expect_code(0);
    let secret = repo.path("ci.secret");
    let public = {
        let out = repo.checkdef_text(&["keygen", "dev-1", "--out", "dev.secret"], &[]);
        out.expect_code(0);
        out.stdout
            .lines()
            .chain(out.stderr.lines())
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("dev-1:")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no public key in {}{}", out.stdout, out.stderr))
    };
    let (url, server) = cache_info_server();
    let config = format!(
        "{}\n[cache]\nremote = \"{url}\"\ntrusted-public-keys = [{{ key = \"{public}\", label = \"ci\" }}]\naccept = \"ci-only\"\n",
        crate::support::SHELL_CONFIG
    );
    repo.write("checkdef.toml", &config);

    let secret_s = secret.to_str().unwrap();
    let out = repo.checkdef_env(
        &["status"],
        &[
            ("CHECKDEF_SECRET_KEY_FILE", secret_s),
            ("CHECKDEF_REMOTE_TOKEN", "t0ken"),
        ],
    );
    out.expect_code(0);
    server.join().unwrap();
    assert_eq!(
        row(&out, "remote"),
        format!(
            "{url} (from checkdef.toml): reachable (nix-cache-info: StoreDir /nix/store, priority 30)"
        )
    );
    assert!(
        out.stderr
            .contains("credentials: bearer token from CHECKDEF_REMOTE_TOKEN"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("t0ken"), "the token is never printed");
    assert_eq!(
        row(&out, "trusted keys"),
        "dev-1 (ci); accept = ci-only: only keys labelled ci"
    );
    let sk = row(&out, "secret key");
    assert!(
        sk.starts_with(&format!(
            "{secret_s}: key ci.example-1, mode 600; passing results are signed with it and pushed"
        )),
        "{sk}"
    );
    assert!(
        !out.stderr
            .contains(&std::fs::read_to_string(&secret).unwrap().trim().to_owned())
    );

    // Unsafe permissions and an unreachable remote are reported, not fatal.
    repo.chmod("ci.secret", 0o644);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = repo.checkdef_env(
        &["status"],
        &[
            ("CHECKDEF_SECRET_KEY_FILE", secret_s),
            ("CHECKDEF_REMOTE", &format!("http://127.0.0.1:{closed}")),
        ],
    );
    out.expect_code(0);
    assert!(
        row(&out, "remote").contains("(from CHECKDEF_REMOTE): UNREACHABLE"),
        "{}",
        out.stderr
    );
    assert!(
        row(&out, "secret key").contains("UNSAFE mode 644"),
        "{}",
        out.stderr
    );
}

#[test]
fn status_reports_an_invalid_config_without_failing() {
    let repo = TestRepo::new();
    repo.write("checkdef.toml", "version = 2\n");
    let out = repo.checkdef_env(&["status"], &[]);
    out.expect_code(0);
    assert!(
        row(&out, "config").starts_with("invalid: "),
        "{}",
        out.stderr
    );
}
