//! Git access through gix (the one `git` subprocess, `git var GIT_ATTR_SYSTEM`, asks where the
//! installed git keeps its system attributes file): open the repository, resolve revisions,
//! list a snapshot's files as `(mode, blob id, path)` without reading blob contents, diff two
//! snapshots, read blobs and materialise a file list into a directory.
//!
//! A *snapshot* ([`Target`]) is either a commit (only its objects are read) or the work tree
//! (files as they are on disk: tracked and untracked-not-ignored, honouring `.gitignore`). In
//! work-tree mode each file's git blob id (`blob <len>\0<content>`, hashed with the repository's
//! hash kind) is taken from the index when the index entry's stat data matches the file and the
//! entry is not racily clean, and computed from the file otherwise, so a clean work tree yields
//! exactly the ids of `HEAD`.
//!
//! Paths are repository-relative, `/`-separated byte strings. Modes follow git:
//! `100644` regular, `100755` executable, `120000` symlink (the blob holds the link target),
//! `160000` submodule (the id is the submodule's commit).
mod checkout;
mod materialize;
mod tree;
mod worktree;

use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::bstr::{BStr, BString};
use gix::prelude::FindExt;

pub use checkout::{
    CHECKOUT_RULES_KEY, Converter, is_attributes_file, is_ignored, keep_answers_in,
};
pub use materialize::MaterializeStats;
pub use worktree::{WorktreeStats, blob_id};

/// Errors from the git layer. Each names the directory, revision, object or path involved.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("not a git repository (or any parent up to the root): {}", dir.display())]
    NotARepository {
        dir: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("the repository at {} has no work tree", git_dir.display())]
    Bare { git_dir: PathBuf },
    #[error("unknown revision `{rev}`")]
    BadRevision {
        rev: String,
        #[source]
        source: gix::Error,
    },
    #[error("`{rev}` does not name a commit")]
    NotACommit {
        rev: String,
        #[source]
        source: gix::Error,
    },
    #[error("HEAD does not point to a commit yet (the branch has no commits)")]
    UnbornHead,
    #[error("cannot read object {id}")]
    Object {
        id: ObjectId,
        #[source]
        source: gix::Error,
    },
    #[error("cannot read the index or the work tree of {}", workdir.display())]
    Worktree {
        workdir: PathBuf,
        #[source]
        source: gix::Error,
    },
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed while checkdef was reading it (expected blob {expected}); re-run", path.display())]
    Changed { path: PathBuf, expected: ObjectId },
    #[error("cannot convert `{path}` as a checkout would (.gitattributes, filter configuration)")]
    Checkout {
        path: BString,
        #[source]
        source: gix::Error,
    },
    #[error("cannot read the attributes file {}; make it readable or remove it", path.display())]
    AttributesFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot resolve core.attributesFile; fix it with `git config core.attributesFile PATH`"
    )]
    AttributesFileConfig {
        #[source]
        source: gix::Error,
    },
    #[error(
        "cannot tell which system attributes file git reads: `git var GIT_ATTR_SYSTEM` failed \
         ({message}); `git checkout` fails the same way, so fix that first (GIT_ATTR_NOSYSTEM \
         must be a boolean)"
    )]
    SystemAttributes { message: String },
    #[error(
        "`{path}` has working-tree-encoding={encoding}, which checkdef cannot write exactly as \
         `git checkout` does (only UTF-8 is reproduced); remove the attribute, or leave the file \
         out of every segment's inputs"
    )]
    UnsupportedEncoding { path: BString, encoding: BString },
    #[error("refusing to materialise unsafe path `{path}`")]
    UnsafePath { path: BString },
    #[error("tree {id} is nested too deeply")]
    TooDeep { id: ObjectId },
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

/// The kind of a file entry, with git's octal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileMode {
    /// `100644`
    Regular,
    /// `100755`
    Executable,
    /// `120000`: the blob holds the link target.
    Symlink,
    /// `160000`: the id is a commit of another repository.
    Submodule,
}

