//! NAR, the Nix ARchive format: writing, parsing and unpacking.
//!
//! Wire format (as `nix-store --dump` writes it):
//!
//! ```text
//! nar   = str("nix-archive-1") node
//! node  = str("(") str("type") body str(")")
//! body  = str("regular") [ str("executable") str("") ] str("contents") str(<bytes>)
//!       | str("symlink") str("target") str(<target>)
//!       | str("directory") { str("entry") str("(") str("name") str(<name>)
//!                                         str("node") node str(")") }
//! str(s) = u64le(len(s)) s <zero padding to a multiple of 8>
//! ```
//!
//! Directory entries are sorted by the raw bytes of their names. A file is executable when its
//! owner-execute bit is set. Nothing else is recorded (no times, owners or other mode bits).
//!
//! The writer ([`dump_path`], [`write_node`]) is byte-exact with Nix 2.8. The reader ([`parse`],
//! [`validate`], [`unpack`]) is stricter than Nix, because a NAR from a cache is hostile input:
//! it rejects bad magic and tokens, names that are empty, `.`, `..` or contain `/` or NUL,
//! unsorted or duplicate entries, non-zero padding, an `executable` marker with a non-empty
//! value, symlink targets that are empty or contain NUL, lengths over [`NarLimits`],
//! truncation, and any byte after the root node. Lengths are checked before anything is
//! allocated, so a forged length costs nothing.
//!
//! [`unpack`] only creates new files (`O_EXCL`), never follows symlinks while it writes, and
//! sets modes `0o755` (directories, executables) and `0o644` (other files), like Nix's store.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::hash::{HashingWriter, Sha256Hash};

const MAGIC: &[u8] = b"nix-archive-1";
const PAD: [u8; 8] = [0; 8];
/// Longest token of the grammar, so longer strings in token position fail before allocation.
const MAX_TOKEN: u64 = 16;

/// Limits that bound the work and memory a NAR reader spends on hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarLimits {
    /// Longest entry name, in bytes (default 255, Linux's `NAME_MAX`).
    pub max_name: usize,
    /// Longest symlink target, in bytes (default 4095, Linux's `PATH_MAX` less one).
    pub max_target: usize,
    /// Largest regular file, in bytes (default 1 GiB).
    pub max_file: u64,
    /// Largest whole NAR, in bytes (default 4 GiB).
    pub max_total: u64,
    /// Deepest directory nesting (default 256).
    pub max_depth: usize,
    /// Most directory entries in the whole archive (default 1,000,000).
    pub max_entries: u64,
}

impl Default for NarLimits {
    fn default() -> Self {
        Self {
            max_name: 255,
            max_target: 4095,
            max_file: 1 << 30,
            max_total: 4 << 30,
            max_depth: 256,
            max_entries: 1_000_000,
        }
    }
}

