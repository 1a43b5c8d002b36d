//! The directories a sandboxed check's view is made of, kept between runs so that setting a
//! sandbox up costs what changed, not what the segment holds (the idea of Bazel's
//! `--reuse_sandbox_directories`).
//!
//! Below `<local cache>/checkdef-sandboxes/<repository key>/`:
//!
//! * `skeleton/tree` — every path of the snapshot, as an empty mode-000 file (submodules as
//!   directories): the bottom overlay layer, shared by every check of the repository. A check
//!   that opens a file that is not one of its inputs gets `EACCES` instead of a silently missing
//!   file, and [`undeclared_reads`] names it. Updated from the previous listing (`skeleton/state`):
//!   only added and removed paths cost anything; an edit costs nothing.
//! * `inputs/<segment key>/tree` — the segment's inputs with their contents, the layer above;
//!   updated from the previous `(mode, id, path)` listing (`state`): a changed file is one
//!   unlink and one write.
//!
//! A check never writes to either: its writes go to its private overlay `upper` directory, and
//! both directories are hidden from it (the local cache is covered). Each has a `lock` file:
//! a run holds `inputs/<segment>` exclusively while the check runs, and the skeleton shared
//! (after updating it exclusively); when another run holds one, this run uses a private copy
//! instead (correct, only slower). The `state` file is removed before an update and written
//! after it, so a run killed halfway rebuilds the directory from scratch next time.
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use gix::bstr::{BStr, BString, ByteSlice as _};
use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};

use crate::git::{FileMode, Input, Repo, Target};

/// The directory persistent sandbox layers live in, inside the local cache directory.
pub const STORE_DIR: &str = "checkdef-sandboxes";

