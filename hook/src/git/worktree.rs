//! The work-tree snapshot: tracked files from the index (blob ids reused when the stat data
//! proves the file unchanged), untracked-not-ignored files from a gix directory walk, each
//! hashed as a git blob only when wanted and not provably unchanged.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::dir::entry::{Kind as DirKind, Status as DirStatus};
use gix::index::entry::{Flags, Mode as IndexMode, Stat};
use gix::index::fs::Metadata;

use super::{FileMode, GitError, Repo, Result, Visit, native};

/// Counters describing one work-tree walk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorktreeStats {
    /// Wanted tracked files whose blob id came from the index without reading them.
    pub reused: usize,
    /// Wanted files that were read and hashed.
    pub hashed: usize,
    /// Wanted untracked (not ignored) files.
    pub untracked: usize,
}

impl Repo {
    /// Visit every file on disk that git would consider: tracked files still present, and
    /// untracked files that are not ignored.
    pub fn walk_worktree(&self, visit: &mut dyn Visit) -> Result<WorktreeStats> {
        let workdir = self.require_workdir()?.to_path_buf();
        let wt_err = |source| GitError::Worktree {
            workdir: workdir.clone(),
            source,
        };
        let index = self.repo.index_or_empty().map_err(wt_err)?;
        let stat_options = self.repo.stat_options().map_err(wt_err)?;
        let caps = self.repo.filesystem_options().map_err(wt_err)?;
        let timestamp = index.timestamp();
        let hash_kind = self.repo.object_hash();
        let mut stats = WorktreeStats::default();
        let mut abs = PathBuf::with_capacity(workdir.as_os_str().len() + 128);
        let mut previous: Option<&BStr> = None;

        for entry in index.entries() {
            let path = entry.path(&index);
            if previous == Some(path) {
                continue; // further stages of a conflicted path
            }
            previous = Some(path);
            if entry.mode.is_sparse() || !visit.wants(path) {
                continue;
            }
            let index_mode = index_file_mode(entry.mode);
            if entry.flags.contains(Flags::SKIP_WORKTREE) {
                stats.reused += 1;
                visit.visit(path, index_mode, &entry.id);
                continue;
            }
            abs.clear();
            abs.push(&workdir);
            abs.push(native(path));
            let md = match Metadata::from_path_no_follow(&abs) {
                Ok(md) => md,
                Err(e) if is_gone(&e) => continue, // deleted on disk
                Err(source) => return Err(GitError::Io { path: abs, source }),
            };
            if entry.mode.is_submodule() {
                if md.is_dir() {
                    let id = submodule_head(&abs).unwrap_or(entry.id);
                    stats.reused += 1;
                    visit.visit(path, FileMode::Submodule, &id);
                }
                continue;
            }
            let Some(mode) = disk_mode(&md, Some(index_mode), &caps) else {
                continue; // replaced by a directory (its files show up as untracked) or a special file
            };
            let unchanged = !entry.flags.contains(Flags::INTENT_TO_ADD)
                && mode == index_mode
                && (entry.flags.contains(Flags::ASSUME_VALID)
                    || (Stat::from_fs(&md).is_ok_and(|s| entry.stat.matches(&s, stat_options))
                        && !entry.stat.is_racy(timestamp, stat_options)));
            let id = if unchanged {
                stats.reused += 1;
                entry.id
            } else {
                stats.hashed += 1;
                hash_file(&abs, mode, hash_kind)?
            };
            visit.visit(path, mode, &id);
        }

        // Untracked files, honouring .gitignore, .git/info/exclude and core.excludesFile.
        let mut collect = CollectUntracked {
            visit,
            wanted: Vec::new(),
        };
        let options = self
            .repo
            .dirwalk_options()
            .map_err(wt_err)?
            .emit_tracked(false)
            .emit_ignored(None)
            .emit_pruned(false)
            .emit_empty_directories(false)
            .emit_untracked(gix::dir::walk::EmissionMode::Matching)
            .recurse_repositories(false)
            .empty_patterns_match_prefix(false);
        let interrupt = AtomicBool::new(false);
        self.repo
            .dirwalk(
                &index,
                Vec::<&BStr>::new(),
                &interrupt,
                options,
                &mut collect,
            )
            .map_err(wt_err)?;
        let CollectUntracked { visit, wanted } = collect;
        for (path, kind) in wanted {
            abs.clear();
            abs.push(&workdir);
            abs.push(native(path.as_bstr()));
            let md = match Metadata::from_path_no_follow(&abs) {
                Ok(md) => md,
                Err(e) if is_gone(&e) => continue,
                Err(source) => return Err(GitError::Io { path: abs, source }),
            };
            let Some(mode) = disk_mode(&md, None, &caps) else {
                continue;
            };
            debug_assert!(kind == DirKind::Symlink || mode != FileMode::Symlink || !caps.symlink);
            if !visit.wants(path.as_bstr()) {
                continue;
            }
            let id = hash_file(&abs, mode, hash_kind)?;
            stats.hashed += 1;
            stats.untracked += 1;
            visit.visit(path.as_bstr(), mode, &id);
        }
        Ok(stats)
    }
}

