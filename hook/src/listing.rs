//! What a check can see of the directories around its inputs: the names in them.
//!
//! A sandboxed check sees every path of the snapshot (the skeleton's placeholders, see
//! `run/view.rs`), so a test that lists a directory (`glob("data/*.json")`, `os.listdir`) can
//! behave differently when a file that is no input of its segment is added, removed or renamed
//! there: with a new data file it reads the placeholder and fails, with the data gone it runs
//! no cases and passes. Such a result depends on names the input hash did not cover, and a
//! stored pass would answer for a commit whose check fails. So each segment's manifest holds a
//! digest of the listing of every directory that holds one of its inputs, and of each of their
//! ancestors up to the root: the names and kinds (file or directory) of the snapshot's entries
//! directly in it. Any change to those names reruns the segment; an edit of a file's contents
//! does not (contents are hashed only for inputs).
//!
//! The digests are computed in the same walk of the snapshot that finds the inputs, for every
//! directory, in any order of paths: each directory's digest is the sum of a 128-bit hash of
//! each entry (a multiset hash), so the work tree's index order and a commit's tree order give
//! the same digest for the same names.
use std::collections::{BTreeSet, HashMap};

use gix::bstr::{BStr, BString, ByteSlice as _};

use crate::git::{FileMode, Input};

/// Accumulated per-directory listings of one snapshot.
#[derive(Debug, Default)]
pub struct Listings {
    index: HashMap<BString, usize>,
    dirs: Vec<Dir>,
    /// The directory of the previous path and its slot: consecutive paths mostly share one.
    last: Option<(BString, usize)>,
    /// The names of the snapshot's symlinks by directory slot.
    links: HashMap<usize, Vec<BString>>,
    /// The same symlinks by path: the blob ids of their targets (see [`Resolver`]).
    symlinks: HashMap<BString, gix::ObjectId>,
    finished: bool,
}

#[derive(Debug, Clone, Default)]
struct Dir {
    entries: u64,
    sum: [u64; 2],
}

/// The kind of an entry, as a listing shows it (a view shows a submodule as a directory and a
/// symlink as one, to its target).
const FILE: u8 = b'f';
const DIR: u8 = b'd';
const LINK: u8 = b'l';
const SUBMODULE: u8 = b's';

/// `path`'s directory (`""` for the root) and its last component.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.rfind_byte(b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: every input bit reaches every output bit.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable 128-bit hash of one entry (its kind, length and name), version 1 of this digest:
/// changing it changes every input hash.
fn entry_hash(kind: u8, name: &[u8]) -> [u64; 2] {
    let mut a = 0x9e37_79b9_7f4a_7c15 ^ u64::from(kind);
    let mut b = 0xc2b2_ae3d_27d4_eb4f ^ name.len() as u64;
    for chunk in name.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let x = u64::from_le_bytes(w);
        a = mix(a ^ x);
        b = mix(b.rotate_left(23) ^ x ^ 0x5851_f42d_4c95_7f2d);
    }
    [mix(a ^ b.rotate_left(17)), mix(b ^ a.rotate_left(41))]
}

impl Listings {
    fn slot(&mut self, dir: &[u8]) -> usize {
        if let Some((d, i)) = &self.last
            && d.as_slice() == dir
        {
            return *i;
        }
        let i = match self.index.get(dir.as_bstr()) {
            Some(&i) => i,
            None => {
                // A directory seen for the first time: so are its ancestors, perhaps.
                if !dir.is_empty() {
                    let (parent, _) = split(dir);
                    let parent = parent.to_vec();
                    self.ensure(&parent);
                }
                let i = self.dirs.len();
                self.dirs.push(Dir::default());
                self.index.insert(dir.into(), i);
                i
            }
        };
        self.last = Some((dir.into(), i));
        i
    }

    fn ensure(&mut self, dir: &[u8]) {
        if self.index.contains_key(dir.as_bstr()) {
            return;
        }
        if !dir.is_empty() {
            let (parent, _) = split(dir);
            let parent = parent.to_vec();
            self.ensure(&parent);
        }
        self.index.insert(dir.into(), self.dirs.len());
        self.dirs.push(Dir::default());
    }

