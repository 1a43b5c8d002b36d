//! `checkdef install [--force] [--status]`: put checkdef's pre-push hook where git looks for
//! hooks (see the `installer` crate), or report what is there. All output goes to stderr.
use std::path::Path;

use anyhow::{Context, Result};
use installer::{
    Detection, HookLocation, HookState, InstallAction, InstallOptions, InstallReport, Manager,
    Status,
};

use crate::cli::InstallArgs;
use crate::exit::{Code, usage_hint, usage_hints};

pub fn run(ctx: &crate::context::Context, args: &InstallArgs) -> Result<Code> {
    let loc = locate(Op::Install)?;
    if args.status {
        let status = installer::status(&loc).map_err(|e| map_error(e, Op::Install))?;
        ctx.printer.text(&format_status(&status));
        return Ok(Code::Success);
    }
    let exe = std::env::current_exe().context("cannot find the path of the running checkdef")?;
    let opts = InstallOptions {
        checkdef_exe: exe,
        force: args.force,
        global: args.global,
    };
    let report = installer::install(&loc, &opts).map_err(|e| map_error(e, Op::Install))?;
    ctx.printer
        .text(&format_report(&report, &opts.checkdef_exe));
    if args.warm {
        let report = installer::install_hook(&loc, installer::HookKind::PostCommit, &opts)
            .map_err(|e| map_error(e, Op::Install))?;
        ctx.printer
            .text(&format_post_commit_report(&report, &opts.checkdef_exe));
    }
    Ok(Code::Success)
}

/// Find the hooks directory of the repository around the current directory.
pub(crate) fn locate(op: Op) -> Result<HookLocation> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    installer::locate(&cwd).map_err(|e| map_error(e, op))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Install,
    Uninstall,
}

