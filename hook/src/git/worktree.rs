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
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawMode};
use rustix::io::Errno;

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
    /// Every tracked path of the index with its index mode and blob id, one per path (the
    /// first stage of a conflicted one), sorted by path bytes: no `stat`, no hashing, so it
    /// costs a read of the index. A tracked file deleted from the disk is listed too.
    pub fn tracked_entries(&self) -> Result<Vec<super::Input>> {
        let workdir = self.require_workdir()?.to_path_buf();
        let index = gix::index::File::at_or_default(
            self.repo.index_path(),
            self.repo.object_hash(),
            true,
            Default::default(),
        )
        .map_err(|e| GitError::Worktree {
            workdir,
            source: gix::Error::from_error(e),
        })?;
        let mut out: Vec<super::Input> = Vec::with_capacity(index.entries().len());
        for entry in index.entries() {
            if entry.mode.is_sparse() {
                continue;
            }
            let path = entry.path(&index);
            if out.last().is_some_and(|l| l.path.as_bstr() == path) {
                continue;
            }
            out.push(super::Input {
                mode: index_file_mode(entry.mode),
                id: entry.id,
                path: path.to_owned(),
            });
        }
        Ok(out)
    }

    /// Visit every file on disk that git would consider: tracked files still present, and
    /// untracked files that are not ignored.
    pub fn walk_worktree(&self, visit: &mut dyn Visit) -> Result<WorktreeStats> {
        let workdir = self.require_workdir()?.to_path_buf();
        let wt_err = |source| GitError::Worktree {
            workdir: workdir.clone(),
            source,
        };
        // Like git (which verifies the index's trailing checksum only in `git fsck`), trust the
        // index's bytes: the collision-detecting SHA-1 over a 100,000-entry index was a tenth
        // of this walk's CPU time. The entries are still decoded strictly.
        let index = gix::index::File::at_or_default(
            self.repo.index_path(),
            self.repo.object_hash(),
            true,
            Default::default(),
        )
        .map_err(|e| GitError::Worktree {
            workdir: workdir.clone(),
            source: gix::Error::from_error(e),
        })?;
        let stat_options = self.repo.stat_options().map_err(wt_err)?;
        let caps = self.repo.filesystem_options().map_err(wt_err)?;
        let hash_kind = self.repo.object_hash();
        let mut stats = WorktreeStats::default();

        // 1. Which tracked entries are wanted (index order, one per path).
        let entries = index.entries();
        let wanted = wanted_entries(&index, visit);

        // 2. Their stat data on every CPU while this thread walks the directories for
        //    untracked files (see `stat_and_walk`).
        let probe_ctx = ProbeCtx {
            index: &index,
            workdir: &workdir,
            stat_options,
            caps,
            hash_kind,
        };
        let mut collect = CollectUntracked {
            visit,
            wanted: Vec::new(),
        };
        let probes = self.stat_and_walk(&probe_ctx, &wanted, &mut collect)?;

        // A file that was read (not proven unchanged by the index) is hashed as git would store
        // it: cleaned through .gitattributes and the filters when a checkout converts anything,
        // so its id is the one `git add` would record and matches what the index holds for an
        // unchanged file. Without attributes (the common case) this costs one scan of the
        // index's paths and nothing else.
        let may_convert = self.may_convert(
            entries
                .iter()
                .any(|e| super::is_attributes_file(e.path(&index))),
        )?;
        let mut converter = None;
        let mut clean_id = |path: &BStr, mode: FileMode, raw: ObjectId| -> Result<ObjectId> {
            if !may_convert || !matches!(mode, FileMode::Regular | FileMode::Executable) {
                return Ok(raw);
            }
            let c = match &mut converter {
                Some(c) => c,
                None => converter.insert(self.converter(&super::Target::WorkTree)?),
            };
            let abs = workdir.join(native(path));
            let data = std::fs::read(&abs).map_err(|source| GitError::Io {
                path: abs.clone(),
                source,
            })?;
            let clean = c.to_git(path, &data)?;
            blob_id(hash_kind, &clean).map_err(|source| GitError::Io { path: abs, source })
        };

        // 3. Visit the tracked files in index order.
        let CollectUntracked {
            visit,
            wanted: untracked,
        } = collect;
        for (&i, probe) in wanted.iter().zip(probes) {
            let (mode, id) = match probe {
                Probe::Gone => continue,
                Probe::Reused(mode, id) => {
                    stats.reused += 1;
                    (mode, id)
                }
                Probe::Hashed(mode, id) => {
                    stats.hashed += 1;
                    (mode, clean_id(entries[i].path(&index), mode, id)?)
                }
            };
            let path = entries[i].path(&index);
            // `wants` again: a visitor may keep per-path state between the two calls.
            if visit.wants(path) {
                visit.visit(path, mode, &id);
            }
        }

        // 4. Then the untracked ones, in the walk's order.
        let mut abs = PathBuf::with_capacity(workdir.as_os_str().len() + 128);
        for (path, kind) in untracked {
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
            let id = clean_id(path.as_bstr(), mode, hash_file(&abs, mode, hash_kind)?)?;
            stats.hashed += 1;
            stats.untracked += 1;
            visit.visit(path.as_bstr(), mode, &id);
        }
        Ok(stats)
    }

    /// The stat data (and the blob ids of changed files) of the `wanted` index entries on
    /// every CPU, while this thread walks the directories for untracked files into `collect`:
    /// the two halves of `git status` side by side. Each worker takes a contiguous run of the
    /// index, so a directory's files stay together for `StatAt`.
    fn stat_and_walk(
        &self,
        ctx: &ProbeCtx<'_>,
        wanted: &[usize],
        collect: &mut CollectUntracked<'_>,
    ) -> Result<Vec<Probe>> {
        let wt_err = |source| GitError::Worktree {
            workdir: ctx.workdir.to_path_buf(),
            source,
        };
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8)
            .min(wanted.len().div_ceil(MIN_ENTRIES_PER_WORKER))
            .max(1);
        let chunk = wanted.len().div_ceil(workers).max(1);
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
        let (probes, walked) = std::thread::scope(|scope| {
            let handles: Vec<_> = wanted
                .chunks(chunk)
                .map(|part| scope.spawn(move || ctx.probe_all(part)))
                .collect();
            // Untracked files, honouring .gitignore, .git/info/exclude and core.excludesFile.
            let walked =
                self.repo
                    .dirwalk(ctx.index, Vec::<&BStr>::new(), &interrupt, options, collect);
            let mut probes = Vec::with_capacity(wanted.len());
            let mut failed = None;
            for h in handles {
                match h.join().expect("work-tree stat worker panicked") {
                    Ok(p) => probes.extend(p),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            (failed.map_or(Ok(probes), Err), walked)
        });
        let probes = probes?;
        walked.map_err(wt_err)?;
        Ok(probes)
    }
}