/// Errors from writing, parsing and unpacking NARs.
#[derive(Debug, Error)]
pub enum NarError {
    /// A filesystem operation failed.
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading the NAR stream failed.
    #[error("cannot read the nar stream at offset {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// Writing the NAR stream failed.
    #[error("cannot write the nar stream")]
    Write(#[source] io::Error),
    /// A file type NAR cannot hold.
    #[error(
        "cannot archive {path}: it is a {kind}; only regular files, symlinks and directories can be archived"
    )]
    UnsupportedFileType { path: PathBuf, kind: &'static str },
    /// A file changed while it was archived.
    #[error("file {path} changed while it was being archived")]
    FileChanged { path: PathBuf },
    /// The stream does not start with `nix-archive-1`.
    #[error("input is not a nix archive (bad magic)")]
    BadMagic,
    /// The stream ends early.
    #[error("nar is truncated at offset {offset}")]
    Truncated { offset: u64 },
    /// Another token than the grammar allows.
    #[error("expected {expected} at offset {offset} of the nar, found {found}")]
    UnexpectedToken {
        offset: u64,
        expected: &'static str,
        found: String,
    },
    /// Padding bytes that are not zero.
    #[error("non-zero padding at offset {offset} of the nar")]
    NonZeroPadding { offset: u64 },
    /// An invalid entry name.
    #[error("invalid entry name {name:?} in directory {dir:?} at offset {offset}: {reason}")]
    InvalidName {
        offset: u64,
        dir: String,
        name: String,
        reason: &'static str,
    },
    /// An invalid symlink target.
    #[error("invalid symlink target for {entry:?} at offset {offset}: {reason}")]
    InvalidTarget {
        offset: u64,
        entry: String,
        reason: &'static str,
    },
    /// Entries out of order.
    #[error(
        "entry {name:?} in directory {dir:?} at offset {offset} is not sorted after {previous:?}"
    )]
    Unsorted {
        offset: u64,
        dir: String,
        name: String,
        previous: String,
    },
    /// The same name twice in a directory.
    #[error("duplicate entry {name:?} in directory {dir:?} at offset {offset}")]
    Duplicate {
        offset: u64,
        dir: String,
        name: String,
    },
    /// A length over a [`NarLimits`] field.
    #[error("{what} of {len} bytes at offset {offset} exceeds the limit of {limit}")]
    TooLong {
        what: &'static str,
        offset: u64,
        len: u64,
        limit: u64,
    },
    /// The archive is larger than `max_total`.
    #[error("nar exceeds the limit of {limit} bytes at offset {offset}")]
    TooLarge { offset: u64, limit: u64 },
    /// Directories nested deeper than `max_depth`.
    #[error("nar nests directories deeper than {limit} at offset {offset}")]
    TooDeep { offset: u64, limit: usize },
    /// More entries than `max_entries`.
    #[error("nar has more than {limit} directory entries at offset {offset}")]
    TooManyEntries { offset: u64, limit: u64 },
    /// Bytes after the root node.
    #[error("trailing data after the nar root node at offset {offset}")]
    TrailingData { offset: u64 },
    /// [`unpack`] was given a destination that exists and is not an empty directory.
    #[error("unpack destination {path} already exists and is not an empty directory")]
    DestinationExists { path: PathBuf },
}

/// An in-memory NAR tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarNode {
    /// A regular file.
    Regular { executable: bool, contents: Vec<u8> },
    /// A symbolic link, stored verbatim.
    Symlink { target: Vec<u8> },
    /// A directory; the map keeps entries sorted by raw bytes, as NAR requires.
    Directory(BTreeMap<Vec<u8>, NarNode>),
}

impl NarNode {
    /// Serialises the tree as a NAR.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NarError> {
        let mut out = Vec::new();
        write_node(self, &mut out)?;
        Ok(out)
    }

    /// The NAR hash and size of this tree.
    pub fn nar_hash(&self) -> Result<(Sha256Hash, u64), NarError> {
        let mut w = HashingWriter::new(io::sink());
        write_node(self, &mut w)?;
        let (_, hash, size) = w.finish();
        Ok((hash, size))
    }
}

fn show(bytes: &[u8]) -> String {
    crate::clip(&String::from_utf8_lossy(bytes))
}

fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("name is empty")
    } else if name == b"." || name == b".." {
        Err("name is '.' or '..'")
    } else if name.contains(&b'/') {
        Err("name contains '/'")
    } else if name.contains(&0) {
        Err("name contains a nul byte")
    } else {
        Ok(())
    }
}

