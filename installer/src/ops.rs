//! Install, uninstall and inspect checkdef's `pre-push` hook in a located hooks directory.
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::detect::{Detection, detect};
use crate::error::Error;
use crate::locate::HookLocation;
use crate::script::{self, HookKind, ScriptParams};

/// How to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The absolute path of the checkdef binary the hook calls (usually `std::env::current_exe()`).
    pub checkdef_exe: PathBuf,
    /// Install even when another hook manager owns the hooks directory, and replace a checkdef
    /// hook that was edited by hand.
    pub force: bool,
    /// Install into a hooks directory that a global or system `core.hooksPath` shares with other
    /// repositories ([`HookLocation::shared`]); refused with [`Error::SharedHooksDir`] otherwise.
    pub global: bool,
}

/// What [`install`] did to the `pre-push` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallAction {
    /// There was no checkdef hook; one was written.
    Created,
    /// A checkdef hook was there and was rewritten (another binary path, an older script, a lost
    /// executable bit, or hand edits with `force`).
    Updated,
    /// The checkdef hook was already exactly as it would be written; nothing was touched.
    Unchanged,
}

/// The result of [`install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// `<hooks dir>/pre-push`.
    pub hook: PathBuf,
    pub action: InstallAction,
    /// Set when this call moved a pre-existing hook to this path (`pre-push.local`).
    pub moved_aside: Option<PathBuf>,
    /// `pre-push.local` when it exists: the hook runs it first.
    pub chained: Option<PathBuf>,
    /// Other hook managers found in the hooks directory that did not stop the install (because
    /// of `force`, or because checkdef's hook was already installed).
    pub managers: Vec<Detection>,
}

/// The result of [`uninstall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UninstallReport {
    /// There is no checkdef hook; nothing was changed.
    NotInstalled {
        hook: PathBuf,
        /// A `pre-push` hook that is not checkdef's exists (and was left alone).
        foreign: bool,
    },
    /// checkdef's hook was removed.
    Removed {
        hook: PathBuf,
        /// The hook install had moved aside, now back at `hook` (the former `pre-push.local`).
        restored: Option<PathBuf>,
        /// A `pre-push.local` that install did not create, left in place.
        left_in_place: Option<PathBuf>,
    },
}

/// What is at `<hooks dir>/pre-push`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookState {
    Absent,
    /// A hook that is not checkdef's.
    Foreign {
        executable: bool,
    },
    /// checkdef's hook.
    Ours {
        version: u32,
        /// The binary it calls first (it falls back to `checkdef` on `PATH`).
        checkdef_exe: Option<PathBuf>,
        /// Whether that binary exists and is executable.
        exe_exists: bool,
        /// Whether the file was edited after install.
        modified: bool,
        /// Whether the hook file is executable (git skips it otherwise).
        executable: bool,
    },
}

/// The result of [`status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub location: HookLocation,
    /// `<hooks dir>/pre-push`.
    pub hook: PathBuf,
    pub state: HookState,
    /// `pre-push.local` when it exists, and whether it is executable (only then does it run).
    pub chained: Option<(PathBuf, bool)>,
    /// Signs that another hook manager owns the hooks directory.
    pub managers: Vec<Detection>,
    /// `<hooks dir>/post-commit` when it is checkdef's pre-warming hook (`install --warm`).
    pub post_commit: Option<PathBuf>,
}

/// Install checkdef's hook at `<hooks dir>/pre-push`.
///
/// - No hook: write checkdef's (creating the hooks directory if needed).
/// - checkdef's hook: rewrite it for `checkdef_exe` if that changes anything (idempotent: running
///   install twice leaves the directory byte-identical). Refused with [`Error::Modified`] when it
///   was edited by hand, unless `force`.
/// - Another hook: move it to `pre-push.local` (bytes and mode preserved), where checkdef's hook
///   runs it first; refused with [`Error::ChainSlotTaken`] if `pre-push.local` exists.
/// - Another hook manager detected ([`detect`]) and checkdef's hook not yet installed: refused
///   with [`Error::Managed`] unless `force`.
/// - A hooks directory shared with other repositories ([`HookLocation::shared`]): refused with
///   [`Error::SharedHooksDir`] unless `global`.
pub fn install(loc: &HookLocation, opts: &InstallOptions) -> Result<InstallReport, Error> {
    install_hook(loc, HookKind::PrePush, opts)
}

