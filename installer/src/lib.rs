//! Install, uninstall and chain checkdef's git `pre-push` hook.
//!
//! - [`locate()`] finds the hooks directory the way git does (`core.hooksPath`, linked worktrees,
//!   `$GIT_DIR`); it is the only code that runs `git`.
//! - [`install`] writes a small POSIX sh hook ([`script`]) that runs `checkdef hook pre-push "$@"`,
//!   after moving any existing hook to `pre-push.local` and running it first with the same
//!   arguments and stdin. [`uninstall`] undoes exactly that. [`status`] reports what is there.
//! - [`detect()`] recognises hooks directories owned by husky, pre-commit or lefthook, and
//!   [`Manager::snippet`] says how to call checkdef from each instead.
//!
//! The library never prints; errors ([`Error`]) name the paths involved.

pub mod detect;
pub mod error;
pub mod locate;
pub mod ops;
pub mod script;

pub use detect::{Detection, Evidence, Manager, detect};
pub use error::Error;
pub use locate::{
    ConfigScope, Git, HookLocation, PRE_PUSH, PRE_PUSH_LOCAL, RepoLayout, locate, resolve_hooks_dir,
};
pub use ops::{
    HookState, InstallAction, InstallOptions, InstallReport, Status, UninstallReport, install,
    install_hook, refuse_if_shared, status, uninstall, uninstall_hook,
};
pub use script::HookKind;
