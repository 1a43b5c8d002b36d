//! Writing a list of `(mode, id, path)` entries into a fresh directory: blobs from the object
//! database for a commit, or copies of the files on disk in work-tree mode (each copy is hashed
//! and must still match the id it was planned with).
//!
//! Paths are validated (no empty, `.`, `..` or `.git` components, no absolute paths, no NUL),
//! directories are created first, then regular files (never through an existing file), and
//! symlinks last, so no entry can write through a symlink another entry created.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use gix::bstr::{BStr, ByteSlice};
use gix::prelude::FindExt;

use super::worktree::{blob_id, hash_file};
use super::{FileMode, GitError, Input, Repo, Result, Target, native};

/// Counters describing one materialisation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaterializeStats {
    pub files: usize,
    pub symlinks: usize,
    /// Submodules become empty directories.
    pub submodules: usize,
    pub bytes: u64,
}

impl Repo {
    /// Write `entries` below `dest` (which should be a fresh, empty directory). With
    /// [`Target::Commit`] blob contents come from the object database; with
    /// [`Target::WorkTree`] files are copied from disk and must still hash to their id, else
    /// [`GitError::Changed`]. Submodules become empty directories.
    pub fn materialize(
        &self,
        target: &Target,
        entries: &[Input],
        dest: &Path,
    ) -> Result<MaterializeStats> {
        self.materialize_checkout(target, entries, dest, false)
    }

    /// [`materialize`](Self::materialize), and with `convert` (the snapshot has checkout rules,
    /// see [`Repo::checkout_rules`]) each regular file is written as a checkout holds it:
    /// smudged through `.gitattributes` and the configured filters. In work-tree mode the file
    /// on disk is cleaned first, must still hash to its planned id (which is what the index
    /// holds: git's form), and is then smudged, so the copy is a function of what was hashed.
    pub fn materialize_checkout(
        &self,
        target: &Target,
        entries: &[Input],
        dest: &Path,
        convert: bool,
    ) -> Result<MaterializeStats> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GitError::Io { path, source }
        };
        // 1. Directories (parents of every entry, and submodule directories).
        let (mut stats, workdir) = self.begin(target, entries, dest)?;
        let kind = self.object_hash();
        let mut buf = Vec::new();
        let mut converter = if convert {
            Some(self.converter(target)?)
        } else {
            None
        };
        let mut converted: Vec<u8>;
        // 2. Regular files.
        for e in entries
            .iter()
            .filter(|e| matches!(e.mode, FileMode::Regular | FileMode::Executable))
        {
            let data: &[u8] = match &workdir {
                None => self.blob_bytes(e, None, &mut buf)?,
                Some(wd) => {
                    let src = wd.join(native(e.path.as_ref()));
                    buf = std::fs::read(&src).map_err(io_err(&src))?;
                    if let Some(c) = converter.as_mut() {
                        buf = c.to_git(e.path.as_ref(), &buf)?;
                    }
                    if blob_id(kind, &buf).map_err(io_err(&src))? != e.id {
                        return Err(GitError::Changed {
                            path: src,
                            expected: e.id,
                        });
                    }
                    &buf
                }
            };
            let data: &[u8] = match converter.as_mut() {
                None => data,
                Some(c) => {
                    converted = c.to_worktree(e.path.as_ref(), data)?;
                    &converted
                }
            };
            let out = dest.join(native(e.path.as_ref()));
            write_new(&out, e.mode, data)?;
            stats.files += 1;
            stats.bytes += data.len() as u64;
        }
        // 3. Symlinks.
        stats.symlinks = self.write_symlinks(entries, dest, workdir.as_deref())?;
        Ok(stats)
    }

    /// [`materialize`](Self::materialize) for a directory that is kept (a segment's inputs
    /// layer), with each regular file a hard link to one file per blob in `blobs` (written there
    /// the first time, atomically): building or updating a layer creates a new inode only for a
    /// blob no layer of this store had, which on ext4 is most of the cost of a layer (an inode
    /// allocation scans the bitmaps past recently deleted inodes; a link allocates nothing).
    ///
    /// `linked` holds the blobs (id, executable) this directory already links to: a blob is
    /// linked at most once per directory, and any further path of the same content gets a copy
    /// of its own, so two paths of one view are never the same file (pytest's
    /// `ImportPathMismatchError` check, `os.path.samefile`, would otherwise take two equal test
    /// modules for one). A link that fails (another filesystem, the link limit, a store file gc
    /// just removed) is a copy too.
    pub fn materialize_linked(
        &self,
        target: &Target,
        entries: &[Input],
        dest: &Path,
        blobs: &Path,
        linked: &mut std::collections::HashSet<(gix::ObjectId, FileMode)>,
    ) -> Result<MaterializeStats> {
        let (mut stats, workdir) = self.begin(target, entries, dest)?;
        std::fs::create_dir_all(blobs).map_err(|source| GitError::Io {
            path: blobs.to_path_buf(),
            source,
        })?;
        let mut buf = Vec::new();
        for e in entries
            .iter()
            .filter(|e| matches!(e.mode, FileMode::Regular | FileMode::Executable))
        {
            let out = dest.join(native(e.path.as_ref()));
            if linked.insert((e.id, e.mode)) {
                let stored = blobs.join(blob_file_name(e));
                if !stored.is_file() {
                    let data = self.blob_bytes(e, workdir.as_deref(), &mut buf)?;
                    let tmp =
                        blobs.join(format!(".new-{}-{}", std::process::id(), blob_file_name(e)));
                    let _ = std::fs::remove_file(&tmp);
                    write_new(&tmp, e.mode, data)?;
                    // Atomic: a concurrent run links a whole file or none.
                    std::fs::rename(&tmp, &stored).map_err(|source| GitError::Io {
                        path: stored.clone(),
                        source,
                    })?;
                }
                if std::fs::hard_link(&stored, &out).is_ok() {
                    stats.files += 1;
                    continue;
                }
            }
            let data = self.blob_bytes(e, workdir.as_deref(), &mut buf)?;
            write_new(&out, e.mode, data)?;
            stats.files += 1;
            stats.bytes += data.len() as u64;
        }
        stats.symlinks = self.write_symlinks(entries, dest, workdir.as_deref())?;
        Ok(stats)
    }

    /// What every materialisation starts with: the paths checked, the directories made, the
    /// submodules counted, and the work tree the files come from (`None`: the object database).
    fn begin(
        &self,
        target: &Target,
        entries: &[Input],
        dest: &Path,
    ) -> Result<(MaterializeStats, Option<PathBuf>)> {
        for e in entries {
            check_path(e.path.as_ref())?;
        }
        create_dirs(entries, dest)?;
        let stats = MaterializeStats {
            submodules: entries
                .iter()
                .filter(|e| e.mode == FileMode::Submodule)
                .count(),
            ..Default::default()
        };
        let workdir = match target {
            Target::WorkTree => Some(self.require_workdir()?.to_path_buf()),
            Target::Commit(_) => None,
        };
        Ok((stats, workdir))
    }

    /// The content of the regular file `e`: its blob, or in the work tree (`workdir`) the file
    /// on disk, which must still hash to the id it was planned with.
    fn blob_bytes<'b>(
        &self,
        e: &Input,
        workdir: Option<&Path>,
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8]> {
        match workdir {
            None => Ok(self
                .repo
                .objects
                .find_blob(&e.id, buf)
                .map_err(|source| GitError::Object { id: e.id, source })?
                .data),
            Some(wd) => {
                let src = wd.join(native(e.path.as_ref()));
                *buf = std::fs::read(&src).map_err(|source| GitError::Io {
                    path: src.clone(),
                    source,
                })?;
                let id = blob_id(self.object_hash(), buf).map_err(|source| GitError::Io {
                    path: src.clone(),
                    source,
                })?;
                if id != e.id {
                    return Err(GitError::Changed {
                        path: src,
                        expected: e.id,
                    });
                }
                Ok(buf)
            }
        }
    }

    /// The symbolic links among `entries`, under `dest`: their targets from the blobs, or for
    /// the work tree (`workdir`) from the links on disk, which must still be the blobs the
    /// snapshot lists. Returns how many.
    fn write_symlinks(
        &self,
        entries: &[Input],
        dest: &Path,
        workdir: Option<&Path>,
    ) -> Result<usize> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GitError::Io { path, source }
        };
        let kind = self.object_hash();
        let mut count = 0;
        for e in entries.iter().filter(|e| e.mode == FileMode::Symlink) {
            let target_bytes: Vec<u8> = match workdir {
                None => self.read_blob(&e.id)?,
                Some(wd) => {
                    let src = wd.join(native(e.path.as_ref()));
                    if hash_file(&src, FileMode::Symlink, kind)? != e.id {
                        return Err(GitError::Changed {
                            path: src,
                            expected: e.id,
                        });
                    }
                    match std::fs::read_link(&src) {
                        Ok(t) => {
                            use std::os::unix::ffi::OsStrExt;
                            t.as_os_str().as_bytes().to_vec()
                        }
                        Err(_) => std::fs::read(&src).map_err(io_err(&src))?,
                    }
                }
            };
            let out: PathBuf = dest.join(native(e.path.as_ref()));
            std::os::unix::fs::symlink(native(target_bytes.as_bstr()), &out)
                .map_err(io_err(&out))?;
            count += 1;
        }
        Ok(count)
    }
}