impl FileMode {
    /// Git's octal spelling: `100644`, `100755`, `120000` or `160000`.
    pub fn as_octal(self) -> &'static str {
        match self {
            FileMode::Regular => "100644",
            FileMode::Executable => "100755",
            FileMode::Symlink => "120000",
            FileMode::Submodule => "160000",
        }
    }

    /// The mode of a non-tree entry of a git tree; `None` for trees.
    pub fn from_tree_mode(mode: gix::objs::tree::EntryMode) -> Option<FileMode> {
        use gix::objs::tree::EntryKind;
        match mode.kind() {
            EntryKind::Tree => None,
            EntryKind::Blob => Some(FileMode::Regular),
            EntryKind::BlobExecutable => Some(FileMode::Executable),
            EntryKind::Link => Some(FileMode::Symlink),
            EntryKind::Commit => Some(FileMode::Submodule),
        }
    }
}

impl std::fmt::Display for FileMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_octal())
    }
}

/// One file of a snapshot: `(mode, blob id, path)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Input {
    pub mode: FileMode,
    pub id: ObjectId,
    /// Repository-relative, `/`-separated.
    pub path: BString,
}

/// Which snapshot to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A commit: only its objects are read.
    Commit(ObjectId),
    /// The files on disk (tracked and untracked-not-ignored).
    WorkTree,
}

/// Receives the files of a snapshot. Paths arrive in no guaranteed order.
pub trait Visit {
    /// Whether the file at `path` is wanted. Only wanted files are hashed (in work-tree mode) and
    /// passed to [`visit`](Self::visit), which is always called right after a `wants` call for
    /// the same path that returned `true`.
    fn wants(&mut self, path: &BStr) -> bool;
    /// One wanted file.
    fn visit(&mut self, path: &BStr, mode: FileMode, id: &gix::oid);
    /// Every path of the snapshot a sandbox's skeleton shows (a commit's files; the work
    /// tree's tracked paths), wanted or not, before `wants` is asked about it.
    fn seen(&mut self, _path: &BStr, _mode: FileMode, _id: &gix::oid) {}
}

/// Collects every file.
#[derive(Debug, Default)]
pub struct CollectAll(pub Vec<Input>);

impl Visit for CollectAll {
    fn wants(&mut self, _path: &BStr) -> bool {
        true
    }
    fn visit(&mut self, path: &BStr, mode: FileMode, id: &gix::oid) {
        self.0.push(Input {
            mode,
            id: id.to_owned(),
            path: path.to_owned(),
        });
    }
}

/// An open repository (or linked work tree).
#[derive(Clone)]
pub struct Repo {
    repo: gix::Repository,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("git_dir", &self.repo.git_dir())
            .finish()
    }
}

