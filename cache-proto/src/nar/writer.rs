//! Writing NARs, byte-exact with `nix-store --dump`.
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use super::*;

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