fn check_target(target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() {
        Err("target is empty")
    } else if target.contains(&0) {
        Err("target contains a nul byte")
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

struct NarWriter<W: Write> {
    out: W,
    offset: u64,
}

impl<W: Write> NarWriter<W> {
    fn raw(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.out.write_all(bytes).map_err(NarError::Write)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> Result<(), NarError> {
        let pad = padding(len);
        self.raw(&PAD[..pad])
    }

    fn str(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.raw(&(bytes.len() as u64).to_le_bytes())?;
        self.raw(bytes)?;
        self.pad(bytes.len() as u64)
    }

    fn node(&mut self, node: &NarNode, dir: &mut Vec<Vec<u8>>) -> Result<(), NarError> {
        self.str(b"(")?;
        self.str(b"type")?;
        match node {
            NarNode::Regular {
                executable,
                contents,
            } => {
                self.str(b"regular")?;
                if *executable {
                    self.str(b"executable")?;
                    self.str(b"")?;
                }
                self.str(b"contents")?;
                self.str(contents)?;
            }
            NarNode::Symlink { target } => {
                check_target(target).map_err(|reason| NarError::InvalidTarget {
                    offset: self.offset,
                    entry: show(&dir.join(&b'/')),
                    reason,
                })?;
                self.str(b"symlink")?;
                self.str(b"target")?;
                self.str(target)?;
            }
            NarNode::Directory(entries) => {
                self.str(b"directory")?;
                for (name, child) in entries {
                    check_name(name).map_err(|reason| NarError::InvalidName {
                        offset: self.offset,
                        dir: show(&dir.join(&b'/')),
                        name: show(name),
                        reason,
                    })?;
                    self.str(b"entry")?;
                    self.str(b"(")?;
                    self.str(b"name")?;
                    self.str(name)?;
                    self.str(b"node")?;
                    dir.push(name.clone());
                    self.node(child, dir)?;
                    dir.pop();
                    self.str(b")")?;
                }
            }
        }
        self.str(b")")
    }

    fn path(&mut self, path: &Path) -> Result<(), NarError> {
        let io_err = |source| NarError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::symlink_metadata(path).map_err(io_err)?;
        let ft = meta.file_type();
        self.str(b"(")?;
        self.str(b"type")?;
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err)?;
            self.str(b"symlink")?;
            self.str(b"target")?;
            self.str(target.as_os_str().as_bytes())?;
        } else if ft.is_file() {
            let mut file = File::open(path).map_err(io_err)?;
            let opened = file.metadata().map_err(io_err)?;
            if opened.dev() != meta.dev() || opened.ino() != meta.ino() || !opened.is_file() {
                return Err(NarError::FileChanged {
                    path: path.to_owned(),
                });
            }
            let len = opened.len();
            self.str(b"regular")?;
            if opened.mode() & 0o100 != 0 {
                self.str(b"executable")?;
                self.str(b"")?;
            }
            self.str(b"contents")?;
            self.raw(&len.to_le_bytes())?;
            let copied = copy_exact(&mut file, len, self, path)?;
            if copied != len || file.read(&mut [0u8; 1]).map_err(io_err)? != 0 {
                return Err(NarError::FileChanged {
                    path: path.to_owned(),
                });
            }
            self.pad(len)?;
        } else if ft.is_dir() {
            self.str(b"directory")?;
            let mut names = Vec::new();
            for entry in fs::read_dir(path).map_err(io_err)? {
                names.push(entry.map_err(io_err)?.file_name());
            }
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                self.str(b"entry")?;
                self.str(b"(")?;
                self.str(b"name")?;
                self.str(name.as_bytes())?;
                self.str(b"node")?;
                self.path(&path.join(&name))?;
                self.str(b")")?;
            }
        } else {
            use std::os::unix::fs::FileTypeExt as _;
            let kind = if ft.is_socket() {
                "socket"
            } else if ft.is_fifo() {
                "fifo"
            } else if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            return Err(NarError::UnsupportedFileType {
                path: path.to_owned(),
                kind,
            });
        }
        self.str(b")")
    }
}

fn copy_exact<W: Write>(
    file: &mut File,
    len: u64,
    w: &mut NarWriter<W>,
    path: &Path,
) -> Result<u64, NarError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(NarError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        w.raw(&buf[..n])?;
        done += n as u64;
    }
    Ok(done)
}

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Serialises the file, symlink or directory at `path` as a NAR into `out`, byte-exact with
/// `nix-store --dump`. Returns the number of bytes written.
pub fn dump_path(path: &Path, out: &mut impl Write) -> Result<u64, NarError> {
    let mut w = NarWriter {
        out: BufWriter::with_capacity(64 * 1024, out),
        offset: 0,
    };
    w.str(MAGIC)?;
    w.path(path)?;
    w.out.flush().map_err(NarError::Write)?;
    Ok(w.offset)
}

/// Serialises an in-memory tree as a NAR into `out`. Returns the number of bytes written.
/// Fails on names or targets that a reader would reject.
pub fn write_node(node: &NarNode, out: &mut impl Write) -> Result<u64, NarError> {
    let mut w = NarWriter {
        out: BufWriter::with_capacity(64 * 1024, out),
        offset: 0,
    };
    w.str(MAGIC)?;
    w.node(node, &mut Vec::new())?;
    w.out.flush().map_err(NarError::Write)?;
    Ok(w.offset)
}

// ---------------------------------------------------------------------------------------------
// Reading