/// The name of a blob's file in a store of blobs: its id, and `.x` for an executable one (a
/// hard link shares its mode).
fn blob_file_name(e: &Input) -> String {
    match e.mode {
        FileMode::Executable => format!("{}.x", e.id),
        _ => e.id.to_string(),
    }
}

/// Write `data` to a new file at `out` (never through an existing one), with the mode a
/// checkout gives a regular or executable file.
fn write_new(out: &Path, mode: FileMode, data: &[u8]) -> Result<()> {
    let perm = if mode == FileMode::Executable {
        0o755
    } else {
        0o644
    };
    let io_err = |source| GitError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(perm)
        .open(out)
        .map_err(io_err)?;
    f.write_all(data).map_err(io_err)
}

/// Reject paths that could escape `dest` or touch a `.git` directory.
fn check_path(path: &BStr) -> Result<()> {
    let bad = path.is_empty()
        || path.contains(&0)
        || path
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b".." || c.eq_ignore_ascii_case(b".git"));
    if bad {
        return Err(GitError::UnsafePath {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The directories `entries` need under `dest`: every entry's parent, and each submodule's own
/// directory (left empty, as a checkout without the submodule leaves it).
fn create_dirs(entries: &[Input], dest: &Path) -> Result<()> {
    let mut dirs: Vec<&BStr> = Vec::new();
    for e in entries {
        if let Some(slash) = e.path.rfind_byte(b'/') {
            dirs.push(e.path[..slash].as_bstr());
        }
        if e.mode == FileMode::Submodule {
            dirs.push(e.path.as_bstr());
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        let p = dest.join(native(d));
        std::fs::create_dir_all(&p).map_err(|source| GitError::Io { path: p, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths() {
        for p in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/./b",
            ".git/config",
            "x/.GIT/y",
            "a\0b",
        ] {
            assert!(check_path(p.into()).is_err(), "{p:?}");
        }
        for p in ["a", "a/b.txt", ".gitignore", "x/.github/y", "..a"] {
            assert!(check_path(p.into()).is_ok(), "{p:?}");
        }
    }
}
