//! Reading NARs: one strict parser driving a visitor (a tree builder, a checker, the unpacker).
use std::collections::BTreeMap;
use std::io::{self, Read};

use super::*;

/// What the parser found, reported in stream order.
pub(super) trait Visitor {
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

pub(super) struct Parser<'l, R> {
    inner: R,
    offset: u64,
    limits: &'l NarLimits,
    entries: u64,
    path: Vec<Vec<u8>>,
}

/// Counts what a visitor reads of a file's contents and remembers read errors, so that they
/// are told apart from the visitor's own write errors.
pub(super) struct Contents<'a, R> {
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

pub(super) fn run(r: impl Read, limits: &NarLimits, v: &mut impl Visitor) -> Result<u64, NarError> {
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
pub(super) struct TreeBuilder {
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
pub(super) struct Checker;

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