/// What the parser found, reported in stream order.
trait Visitor {
    fn regular(
        &mut self,
        path: &[Vec<u8>],
        executable: bool,
        len: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError>;
    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8]) -> Result<(), NarError>;
    fn enter_dir(&mut self, path: &[Vec<u8>]) -> Result<(), NarError>;
    fn leave_dir(&mut self, path: &[Vec<u8>]) -> Result<(), NarError>;
}

struct Parser<'l, R> {
    inner: R,
    offset: u64,
    limits: &'l NarLimits,
    entries: u64,
    path: Vec<Vec<u8>>,
}

/// Counts what a visitor reads of a file's contents and remembers read errors, so that they
/// are told apart from the visitor's own write errors.
struct Contents<'a, R> {
    inner: &'a mut R,
    left: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        match self.inner.read(&mut buf[..max]) {
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

impl<R: Read> Parser<'_, R> {
    fn dir_name(&self) -> String {
        let mut s = String::from("/");
        s.push_str(&show(&self.path.join(&b'/')));
        s
    }

    fn reserve(&self, n: u64) -> Result<(), NarError> {
        match self.offset.checked_add(n) {
            Some(end) if end <= self.limits.max_total => Ok(()),
            _ => Err(NarError::TooLarge {
                offset: self.offset,
                limit: self.limits.max_total,
            }),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        self.reserve(buf.len() as u64)?;
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => {
                    return Err(NarError::Truncated {
                        offset: self.offset + done as u64,
                    });
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.offset + done as u64,
                        source,
                    });
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = padding(len);
        if pad == 0 {
            return Ok(());
        }
        let start = self.offset;
        let mut b = [0u8; 8];
        self.read_exact(&mut b[..pad])?;
        if b[..pad].iter().any(|&x| x != 0) {
            return Err(NarError::NonZeroPadding { offset: start });
        }
        Ok(())
    }

    /// Reads a string of at most `max` bytes; `what` names it in the error.
    fn string(&mut self, max: u64, what: &'static str) -> Result<Vec<u8>, NarError> {
        let start = self.offset;
        let len = self.u64()?;
        if len > max {
            return Err(NarError::TooLong {
                what,
                offset: start,
                len,
                limit: max,
            });
        }
        self.reserve(len)?;
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        self.padding(len)?;
        Ok(buf)
    }

    /// Reads a token and returns which of `choices` it is.
    fn token(
        &mut self,
        choices: &[&'static [u8]],
        expected: &'static str,
    ) -> Result<usize, NarError> {
        let start = self.offset;
        let len = self.u64()?;
        if len > MAX_TOKEN {
            return Err(NarError::UnexpectedToken {
                offset: start,
                expected,
                found: format!("a string of {len} bytes"),
            });
        }
        let mut buf = [0u8; MAX_TOKEN as usize];
        let buf = &mut buf[..len as usize];
        self.read_exact(buf)?;
        self.padding(len)?;
        choices
            .iter()
            .position(|c| *c == buf)
            .ok_or_else(|| NarError::UnexpectedToken {
                offset: start,
                expected,
                found: format!("{:?}", show(buf)),
            })
    }

    fn expect(&mut self, tok: &'static [u8], expected: &'static str) -> Result<(), NarError> {
        self.token(&[tok], expected).map(|_| ())
    }

    fn archive(&mut self, v: &mut impl Visitor) -> Result<(), NarError> {
        let start = self.offset;
        match self.token(&[MAGIC], "the nar magic") {
            Ok(_) => {}
            Err(NarError::UnexpectedToken { .. } | NarError::NonZeroPadding { .. }) => {
                return Err(NarError::BadMagic);
            }
            Err(NarError::Truncated { .. }) if start == 0 => return Err(NarError::BadMagic),
            Err(e) => return Err(e),
        }
        self.node(v, 0)?;
        let mut probe = [0u8; 1];
        loop {
            match self.inner.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(NarError::TrailingData {
                        offset: self.offset,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(NarError::Read {
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
    }

    fn node(&mut self, v: &mut impl Visitor, depth: usize) -> Result<(), NarError> {
        self.expect(b"(", "'('")?;
        self.expect(b"type", "'type'")?;
        match self.token(
            &[b"regular", b"symlink", b"directory"],
            "'regular', 'symlink' or 'directory'",
        )? {
            0 => self.regular(v)?,
            1 => {
                self.expect(b"target", "'target'")?;
                let start = self.offset;
                let target = self.string(self.limits.max_target as u64, "symlink target")?;
                check_target(&target).map_err(|reason| NarError::InvalidTarget {
                    offset: start,
                    entry: self.dir_name(),
                    reason,
                })?;
                v.symlink(&self.path, &target)?;
                self.expect(b")", "')'")?;
            }
            _ => self.directory(v, depth)?,
        }
        Ok(())
    }

    fn regular(&mut self, v: &mut impl Visitor) -> Result<(), NarError> {
        let executable =
            match self.token(&[b"executable", b"contents"], "'executable' or 'contents'")? {
                0 => {
                    let start = self.offset;
                    let len = self.u64()?;
                    if len != 0 {
                        return Err(NarError::UnexpectedToken {
                            offset: start,
                            expected: "an empty string after 'executable'",
                            found: format!("a string of {len} bytes"),
                        });
                    }
                    self.expect(b"contents", "'contents'")?;
                    true
                }
                _ => false,
            };
        let start = self.offset;
        let len = self.u64()?;
        if len > self.limits.max_file {
            return Err(NarError::TooLong {
                what: "file",
                offset: start,
                len,
                limit: self.limits.max_file,
            });
        }
        self.reserve(len.saturating_add(padding(len) as u64))?;
        let mut contents = Contents {
            inner: &mut self.inner,
            left: len,
            error: None,
        };
        let result = v.regular(&self.path, executable, len, &mut contents);
        // Drain what the visitor left, so that the position is known.
        let drained = if result.is_ok() && contents.error.is_none() {
            io::copy(&mut contents, &mut io::sink()).map(|_| ())
        } else {
            Ok(())
        };
        let left = contents.left;
        let read_error = contents.error.take();
        let pos = self.offset + (len - left);
        if let Some(source) = read_error {
            return Err(NarError::Read {
                offset: pos,
                source,
            });
        }
        result?;
        drained.map_err(|source| NarError::Read {
            offset: pos,
            source,
        })?;
        if left != 0 {
            return Err(NarError::Truncated { offset: pos });
        }
        self.offset += len;
        self.padding(len)?;
        self.expect(b")", "')'")
    }

    fn directory(&mut self, v: &mut impl Visitor, depth: usize) -> Result<(), NarError> {
        if depth >= self.limits.max_depth {
            return Err(NarError::TooDeep {
                offset: self.offset,
                limit: self.limits.max_depth,
            });
        }
        v.enter_dir(&self.path)?;
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let start = self.offset;
            if self.token(&[b"entry", b")"], "'entry' or ')'")? == 1 {
                break;
            }
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(NarError::TooManyEntries {
                    offset: start,
                    limit: self.limits.max_entries,
                });
            }
            self.expect(b"(", "'('")?;
            self.expect(b"name", "'name'")?;
            let name_at = self.offset;
            let name = self.string(self.limits.max_name as u64, "entry name")?;
            check_name(&name).map_err(|reason| NarError::InvalidName {
                offset: name_at,
                dir: self.dir_name(),
                name: show(&name),
                reason,
            })?;
            if let Some(prev) = &previous {
                match prev.as_slice().cmp(&name) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(NarError::Duplicate {
                            offset: name_at,
                            dir: self.dir_name(),
                            name: show(&name),
                        });
                    }
                    std::cmp::Ordering::Greater => {
                        return Err(NarError::Unsorted {
                            offset: name_at,
                            dir: self.dir_name(),
                            name: show(&name),
                            previous: show(prev),
                        });
                    }
                }
            }
            self.expect(b"node", "'node'")?;
            self.path.push(name);
            self.node(v, depth + 1)?;
            previous = self.path.pop();
            self.expect(b")", "')'")?;
        }
        v.leave_dir(&self.path)
    }
}

fn run(r: impl Read, limits: &NarLimits, v: &mut impl Visitor) -> Result<u64, NarError> {
    let mut p = Parser {
        inner: r,
        offset: 0,
        limits,
        entries: 0,
        path: Vec::new(),
    };
    p.archive(v)?;
    Ok(p.offset)
}

/// Builds the in-memory tree.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<BTreeMap<Vec<u8>, NarNode>>,
    root: Option<NarNode>,
}

impl TreeBuilder {
    fn put(&mut self, path: &[Vec<u8>], node: NarNode) {
        match (path.last(), self.stack.last_mut()) {
            (Some(name), Some(dir)) => {
                dir.insert(name.clone(), node);
            }
            _ => self.root = Some(node),
        }
    }
}

impl Visitor for TreeBuilder {
    fn regular(
        &mut self,
        path: &[Vec<u8>],
        executable: bool,
        len: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        let mut buf = Vec::with_capacity(usize::try_from(len.min(1 << 16)).unwrap_or(0));
        // Read errors are reported by the parser; a short read is truncation.
        let _ = contents.read_to_end(&mut buf);
        self.put(
            path,
            NarNode::Regular {
                executable,
                contents: buf,
            },
        );
        Ok(())
    }

    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8]) -> Result<(), NarError> {
        self.put(
            path,
            NarNode::Symlink {
                target: target.to_vec(),
            },
        );
        Ok(())
    }

    fn enter_dir(&mut self, _path: &[Vec<u8>]) -> Result<(), NarError> {
        self.stack.push(BTreeMap::new());
        Ok(())
    }

    fn leave_dir(&mut self, path: &[Vec<u8>]) -> Result<(), NarError> {
        let dir = self.stack.pop().unwrap_or_default();
        self.put(path, NarNode::Directory(dir));
        Ok(())
    }
}