impl Repo {
    /// Open the repository containing `dir`: any subdirectory of a work tree, a linked work tree,
    /// or a `.git` directory.
    pub fn discover(dir: &Path) -> Result<Repo> {
        let repo = gix::discover(dir).map_err(|source| GitError::NotARepository {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(Repo { repo })
    }

    /// The underlying gix repository.
    pub fn gix(&self) -> &gix::Repository {
        &self.repo
    }

    /// The work tree root, or `None` for a bare repository.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// The work tree root; an error for a bare repository.
    pub fn require_workdir(&self) -> Result<&Path> {
        self.repo.workdir().ok_or_else(|| GitError::Bare {
            git_dir: self.repo.git_dir().to_path_buf(),
        })
    }

    /// The directory where files like `checkdef.toml` are looked up: the work tree root, or the
    /// git directory of a bare repository.
    pub fn root(&self) -> &Path {
        self.repo.workdir().unwrap_or_else(|| self.repo.git_dir())
    }

    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    /// `sha1` or `sha256`.
    pub fn object_hash(&self) -> gix::hash::Kind {
        self.repo.object_hash()
    }

    /// Resolve any revision git understands to a commit, peeling tags.
    pub fn resolve_commit(&self, rev: &str) -> Result<ObjectId> {
        let id = self
            .repo
            .rev_parse_single(rev)
            .map_err(|source| GitError::BadRevision {
                rev: rev.to_owned(),
                source,
            })?;
        let commit = id
            .object()
            .and_then(|o| o.peel_to_commit())
            .map_err(|source| GitError::NotACommit {
                rev: rev.to_owned(),
                source,
            })?;
        Ok(commit.id)
    }

    /// The commit `HEAD` points to, or `None` on an unborn branch.
    pub fn head_commit(&self) -> Result<Option<ObjectId>> {
        let head = self.repo.head().map_err(|source| GitError::BadRevision {
            rev: "HEAD".into(),
            source,
        })?;
        match head.id() {
            None => Ok(None),
            Some(id) => self.resolve_commit(&id.to_string()).map(Some),
        }
    }

    /// The root tree of `commit`.
    pub fn tree_of(&self, commit: ObjectId) -> Result<ObjectId> {
        let obj_err = |source| GitError::Object { id: commit, source };
        let commit = self.repo.find_commit(commit).map_err(obj_err)?;
        commit.tree_id().map(|id| id.detach()).map_err(obj_err)
    }

    /// Visit every file of `target`. For a commit this walks its tree once, never reading
    /// blobs; for the work tree see the module documentation.
    pub fn walk(&self, target: &Target, visit: &mut dyn Visit) -> Result<()> {
        match target {
            Target::Commit(commit) => {
                let tree = self.tree_of(*commit)?;
                self.walk_tree(tree, visit)
            }
            Target::WorkTree => self.walk_worktree(visit).map(|_| ()),
        }
    }

    /// The file `name` at the root of `commit`'s tree, with its mode and contents; `None` when
    /// the commit has no such entry (or it is a directory).
    pub fn root_file_at(
        &self,
        commit: ObjectId,
        name: &str,
    ) -> Result<Option<(FileMode, ObjectId, Vec<u8>)>> {
        let tree = self.tree_of(commit)?;
        let mut buf = Vec::new();
        let obj_err = |source| GitError::Object { id: tree, source };
        let iter = self
            .repo
            .objects
            .find_tree_iter(&tree, &mut buf)
            .map_err(obj_err)?;
        let mut found = None;
        for entry in iter {
            let entry = entry.map_err(obj_err)?;
            if entry.filename == name.as_bytes() {
                found = FileMode::from_tree_mode(entry.mode).map(|m| (m, entry.oid.to_owned()));
                break;
            }
        }
        match found {
            Some((mode, id)) if mode != FileMode::Submodule => {
                Ok(Some((mode, id, self.read_blob(&id)?)))
            }
            _ => Ok(None),
        }
    }

    /// The commits reachable from `tip` but from none of `hidden`, parents before children.
    pub fn new_commits(&self, tip: ObjectId, hidden: &[ObjectId]) -> Result<Vec<ObjectId>> {
        let err = |source| GitError::Object { id: tip, source };
        let walk = self
            .repo
            .rev_walk([tip])
            .with_hidden(hidden.iter().copied());
        let mut out = Vec::new();
        for info in walk.all().map_err(err)? {
            out.push(info.map_err(err)?.id);
        }
        out.reverse();
        Ok(out)
    }

    /// The first parent of `commit`, if it has one.
    pub fn first_parent(&self, commit: ObjectId) -> Result<Option<ObjectId>> {
        let obj_err = |source| GitError::Object { id: commit, source };
        let c = self.repo.find_commit(commit).map_err(obj_err)?;
        Ok(c.parent_ids().next().map(gix::Id::detach))
    }

    /// Every file of `commit` (for `sandbox = "full"`), sorted by path bytes.
    pub fn tree_entries_all(&self, commit: ObjectId) -> Result<Vec<Input>> {
        self.entries_all(&Target::Commit(commit))
    }

    /// Every file of `target`, sorted by path bytes.
    pub fn entries_all(&self, target: &Target) -> Result<Vec<Input>> {
        let mut all = CollectAll::default();
        self.walk(target, &mut all)?;
        sort_inputs(&mut all.0);
        Ok(all.0)
    }

    /// The paths a sandbox's skeleton shows (`run/view.rs`), sorted by path, with their modes:
    /// every file of a commit's tree; in the work tree, every tracked path of the index, read
    /// without a `stat` of each file (unlike [`entries_all`](Self::entries_all), which costs a
    /// second `git status`). Untracked files are not in it: one that is a segment's input is in
    /// that segment's inputs layer, and the others are absent from every view, as from a fresh
    /// checkout. A tracked file deleted from the disk keeps its placeholder. Blob ids are the
    /// index's; the skeleton never reads them.
    pub fn skeleton_entries(&self, target: &Target) -> Result<Vec<Input>> {
        match target {
            Target::Commit(_) => self.entries_all(target),
            Target::WorkTree => {
                let mut all = self.tracked_entries()?;
                sort_inputs(&mut all);
                Ok(all)
            }
        }
    }

    /// A short id of what [`skeleton_entries`](Self::skeleton_entries) answers for `target`,
    /// read without listing anything: the commit's tree id, or for the work tree the checksum
    /// git writes at the end of the index (over all of its content, so every change to the
    /// tracked paths changes it). `None` when there is none to trust: no index, or one written
    /// with `index.skipHash` (git then leaves the checksum zero).
    pub fn listing_key(&self, target: &Target) -> Option<String> {
        use std::io::{Read as _, Seek as _};
        match target {
            Target::Commit(commit) => self.tree_of(*commit).ok().map(|t| format!("tree {t}")),
            Target::WorkTree => {
                let n = self.repo.object_hash().len_in_bytes();
                let mut f = std::fs::File::open(self.repo.index_path()).ok()?;
                let len = f.metadata().ok()?.len();
                if len < (12 + n) as u64 {
                    return None;
                }
                f.seek(std::io::SeekFrom::End(-(n as i64))).ok()?;
                let mut sum = vec![0; n];
                f.read_exact(&mut sum).ok()?;
                if sum.iter().all(|b| *b == 0) {
                    return None;
                }
                Some(format!("index {} {len}", hex::encode(sum)))
            }
        }
    }

    /// The contents of blob `id`.
    pub fn read_blob(&self, id: &gix::oid) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let blob = self
            .repo
            .objects
            .find_blob(id, &mut buf)
            .map_err(|source| GitError::Object {
                id: id.to_owned(),
                source,
            })?;
        Ok(blob.data.to_vec())
    }

    /// Paths whose (mode, id) differ between commit `base` and `target`, or that exist on only
    /// one side: renames count as both their old and new path. Sorted by path bytes, distinct.
    pub fn changed_paths(&self, base: ObjectId, target: &Target) -> Result<Vec<BString>> {
        match target {
            Target::Commit(commit) => {
                let base_tree = self.tree_of(base)?;
                let tree = self.tree_of(*commit)?;
                let mut out = Vec::new();
                self.diff_trees(base_tree, tree, &mut out)?;
                Ok(out)
            }
            Target::WorkTree => {
                let new = self.entries_all(&Target::WorkTree)?;
                self.changed_paths_from(base, &new)
            }
        }
    }

    /// Like [`changed_paths`](Self::changed_paths) against a complete listing of a snapshot
    /// (as [`entries_all`](Self::entries_all) returns it, sorted by path).
    pub fn changed_paths_from(&self, base: ObjectId, listing: &[Input]) -> Result<Vec<BString>> {
        let mut old = CollectAll::default();
        self.walk_tree(self.tree_of(base)?, &mut old)?;
        sort_inputs(&mut old.0);
        Ok(diff_sorted(&old.0, listing))
    }
}

/// Sort by path bytes (the manifest order); a no-op when already sorted.
pub fn sort_inputs(inputs: &mut [Input]) {
    if !inputs.is_sorted_by(|a, b| a.path <= b.path) {
        inputs.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// Changed paths between two listings sorted by path.
fn diff_sorted(old: &[Input], new: &[Input]) -> Vec<BString> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => match a.path.cmp(&b.path) {
                std::cmp::Ordering::Less => {
                    out.push(a.path.clone());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(b.path.clone());
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if a.mode != b.mode || a.id != b.id {
                        out.push(a.path.clone());
                    }
                    i += 1;
                    j += 1;
                }
            },
            (Some(a), None) => {
                out.push(a.path.clone());
                i += 1;
            }
            (None, Some(b)) => {
                out.push(b.path.clone());
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// `path` (repository-relative bytes) as a native path.
pub(crate) fn native(path: &BStr) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(path))
}