/// The positions of the index entries `visit` wants, in index order, one per path (a
/// conflicted path's further stages and sparse directory entries are skipped).
fn wanted_entries(index: &gix::index::File, visit: &mut dyn Visit) -> Vec<usize> {
    let mut wanted: Vec<usize> = Vec::new();
    let mut previous: Option<&BStr> = None;
    for (i, entry) in index.entries().iter().enumerate() {
        let path = entry.path(index);
        if previous == Some(path) {
            continue; // further stages of a conflicted path
        }
        previous = Some(path);
        if entry.mode.is_sparse() {
            continue;
        }
        visit.seen(path, index_file_mode(entry.mode), &entry.id);
        if visit.wants(path) {
            wanted.push(i);
        }
    }
    wanted
}

/// Below this many wanted tracked files the stat calls stay on one thread.
const MIN_ENTRIES_PER_WORKER: usize = 2048;

/// What a stat (and, for a changed file, a hash) found for one tracked file.
enum Probe {
    /// Deleted on disk, replaced by a directory (its files show up as untracked), or a special
    /// file: not part of the snapshot.
    Gone,
    /// Unchanged as far as the stat data can tell: the index's blob id.
    Reused(FileMode, ObjectId),
    /// Read and hashed.
    Hashed(FileMode, ObjectId),
}

