//! Walking and diffing git trees straight from the object database.
//!
//! The walk is depth-first in git's tree order, which for full paths is byte order, so visited
//! paths come out sorted. One reusable buffer per depth holds the raw tree object while its
//! entries are visited; paths are built in one reusable byte buffer.
use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};
use gix::objs::tree::{EntryKind, EntryMode};
use gix::prelude::FindExt;

use super::{FileMode, GitError, Repo, Result, Visit};

/// Trees nested deeper than this are refused (a guard against crafted repositories).
const MAX_DEPTH: usize = 1024;

/// Largest loose tree the fast path inflates (a bigger one goes through gix).
const MAX_LOOSE_TREE: u64 = 64 << 20;

/// A fast path for loose tree objects, which a repository holds for its newest commits between
/// two `git gc` runs. gix reads each loose object with a `stat`, an `open` of its full path, an
/// `mmap` and an `munmap`, and sets up a fresh zlib state: on 1,300 loose trees that was a
/// quarter of a no-op run's CPU time (perf). Here each object costs an `openat` relative to
/// its already open fan-out directory, `read`s into one reused buffer and a reset of one zlib
/// state. Only a complete, well-formed loose tree is taken; anything else (not loose, another
/// kind, truncated or corrupt, too big) is left to gix, which also reports the errors.
struct LooseTrees {
    /// Fan-out directories by first byte: `None` where the directory does not exist; opened
    /// when first needed.
    fan: Vec<Option<FanDir>>,
    objects: std::path::PathBuf,
    raw: Vec<u8>,
    inflate: gix::zlib::Inflate,
    name: String,
}

enum FanDir {
    Unopened,
    Open(rustix::fd::OwnedFd),
    Missing,
}