    fn add(&mut self, slot: usize, kind: u8, name: &[u8]) {
        let h = entry_hash(kind, name);
        let d = &mut self.dirs[slot];
        d.entries += 1;
        d.sum[0] = d.sum[0].wrapping_add(h[0]);
        d.sum[1] = d.sum[1].wrapping_add(h[1]);
    }

    /// One file (or symlink, or submodule) of the snapshot, `/`-separated from the root.
    pub fn file(&mut self, path: &BStr, mode: FileMode, id: &gix::oid) {
        debug_assert!(!self.finished);
        let (dir, name) = split(path);
        let slot = self.slot(dir);
        match mode {
            // A link's target is its blob: a retargeted link is another entry.
            FileMode::Symlink => {
                let mut key = name.to_vec();
                key.push(0);
                key.extend_from_slice(id.as_bytes());
                self.add(slot, LINK, &key);
            }
            FileMode::Submodule => self.add(slot, SUBMODULE, name),
            FileMode::Regular | FileMode::Executable => self.add(slot, FILE, name),
        }
        if mode == FileMode::Symlink {
            self.links.entry(slot).or_default().push(name.into());
            self.symlinks.insert(path.to_owned(), id.to_owned());
        }
    }

    /// Count each directory in its parent's listing; call once, after the last file.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let dirs: Vec<(BString, usize)> = self
            .index
            .iter()
            .filter(|(d, _)| !d.is_empty())
            .map(|(d, i)| (d.clone(), *i))
            .collect();
        for (dir, _) in dirs {
            let (parent, name) = split(&dir);
            let slot = self.index[parent.as_bstr()];
            self.add(slot, DIR, name);
        }
    }

    /// The listing lines of a segment whose inputs are `paths`: for each directory holding one
    /// of them and each ancestor, `(directory, "<entries> <digest>")`, sorted by directory
    /// (`""` is the root). A symlink in one of those directories to a directory of the
    /// snapshot (`tests/unit/golden -> ../golden`, its target read by `read`) brings that
    /// directory and its ancestors in too: a check lists it through the link. The target is
    /// followed as the view's kernel follows it (through the snapshot's other symlinks; an
    /// absolute one below one of `roots`, the absolute paths a check sees the repository at,
    /// names the snapshot's files). The segment's own `inputs` are what its view holds at their
    /// paths: in the work tree a symlink input is the link on disk (untracked, or retargeted
    /// since it was staged), where the names are the index's. Directories the snapshot does not
    /// have are left out.
    pub fn for_inputs(
        &self,
        inputs: &[Input],
        read: &dyn Fn(&gix::oid) -> Option<Vec<u8>>,
        roots: &[Vec<u8>],
    ) -> Vec<(BString, String)> {
        debug_assert!(self.finished);
        let mut own: HashMap<&[u8], Option<&gix::oid>> = HashMap::new();
        let mut own_links: HashMap<&[u8], Vec<&[u8]>> = HashMap::new();
        for i in inputs {
            if i.mode == FileMode::Symlink {
                own.insert(i.path.as_slice(), Some(&i.id));
                let (dir, name) = split(&i.path);
                own_links.entry(dir).or_default().push(name);
            } else if self.symlinks.contains_key(i.path.as_bstr()) {
                own.insert(i.path.as_slice(), None);
            }
        }
        let resolver = Resolver {
            listings: self,
            own,
            read,
            roots,
        };
        let paths = inputs.iter().map(|i| i.path.as_bstr());
        let mut wanted: BTreeSet<Vec<u8>> = BTreeSet::new();
        // The root always: a check starts there and sees it, inputs or not.
        let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last: Option<&[u8]> = None;
        for p in paths {
            let (dir, _) = split(p.as_ref());
            if last == Some(dir) {
                continue;
            }
            last = Some(dir);
            todo.push(dir.to_vec());
        }
        while let Some(mut dir) = todo.pop() {
            loop {
                if !wanted.insert(dir.clone()) {
                    break;
                }
                let index_links = self
                    .index
                    .get(dir.as_bstr())
                    .and_then(|slot| self.links.get(slot))
                    .into_iter()
                    .flatten()
                    .map(|n| n.as_slice());
                let own_links = own_links.get(dir.as_slice()).into_iter().flatten().copied();
                // Each link followed by its name: the resolver knows which target it has.
                for name in index_links.chain(own_links) {
                    if let Some(target) = resolver.resolve(&dir, name)
                        && self.index.contains_key(target.as_bstr())
                    {
                        todo.push(target);
                    }
                }
                if dir.is_empty() {
                    break;
                }
                dir = split(&dir).0.to_vec();
            }
        }
        wanted
            .into_iter()
            .filter_map(|d| {
                let dir = &self.dirs[*self.index.get(d.as_bstr())?];
                Some((
                    BString::from(d),
                    format!(
                        "{} {:016x}{:016x}",
                        dir.entries,
                        mix(dir.sum[0] ^ dir.entries),
                        mix(dir.sum[1])
                    ),
                ))
            })
            .collect()
    }
}