/// [`install`] for any of checkdef's hooks: `<hooks dir>/<kind>`, chained through
/// `<kind>.local` exactly as the pre-push hook is.
pub fn install_hook(
    loc: &HookLocation,
    kind: HookKind,
    opts: &InstallOptions,
) -> Result<InstallReport, Error> {
    let exe = &opts.checkdef_exe;
    if exe.to_str().is_none() {
        return Err(Error::NonUtf8Exe { path: exe.clone() });
    }
    if !exe.is_absolute() {
        return Err(Error::RelativeExe { path: exe.clone() });
    }
    refuse_if_shared(loc, opts.global)?;
    let hook = loc.hooks_dir.join(kind.file_name());
    let local = loc.hooks_dir.join(kind.local_name());
    let managers = detect(loc);

    match read_hook(&hook)? {
        Some(existing) => match parse_kind(&existing.content, kind) {
            Some(parsed) => {
                if parsed.modified && !opts.force {
                    return Err(Error::Modified { path: hook });
                }
                let content = script::render(&ScriptParams {
                    kind,
                    checkdef_exe: exe.clone(),
                    moved_aside: parsed.moved_aside,
                });
                let action = if content.as_bytes() == existing.content && existing.executable {
                    InstallAction::Unchanged
                } else {
                    write_atomic(&loc.hooks_dir, &hook, content.as_bytes())?;
                    InstallAction::Updated
                };
                Ok(InstallReport {
                    hook,
                    action,
                    moved_aside: None,
                    chained: exists(&local)?.then_some(local),
                    managers,
                })
            }
            None => {
                refuse_if_managed(loc, &managers, opts.force)?;
                if exists(&local)? {
                    return Err(Error::ChainSlotTaken { hook, local });
                }
                rename(&hook, &local)?;
                let content = script::render(&ScriptParams {
                    kind,
                    checkdef_exe: exe.clone(),
                    moved_aside: true,
                });
                if let Err(err) = write_atomic(&loc.hooks_dir, &hook, content.as_bytes()) {
                    // Put the user's hook back; the write error is the one to report.
                    let _ = fs::rename(&local, &hook);
                    return Err(err);
                }
                Ok(InstallReport {
                    hook,
                    action: InstallAction::Created,
                    moved_aside: Some(local.clone()),
                    chained: Some(local),
                    managers,
                })
            }
        },
        None => {
            refuse_if_managed(loc, &managers, opts.force)?;
            let chained = match read_hook(&local)? {
                Some(l) if script::is_ours(&l.content) => {
                    return Err(Error::SelfChain { path: local });
                }
                Some(_) => Some(local),
                None => None,
            };
            fs::create_dir_all(&loc.hooks_dir).map_err(|source| Error::CreateDir {
                path: loc.hooks_dir.clone(),
                source,
            })?;
            let content = script::render(&ScriptParams {
                kind,
                checkdef_exe: exe.clone(),
                moved_aside: false,
            });
            write_atomic(&loc.hooks_dir, &hook, content.as_bytes())?;
            Ok(InstallReport {
                hook,
                action: InstallAction::Created,
                moved_aside: None,
                chained,
                managers,
            })
        }
    }
}

/// Remove checkdef's hook and move back the hook install had moved aside, so the hooks directory
/// is as it was before install. Nothing to do when checkdef's hook is not there. Refused with
/// [`Error::Modified`] when the hook was edited after install, unless `force`.
///
/// Callers check [`refuse_if_shared`] first, as [`install`] does.
pub fn uninstall(loc: &HookLocation, force: bool) -> Result<UninstallReport, Error> {
    uninstall_hook(loc, HookKind::PrePush, force)
}