/// Checks the structure only.
struct Checker;

impl Visitor for Checker {
    fn regular(
        &mut self,
        _: &[Vec<u8>],
        _: bool,
        _: u64,
        _: &mut dyn Read,
    ) -> Result<(), NarError> {
        Ok(())
    }
    fn symlink(&mut self, _: &[Vec<u8>], _: &[u8]) -> Result<(), NarError> {
        Ok(())
    }
    fn enter_dir(&mut self, _: &[Vec<u8>]) -> Result<(), NarError> {
        Ok(())
    }
    fn leave_dir(&mut self, _: &[Vec<u8>]) -> Result<(), NarError> {
        Ok(())
    }
}

/// Parses a whole NAR into memory, enforcing `limits` (see the module docs for what is
/// rejected).
pub fn parse(r: impl Read, limits: &NarLimits) -> Result<NarNode, NarError> {
    let mut b = TreeBuilder::default();
    run(r, limits, &mut b)?;
    b.root.ok_or(NarError::Truncated { offset: 0 })
}

/// Checks that `r` is one well-formed NAR within `limits`, without keeping it. Returns its
/// length.
pub fn validate(r: impl Read, limits: &NarLimits) -> Result<u64, NarError> {
    run(r, limits, &mut Checker)
}

/// Writes the tree to disk below `dest`.
struct Unpacker {
    dest: PathBuf,
}

