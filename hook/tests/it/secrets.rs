//! Credentials are never printed: by any command, in any output format, in any error, whatever
//! their source (user info in a remote URL from checkdef.toml or CHECKDEF_REMOTE, a netrc file,
//! CHECKDEF_REMOTE_TOKEN, a URL git hands the pre-push hook).
use std::net::TcpListener;

use crate::support::{CmdOut, SHELL_CONFIG, TestRepo, shell_layout};

/// Every secret the cases below hand checkdef.
const SECRETS: &[&str] = &["hunter2PW", "envPW", "netrcPW", "tokSECRET", "gitTOKEN"];

fn assert_no_secret(what: &str, out: &CmdOut) {
    for s in SECRETS {
        assert!(
            !out.stdout.contains(s) && !out.stderr.contains(s),
            "{what} printed the secret {s}:\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn credentials_are_never_printed_by_any_command_or_error() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    let port = closed_port();
    repo.write(
        "checkdef.toml",
        &format!(
            "{SHELL_CONFIG}\n[cache]\nremote = \"http://alice:hunter2PW@127.0.0.1:{port}/cache\"\ntimeout-secs = 2\n"
        ),
    );
    repo.commit("init");
    let netrc = repo.tmp.path().join("netrc");
    std::fs::write(
        &netrc,
        "machine 127.0.0.1 login bob password netrcPW
",
    )
    .unwrap();
    let netrc_s = netrc.to_str().unwrap();

    // A remote with user info in checkdef.toml, unreachable: every command that shows it.
    let mut seen_remote = false;
    for args in [
        &["status"][..],
        &["run"],
        &["run", "--json"],
        &["run", "-v", "--no-push"],
        &["plan"],
        &["plan", "--json"],
        &["cache", "verify"],
    ] {
        let out = repo.checkdef_text(args, &[("CHECKDEF_NETRC_FILE", netrc_s)]);
        assert_no_secret(&args.join(" "), &out);
        seen_remote |= out.stderr.contains(&format!("127.0.0.1:{port}"));
    }
    assert!(seen_remote, "no command showed the remote at all");

    // `status` still says where the remote is and that it has credentials.
    let out = repo.checkdef_text(&["status"], &[]);
    assert!(
        out.stderr.contains(&format!(
            "http://***@127.0.0.1:{port}/cache (from checkdef.toml)"
        )),
        "{}",
        out.stderr
    );

    // From CHECKDEF_REMOTE, also when the URL is invalid (the error names it), with a bearer
    // token and a netrc file.
    for remote in [
        format!("http://carol:envPW@127.0.0.1:{port}/"),
        format!("http://carol:env PW envPW@127.0.0.1:{port}/"),
        "http://carol:envPW@/".to_owned(),
        format!("ftp://carol:envPW@127.0.0.1:{port}/"),
    ] {
        for args in [&["status"][..], &["run", "--json"], &["plan"]] {
            let out = repo.checkdef_text(
                args,
                &[
                    ("CHECKDEF_REMOTE", &remote),
                    ("CHECKDEF_REMOTE_TOKEN", "tokSECRET"),
                    ("CHECKDEF_NETRC_FILE", netrc_s),
                ],
            );
            assert_no_secret(
                &format!("{} with CHECKDEF_REMOTE={remote}", args.join(" ")),
                &out,
            );
        }
    }

    // An invalid remote in checkdef.toml is a located error that does not repeat the password.
    repo.write(
        "checkdef.toml",
        &format!("{SHELL_CONFIG}\n[cache]\nremote = \"htp://alice:hunter2PW@cache\"\n"),
    );
    let out = repo.checkdef_text(&["run"], &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("checkdef.toml:"), "{}", out.stderr);
    assert_no_secret("run with an invalid remote in checkdef.toml", &out);
}

#[test]
fn the_pre_push_hook_never_prints_a_token_in_the_pushed_url() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.commit("init");
    let bare = repo.add_bare_remote("origin", "remote");
    repo.checkdef_text(&["install"], &[]).expect_code(0);
    // git pushes to the bare repository but calls the hook with the URL as typed, token and all.
    let typed = "https://x-access-token:gitTOKEN@git.example.invalid/r.git";
    let rewrite = format!("url.{}.insteadOf={typed}", bare.display());
    let out = repo.git_out(&["-c", &rewrite, "push", typed, "main"], &[]);
    out.expect_code(0);
    assert!(out.stderr.contains("checkdef: checking"), "{}", out.stderr);
    assert_no_secret("the pre-push hook", &out);
}