/// [`uninstall`] for any of checkdef's hooks.
pub fn uninstall_hook(
    loc: &HookLocation,
    kind: HookKind,
    force: bool,
) -> Result<UninstallReport, Error> {
    let hook = loc.hooks_dir.join(kind.file_name());
    let local = loc.hooks_dir.join(kind.local_name());
    let Some(existing) = read_hook(&hook)? else {
        return Ok(UninstallReport::NotInstalled {
            hook,
            foreign: false,
        });
    };
    let Some(parsed) = parse_kind(&existing.content, kind) else {
        return Ok(UninstallReport::NotInstalled {
            hook,
            foreign: true,
        });
    };
    if parsed.modified && !force {
        return Err(Error::Modified { path: hook });
    }
    let local_exists = exists(&local)?;
    if parsed.moved_aside && local_exists {
        // rename(2) replaces checkdef's hook atomically and keeps the original's bytes and mode.
        rename(&local, &hook)?;
        return Ok(UninstallReport::Removed {
            hook,
            restored: Some(local),
            left_in_place: None,
        });
    }
    fs::remove_file(&hook).map_err(|source| Error::Remove {
        path: hook.clone(),
        source,
    })?;
    Ok(UninstallReport::Removed {
        hook,
        restored: None,
        left_in_place: local_exists.then_some(local),
    })
}

/// Report what is installed in `loc`'s hooks directory. Reads only.
pub fn status(loc: &HookLocation) -> Result<Status, Error> {
    let hook = loc.pre_push();
    let state = match read_hook(&hook)? {
        None => HookState::Absent,
        Some(existing) => match script::parse(&existing.content) {
            None => HookState::Foreign {
                executable: existing.executable,
            },
            Some(parsed) => HookState::Ours {
                version: parsed.version,
                exe_exists: parsed
                    .checkdef_exe
                    .as_deref()
                    .and_then(|p| fs::metadata(p).ok())
                    .is_some_and(|m| m.is_file() && is_executable(&m)),
                checkdef_exe: parsed.checkdef_exe,
                modified: parsed.modified,
                executable: existing.executable,
            },
        },
    };
    let local = loc.pre_push_local();
    let chained = read_hook(&local)?.map(|l| (local, l.executable));
    let post_commit = loc.hooks_dir.join(HookKind::PostCommit.file_name());
    let post_commit = read_hook(&post_commit)?
        .filter(|h| parse_kind(&h.content, HookKind::PostCommit).is_some())
        .map(|_| post_commit);
    Ok(Status {
        location: loc.clone(),
        hook,
        state,
        chained,
        managers: detect(loc),
        post_commit,
    })
}

/// Refuse to touch a hooks directory shared with other repositories unless the caller said
/// `global`: a hook there runs for (and an uninstall there stops checking) every one of them.
pub fn refuse_if_shared(loc: &HookLocation, global: bool) -> Result<(), Error> {
    match loc.shared() {
        Some(scope) if !global => Err(Error::SharedHooksDir {
            hooks_dir: loc.hooks_dir.clone(),
            value: loc.hooks_path_config.clone().unwrap_or_default(),
            scope,
        }),
        _ => Ok(()),
    }
}

/// `content` parsed as checkdef's hook of `kind` (a checkdef hook of another kind under this
/// name is foreign here: it is not what install writes at this path).
fn parse_kind(content: &[u8], kind: HookKind) -> Option<script::ParsedScript> {
    script::parse(content).filter(|p| p.kind == kind)
}

fn refuse_if_managed(loc: &HookLocation, managers: &[Detection], force: bool) -> Result<(), Error> {
    if managers.is_empty() || force {
        Ok(())
    } else {
        Err(Error::Managed {
            hooks_dir: loc.hooks_dir.clone(),
            detections: managers.to_vec(),
        })
    }
}

struct Existing {
    content: Vec<u8>,
    executable: bool,
}

/// Read a hook file; `None` when nothing is there. A dangling symlink reads as an empty,
/// non-executable hook (it is still something to keep).
fn read_hook(path: &Path) -> Result<Option<Existing>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
        Ok(_) => {}
    }
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(Existing {
                content: Vec::new(),
                executable: false,
            }));
        }
        Err(e) => return Err(read_err(e)),
    };
    if !meta.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let content = fs::read(path).map_err(read_err)?;
    Ok(Some(Existing {
        content,
        executable: is_executable(&meta),
    }))
}

/// Whether something (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> Result<bool, Error> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(|source| Error::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

/// Write `content` to a temporary file in `dir`, make it mode 0755, and rename it over `path`.
fn write_atomic(dir: &Path, path: &Path, content: &[u8]) -> Result<(), Error> {
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".pre-push.checkdef-")
        .tempfile_in(dir)
        .map_err(write_err)?;
    tmp.write_all(content).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    set_executable(tmp.as_file()).map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

#[cfg(unix)]
fn set_executable(file: &fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_file: &fs::File) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    true
}
