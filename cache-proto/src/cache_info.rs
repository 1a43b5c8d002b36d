//! The `nix-cache-info` file at the root of a binary cache.
//!
//! Wire format: `Key: value` lines, for example
//!
//! ```text
//! StoreDir: /nix/store
//! WantMassQuery: 1
//! Priority: 40
//! ```
//!
//! Mirrors Nix 2.8: unknown keys are ignored, `StoreDir` must be `/nix/store` when present
//! ("binary cache … is for Nix stores with prefix …"), `WantMassQuery` is true only for `1`,
//! and `Priority` is an integer where lower is preferred. Values are trimmed as Nix does. When
//! the file is missing, Nix PUTs exactly `StoreDir: /nix/store\n` (21 bytes), which is what
//! [`CacheInfo::default`] renders to.

use thiserror::Error;

use crate::clip;
use crate::store_path::STORE_DIR;

/// Largest `nix-cache-info` this crate reads.
pub const MAX_CACHE_INFO_SIZE: usize = 16 * 1024;

/// Errors from [`CacheInfo::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CacheInfoError {
    /// The cache serves another store directory.
    #[error("binary cache is for nix stores with prefix {found:?}, not {STORE_DIR:?}")]
    WrongStoreDir { found: String },
    /// `Priority` is not a non-negative integer.
    #[error("line {line}: priority {value:?} is not a non-negative integer")]
    BadPriority { line: usize, value: String },
    /// A non-empty line without `:`.
    #[error("line {line}: expected 'Key: value'")]
    MissingColon { line: usize },
    /// The file is too large.
    #[error("nix-cache-info has {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// The contents of `nix-cache-info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    /// Always `/nix/store` after a successful parse.
    pub store_dir: String,
    /// Whether clients may query this cache in bulk.
    pub want_mass_query: bool,
    /// Lower is preferred; cache.nixos.org advertises 40.
    pub priority: Option<u32>,
}

impl Default for CacheInfo {
    fn default() -> Self {
        Self {
            store_dir: STORE_DIR.to_owned(),
            want_mass_query: false,
            priority: None,
        }
    }
}

impl CacheInfo {
    /// Parses the file.
    pub fn parse(text: &str) -> Result<Self, CacheInfoError> {
        if text.len() > MAX_CACHE_INFO_SIZE {
            return Err(CacheInfoError::TooLarge {
                size: text.len(),
                limit: MAX_CACHE_INFO_SIZE,
            });
        }
        let mut info = Self::default();
        for (idx, line) in text.lines().enumerate() {
            let line_no = idx + 1;
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or(CacheInfoError::MissingColon { line: line_no })?;
            let value = value.trim();
            match key.trim() {
                "StoreDir" if value != STORE_DIR => {
                    return Err(CacheInfoError::WrongStoreDir { found: clip(value) });
                }
                "WantMassQuery" => info.want_mass_query = value == "1",
                "Priority" => {
                    info.priority =
                        Some(value.parse().map_err(|_| CacheInfoError::BadPriority {
                            line: line_no,
                            value: clip(value),
                        })?);
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Renders the file: `StoreDir`, then `WantMassQuery: 1` and `Priority` when set.
    pub fn render(&self) -> String {
        let mut out = format!("StoreDir: {}\n", self.store_dir);
        if self.want_mass_query {
            out.push_str("WantMassQuery: 1\n");
        }
        if let Some(p) = self.priority {
            out.push_str(&format!("Priority: {p}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_render() {
        let text = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";
        let info = CacheInfo::parse(text).unwrap();
        assert_eq!(
            info,
            CacheInfo {
                store_dir: STORE_DIR.into(),
                want_mass_query: true,
                priority: Some(40)
            }
        );
        assert_eq!(info.render(), text);
        assert_eq!(CacheInfo::default().render(), "StoreDir: /nix/store\n");
        assert_eq!(CacheInfo::default().render().len(), 21);
        assert_eq!(
            CacheInfo::parse("X-Other: y\n\nWantMassQuery: 0\n").unwrap(),
            CacheInfo::default()
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            CacheInfo::parse("StoreDir: /gnu/store\n"),
            Err(CacheInfoError::WrongStoreDir {
                found: "/gnu/store".into()
            })
        );
        assert!(matches!(
            CacheInfo::parse("StoreDir: /nix/store\nPriority: high\n"),
            Err(CacheInfoError::BadPriority { line: 2, .. })
        ));
        assert!(matches!(
            CacheInfo::parse("garbage\n"),
            Err(CacheInfoError::MissingColon { line: 1 })
        ));
    }
}