/// How many symlinks one resolution may follow before it gives up, as Linux does (`ELOOP`
/// after 40): a cycle of links (`a -> b`, `b -> a`) names nothing.
const MAX_LINKS: usize = 40;

/// Follows a symlink's target through the snapshot as the kernel follows it in the view: one
/// component at a time, each one that is a symlink of the snapshot replaced by its own target.
/// A lexical normalisation would stop at `other/sub` for `in/link -> ../other/sub` with
/// `other -> data`, a path the snapshot has no directory at, and the listing the check sees
/// there (`data/sub`) would be hashed nowhere.
struct Resolver<'a> {
    listings: &'a Listings,
    /// The segment's inputs that are symlinks (their ids) or replace one (`None`): the view
    /// holds them, not the index's entries.
    own: HashMap<&'a [u8], Option<&'a gix::oid>>,
    read: &'a dyn Fn(&gix::oid) -> Option<Vec<u8>>,
    /// The absolute paths a check sees the repository at (the view is mounted at the work
    /// tree's own path): an absolute target below one names the snapshot's files.
    roots: &'a [Vec<u8>],
}

impl Resolver<'_> {
    /// The repository-relative path without symlinks in it that `target`, the target of a
    /// symlink in the snapshot's directory `dir`, names: `None` when it leaves the repository,
    /// goes through a file or a missing directory, or follows more than [`MAX_LINKS`] links.
    /// The last component may be a file or missing (the caller keeps directories only).
    fn resolve(&self, dir: &[u8], target: &[u8]) -> Option<Vec<u8>> {
        let mut done: Vec<Vec<u8>> = components(dir).map(<[u8]>::to_vec).collect();
        // What is left to follow, its first component last: a link's target goes on top.
        let mut todo: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0;
        let expand = |t: &[u8], done: &mut Vec<Vec<u8>>, todo: &mut Vec<Vec<u8>>| {
            let rest = if t.starts_with(b"/") {
                done.clear();
                self.below_root(t)?
            } else {
                t
            };
            todo.extend(components(rest).rev().map(<[u8]>::to_vec));
            Some(())
        };
        expand(target, &mut done, &mut todo)?;
        while let Some(c) = todo.pop() {
            if c == b".." {
                done.pop()?;
                continue;
            }
            done.push(c);
            let path = done.join(&b'/');
            let link = match self.own.get(path.as_slice()) {
                Some(own) => *own,
                None => self.listings.symlinks.get(path.as_bstr()).map(|id| &**id),
            };
            if let Some(id) = link {
                hops += 1;
                if hops > MAX_LINKS {
                    return None;
                }
                done.pop();
                expand(&(self.read)(id)?, &mut done, &mut todo)?;
            } else if !todo.is_empty() && !self.listings.index.contains_key(path.as_bstr()) {
                return None; // through a file, or nothing: `ENOTDIR`, `ENOENT`
            }
        }
        Some(done.join(&b'/'))
    }

    /// What follows one of the repository's roots in the absolute `target`, `None` when it
    /// names no path inside the repository.
    fn below_root<'t>(&self, target: &'t [u8]) -> Option<&'t [u8]> {
        self.roots.iter().find_map(|root| {
            let rest = target.strip_prefix(root.strip_suffix(b"/").unwrap_or(root))?;
            (rest.is_empty() || rest.starts_with(b"/")).then_some(rest)
        })
    }
}