/// Turn an installer error into a usage error (exit 2) with a hint, or an internal one (exit 3).
pub(crate) fn map_error(err: installer::Error, op: Op) -> anyhow::Error {
    use installer::Error as E;
    if let E::GitFailed { dir, stderr, .. } = &err
        && stderr.contains("not a git repository")
    {
        // git's own words and command line say less than this.
        let cmd = match op {
            Op::Install => "checkdef install",
            Op::Uninstall => "checkdef uninstall",
        };
        return usage_hint(
            format!("{} is not inside a git repository", dir.display()),
            format!(
                "run `{cmd}` in the work tree of the repository whose pushes it should check (or pass -C DIR)"
            ),
        );
    }
    let hints = match &err {
        E::Managed { detections, .. } => {
            let (found, hints) = managed_hints(detections);
            let mut message = error_chain(&err);
            if !found.is_empty() {
                message = format!("{message}\n{found}");
            }
            return usage_hints(message, hints);
        }
        E::ChainSlotTaken { hook, local } => vec![format!(
            "{} and {} both exist; merge them into one (or remove one), then run `checkdef install` again",
            hook.display(),
            local.display()
        )],
        E::Modified { path } if op == Op::Install => vec![format!(
            "`checkdef install --force` replaces it and discards your edits to {}",
            path.display()
        )],
        E::Modified { path } => vec![format!(
            "keep your edits by removing checkdef's lines from {} yourself, or delete the file \
             (and move pre-push.local back to pre-push if it exists)",
            path.display()
        )],
        E::SelfChain { path } => vec![format!(
            "remove {} (it is a leftover checkdef hook), then run `checkdef install` again",
            path.display()
        )],
        E::SharedHooksDir { hooks_dir, .. } => {
            let (verb, effect) = match op {
                Op::Install => (
                    "checkdef install --global",
                    "installs checkdef's hook there, so every push of every one of those \
                     repositories runs checkdef (those without a checkdef.toml are blocked \
                     until pushed with `git push --no-verify` or `CHECKDEF_SKIP=1`)",
                ),
                Op::Uninstall => (
                    "checkdef uninstall --global",
                    "removes checkdef's hook from there, for every one of those repositories",
                ),
            };
            vec![
                "to check only this repository, give it its own hooks directory: \
                 `git config core.hooksPath \"$(git rev-parse --path-format=absolute --git-common-dir)/hooks\"`, then run the command again"
                    .to_owned(),
                format!("`{verb}` {effect} ({})", hooks_dir.display()),
            ]
        }
        E::GitFailed { .. } | E::NotInWorkTree { .. } => {
            vec!["run this inside the work tree of a git repository (or pass -C DIR)".to_owned()]
        }
        E::GitSpawn { .. } => vec!["checkdef install needs `git` on PATH".to_owned()],
        E::NonUtf8Exe { .. } | E::RelativeExe { .. } => {
            vec!["run checkdef from a path that is absolute and valid UTF-8".to_owned()]
        }
        _ => return anyhow::Error::new(err),
    };
    usage_hints(error_chain(&err), hints)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn managers(detections: &[Detection]) -> Vec<Manager> {
    let mut m: Vec<Manager> = detections.iter().map(|d| d.manager).collect();
    m.sort();
    m.dedup();
    m
}

/// The detected hook managers (lines of the message) and a hint for each, with the snippet
/// that hint names, then the hint to install anyway.
fn managed_hints(detections: &[Detection]) -> (String, Vec<String>) {
    let found: Vec<String> = detections.iter().map(|d| format!("  ({d})")).collect();
    let mut hints = Vec::new();
    for m in managers(detections) {
        let mut h = format!(
            "to run checkdef from {}, add this to {}:\n\n",
            m.name(),
            m.config_file()
        );
        for line in m.snippet().lines() {
            h.push_str(&format!("    {line}\n"));
        }
        if let Some(cmd) = m.follow_up() {
            h.push_str(&format!("\n  then run: {cmd}"));
        }
        hints.push(h.trim_end().to_owned());
    }
    hints.push(
        "or run `checkdef install --force` to install checkdef's hook anyway \
         (an existing pre-push hook is kept as pre-push.local and runs first)"
            .to_owned(),
    );
    (found.join("\n"), hints)
}

fn format_report(report: &InstallReport, exe: &Path) -> String {
    let hook = report.hook.display();
    let mut out = match report.action {
        InstallAction::Created => format!("checkdef: installed the pre-push hook at {hook}\n"),
        InstallAction::Updated => format!("checkdef: updated the pre-push hook at {hook}\n"),
        InstallAction::Unchanged => {
            format!("checkdef: the pre-push hook at {hook} is already installed; nothing changed\n")
        }
    };
    out.push_str(&format!(
        "  it runs: {} hook pre-push (or checkdef from PATH if that file goes away)\n",
        exe.display()
    ));
    out.push_str(&chain_lines(report));
    for d in &report.managers {
        out.push_str(&format!(
            "warning: this hooks directory is managed by {} ({}); checkdef's hook may be overwritten by it\n",
            d.manager.name(),
            d.evidence
        ));
    }
    out.push_str("  skip the checks for one push with: git push --no-verify\n");
    out
}

/// What runs before checkdef's hook: the hook moved aside, or the one chained in.
fn chain_lines(report: &InstallReport) -> String {
    if let Some(moved) = &report.moved_aside {
        format!(
            "  the hook that was there is now {} and runs first; `checkdef uninstall` puts it back\n",
            moved.display()
        )
    } else if let Some(chained) = &report.chained {
        format!("  {} runs first\n", chained.display())
    } else {
        String::new()
    }
}

fn format_post_commit_report(report: &InstallReport, exe: &Path) -> String {
    let hook = report.hook.display();
    let mut out = match report.action {
        InstallAction::Created => format!("checkdef: installed the post-commit hook at {hook}\n"),
        InstallAction::Updated => format!("checkdef: updated the post-commit hook at {hook}\n"),
        InstallAction::Unchanged => format!(
            "checkdef: the post-commit hook at {hook} is already installed; nothing changed\n"
        ),
    };
    out.push_str(&format!(
        "  after each commit it runs: {} warm (the commit's checks start in the background; git commit returns at once)\n",
        exe.display()
    ));
    out.push_str(&chain_lines(report));
    out
}

fn format_status(s: &Status) -> String {
    let mut out = String::new();
    let dir = s.location.hooks_dir.display();
    match &s.location.hooks_path_config {
        Some(v) => match s.location.shared() {
            Some(scope) => out.push_str(&format!(
                "hooks directory: {dir} (core.hooksPath = {v}, from the {scope} git configuration: shared with other repositories)\n"
            )),
            None => out.push_str(&format!("hooks directory: {dir} (core.hooksPath = {v})\n")),
        },
        None => out.push_str(&format!("hooks directory: {dir}\n")),
    }
    let hook = s.hook.display();
    match &s.state {
        HookState::Absent => out.push_str(&format!(
            "pre-push hook:   not installed ({hook} does not exist)\n"
        )),
        HookState::Foreign { executable } => out.push_str(&format!(
            "pre-push hook:   not checkdef's ({hook}{})\n",
            if *executable { "" } else { ", not executable" }
        )),
        HookState::Ours {
            version,
            checkdef_exe,
            exe_exists,
            modified,
            executable,
        } => {
            out.push_str(&format!(
                "pre-push hook:   checkdef's (v{version}) at {hook}\n"
            ));
            match checkdef_exe {
                Some(exe) if *exe_exists => {
                    out.push_str(&format!("calls:           {}\n", exe.display()))
                }
                Some(exe) => out.push_str(&format!(
                    "calls:           {} (missing: falls back to checkdef on PATH)\n",
                    exe.display()
                )),
                None => out.push_str("calls:           unknown (the hook was edited)\n"),
            }
            if *modified {
                out.push_str("warning: the hook was edited after it was installed\n");
            }
            if !*executable {
                out.push_str(
                    "warning: the hook is not executable, so git skips it; run `checkdef install`\n",
                );
            }
        }
    }
    match &s.chained {
        Some((path, true)) => out.push_str(&format!(
            "chained hook:    {} (runs first)\n",
            path.display()
        )),
        Some((path, false)) => out.push_str(&format!(
            "chained hook:    {} (not executable: skipped)\n",
            path.display()
        )),
        None => out.push_str("chained hook:    none\n"),
    }
    match &s.post_commit {
        Some(path) => out.push_str(&format!(
            "post-commit hook: checkdef's at {} (`checkdef warm` after each commit)\n",
            path.display()
        )),
        None => out.push_str(
            "post-commit hook: not installed (`checkdef install --warm` starts a commit's checks after `git commit`)\n",
        ),
    }
    if s.managers.is_empty() {
        out.push_str("hook managers:   none detected\n");
    } else {
        for d in &s.managers {
            out.push_str(&format!(
                "hook manager:    {} ({})\n",
                d.manager.name(),
                d.evidence
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use installer::{Evidence, RepoLayout};
    use std::path::PathBuf;

    #[test]
    fn managed_error_is_a_usage_error_with_snippets() {
        let err = installer::Error::Managed {
            hooks_dir: PathBuf::from("/r/.husky/_"),
            detections: vec![Detection {
                manager: Manager::Husky,
                evidence: Evidence::HooksPath(".husky/_".into()),
            }],
        };
        let err = map_error(err, Op::Install);
        assert_eq!(Code::from_error(&err), Code::Usage);
        let msg = format!("{err:#}");
        assert!(msg.contains("managed by husky"), "{msg}");
        assert!(msg.contains(".husky/pre-push"), "{msg}");
        assert!(msg.contains("    checkdef hook pre-push \"$@\"\n"), "{msg}");
        assert!(msg.contains("--force"), "{msg}");
    }

    #[test]
    fn io_errors_are_internal() {
        let err = installer::Error::Write {
            path: PathBuf::from("/x"),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(
            Code::from_error(&map_error(err, Op::Install)),
            Code::Internal
        );
    }

    #[test]
    fn status_text() {
        let location = HookLocation::new(
            RepoLayout {
                git_dir: "/r/.git".into(),
                common_dir: "/r/.git".into(),
                work_tree: Some("/r".into()),
            },
            None,
            None,
        );
        let s = Status {
            hook: location.pre_push(),
            location,
            state: HookState::Ours {
                version: 1,
                checkdef_exe: Some("/bin/checkdef".into()),
                exe_exists: false,
                modified: false,
                executable: true,
            },
            chained: Some(("/r/.git/hooks/pre-push.local".into(), true)),
            managers: vec![],
            post_commit: None,
        };
        let text = format_status(&s);
        assert!(text.contains("post-commit hook: not installed"), "{text}");
        let warm = format_status(&Status {
            post_commit: Some("/r/.git/hooks/post-commit".into()),
            ..s.clone()
        });
        assert!(
            warm.contains("post-commit hook: checkdef's at /r/.git/hooks/post-commit"),
            "{warm}"
        );
        assert!(text.contains("hooks directory: /r/.git/hooks\n"), "{text}");
        assert!(text.contains("/bin/checkdef (missing"), "{text}");
        assert!(text.contains("pre-push.local (runs first)"), "{text}");
    }
}