/// Everything a stat worker needs; shared by reference between the workers.
struct ProbeCtx<'a> {
    index: &'a gix::index::File,
    workdir: &'a Path,
    stat_options: gix::index::entry::stat::Options,
    caps: gix::fs::Capabilities,
    hash_kind: gix::hash::Kind,
}

impl ProbeCtx<'_> {
    /// Probe the index entries at `positions`, in order.
    fn probe_all(&self, positions: &[usize]) -> Result<Vec<Probe>> {
        let mut stat_at = StatAt::new(self.workdir);
        let mut abs = PathBuf::with_capacity(self.workdir.as_os_str().len() + 128);
        let entries = self.index.entries();
        positions
            .iter()
            .map(|&i| self.probe(&entries[i], &mut stat_at, &mut abs))
            .collect()
    }

    fn probe(
        &self,
        entry: &gix::index::Entry,
        stat_at: &mut StatAt<'_>,
        abs: &mut PathBuf,
    ) -> Result<Probe> {
        let path = entry.path(self.index);
        let index_mode = index_file_mode(entry.mode);
        // `--skip-worktree` and `--assume-unchanged` (`SKIP_WORKTREE`, `ASSUME_VALID`) are not
        // looked at: they tell git not to compare the file with its index entry, so a flagged
        // file edited on disk kept the index's blob, and a check of the work tree passed on
        // content the disk no longer holds. A flagged file is probed like any other; one absent
        // from the disk (a sparse checkout's) is a deleted file.
        let md = match stat_at.lstat(path) {
            Ok(md) => md,
            Err(e) if is_gone(&e) => return Ok(Probe::Gone),
            Err(source) => {
                let path = self.workdir.join(native(path));
                return Err(GitError::Io { path, source });
            }
        };
        abs.clear();
        abs.push(self.workdir);
        abs.push(native(path));
        if entry.mode.is_submodule() {
            if !md.is_dir() {
                return Ok(Probe::Gone);
            }
            let id = submodule_head(abs).unwrap_or(entry.id);
            return Ok(Probe::Reused(FileMode::Submodule, id));
        }
        let Some(mode) = disk_mode(&md, Some(index_mode), &self.caps) else {
            return Ok(Probe::Gone);
        };
        let unchanged = !entry.flags.contains(Flags::INTENT_TO_ADD)
            && mode == index_mode
            && entry.stat.matches(&md.index_stat(), self.stat_options)
            && !entry
                .stat
                .is_racy(self.index.timestamp(), self.stat_options);
        Ok(if unchanged {
            Probe::Reused(mode, entry.id)
        } else {
            Probe::Hashed(mode, hash_file(abs, mode, self.hash_kind)?)
        })
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
    md: &impl DiskMeta,
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

/// The parts of lstat(2)'s answer [`disk_mode`] needs.
trait DiskMeta {
    fn is_symlink(&self) -> bool;
    fn is_file(&self) -> bool;
    fn is_executable(&self) -> bool;
}

impl DiskMeta for Metadata {
    fn is_symlink(&self) -> bool {
        Metadata::is_symlink(self)
    }
    fn is_file(&self) -> bool {
        Metadata::is_file(self)
    }
    fn is_executable(&self) -> bool {
        Metadata::is_executable(self)
    }
}

/// lstat(2) of a work-tree file, as [`Metadata`] reads it.
struct LStat(rustix::fs::Stat);

impl LStat {
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.0.st_mode as RawMode)
    }

    fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// The index's view of this stat data: exactly what [`Stat::from_fs`] makes of the same
    /// answer (times before the epoch count as 0; everything else is truncated to 32 bits).
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    fn index_stat(&self) -> Stat {
        fn time(secs: i64, nsecs: i64) -> gix::index::entry::stat::Time {
            if secs < 0 || !(0..1_000_000_000).contains(&nsecs) {
                return Default::default();
            }
            gix::index::entry::stat::Time {
                secs: secs as u32,
                nsecs: nsecs as u32,
            }
        }
        let st = &self.0;
        Stat {
            mtime: time(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: time(st.st_ctime as i64, st.st_ctime_nsec as i64),
            dev: st.st_dev as u32,
            ino: st.st_ino as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u32,
        }
    }
}