/// A short stable key for a repository root or segment name.
pub fn key(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// An flock held until drop.
#[derive(Debug)]
pub struct Lock(File);

/// `Ok(None)` when someone else holds it, and also when the directory is being removed by
/// `cache gc` ([`prune_layers`]): the lock file is gone, or no longer the file at `path` once
/// locked. Either way the caller uses a private copy, never a directory gc is deleting.
fn lock(path: &Path, op: FlockOperation) -> Result<Option<Lock>> {
    use std::os::unix::fs::MetadataExt as _;
    let f = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match rustix::fs::flock(&f, op) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    let ours = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    let named =
        std::fs::metadata(path).is_ok_and(|m| m.ino() == ours.ino() && m.dev() == ours.dev());
    Ok(named.then_some(Lock(f)))
}

/// Remove `path` and everything below it, also directories a check made unreadable (and the
/// mode-000 `work/work` directory overlayfs leaves in its work directory).
pub fn force_remove(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn open_up(p: &Path) {
        if let Ok(meta) = std::fs::symlink_metadata(p)
            && meta.is_dir()
        {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(path);
    let _ = std::fs::remove_dir_all(path);
}

/// The skeleton of one snapshot, in use by this run.
#[derive(Debug)]
pub struct Skeleton {
    pub tree: PathBuf,
    /// Every path of the snapshot (files, symlinks, submodules).
    pub paths: SnapshotPaths,
    _lock: Option<Lock>,
    /// A private skeleton (another run holds the shared one on another snapshot): removed on drop.
    private: Option<PathBuf>,
}

/// The paths of a snapshot, sorted by bytes: looked up by binary search (a set of 100,000 paths
/// would cost more to build than every lookup a run makes). When the shared skeleton was known
/// current from its key, nothing was listed: the paths are then read from the skeleton's state
/// file, and only if a lookup needs them (a check's log reports a denied read).
#[derive(Debug, Default)]
pub struct SnapshotPaths {
    sorted: std::sync::OnceLock<Result<Vec<BString>, String>>,
    /// Where the paths are read from when they were not given: a state file this run holds
    /// the shared lock of, so it cannot change meanwhile.
    state: Option<PathBuf>,
    /// The top-level directories that hold paths, when known without the paths.
    top_dirs: Option<Vec<BString>>,
}

impl SnapshotPaths {
    pub fn new(entries: Vec<Input>) -> SnapshotPaths {
        let mut paths: Vec<BString> = entries.into_iter().map(|e| e.path).collect();
        paths.sort_unstable();
        paths.dedup();
        SnapshotPaths {
            sorted: std::sync::OnceLock::from(Ok(paths)),
            state: None,
            top_dirs: None,
        }
    }

    fn from_state(state: PathBuf, top_dirs: Vec<BString>) -> SnapshotPaths {
        SnapshotPaths {
            sorted: std::sync::OnceLock::new(),
            state: Some(state),
            top_dirs: Some(top_dirs),
        }
    }

    /// The paths, or why they could not be read.
    fn get(&self) -> Result<&[BString], &str> {
        self.sorted
            .get_or_init(|| {
                let Some(state) = &self.state else {
                    return Ok(Vec::new());
                };
                let text = std::fs::read_to_string(state)
                    .map_err(|e| format!("reading {}: {e}", state.display()))?;
                let mut paths = text
                    .lines()
                    .map(|l| {
                        unescape_line(l)
                            .ok_or_else(|| format!("{}: bad line {l:?}", state.display()))
                    })
                    .collect::<Result<Vec<BString>, String>>()?;
                paths.sort_unstable();
                paths.dedup();
                Ok(paths)
            })
            .as_ref()
            .map(|v| v.as_slice())
            .map_err(|e| e.as_str())
    }

    pub fn contains(&self, path: &BStr) -> bool {
        self.get()
            .is_ok_and(|v| v.binary_search_by(|p| p.as_bstr().cmp(path)).is_ok())
    }

    /// Whether some path lies below the directory `dir` (relative, no trailing `/`).
    pub fn has_below(&self, dir: &[u8]) -> bool {
        if let Some(tops) = &self.top_dirs
            && !dir.contains(&b'/')
        {
            return tops.iter().any(|t| t.as_slice() == dir);
        }
        let Ok(paths) = self.get() else {
            return false;
        };
        let mut prefix = dir.to_vec();
        prefix.push(b'/');
        let i = paths.partition_point(|p| p.as_slice() < prefix.as_slice());
        paths.get(i).is_some_and(|p| p.starts_with(&prefix))
    }

    /// Why the paths could not be read (then no path is known to be in the snapshot).
    pub fn unavailable(&self) -> Option<&str> {
        self.get().err()
    }
}

/// A snapshot's listing as the skeleton needs it: a cheap key that changes whenever the
/// listing does, and the listing itself.
pub trait Listing {
    fn key(&self) -> Option<String>;
    fn entries(&self) -> Result<Vec<Input>>;
    /// The target of the symlink whose blob is `id` (`None`: unknown, a placeholder instead).
    fn symlink_target(&self, _id: &gix::oid) -> Option<BString> {
        None
    }
}

/// The target of each symlink of `all` (by path): in the skeleton a symlink is one, so that
/// `isdir`, `glob` and `readlink` through it see what a checkout has.
type Targets = std::collections::HashMap<BString, BString>;

fn symlink_targets(listing: &dyn Listing, all: &[Input]) -> Targets {
    all.iter()
        .filter(|e| e.mode == FileMode::Symlink)
        .filter_map(|e| {
            let t = listing.symlink_target(&e.id)?;
            // A target the state's one-line format could not hold stays a placeholder.
            (!t.is_empty() && !t.contains(&0)).then(|| (e.path.clone(), t))
        })
        .collect()
}

/// The listing of `target` in `repo` ([`Repo::listing_key`], [`Repo::skeleton_entries`]).
pub struct RepoListing<'a>(pub &'a Repo, pub &'a Target);

impl Listing for RepoListing<'_> {
    fn key(&self) -> Option<String> {
        self.0.listing_key(self.1)
    }
    fn entries(&self) -> Result<Vec<Input>> {
        Ok(self.0.skeleton_entries(self.1)?)
    }
    fn symlink_target(&self, id: &gix::oid) -> Option<BString> {
        self.0.read_blob(id).ok().map(BString::from)
    }
}

/// Top-level directories holding a path of `all`.
fn top_dirs(all: &[Input]) -> Vec<BString> {
    let mut tops: Vec<BString> = all
        .iter()
        .filter_map(|e| e.path.find_byte(b'/').map(|i| e.path[..i].into()))
        .collect();
    tops.sort_unstable();
    tops.dedup();
    tops
}

/// The version of what a skeleton holds for a listing, part of its recorded key: a skeleton
/// built by an older checkdef for the same key is listed and compared again (2: symlinks are
/// symlinks, no longer placeholder files).
const SKELETON_FORMAT: u32 = 2;

/// The key file: the listing's key with [`SKELETON_FORMAT`], then `top DIR` lines
/// ([`top_dirs`], escaped).
fn key_text(key: &str, tops: &[BString]) -> String {
    let mut s = format!("v{SKELETON_FORMAT} {key}\n");
    for t in tops {
        s.push_str("top ");
        s.push_str(&escape(t.as_bstr()));
        s.push('\n');
    }
    s
}

/// The top-level directories recorded in `path` when its key is `key`.
fn read_key(path: &Path, key: &str) -> Option<Vec<BString>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()? != format!("v{SKELETON_FORMAT} {key}") {
        return None;
    }
    lines
        .map(|l| unescape(l.strip_prefix("top ")?))
        .collect::<Option<Vec<_>>>()
}

impl Drop for Skeleton {
    fn drop(&mut self) {
        if let Some(p) = &self.private {
            force_remove(p);
        }
    }
}

/// The state: `d PATH` (a submodule's directory), `l PATH<TAB>TARGET` (a symlink) or `f PATH`
/// (a placeholder file), escaped (a tab in a path is written `\x09`).
fn listing_text(all: &[Input], targets: &Targets) -> String {
    let mut s = String::with_capacity(all.len() * 40);
    for e in all {
        let target = targets.get(&e.path);
        s.push(match (e.mode, target) {
            (FileMode::Submodule, _) => 'd',
            (_, Some(_)) => 'l',
            _ => 'f',
        });
        s.push(' ');
        s.push_str(&escape(e.path.as_ref()));
        if let Some(t) = target {
            s.push('\t');
            s.push_str(&escape(t.as_ref()));
        }
        s.push('\n');
    }
    s
}

/// Paths in state files are one per line: newlines and backslashes escaped.
fn escape(p: &BStr) -> String {
    let s = p.to_str_lossy();
    // A tab too: it separates a symlink's path from its target in the skeleton's state.
    if p.contains(&b'\n') || p.contains(&b'\\') || p.contains(&b'\t') || s.contains('\u{FFFD}') {
        let mut out = String::new();
        for b in p.iter() {
            match b {
                b'\\' => out.push_str("\\\\"),
                b'\n' => out.push_str("\\n"),
                0x20..=0x7e => out.push(*b as char),
                _ => out.push_str(&format!("\\x{b:02x}")),
            }
        }
        out
    } else {
        s.into_owned()
    }
}

impl Skeleton {
    /// The skeleton of `listing`'s snapshot: the shared one below `store` when it can be used,
    /// else a private one in `private_dir`. The shared one records the key of the listing it
    /// was built from (`key`, written after the skeleton and removed before any change to it):
    /// when the key is unchanged, nothing is listed or compared.
    pub fn prepare(
        listing: &dyn Listing,
        store: Option<&Path>,
        private_dir: &Path,
    ) -> Result<Skeleton> {
        let key = listing.key();
        let dirs = store.map(|store| {
            let dir = store.join("skeleton");
            (
                dir.join("lock"),
                dir.join("tree"),
                dir.join("state"),
                dir.join("key"),
                dir,
            )
        });
        if let (Some((lock_path, tree, state, key_path, dir)), Some(key)) = (&dirs, &key)
            && dir.is_dir()
            && let Some(l) = lock(lock_path, FlockOperation::NonBlockingLockShared)?
            && tree.is_dir()
            && let Some(tops) = read_key(key_path, key)
        {
            return Ok(Skeleton {
                tree: tree.clone(),
                paths: SnapshotPaths::from_state(state.clone(), tops),
                _lock: Some(l),
                private: None,
            });
        }
        let all = listing.entries()?;
        // The key must be the listing's: one that changed while it was read is not recorded.
        let key = key.filter(|k| listing.key().as_ref() == Some(k));
        let paths = SnapshotPaths::new(all.clone());
        let mut all = all;
        crate::git::sort_inputs(&mut all);
        all.dedup_by(|a, b| a.path == b.path);
        let targets = symlink_targets(listing, &all);
        let want = listing_text(&all, &targets);
        if let Some((lock_path, tree, state, key_path, dir)) = &dirs {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if let Some(l) = lock(lock_path, FlockOperation::NonBlockingLockExclusive)? {
                let _ = std::fs::remove_file(key_path);
                update_skeleton(tree, state, &all, &targets, &want)?;
                if let Some(k) = &key {
                    crate::fsutil::write_atomic(key_path, key_text(k, &top_dirs(&all)).as_bytes())
                        .with_context(|| format!("writing {}", key_path.display()))?;
                }
                drop(l);
            }
            // Shared from here on; the listing is checked again, as another run may have
            // changed it between the two locks.
            if let Some(l) = lock(lock_path, FlockOperation::NonBlockingLockShared)?
                && std::fs::read_to_string(state).is_ok_and(|s| s == want)
            {
                return Ok(Skeleton {
                    tree: tree.clone(),
                    paths,
                    _lock: Some(l),
                    private: None,
                });
            }
        }
        let tree = tempfile::Builder::new()
            .prefix("skeleton-")
            .tempdir_in(private_dir)
            .with_context(|| format!("creating a skeleton in {}", private_dir.display()))?
            .keep();
        build_placeholders(&tree, all.iter(), &targets)?;
        Ok(Skeleton {
            tree: tree.clone(),
            paths,
            _lock: None,
            private: Some(tree),
        })
    }
}

fn update_skeleton(
    tree: &Path,
    state: &Path,
    all: &[Input],
    targets: &Targets,
    want: &str,
) -> Result<()> {
    let old = std::fs::read_to_string(state).ok();
    if old.as_deref() == Some(want) && tree.is_dir() {
        return Ok(());
    }
    let _ = std::fs::remove_file(state);
    match old.filter(|_| tree.is_dir()) {
        None => {
            force_remove(tree);
            build_placeholders(tree, all.iter(), targets)?;
        }
        Some(old) => {
            let old: HashSet<&str> = old.lines().collect();
            let new_lines: Vec<&str> = want.lines().collect();
            let new: HashSet<&str> = new_lines.iter().copied().collect();
            let mut removed: Vec<&str> = old.difference(&new).copied().collect();
            // Deepest first, so a directory goes after what it held.
            removed.sort_by(|a, b| b.cmp(a));
            for line in removed {
                let Some(rel) = unescape_line(line) else {
                    force_remove(tree);
                    build_placeholders(tree, all.iter(), targets)?;
                    break;
                };
                let p = tree.join(crate::git::native(rel.as_bstr()));
                if line.starts_with('d') {
                    force_remove(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
                prune_empty_parents(tree, &p);
            }
            let added = all
                .iter()
                .zip(&new_lines)
                .filter(|(_, l)| !old.contains(**l));
            build_placeholders(tree, added.map(|(e, _)| e), targets)?;
        }
    }
    crate::fsutil::write_atomic(state, want.as_bytes())
        .with_context(|| format!("writing {}", state.display()))
}

fn unescape_line(line: &str) -> Option<BString> {
    unescape(line.get(2..)?.split('\t').next()?)
}

fn unescape(rel: &str) -> Option<BString> {
    if !rel.contains('\\') {
        return Some(rel.into());
    }
    let mut out = Vec::new();
    let b = rel.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1)? {
                b'\\' => out.push(b'\\'),
                b'n' => out.push(b'\n'),
                b'x' => {
                    out.push(u8::from_str_radix(rel.get(i + 2..i + 4)?, 16).ok()?);
                    i += 2;
                }
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out.into())
}

fn prune_empty_parents(root: &Path, removed: &Path) {
    let mut p = removed.parent();
    while let Some(d) = p {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        p = d.parent();
    }
}

fn build_placeholders<'a>(
    tree: &Path,
    entries: impl Iterator<Item = &'a Input>,
    targets: &Targets,
) -> Result<()> {
    std::fs::create_dir_all(tree).with_context(|| format!("creating {}", tree.display()))?;
    let mut made: HashSet<PathBuf> = HashSet::new();
    for e in entries {
        let p = tree.join(crate::git::native(e.path.as_ref()));
        if let Some(parent) = p.parent()
            && !made.contains(parent)
        {
            // A path whose parent is a placeholder file (file replaced by a directory) clears it.
            if parent.is_file() {
                let _ = std::fs::remove_file(parent);
            }
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            made.insert(parent.to_path_buf());
        }
        if e.mode == FileMode::Submodule {
            let _ = std::fs::create_dir(&p);
            continue;
        }
        if let Some(target) = targets.get(&e.path) {
            use std::os::unix::ffi::OsStrExt as _;
            // A placeholder file an earlier listing left goes first.
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(&p);
            }
            match std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("creating {}", p.display()));
                }
            }
            continue;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&p)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err).with_context(|| format!("creating {}", p.display()));
            }
        }
    }
    Ok(())
}