impl LooseTrees {
    /// `None` when the object directory has no fan-out directory at all (a packed repository):
    /// one `getdents` instead of a failed `openat` per tree.
    fn new(objects: &std::path::Path) -> Option<LooseTrees> {
        let mut fan: Vec<Option<FanDir>> = (0..256).map(|_| None).collect();
        let mut any = false;
        for e in std::fs::read_dir(objects).ok()?.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == 2
                && let Ok(b) = u8::from_str_radix(name, 16)
            {
                fan[b as usize] = Some(FanDir::Unopened);
                any = true;
            }
        }
        any.then(|| LooseTrees {
            fan,
            objects: objects.to_path_buf(),
            raw: Vec::new(),
            inflate: gix::zlib::Inflate::default(),
            name: String::with_capacity(64),
        })
    }

    /// Put the data of loose tree `id` into `out`; `false` when the fast path does not apply.
    fn read(&mut self, id: &gix::oid, out: &mut Vec<u8>) -> bool {
        use std::fmt::Write as _;
        use std::io::Read as _;
        let first = id.as_bytes()[0] as usize;
        self.name.clear();
        let _ = write!(self.name, "{}", id.to_hex());
        let dir = match &mut self.fan[first] {
            None | Some(FanDir::Missing) => return false,
            Some(slot @ FanDir::Unopened) => {
                let path = self.objects.join(&self.name[..2]);
                let flags = rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC;
                match rustix::fs::open(&path, flags, rustix::fs::Mode::empty()) {
                    Ok(fd) => *slot = FanDir::Open(fd),
                    Err(_) => {
                        *slot = FanDir::Missing;
                        return false;
                    }
                }
                match slot {
                    FanDir::Open(fd) => fd,
                    _ => unreachable!("just opened"),
                }
            }
            Some(FanDir::Open(fd)) => fd,
        };
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(&*dir, &self.name[2..], flags, rustix::fs::Mode::empty())
        else {
            return false;
        };
        // Read the whole file without the `fstat` `read_to_end` would add for a size hint.
        let mut file = std::fs::File::from(fd);
        let mut len = 0;
        if self.raw.len() < 8192 {
            self.raw.resize(8192, 0);
        }
        loop {
            if len == self.raw.len() {
                let grown = self.raw.len() * 2;
                self.raw.resize(grown, 0);
            }
            match file.read(&mut self.raw[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
            if len as u64 > MAX_LOOSE_TREE {
                return false;
            }
        }
        let raw = &self.raw[..len];
        self.inflate.reset();
        let mut header = [0u8; 64];
        let Ok((status, used_in, used_out)) = self.inflate.prefix(raw, &mut header) else {
            return false;
        };
        let Ok((kind, size, header_len)) = gix::objs::decode::loose_header(&header[..used_out])
        else {
            return false;
        };
        if kind != gix::objs::Kind::Tree || size > MAX_LOOSE_TREE {
            return false;
        }
        let size = size as usize;
        if status == gix::zlib::Status::StreamEnd {
            if used_out - header_len != size {
                return false;
            }
            out.clear();
            out.extend_from_slice(&header[header_len..used_out]);
            return true;
        }
        matches!(
            self.inflate.rest(&raw[used_in..], &header[..used_out], header_len, out, size),
            Ok(n) if n == size
        )
    }
}

impl Repo {
    /// Visit every non-tree entry below `tree`.
    pub(crate) fn walk_tree(&self, tree: ObjectId, visit: &mut dyn Visit) -> Result<()> {
        let mut path = Vec::with_capacity(256);
        let mut bufs = Vec::new();
        let mut loose = LooseTrees::new(self.repo.objects.store_ref().path());
        self.walk_rec(&tree, &mut path, 0, &mut bufs, &mut loose, visit)
    }

    fn walk_rec(
        &self,
        tree: &gix::oid,
        path: &mut Vec<u8>,
        depth: usize,
        bufs: &mut Vec<Vec<u8>>,
        loose: &mut Option<LooseTrees>,
        visit: &mut dyn Visit,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(GitError::TooDeep {
                id: tree.to_owned(),
            });
        }
        if bufs.len() <= depth {
            bufs.push(Vec::new());
        }
        let mut buf = std::mem::take(&mut bufs[depth]);
        let obj_err = |source| GitError::Object {
            id: tree.to_owned(),
            source,
        };
        let iter = if loose.as_mut().is_some_and(|l| l.read(tree, &mut buf)) {
            gix::objs::TreeRefIter::from_bytes(&buf, tree.kind())
        } else {
            self.repo
                .objects
                .find_tree_iter(tree, &mut buf)
                .map_err(obj_err)?
        };
        for entry in iter {
            let entry = entry.map_err(obj_err)?;
            let len = path.len();
            if len > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(entry.filename);
            match FileMode::from_tree_mode(entry.mode) {
                None => self.walk_rec(entry.oid, path, depth + 1, bufs, loose, visit)?,
                Some(mode) => {
                    let p = path.as_bstr();
                    visit.seen(p, mode, entry.oid);
                    if visit.wants(p) {
                        visit.visit(p, mode, entry.oid);
                    }
                }
            }
            path.truncate(len);
        }
        bufs[depth] = buf;
        Ok(())
    }

    /// Append to `out` the paths that differ between trees `a` and `b`, skipping subtrees whose
    /// ids are equal. Output is sorted by path bytes.
    pub(crate) fn diff_trees(
        &self,
        a: ObjectId,
        b: ObjectId,
        out: &mut Vec<BString>,
    ) -> Result<()> {
        let mut path = Vec::with_capacity(256);
        self.diff_rec(Some(&a), Some(&b), &mut path, 0, out)
    }

    fn tree_entries(&self, id: &gix::oid) -> Result<Vec<(BString, EntryMode, ObjectId)>> {
        let mut buf = Vec::new();
        let obj_err = |source| GitError::Object {
            id: id.to_owned(),
            source,
        };
        let iter = self
            .repo
            .objects
            .find_tree_iter(id, &mut buf)
            .map_err(obj_err)?;
        let mut out = Vec::new();
        for entry in iter {
            let entry = entry.map_err(obj_err)?;
            out.push((entry.filename.to_owned(), entry.mode, entry.oid.to_owned()));
        }
        Ok(out)
    }

    fn diff_rec(
        &self,
        a: Option<&gix::oid>,
        b: Option<&gix::oid>,
        path: &mut Vec<u8>,
        depth: usize,
        out: &mut Vec<BString>,
    ) -> Result<()> {
        if a.is_some() && a == b {
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            let id = a.or(b).expect("one side is present").to_owned();
            return Err(GitError::TooDeep { id });
        }
        let ea = match a {
            Some(id) => self.tree_entries(id)?,
            None => Vec::new(),
        };
        let eb = match b {
            Some(id) => self.tree_entries(id)?,
            None => Vec::new(),
        };
        let (mut i, mut j) = (0, 0);
        while i < ea.len() || j < eb.len() {
            let order = match (ea.get(i), eb.get(j)) {
                (Some(x), Some(y)) => gix::objs::tree::name_order(
                    &x.0,
                    x.1.kind() == EntryKind::Tree,
                    &y.0,
                    y.1.kind() == EntryKind::Tree,
                ),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => unreachable!(),
            };
            let (left, right) = match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (ea.get(i - 1), None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (None, eb.get(j - 1))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (ea.get(i - 1), eb.get(j - 1))
                }
            };
            let name = left.or(right).map(|e| &e.0).expect("one side is present");
            let len = path.len();
            if len > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            let is_tree = |e: Option<&(BString, EntryMode, ObjectId)>| {
                e.is_some_and(|e| e.1.kind() == EntryKind::Tree)
            };
            if is_tree(left) || is_tree(right) {
                // Name order puts a tree and a blob of the same name apart, so both sides here
                // are trees (or absent).
                self.diff_rec(
                    left.map(|e| e.2.as_ref()),
                    right.map(|e| e.2.as_ref()),
                    path,
                    depth + 1,
                    out,
                )?;
            } else {
                let same = matches!((left, right), (Some(x), Some(y)) if x.2 == y.2
                    && FileMode::from_tree_mode(x.1) == FileMode::from_tree_mode(y.1));
                if !same {
                    out.push(BString::from(path.as_slice()));
                }
            }
            path.truncate(len);
        }
        Ok(())
    }
}