impl DiskMeta for LStat {
    fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }
    fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    fn is_executable(&self) -> bool {
        self.is_file() && self.0.st_mode as RawMode & 0o100 != 0
    }
}

/// lstat(2) of work-tree files by name, relative to an open descriptor of their directory
/// (`fstatat`): the kernel resolves each directory once instead of once per file, which was
/// a third of the cost of the work-tree walk. Index order keeps a directory's files together.
struct StatAt<'a> {
    workdir: &'a Path,
    /// The repository-relative directory `fd` belongs to.
    dir: Vec<u8>,
    fd: Option<std::result::Result<OwnedFd, rustix::io::Errno>>,
}

impl<'a> StatAt<'a> {
    fn new(workdir: &'a Path) -> Self {
        StatAt {
            workdir,
            dir: Vec::new(),
            fd: None,
        }
    }

    /// lstat(2) of the repository-relative `path`.
    fn lstat(&mut self, path: &BStr) -> std::io::Result<LStat> {
        let (dir, name) = match path.rfind_byte(b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        if self.fd.is_none() || self.dir != dir {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let dir_path = self.workdir.join(native(dir.as_bstr()));
            self.fd = Some(rustix::fs::open(&dir_path, flags, Mode::empty()));
            self.dir.clear();
            self.dir.extend_from_slice(dir);
        }
        match self.fd.as_ref().expect("opened above") {
            Ok(fd) => rustix::fs::statat(fd, native(name.as_bstr()), AtFlags::SYMLINK_NOFOLLOW)
                .map(LStat)
                .map_err(Into::into),
            // The directory is gone or not a directory: so is the file.
            Err(e) if *e == Errno::NOENT || *e == Errno::NOTDIR => Err((*e).into()),
            // Anything else (say, a directory that can be searched but not opened): ask for
            // the whole path, as lstat(2) would be asked without the descriptor.
            Err(_) => rustix::fs::lstat(self.workdir.join(native(path)))
                .map(LStat)
                .map_err(Into::into),
        }
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
    // With core.symlinks = false the link is checked out as a file holding the target, and
    // read_link fails: hash the file.
    if mode == FileMode::Symlink
        && let Ok(target) = std::fs::read_link(path)
    {
        use std::os::unix::ffi::OsStrExt;
        return blob_id(kind, target.as_os_str().as_bytes()).map_err(io_err);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `StatAt` sees what a plain lstat(2) through gix sees, for every kind of entry and for
    /// paths whose directory is gone or is a file.
    #[test]
    fn stat_at_agrees_with_gix_metadata() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("top.txt"), "x").unwrap();
        std::fs::write(root.join("a/b/file"), "hello").unwrap();
        std::fs::write(root.join("a/b/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("a/b/run.sh"), PermissionsExt::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("file", root.join("a/b/link")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/dirlink")).unwrap();
        let caps = gix::fs::Capabilities::probe(root);
        let mut at = StatAt::new(root);
        for rel in [
            "top.txt",
            "a/b/file",
            "a/b/run.sh",
            "a/b/link",
            "a/dirlink",
            "a/b",
            "a/dirlink/file",
            "top.txt",
        ] {
            let ours = at.lstat(rel.into()).unwrap();
            let theirs = Metadata::from_path_no_follow(&root.join(rel)).unwrap();
            assert_eq!(ours.index_stat(), Stat::from_fs(&theirs).unwrap(), "{rel}");
            assert_eq!(ours.is_dir(), theirs.is_dir(), "{rel}");
            for tracked in [None, Some(FileMode::Regular), Some(FileMode::Executable)] {
                assert_eq!(
                    disk_mode(&ours, tracked, &caps),
                    disk_mode(&theirs, tracked, &caps),
                    "{rel}"
                );
            }
        }
        for gone in ["missing", "a/missing/file", "top.txt/file", "a/b/file/x"] {
            let e = at.lstat(gone.into()).err().unwrap();
            let plain = Metadata::from_path_no_follow(&root.join(gone))
                .err()
                .unwrap();
            assert_eq!(e.kind(), plain.kind(), "{gone}");
            assert!(is_gone(&e), "{gone}");
        }
    }
}