/// A segment's inputs layer, in use by one check.
#[derive(Debug)]
pub struct InputsLayer {
    pub tree: PathBuf,
    /// The layer's own lock, and the store's (`skeleton/lock`, shared): `cache gc` removes
    /// nothing of a store while any run holds the latter.
    _lock: Option<(Lock, Lock)>,
}

/// Line of an inputs state file.
fn input_line(e: &Input) -> String {
    format!(
        "{:o} {} {}",
        mode_bits(e.mode),
        e.id,
        escape(e.path.as_ref())
    )
}

fn mode_bits(m: FileMode) -> u32 {
    match m {
        FileMode::Regular => 0o100644,
        FileMode::Executable => 0o100755,
        FileMode::Symlink => 0o120000,
        FileMode::Submodule => 0o160000,
    }
}

/// Bytecode offered to the persistent inputs layers: hash-checked `.pyc` files compiled by a
/// warm server (run/warm_server.py, `compile_blobs`), one per blob, in `dir/<tag>/<blob id>.pyc`.
#[derive(Debug, Clone)]
pub struct PycStore {
    pub dir: PathBuf,
    /// The interpreter's cache tag (`cpython-311`), the name an import looks for; `None` while
    /// unknown (nothing is linked, every candidate is reported missing).
    pub tag: Option<String>,
}

