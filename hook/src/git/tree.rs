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

impl Repo {
    /// Visit every non-tree entry below `tree`.
    pub(crate) fn walk_tree(&self, tree: ObjectId, visit: &mut dyn Visit) -> Result<()> {
        let mut path = Vec::with_capacity(256);
        let mut bufs = Vec::new();
        self.walk_rec(&tree, &mut path, 0, &mut bufs, visit)
    }

    fn walk_rec(
        &self,
        tree: &gix::oid,
        path: &mut Vec<u8>,
        depth: usize,
        bufs: &mut Vec<Vec<u8>>,
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
        let iter = self
            .repo
            .objects
            .find_tree_iter(tree, &mut buf)
            .map_err(obj_err)?;
        for entry in iter {
            let entry = entry.map_err(obj_err)?;
            let len = path.len();
            if len > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(entry.filename);
            match FileMode::from_tree_mode(entry.mode) {
                None => self.walk_rec(entry.oid, path, depth + 1, bufs, visit)?,
                Some(mode) => {
                    let p = path.as_bstr();
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
