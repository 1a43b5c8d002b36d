//! Unpacking a NAR below a directory.
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::*;

/// Writes the tree to disk below `dest`.
pub(super) struct Unpacker {
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

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> NarError + '_ {
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

pub(super) fn cleanup(dest: &Path, existed: bool) {
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