struct CollectUntracked<'a> {
    visit: &'a mut dyn Visit,
    wanted: Vec<(BString, DirKind)>,
}

impl gix::dir::walk::Delegate for CollectUntracked<'_> {
    fn emit(
        &mut self,
        entry: gix::dir::EntryRef<'_>,
        _collapsed_directory_status: Option<DirStatus>,
    ) -> gix::dir::walk::Action {
        if entry.status == DirStatus::Untracked
            && matches!(entry.disk_kind, Some(DirKind::File | DirKind::Symlink))
            && self.visit.wants(entry.rela_path.as_ref())
        {
            self.wanted.push((
                entry.rela_path.clone().into_owned(),
                entry.disk_kind.expect("checked"),
            ));
        }
        std::ops::ControlFlow::Continue(())
    }
}

fn is_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

fn index_file_mode(mode: IndexMode) -> FileMode {
    if mode.is_submodule() {
        FileMode::Submodule
    } else if mode == IndexMode::SYMLINK {
        FileMode::Symlink
    } else if mode == IndexMode::FILE_EXECUTABLE {
        FileMode::Executable
    } else {
        FileMode::Regular
    }
}

/// The mode git would record for a file with metadata `md`; `None` for directories and special
/// files. `tracked` is the index mode, consulted when the file system cannot express the
/// executable bit or symlinks (`core.fileMode = false`, `core.symlinks = false`).
fn disk_mode(
    md: &Metadata,
    tracked: Option<FileMode>,
    caps: &gix::fs::Capabilities,
) -> Option<FileMode> {
    if md.is_symlink() {
        Some(FileMode::Symlink)
    } else if md.is_file() {
        if !caps.symlink && tracked == Some(FileMode::Symlink) {
            Some(FileMode::Symlink)
        } else if caps.executable_bit {
            Some(if md.is_executable() {
                FileMode::Executable
            } else {
                FileMode::Regular
            })
        } else {
            Some(match tracked {
                Some(FileMode::Executable) => FileMode::Executable,
                _ => FileMode::Regular,
            })
        }
    } else {
        None
    }
}

/// The checked-out commit of the submodule at `dir`, if it can be read.
fn submodule_head(dir: &Path) -> Option<ObjectId> {
    let repo = gix::open(dir).ok()?;
    repo.head_id().ok().map(|id| id.detach())
}

/// The git blob id of the file at `path`: the link target for symlinks, the content otherwise.
pub(crate) fn hash_file(path: &Path, mode: FileMode, kind: gix::hash::Kind) -> Result<ObjectId> {
    let io_err = |source| GitError::Io {
        path: path.to_path_buf(),
        source,
    };
    if mode == FileMode::Symlink {
        if let Ok(target) = std::fs::read_link(path) {
            use std::os::unix::ffi::OsStrExt;
            return blob_id(kind, target.as_os_str().as_bytes()).map_err(io_err);
        }
        // core.symlinks = false: the link is checked out as a file holding the target.
    }
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut hasher = gix::hash::hasher(kind);
    hasher.update(format!("blob {len}\0").as_bytes());
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen: u64 = 0;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        if seen > len {
            break;
        }
        hasher.update(&buf[..n]);
    }
    if seen != len {
        return Err(io_err(std::io::Error::other(
            "the file changed size while it was being hashed",
        )));
    }
    hasher
        .try_finalize()
        .map_err(|e| io_err(std::io::Error::other(e.to_string())))
}

/// The git blob id of `data`.
pub fn blob_id(kind: gix::hash::Kind, data: &[u8]) -> std::io::Result<ObjectId> {
    gix::objs::compute_hash(kind, gix::objs::Kind::Blob, data)
        .map_err(|e| std::io::Error::other(e.to_string()))
}
