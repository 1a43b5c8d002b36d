//! `checkdef uninstall`: remove checkdef's pre-push hook and put back the hook it had moved aside.
//! Output goes to stderr.
use anyhow::Result;
use installer::UninstallReport;

use super::install::{Op, locate, map_error};
use crate::context::Context;
use crate::exit::Code;

/// `force` removes a checkdef hook even when it was edited after install; `global` allows a
/// hooks directory shared with other repositories (a global or system `core.hooksPath`).
pub fn run(ctx: &Context, force: bool, global: bool) -> Result<Code> {
    let loc = locate(Op::Uninstall)?;
    installer::refuse_if_shared(&loc, global).map_err(|e| map_error(e, Op::Uninstall))?;
    let report = installer::uninstall(&loc, force).map_err(|e| map_error(e, Op::Uninstall))?;
    ctx.printer.text(&format_report(&report));
    // The post-commit hook of `checkdef install --warm`, undone the same way (said only when
    // there was one).
    let post = installer::uninstall_hook(&loc, installer::HookKind::PostCommit, force)
        .map_err(|e| map_error(e, Op::Uninstall))?;
    if matches!(post, UninstallReport::Removed { .. }) {
        ctx.printer
            .text(&format_report(&post).replace("pre-push", "post-commit"));
    }
    Ok(Code::Success)
}

fn format_report(report: &UninstallReport) -> String {
    match report {
        UninstallReport::NotInstalled {
            hook,
            foreign: false,
        } => format!(
            "checkdef: no checkdef pre-push hook is installed ({} does not exist); nothing to do\n",
            hook.display()
        ),
        UninstallReport::NotInstalled {
            hook,
            foreign: true,
        } => format!(
            "checkdef: {} is not checkdef's hook; left it alone, nothing to do\n",
            hook.display()
        ),
        UninstallReport::Removed {
            hook,
            restored,
            left_in_place,
        } => {
            let mut out = format!(
                "checkdef: removed the pre-push hook at {}\n",
                hook.display()
            );
            if let Some(from) = restored {
                out.push_str(&format!(
                    "  restored the hook that was there before (from {})\n",
                    from.display()
                ));
            }
            if let Some(local) = left_in_place {
                out.push_str(&format!(
                    "  note: {} was not created by checkdef install and was left in place; git does not run it\n",
                    local.display()
                ));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn messages() {
        let hook = PathBuf::from("/r/.git/hooks/pre-push");
        let text = format_report(&UninstallReport::NotInstalled {
            hook: hook.clone(),
            foreign: false,
        });
        assert!(text.contains("nothing to do"), "{text}");
        let text = format_report(&UninstallReport::Removed {
            hook,
            restored: Some("/r/.git/hooks/pre-push.local".into()),
            left_in_place: None,
        });
        assert!(text.contains("restored"), "{text}");
    }
}