impl Unpacker {
    fn target(&self, path: &[Vec<u8>]) -> PathBuf {
        let mut p = self.dest.clone();
        for c in path {
            p.push(OsStr::from_bytes(c));
        }
        p
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> NarError + '_ {
    move |source| NarError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Visitor for Unpacker {
    fn regular(
        &mut self,
        path: &[Vec<u8>],
        executable: bool,
        _len: u64,
        contents: &mut dyn Read,
    ) -> Result<(), NarError> {
        let p = self.target(path);
        let mode = if executable { 0o755 } else { 0o644 };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&p)
            .map_err(io_at(&p))?;
        io::copy(contents, &mut file).map_err(io_at(&p))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_at(&p))?;
        Ok(())
    }

    fn symlink(&mut self, path: &[Vec<u8>], target: &[u8]) -> Result<(), NarError> {
        let p = self.target(path);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &p).map_err(io_at(&p))
    }

    fn enter_dir(&mut self, path: &[Vec<u8>]) -> Result<(), NarError> {
        let p = self.target(path);
        if path.is_empty() && fs::symlink_metadata(&p).is_ok() {
            // An empty destination directory checked by `unpack`.
            return Ok(());
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&p)
            .map_err(io_at(&p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(io_at(&p))
    }

    fn leave_dir(&mut self, _path: &[Vec<u8>]) -> Result<(), NarError> {
        Ok(())
    }
}

/// Unpacks a NAR into `dest`, which must not exist (or, when the root is a directory, be an
/// empty directory). Only creates new files and directories, never follows symlinks and never
/// writes outside `dest`. On error, everything created so far is removed again.
pub fn unpack(r: impl Read, dest: &Path, limits: &NarLimits) -> Result<(), NarError> {
    let existed = match fs::symlink_metadata(dest) {
        Ok(meta) => {
            let empty_dir =
                meta.is_dir() && fs::read_dir(dest).map_err(io_at(dest))?.next().is_none();
            if !empty_dir {
                return Err(NarError::DestinationExists {
                    path: dest.to_owned(),
                });
            }
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_at(dest)(e)),
    };
    let mut u = Unpacker {
        dest: dest.to_owned(),
    };
    let result = run(r, limits, &mut u);
    if let Err(e) = result {
        cleanup(dest, existed);
        return Err(e);
    }
    Ok(())
}

fn cleanup(dest: &Path, existed: bool) {
    if existed {
        if let Ok(entries) = fs::read_dir(dest) {
            for entry in entries.flatten() {
                let p = entry.path();
                let _ = match entry.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                    _ => fs::remove_file(&p),
                };
            }
        }
    } else {
        let _ = match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(dest),
            Ok(_) => fs::remove_file(dest),
            Err(_) => Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(contents: &[u8], executable: bool) -> NarNode {
        NarNode::Regular {
            executable,
            contents: contents.to_vec(),
        }
    }

    fn vector2_tree() -> NarNode {
        let mut sub = BTreeMap::new();
        sub.insert(b"b".to_vec(), reg(b"x", false));
        let mut root = BTreeMap::new();
        root.insert(b"a.txt".to_vec(), reg(b"hi\n", false));
        root.insert(
            b"link".to_vec(),
            NarNode::Symlink {
                target: b"a.txt".to_vec(),
            },
        );
        root.insert(b"run.sh".to_vec(), reg(b"#!/bin/sh\necho ok\n", true));
        root.insert(b"sub".to_vec(), NarNode::Directory(sub));
        NarNode::Directory(root)
    }

    #[test]
    fn vector1_in_memory() {
        let bytes = reg(b"hello binary cache\n", false).to_bytes().unwrap();
        assert_eq!(bytes.len(), 136);
        assert_eq!(
            Sha256Hash::digest(&bytes).to_hex(),
            "819a98f92c3d6b263f3fc3a29c019f340e4cfc89fc1465fa6144495ca738768a"
        );
        assert_eq!(
            parse(&bytes[..], &NarLimits::default()).unwrap(),
            reg(b"hello binary cache\n", false)
        );
    }

    #[test]
    fn vector2_in_memory() {
        let tree = vector2_tree();
        let bytes = tree.to_bytes().unwrap();
        assert_eq!(bytes.len(), 1080);
        assert_eq!(
            Sha256Hash::digest(&bytes).to_hex(),
            "009757b7c64967ed2bcd55812745b222656d5f406641a1d1013de008a7ec3cc6"
        );
        assert_eq!(tree.nar_hash().unwrap().1, 1080);
        assert_eq!(parse(&bytes[..], &NarLimits::default()).unwrap(), tree);
        assert_eq!(validate(&bytes[..], &NarLimits::default()).unwrap(), 1080);
    }

    #[test]
    fn writer_rejects_bad_names() {
        let mut root = BTreeMap::new();
        root.insert(b"..".to_vec(), reg(b"", false));
        assert!(matches!(
            NarNode::Directory(root).to_bytes(),
            Err(NarError::InvalidName { .. })
        ));
        assert!(matches!(
            NarNode::Symlink { target: vec![] }.to_bytes(),
            Err(NarError::InvalidTarget { .. })
        ));
    }

    #[test]
    fn trailing_and_truncated() {
        let mut bytes = vector2_tree().to_bytes().unwrap();
        for cut in [0, 5, 8, 100, 1079] {
            let err = parse(&bytes[..cut], &NarLimits::default()).unwrap_err();
            assert!(
                matches!(err, NarError::Truncated { .. } | NarError::BadMagic),
                "{cut}: {err}"
            );
        }
        bytes.push(0);
        assert!(matches!(
            parse(&bytes[..], &NarLimits::default()),
            Err(NarError::TrailingData { offset: 1080 })
        ));
    }
}