/// The components of a `/`-separated path, without empty and `.` ones.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listings(paths: &[&str]) -> Listings {
        let mut l = Listings::default();
        for p in paths {
            // `LINK->TARGET` is a symlink; its "blob id" spells the target (see `read`).
            match p.split_once("->") {
                Some((link, target)) => l.file(
                    link.as_bytes().as_bstr(),
                    FileMode::Symlink,
                    &link_id(target),
                ),
                None => l.file(
                    p.as_bytes().as_bstr(),
                    FileMode::Regular,
                    &gix::ObjectId::null(gix::hash::Kind::Sha1),
                ),
            }
        }
        l.finish();
        l
    }

    /// A made-up blob id that holds a short target: its length, then its bytes.
    fn link_id(target: &str) -> gix::ObjectId {
        assert!(target.len() < 20, "{target}");
        let mut b = [0u8; 20];
        b[0] = target.len() as u8;
        b[1..=target.len()].copy_from_slice(target.as_bytes());
        gix::ObjectId::from_bytes_or_panic(&b)
    }

    fn read(id: &gix::oid) -> Option<Vec<u8>> {
        let b = id.as_bytes();
        Some(b[1..=usize::from(b[0])].to_vec())
    }

    /// Inputs that are regular files.
    fn files(paths: &[&str]) -> Vec<Input> {
        paths
            .iter()
            .map(|p| Input {
                mode: FileMode::Regular,
                id: gix::ObjectId::null(gix::hash::Kind::Sha1),
                path: (*p).into(),
            })
            .collect()
    }

    /// The repository's root as the tests' absolute links name it.
    const ROOT: &str = "/r/repo";

    fn lines(l: &Listings, inputs: &[&str]) -> Vec<(String, String)> {
        l.for_inputs(&files(inputs), &read, &[ROOT.as_bytes().to_vec()])
            .into_iter()
            .map(|(d, v)| (d.to_string(), v))
            .collect()
    }

    fn dirs(l: &Listings, inputs: &[&str]) -> Vec<String> {
        lines(l, inputs).into_iter().map(|(d, _)| d).collect()
    }

    fn resolve(l: &Listings, dir: &str, target: &str) -> Option<String> {
        let roots = [ROOT.as_bytes().to_vec()];
        let r = Resolver {
            listings: l,
            own: HashMap::new(),
            read: &read,
            roots: &roots,
        };
        r.resolve(dir.as_bytes(), target.as_bytes())
            .map(|p| String::from_utf8(p).unwrap())
    }

    const SNAPSHOT: &[&str] = &[
        "README",
        "pkg/__init__.py",
        "pkg/sub/mod.py",
        "tests/test_a.py",
        "tests/test_b.py",
    ];

    #[test]
    fn the_directories_of_the_inputs_and_their_ancestors() {
        let l = listings(SNAPSHOT);
        let got = lines(&l, &["pkg/sub/mod.py", "tests/test_a.py"]);
        let dirs: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(dirs, ["", "pkg", "pkg/sub", "tests"]);
        // The root holds README, pkg/ and tests/; tests/ its two modules.
        assert!(got[0].1.starts_with("3 "), "{got:?}");
        assert!(got[3].1.starts_with("2 "), "{got:?}");
    }

    #[test]
    fn a_segment_without_inputs_still_has_the_root_s_listing() {
        let l = listings(SNAPSHOT);
        let got = lines(&l, &[]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "");
    }

    #[test]
    fn a_link_s_target_and_an_entry_s_kind_are_part_of_the_listing() {
        let digest = |mode: FileMode, id: u8| {
            let mut l = Listings::default();
            l.file(
                b"t/test_a.py".as_bstr(),
                FileMode::Regular,
                &gix::ObjectId::null(gix::hash::Kind::Sha1),
            );
            l.file(
                b"t/fixtures".as_bstr(),
                mode,
                &gix::ObjectId::from_bytes_or_panic(&[id; 20]),
            );
            l.finish();
            l.for_inputs(&files(&["t/test_a.py"]), &|_| None, &[])
        };
        // Retargeted (another blob), or a file, a link or a submodule by the same name.
        assert_ne!(digest(FileMode::Symlink, 1), digest(FileMode::Symlink, 2));
        assert_ne!(digest(FileMode::Symlink, 1), digest(FileMode::Regular, 1));
        assert_ne!(digest(FileMode::Submodule, 1), digest(FileMode::Regular, 1));
        // A file's contents are not part of it.
        assert_eq!(digest(FileMode::Regular, 1), digest(FileMode::Regular, 2));
    }

    #[test]
    fn a_link_to_a_directory_brings_its_listing_in() {
        let l = listings(&[
            "tests/golden/a.txt",
            "tests/unit/test_g.py",
            "tests/unit/golden->../golden",
            "tests/unit/abs->/etc",
            "tests/unit/out->../../../x",
        ]);
        assert_eq!(
            dirs(&l, &["tests/unit/test_g.py"]),
            ["", "tests", "tests/golden", "tests/unit"]
        );
        assert_eq!(
            resolve(&l, "tests/unit", "../golden/./a.txt").as_deref(),
            Some("tests/golden/a.txt")
        );
        assert_eq!(resolve(&l, "tests", "../../x"), None);
        assert_eq!(resolve(&l, "tests", "/etc"), None);
    }

    #[test]
    fn a_link_is_followed_through_the_snapshot_s_other_links() {
        // `in/link -> ../other/sub` with `other -> data`: the check lists `data/sub`, which a
        // lexical `other/sub` missed (no such directory in the snapshot).
        let l = listings(&[
            "data/sub/one",
            "data/deep/x/f",
            "other->data",
            "in/t.py",
            "in/link->../other/sub",
            "in/chain->hop",
            "in/hop->../other",
            "in/abs->/r/repo/data/sub",
            "in/absother->/r/repo/other",
            "in/loop->loop2",
            "in/loop2->loop",
        ]);
        assert_eq!(
            dirs(&l, &["in/t.py"]),
            ["", "data", "data/sub", "in"],
            "through `other`, twice, and absolute"
        );
        assert_eq!(
            resolve(&l, "in", "hop/deep/x").as_deref(),
            Some("data/deep/x")
        );
        assert_eq!(resolve(&l, "in", "chain/sub").as_deref(), Some("data/sub"));
        assert_eq!(resolve(&l, "in", "absother").as_deref(), Some("data"));
        assert_eq!(resolve(&l, "in", "/r/repo").as_deref(), Some(""));
        // `..` after a link is taken from where the link led, as the kernel does.
        assert_eq!(resolve(&l, "in", "../other/../in").as_deref(), Some("in"));
        assert_eq!(resolve(&l, "in", "link/..").as_deref(), Some("data"));
        // Out of the repository, through a file, a cycle, another repository's root.
        assert_eq!(resolve(&l, "in", "/r/repo/.."), None);
        assert_eq!(resolve(&l, "in", "t.py/x"), None);
        assert_eq!(resolve(&l, "in", "loop"), None);
        assert_eq!(resolve(&l, "in", "/r/repository/data"), None);
        // The last component may be a file (the caller keeps directories).
        assert_eq!(
            resolve(&l, "in", "link/one").as_deref(),
            Some("data/sub/one")
        );
    }

    #[test]
    fn names_count_and_order_does_not() {
        let l = listings(SNAPSHOT);
        let mut reversed: Vec<&str> = SNAPSHOT.to_vec();
        reversed.reverse();
        let r = listings(&reversed);
        let inputs = ["tests/test_a.py"];
        assert_eq!(lines(&l, &inputs), lines(&r, &inputs));
        // A data file added next to the test, a data directory below it, a rename, a file
        // turned into a directory: each changes the listing of `tests`.
        let base = lines(&l, &inputs);
        for changed in [
            &["tests/data.json"][..],
            &["tests/golden/c1.expected"],
            &["tests/test_c.py"],
        ] {
            let mut more: Vec<&str> = SNAPSHOT.to_vec();
            more.extend_from_slice(changed);
            assert_ne!(lines(&listings(&more), &inputs), base, "{changed:?}");
        }
        let replaced = |to: &'static str| -> Vec<&str> {
            SNAPSHOT
                .iter()
                .map(|p| if *p == "tests/test_b.py" { to } else { p })
                .collect()
        };
        // A rename, and a file turned into a directory of the same name.
        for to in ["tests/test_bb.py", "tests/test_b.py/x"] {
            assert_ne!(lines(&listings(&replaced(to)), &inputs), base, "{to}");
        }
        // A file deeper down, in a directory that already exists, is not in `tests`' listing;
        // contents never are.
        let mut deeper: Vec<&str> = SNAPSHOT.to_vec();
        deeper.push("pkg/sub/other.py");
        assert_eq!(lines(&listings(&deeper), &inputs), base);
    }
}