impl PycStore {
    fn entry(&self, tag: &str, id: &str) -> PathBuf {
        self.dir.join(tag).join(format!("{id}.pyc"))
    }
}

/// The directory of the blob store of the repository whose layers are below `store`: one file
/// per blob some inputs layer holds, which the layers hard-link to (see
/// [`crate::git::Repo::materialize_linked`]).
pub fn blob_dir(store: &Path) -> PathBuf {
    store.join("blobs")
}

/// The directory of the bytecode store of the repository whose layers are below `store`.
pub fn pyc_dir(store: &Path) -> PathBuf {
    store.join("pyc")
}

/// What no inputs layer uses any more in every repository's store below the local cache
/// `cache_dir` (`cache gc`): compiled modules of blobs no layer holds, and stored blobs no
/// layer links (a hard-link count of one). A run using one meanwhile does without: its check
/// compiles the module itself, its layer gets a copy of the blob.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unlinked {
    pub bytecode: usize,
    pub blobs: usize,
}

/// Remove what no inputs layer links any more (see [`Unlinked`]); how many of each went.
pub fn prune_unlinked(cache_dir: &Path) -> Unlinked {
    let mut removed = Unlinked::default();
    let Ok(repos) = std::fs::read_dir(cache_dir.join(STORE_DIR)) else {
        return removed;
    };
    for repo in repos.flatten() {
        let store = repo.path();
        // Bytecode is read, never linked: it stays while a layer of the store holds its blob.
        let live: HashSet<String> = std::fs::read_dir(store.join("inputs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|l| std::fs::read_to_string(l.path().join("state")).ok())
            .flat_map(|state| {
                state
                    .lines()
                    .filter_map(|line| line.split(' ').nth(1).map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .collect();
        for tag in std::fs::read_dir(pyc_dir(&store))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(tag.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = f.path();
                let dead = p.extension().is_some_and(|e| e == "pyc")
                    && p.file_stem()
                        .and_then(|n| n.to_str())
                        .is_some_and(|id| !live.contains(id));
                if dead && std::fs::remove_file(&p).is_ok() {
                    removed.bytecode += 1;
                }
            }
        }
        // A `.new-` file is one a run is writing, or a killed run left (after a day).
        let now = std::time::SystemTime::now();
        removed.blobs += remove_unlinked(&blob_dir(&store), |p| {
            p.file_name().is_some_and(|n| {
                !n.as_encoded_bytes().starts_with(b".")
                    || idle_for(p, now).is_some_and(|d| d > std::time::Duration::from_secs(86_400))
            })
        });
    }
    removed
}

/// Remove the files of `dir` that `wanted` names and that have no other hard link; how many.
fn remove_unlinked(dir: &Path, wanted: impl Fn(&Path) -> bool) -> usize {
    use std::os::unix::fs::MetadataExt as _;
    let mut removed = 0;
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = f.path();
        if wanted(&p)
            && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file() && m.nlink() == 1)
            && std::fs::remove_file(&p).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Whether pytest rewrites this file on import (its own `python_files` defaults, and
/// `conftest.py`): the interpreter's bytecode would never be used for it.
fn rewritten_by_pytest(name: &[u8]) -> bool {
    name == b"conftest.py" || name.starts_with(b"test_") || name.ends_with(b"_test.py")
}

/// Whether `path` (an input) is a module whose bytecode the warm server offers: a `.py` file
/// that pytest does not rewrite on import.
fn is_module_source(path: &BStr) -> bool {
    let name = path.rsplit_str("/").next().unwrap_or(path.as_bytes());
    name.len() > 3 && name.ends_with(b".py") && !rewritten_by_pytest(name)
}

/// The persistent layer of a segment, with what it is missing.
pub struct Acquired {
    pub layer: InputsLayer,
    /// `.py` inputs (their path in the layer, blob id) whose bytecode the store lacks.
    pub missing_pycs: Vec<(PathBuf, String)>,
    /// The store's bytecode of the other `.py` inputs, which a warm child reads before it
    /// enters its sandbox (nothing of it is in the view: see warm_server.py).
    pub bytecode: Vec<PathBuf>,
}

impl InputsLayer {
    /// The persistent inputs layer of `segment` below `store`, brought up to date with `inputs`
    /// by their difference to what it held; `None` when another run is using it. With `pycs`,
    /// the store's bytecode of the `.py` inputs is listed, and what it lacks. (Layers of an
    /// earlier checkdef linked bytecode into `__pycache__` directories: `pyc` lines of their
    /// state, which go as lines no input matches.)
    pub fn acquire(
        repo: &Repo,
        target: &Target,
        store: &Path,
        segment: &str,
        inputs: &[Input],
        pycs: Option<&PycStore>,
    ) -> Result<Option<Acquired>> {
        // The store first, held while the layer is used: gc (which takes it exclusively)
        // then cannot rename the store, or this layer, between our mkdir and our lock.
        let Some(store_lock) = lock(
            &store_lock_path(store),
            FlockOperation::NonBlockingLockShared,
        )?
        else {
            return Ok(None);
        };
        let dir = store.join("inputs").join(key(segment.as_bytes()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let Some(l) = lock(&dir.join("lock"), FlockOperation::NonBlockingLockExclusive)? else {
            return Ok(None);
        };
        // The lock file's time is the layer's last use, which `cache gc` goes by.
        let _ = l.0.set_modified(std::time::SystemTime::now());
        let tree = dir.join("tree");
        let state = dir.join("state");
        let blobs = blob_dir(store);
        let want: Vec<String> = inputs.iter().map(input_line).collect();
        // Bytecode the store has and sources it lacks (to be compiled).
        let mut bytecode = Vec::new();
        let mut missing_pycs = Vec::new();
        if let Some(pycs) = pycs {
            for e in inputs {
                if !matches!(e.mode, FileMode::Regular | FileMode::Executable)
                    || e.id.kind() != gix::hash::Kind::Sha1
                    || !is_module_source(e.path.as_bstr())
                {
                    continue;
                }
                let id = e.id.to_string();
                match &pycs.tag {
                    Some(tag) if pycs.entry(tag, &id).is_file() => {
                        bytecode.push(pycs.entry(tag, &id));
                    }
                    _ => missing_pycs.push((tree.join(crate::git::native(e.path.as_ref())), id)),
                }
            }
        }
        let old = std::fs::read_to_string(&state)
            .ok()
            .filter(|_| tree.is_dir());
        let _ = std::fs::remove_file(&state);
        let old_set: HashSet<&str> = old
            .as_deref()
            .map(|o| o.lines().collect())
            .unwrap_or_default();
        match &old {
            None => {
                force_remove(&tree);
                std::fs::create_dir_all(&tree)
                    .with_context(|| format!("creating {}", tree.display()))?;
                repo.materialize_linked(target, inputs, &tree, &blobs, &mut HashSet::new())?;
            }
            Some(old) => {
                let new_set: HashSet<&str> = want.iter().map(String::as_str).collect();
                // What no longer matches goes first (a changed file is removed, then written).
                let mut gone: Vec<PathBuf> = Vec::new();
                for line in old.lines().filter(|l| !new_set.contains(l)) {
                    let Some(rel) = line.splitn(3, ' ').nth(2).and_then(unescape) else {
                        continue;
                    };
                    let p = tree.join(crate::git::native(rel.as_bstr()));
                    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                        force_remove(&p);
                    } else {
                        let _ = std::fs::remove_file(&p);
                    }
                    gone.push(p);
                }
                let (kept, added): (Vec<_>, Vec<_>) = inputs
                    .iter()
                    .zip(&want)
                    .partition(|(_, l)| old_set.contains(l.as_str()));
                // What stays may be linked to the store already: equal content added now gets
                // a copy of its own.
                let mut linked: HashSet<_> = kept.iter().map(|(e, _)| (e.id, e.mode)).collect();
                let added: Vec<Input> = added.into_iter().map(|(e, _)| e.clone()).collect();
                // A directory where a file (or link) is added now held inputs before, all gone
                // above: what is left of it goes (a directory that became a file).
                for e in &added {
                    let p = tree.join(crate::git::native(e.path.as_ref()));
                    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
                        && e.mode != FileMode::Submodule
                    {
                        force_remove(&p);
                    }
                }
                repo.materialize_linked(target, &added, &tree, &blobs, &mut linked)?;
                // Directories left empty go after the additions, so a directory that holds a
                // changed file is kept, not removed and made again.
                for p in &gone {
                    prune_empty_parents(&tree, p);
                }
            }
        }
        let mut text = want.join("\n");
        text.push('\n');
        crate::fsutil::write_atomic(&state, text.as_bytes())
            .with_context(|| format!("writing {}", state.display()))?;
        Ok(Some(Acquired {
            layer: InputsLayer {
                tree,
                _lock: Some((l, store_lock)),
            },
            missing_pycs,
            bytecode,
        }))
    }

    /// A private copy of `inputs` in `dir` (when the persistent layer is busy, there is no
    /// local cache directory, or `convert`: the snapshot has checkout rules to apply).
    pub fn private(
        repo: &Repo,
        target: &Target,
        dir: &Path,
        inputs: &[Input],
        convert: bool,
    ) -> Result<InputsLayer> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        repo.materialize_checkout(target, inputs, dir, convert)?;
        Ok(InputsLayer {
            tree: dir.to_path_buf(),
            _lock: None,
        })
    }
}

/// Top-level directories of the work tree that are Python environments (`pyvenv.cfg`) and not
/// part of the snapshot: bound read-only into every view, so `.venv/bin/python` keeps working.
pub fn environments(workdir: &Path, snapshot: &SnapshotPaths) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(workdir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        use std::os::unix::ffi::OsStrExt as _;
        let bytes = name.as_bytes();
        if e.path().join("pyvenv.cfg").is_file() && !snapshot.has_below(bytes) {
            out.push(PathBuf::from(name));
        }
    }
    // The files by which a shim (pyenv's `python3`) picks the interpreter, when the snapshot
    // has none of that name and git ignores the work tree's (a `.python-version` in
    // `.gitignore`): environment, like the virtual environments above, and what the Python
    // fingerprint saw when it ran in the work tree. A version file of the snapshot is an input
    // of every segment instead (see `plan.rs`): the check reads the snapshot's, never the work
    // tree's over it; one that is neither (untracked in a commit's check) is not shown. When
    // the snapshot's paths cannot be read, nothing is shown over it.
    for name in crate::pyenv::VERSION_FILES {
        let in_snapshot =
            snapshot.unavailable().is_some() || snapshot.contains(name.as_bytes().as_bstr());
        if !in_snapshot
            && std::fs::symlink_metadata(workdir.join(name)).is_ok_and(|m| m.is_file())
            && crate::git::is_ignored(workdir, name)
        {
            out.push(PathBuf::from(name));
        }
    }
    out.sort();
    out
}

/// Paths of the snapshot that are not inputs and that `log` reports a permission error for:
/// the check tried to read a file it did not declare. `root` is where the view was mounted.
pub fn undeclared_reads(
    log: &[u8],
    root: &Path,
    snapshot: &SnapshotPaths,
    inputs: &[Input],
) -> Vec<String> {
    let inputs: HashSet<&[u8]> = inputs.iter().map(|i| i.path.as_slice()).collect();
    let root = root.as_os_str().as_encoded_bytes();
    let mut found: Vec<String> = Vec::new();
    for line in log.split(|b| *b == b'\n') {
        let l = line.to_ascii_lowercase();
        let denied = l.find(b"permission denied").is_some()
            || l.find(b"eacces").is_some()
            || l.find(b"errno 13").is_some();
        if !denied {
            continue;
        }
        for token in line.split(|b| {
            matches!(
                b,
                b' ' | b'\'' | b'"' | b'`' | b'(' | b')' | b'[' | b']' | b',' | b'\t' | b'\r'
            )
        }) {
            let mut t = token;
            while let Some(rest) = t.strip_suffix(b":") {
                t = rest;
            }
            let t = t
                .strip_prefix(root)
                .and_then(|r| r.strip_prefix(b"/"))
                .unwrap_or(t);
            let t = t.strip_prefix(b"./").unwrap_or(t);
            if t.is_empty() || inputs.contains(t) {
                continue;
            }
            if snapshot.contains(t.as_bstr()) {
                let s = t.to_str_lossy().into_owned();
                if !found.contains(&s) {
                    found.push(s);
                }
            }
        }
        // Without the listing no denied read can be named, and one that is not named must not
        // let the check pass: the read counts as undeclared.
        if let Some(why) = snapshot.unavailable() {
            let s = format!("(a denied read; the snapshot's listing could not be read: {why})");
            if !found.contains(&s) {
                found.push(s);
            }
        }
    }
    found
}

/// The record of a segment's last run's undeclared reads, for `checkdef explain`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LastRun {
    pub input_hash: crate::manifest::InputHash,
    pub finished_at: u64,
    pub undeclared: Vec<String>,
}

fn last_run_path(store: &Path, segment: &str) -> PathBuf {
    store
        .join("last-run")
        .join(format!("{}.json", key(segment.as_bytes())))
}

pub fn save_last_run(store: &Path, segment: &str, rec: &LastRun) -> std::io::Result<()> {
    let text = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(&last_run_path(store, segment), &text)
}

pub fn load_last_run(store: &Path, segment: &str) -> Option<LastRun> {
    let text = std::fs::read(last_run_path(store, segment)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The lock of a repository's store: its skeleton's, which every run holds shared while it uses
/// the store (the skeleton, or an inputs layer) and `cache gc` takes exclusively.
fn store_lock_path(store: &Path) -> PathBuf {
    store.join("skeleton").join("lock")
}

/// The file of a repository's store that names its work tree (or git directory); its time is
/// the store's last use. `cache gc` removes stores whose repository is gone or that nobody used
/// for a while ([`prune_layers`]).
const ROOT_FILE: &str = "root";

/// Record that this run uses `store`, the store of the repository at `root`.
pub fn mark_used(store: &Path, root: &Path) -> std::io::Result<()> {
    let path = store.join(ROOT_FILE);
    let want = root.as_os_str().as_encoded_bytes();
    if std::fs::read(&path).is_ok_and(|had| had == want) {
        File::options()
            .write(true)
            .open(&path)?
            .set_modified(std::time::SystemTime::now())
    } else {
        crate::fsutil::write_atomic(&path, want)
    }
}

/// What [`prune_layers`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Whole repository stores: their repository is gone, or nobody used them for `max_idle`.
    pub stores: usize,
    /// Inputs layers of segments nobody ran for `max_idle` in stores that stay.
    pub layers: usize,
}

/// How long a file's time is in the past (zero for a time in the future, `None` when unknown).
fn idle_for(path: &Path, now: std::time::SystemTime) -> Option<std::time::Duration> {
    let m = std::fs::symlink_metadata(path).ok()?.modified().ok()?;
    Some(now.duration_since(m).unwrap_or_default())
}

/// Remove what the sandbox layers below the local cache `cache_dir` hold for nobody (`cache
/// gc`): the store of a repository whose directory no longer exists (a deleted clone, a removed
/// worktree) or that no run used for `max_idle`, and in the other stores each segment's inputs
/// layer no check used for `max_idle` (a renamed or removed segment). Anything in use is left:
/// a directory goes only while gc holds every lock in it, and it is first renamed aside, so a
/// run starting meanwhile builds a fresh one (see [`lock`]).
pub fn prune_layers(cache_dir: &Path, max_idle: std::time::Duration) -> Pruned {
    let now = std::time::SystemTime::now();
    let mut pruned = Pruned::default();
    let root = cache_dir.join(STORE_DIR);
    let stale = |p: &Path| idle_for(p, now).is_none_or(|d| d > max_idle);
    for store in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let store = store.path();
        let name = store.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') {
            // A removal an earlier gc did not finish.
            if name.starts_with(".gc-") {
                force_remove(&store);
            }
            continue;
        }
        if !store.is_dir() {
            continue;
        }
        let marker = store.join(ROOT_FILE);
        let repo_gone = match std::fs::read(&marker) {
            Ok(path) => {
                use std::os::unix::ffi::OsStrExt as _;
                !Path::new(std::ffi::OsStr::from_bytes(&path)).exists()
            }
            // A store of an older checkdef, which recorded no repository: by its own time.
            Err(_) => stale(&store),
        };
        if repo_gone || (marker.exists() && stale(&marker)) {
            if remove_unused(&root, &store) {
                pruned.stores += 1;
            }
            continue;
        }
        // Layers of a store in use stay: every run holds its store's lock shared.
        let Ok(Some(_store)) = lock(
            &store_lock_path(&store),
            FlockOperation::NonBlockingLockExclusive,
        ) else {
            continue;
        };
        let inputs = store.join("inputs");
        for layer in std::fs::read_dir(&inputs).into_iter().flatten().flatten() {
            let layer = layer.path();
            if layer.is_dir() && stale(&layer.join("lock")) && remove_unused(&inputs, &layer) {
                pruned.layers += 1;
            }
        }
    }
    pruned
}

/// The bytes the sandbox layers below the local cache `cache_dir` take (each file once, however
/// many hard links it has).
pub fn layers_size(cache_dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![cache_dir.join(STORE_DIR)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

/// Remove `dir` (below `parent`) if no run holds a lock in it: every `lock` file below it is
/// locked exclusively, then the directory is renamed aside and deleted. Whether it went.
fn remove_unused(parent: &Path, dir: &Path) -> bool {
    let mut held = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_file() && e.file_name() == "lock" {
                match lock(&p, FlockOperation::NonBlockingLockExclusive) {
                    Ok(Some(l)) => held.push(l),
                    _ => return false,
                }
            } else if t.is_dir() && e.file_name() != "tree" {
                // Lock files sit in the store's own directories, never inside a layer's tree.
                stack.push(p);
            }
        }
    }
    let aside = parent.join(format!(
        ".gc-{}-{}",
        std::process::id(),
        dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    if std::fs::rename(dir, &aside).is_err() {
        return false;
    }
    drop(held);
    force_remove(&aside);
    true
}

/// The store directory of the repository whose work tree (or git directory) is `root`.
pub fn store_for(cache_dir: &Path, root: &Path) -> PathBuf {
    cache_dir
        .join(STORE_DIR)
        .join(key(root.as_os_str().as_encoded_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(paths: &[&str]) -> SnapshotPaths {
        SnapshotPaths::new(
            paths
                .iter()
                .map(|p| Input {
                    mode: FileMode::Regular,
                    id: gix::ObjectId::null(gix::hash::Kind::Sha1),
                    path: BString::from(*p),
                })
                .collect(),
        )
    }

    #[test]
    fn a_lock_in_a_directory_gc_removes_is_never_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layer");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("lock");
        let held = lock(&path, FlockOperation::NonBlockingLockExclusive).unwrap();
        assert!(held.is_some());
        assert!(
            lock(&path, FlockOperation::NonBlockingLockShared)
                .unwrap()
                .is_none()
        );
        drop(held);
        // gc renamed the directory aside: the lock path is gone, and is not re-created.
        std::fs::rename(&dir, tmp.path().join(".gc-1-layer")).unwrap();
        assert!(
            lock(&path, FlockOperation::NonBlockingLockExclusive)
                .unwrap()
                .is_none()
        );
        assert!(!dir.exists());
    }

    #[test]
    fn snapshot_paths_answer_membership_and_directories() {
        let s = snap(&["b/c.py", "a.txt", ".venv-not/x", "b.txt"]);
        assert!(s.contains("b/c.py".into()));
        assert!(!s.contains("b".into()));
        assert!(s.has_below(b"b"));
        assert!(s.has_below(b".venv-not"));
        assert!(!s.has_below(b".venv"));
        assert!(!s.has_below(b"a.txt"));
    }

    #[test]
    fn permission_errors_on_non_inputs_are_named() {
        let s = snap(&["tests/data.txt", "src/a.py", "README.md"]);
        let log = b"E   PermissionError: [Errno 13] Permission denied: '/r/repo/tests/data.txt'\n\
cat: README.md: Permission denied\nother line src/a.py\n";
        let found = undeclared_reads(log, Path::new("/r/repo"), &s, &[]);
        assert_eq!(found, vec!["tests/data.txt", "README.md"]);
        // An input is never reported; nor is a path on a line without a permission error.
        assert!(
            undeclared_reads(b"src/a.py: file not found\n", Path::new("/r"), &s, &[]).is_empty()
        );
    }

    /// A listing whose key and entries the test sets, counting how often it is listed.
    struct FakeListing {
        key: std::cell::RefCell<Vec<Option<String>>>,
        paths: Vec<&'static str>,
        listed: std::cell::Cell<u32>,
    }

    impl FakeListing {
        fn new(keys: &[Option<&str>], paths: &[&'static str]) -> FakeListing {
            FakeListing {
                key: std::cell::RefCell::new(
                    keys.iter().rev().map(|k| k.map(String::from)).collect(),
                ),
                paths: paths.to_vec(),
                listed: std::cell::Cell::new(0),
            }
        }
    }

    impl Listing for FakeListing {
        fn key(&self) -> Option<String> {
            let mut keys = self.key.borrow_mut();
            if keys.len() > 1 {
                keys.pop().unwrap()
            } else {
                keys[0].clone()
            }
        }
        fn entries(&self) -> Result<Vec<Input>> {
            self.listed.set(self.listed.get() + 1);
            Ok(snap(&self.paths)
                .get()
                .unwrap()
                .iter()
                .map(|p| Input {
                    mode: FileMode::Regular,
                    id: gix::ObjectId::null(gix::hash::Kind::Sha1),
                    path: p.clone(),
                })
                .collect())
        }
    }

    #[test]
    fn an_unchanged_key_reuses_the_skeleton_without_listing_and_reads_paths_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let first = FakeListing::new(&[Some("k1")], &["a/x.py", "b.txt"]);
        let sk = Skeleton::prepare(&first, Some(&store), dir.path()).unwrap();
        assert_eq!(first.listed.get(), 1);
        assert!(sk.tree.join("a/x.py").is_file());
        drop(sk);

        let again = FakeListing::new(&[Some("k1")], &["never/listed"]);
        let sk = Skeleton::prepare(&again, Some(&store), dir.path()).unwrap();
        assert_eq!(again.listed.get(), 0, "an unchanged key lists nothing");
        assert!(
            sk.paths.has_below(b"a"),
            "top-level directories come from the key file"
        );
        assert!(!sk.paths.has_below(b"never"));
        // Membership is read from the state file, the listing the skeleton was built from.
        assert!(sk.paths.contains("a/x.py".into()) && sk.paths.contains("b.txt".into()));
        assert!(!sk.paths.contains("never/listed".into()));
        drop(sk);

        let changed = FakeListing::new(&[Some("k2")], &["a/x.py", "c.txt"]);
        let sk = Skeleton::prepare(&changed, Some(&store), dir.path()).unwrap();
        assert_eq!(changed.listed.get(), 1);
        assert!(sk.tree.join("c.txt").is_file() && !sk.tree.join("b.txt").exists());
    }

    #[test]
    fn a_key_that_changed_while_listing_or_none_is_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        // The key read after the listing differs: the listing may be of either state.
        let racing = FakeListing::new(&[Some("k1"), Some("k2")], &["a.txt"]);
        drop(Skeleton::prepare(&racing, Some(&store), dir.path()).unwrap());
        let next = FakeListing::new(&[Some("k1")], &["a.txt", "new.txt"]);
        let sk = Skeleton::prepare(&next, Some(&store), dir.path()).unwrap();
        assert_eq!(next.listed.get(), 1, "k1 was not recorded");
        assert!(sk.tree.join("new.txt").is_file());
        drop(sk);
        // No key: always listed.
        for _ in 0..2 {
            let none = FakeListing::new(&[None], &["a.txt"]);
            drop(Skeleton::prepare(&none, Some(&store), dir.path()).unwrap());
            assert_eq!(none.listed.get(), 1);
        }
    }

    #[test]
    fn a_denied_read_is_undeclared_when_the_listing_cannot_be_read() {
        let s = SnapshotPaths::from_state(PathBuf::from("/nonexistent/state"), Vec::new());
        let found = undeclared_reads(b"cat: x: Permission denied\n", Path::new("/r"), &s, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("could not be read"), "{found:?}");
        assert!(undeclared_reads(b"all good\n", Path::new("/r"), &s, &[]).is_empty());
    }

    #[test]
    fn escaped_state_lines_round_trip() {
        for p in ["a/b", "we\\ird\nname", "caf\u{e9}"] {
            let line = format!("f {}", escape(p.as_bytes().as_bstr()));
            assert_eq!(unescape_line(&line).unwrap(), BString::from(p));
        }
    }
}
