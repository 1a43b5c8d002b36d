//! The pre-push stdin format (githooks(5), "pre-push"): one line per ref git is about to update,
//!
//! ```text
//! <local ref> SP <local oid> SP <remote ref> SP <remote oid> LF
//! ```
//!
//! Object ids are lowercase hex, 40 characters in SHA-1 repositories and 64 in SHA-256 ones.
//! A deletion has the local ref `(delete)` and an all-zero local oid; a ref the remote does not
//! have yet has an all-zero remote oid. git writes nothing at all when there is nothing to push.
//! This parser is pure and strict: anything else is an error naming the 1-based line.
use std::fmt;

use gix::ObjectId;

/// The local ref git writes for a deletion (`git push origin :branch`, `--delete`).
pub const DELETE_REF: &str = "(delete)";

/// What a pushed ref update does on the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateKind {
    /// The remote ref exists (non-zero remote oid) and gets a new value.
    Update,
    /// The remote ref does not exist yet (zero remote oid).
    Create,
    /// The remote ref is deleted (`(delete)`, zero local oid).
    Delete,
}

/// One line of pre-push stdin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefUpdate {
    /// The local ref (or whatever the push source was spelled as); `(delete)` for deletions.
    pub local_ref: String,
    /// The object the remote ref will point to (zero for deletions).
    pub local_oid: ObjectId,
    /// The full name of the remote ref, e.g. `refs/heads/main`.
    pub remote_ref: String,
    /// The object the remote ref points to now, as far as git knows (zero if it does not exist).
    pub remote_oid: ObjectId,
    pub kind: UpdateKind,
}

impl RefUpdate {
    pub fn is_delete(&self) -> bool {
        self.kind == UpdateKind::Delete
    }

    pub fn is_create(&self) -> bool {
        self.kind == UpdateKind::Create
    }

    /// Whether the remote ref is a tag (`refs/tags/…`).
    pub fn is_tag(&self) -> bool {
        self.remote_ref.starts_with("refs/tags/")
    }

    /// Whether the remote ref is a branch (`refs/heads/…`).
    pub fn is_branch(&self) -> bool {
        self.remote_ref.starts_with("refs/heads/")
    }

    /// The hash of both object ids (they are checked to agree).
    pub fn hash_kind(&self) -> gix::hash::Kind {
        self.local_oid.kind()
    }
}

/// The line exactly as git writes it, without the newline.
impl fmt::Display for RefUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.local_ref, self.local_oid, self.remote_ref, self.remote_oid
        )
    }
}

/// A malformed pre-push stdin line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pre-push input line {line}: {problem}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("contains a carriage return (CRLF line endings are not accepted)")]
    CarriageReturn,
    #[error("expected 4 fields separated by single spaces, found {found}")]
    FieldCount { found: usize },
    #[error("has a leading, trailing or doubled space (fields are separated by single spaces)")]
    ExtraSpace,
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
    #[error(
        "{field} {value:?} is not a lowercase hex object id of 40 (SHA-1) or 64 (SHA-256) characters"
    )]
    BadOid { field: &'static str, value: String },
    #[error("local oid has {local} characters but remote oid has {remote}")]
    OidLengthMismatch { local: usize, remote: usize },
    #[error("local ref is (delete) but the local oid is not all zeros")]
    DeleteWithObject,
    #[error("local oid is all zeros but the local ref is {local_ref:?}, not (delete)")]
    ZeroOidWithoutDelete { local_ref: String },
}

/// Parse git's pre-push stdin. Empty input and empty (or all-blank) lines give no updates.
pub fn parse_stdin(input: &str) -> Result<Vec<RefUpdate>, ParseError> {
    input
        .split('\n')
        .enumerate()
        .filter(|(_, line)| !line.bytes().all(|b| b == b' ' || b == b'\t'))
        .map(|(i, line)| {
            parse_line(line).map_err(|problem| ParseError {
                line: i + 1,
                problem,
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Result<RefUpdate, Problem> {
    if line.contains('\r') {
        return Err(Problem::CarriageReturn);
    }
    // From the right: git writes the local ref as the push source was typed, so it may hold
    // spaces (`git push origin 'HEAD^{/fix bug}:y'`); the other three fields never do (object
    // ids are hex, and a full ref name cannot contain a space).
    let mut right = line.rsplitn(4, ' ');
    let remote_oid = right.next().unwrap_or_default();
    let remote_ref = right.next();
    let local_oid = right.next();
    let local_ref = right.next();
    let (Some(remote_ref), Some(local_oid), Some(local_ref)) = (remote_ref, local_oid, local_ref)
    else {
        let found = line.split(' ').count();
        return Err(if line.split(' ').any(str::is_empty) {
            Problem::ExtraSpace
        } else {
            Problem::FieldCount { found }
        });
    };
    if [local_ref, local_oid, remote_ref, remote_oid]
        .iter()
        .any(|f| f.is_empty())
    {
        return Err(Problem::ExtraSpace);
    }
    check_ref("local ref", local_ref)?;
    check_ref("remote ref", remote_ref)?;
    let local = parse_oid("local oid", local_oid)?;
    let remote = parse_oid("remote oid", remote_oid)?;
    if local_oid.len() != remote_oid.len() {
        return Err(Problem::OidLengthMismatch {
            local: local_oid.len(),
            remote: remote_oid.len(),
        });
    }
    let kind = match (local_ref == DELETE_REF, local.is_null()) {
        (true, true) => UpdateKind::Delete,
        (true, false) => return Err(Problem::DeleteWithObject),
        (false, true) => {
            return Err(Problem::ZeroOidWithoutDelete {
                local_ref: local_ref.to_owned(),
            });
        }
        (false, false) if remote.is_null() => UpdateKind::Create,
        (false, false) => UpdateKind::Update,
    };
    Ok(RefUpdate {
        local_ref: local_ref.to_owned(),
        local_oid: local,
        remote_ref: remote_ref.to_owned(),
        remote_oid: remote,
        kind,
    })
}

fn check_ref(field: &'static str, value: &str) -> Result<(), Problem> {
    if value.chars().any(char::is_control) {
        return Err(Problem::ControlCharacter { field });
    }
    Ok(())
}

fn parse_oid(field: &'static str, value: &str) -> Result<ObjectId, Problem> {
    let bad = || Problem::BadOid {
        field,
        value: value.chars().take(80).collect(),
    };
    let hex_ok = value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_ok || !(value.len() == 40 || value.len() == 64) {
        return Err(bad());
    }
    ObjectId::from_hex(value.as_bytes()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn oid(s: &str) -> ObjectId {
        ObjectId::from_hex(s.as_bytes()).unwrap()
    }

    #[test]
    fn empty_and_blank_input() {
        assert_eq!(parse_stdin(""), Ok(vec![]));
        assert_eq!(parse_stdin("\n"), Ok(vec![]));
        assert_eq!(parse_stdin("\n\n  \n"), Ok(vec![]));
    }

    #[test]
    fn update_create_delete() {
        let input = format!(
            "refs/heads/main {A} refs/heads/main {B}\n\
             refs/heads/new {A} refs/heads/new {Z}\n\
             (delete) {Z} refs/heads/old {B}\n"
        );
        let updates = parse_stdin(&input).unwrap();
        assert_eq!(updates.len(), 3);
        assert_eq!(
            updates[0],
            RefUpdate {
                local_ref: "refs/heads/main".into(),
                local_oid: oid(A),
                remote_ref: "refs/heads/main".into(),
                remote_oid: oid(B),
                kind: UpdateKind::Update,
            }
        );
        assert!(updates[1].is_create() && updates[1].is_branch());
        assert!(updates[2].is_delete());
        assert_eq!(updates[2].local_ref, DELETE_REF);
        assert_eq!(updates[0].hash_kind(), gix::hash::Kind::Sha1);
        // Display renders the line back.
        let rendered: Vec<String> = updates.iter().map(ToString::to_string).collect();
        assert_eq!(format!("{}\n", rendered.join("\n")), input);
    }

    #[test]
    fn the_local_ref_is_read_from_the_right_and_may_hold_spaces() {
        // `git push origin 'HEAD^{/fix bug}:y'`: git writes the source as typed.
        let updates = parse_stdin(&format!(
            "HEAD^{{/fix  bug}} {A} refs/heads/y {Z}\n~ {A} refs/heads/z {B}\n"
        ))
        .unwrap();
        assert_eq!(updates[0].local_ref, "HEAD^{/fix  bug}");
        assert_eq!(updates[0].remote_ref, "refs/heads/y");
        assert!(updates[0].is_create());
        assert_eq!(updates[1].local_ref, "~");
        assert_eq!(
            problem(&format!(" {A} refs/heads/z {B}")),
            (1, Problem::ExtraSpace)
        );
        let rendered = format!("{}\n", updates[0]);
        assert_eq!(parse_stdin(&rendered).unwrap()[0], updates[0]);
    }

    #[test]
    fn last_line_without_newline() {
        let updates = parse_stdin(&format!("refs/tags/v1 {A} refs/tags/v1 {Z}")).unwrap();
        assert!(updates[0].is_tag() && updates[0].is_create());
    }

    #[test]
    fn sha256_ids() {
        let a = "ab".repeat(32);
        let z = "0".repeat(64);
        let updates = parse_stdin(&format!("refs/heads/x {a} refs/heads/x {z}\n")).unwrap();
        assert_eq!(updates[0].hash_kind(), gix::hash::Kind::Sha256);
        assert!(updates[0].is_create());
        let del = parse_stdin(&format!("(delete) {z} refs/heads/x {a}\n")).unwrap();
        assert!(del[0].is_delete());
    }

    fn problem(input: &str) -> (usize, Problem) {
        let e = parse_stdin(input).unwrap_err();
        (e.line, e.problem)
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let good = format!("refs/heads/main {A} refs/heads/main {B}");
        assert_eq!(
            problem(&format!("{good}\n{good}\r\n")),
            (2, Problem::CarriageReturn)
        );
        assert_eq!(
            problem(&format!("\n{good}\nrefs/heads/main {A} refs/heads/main\n")),
            (3, Problem::FieldCount { found: 3 })
        );
        assert_eq!(
            problem(&format!("refs/heads/main {A}  refs/heads/main {B}")),
            (1, Problem::ExtraSpace)
        );
        assert_eq!(
            problem(&format!("refs/heads/main {A} refs/heads/main {B} ")),
            (1, Problem::ExtraSpace)
        );
        assert_eq!(
            problem(&format!("{A} refs/heads/main {B}")),
            (1, Problem::FieldCount { found: 3 })
        );
        // An extra field is read from the right: the fields are then not object ids.
        assert!(matches!(
            problem(&format!("{good} extra")).1,
            Problem::BadOid { .. }
        ));
        assert_eq!(
            problem(&format!("refs/heads/main\t{A} refs/heads/main {B}")).1,
            Problem::FieldCount { found: 3 }
        );
        let upper = A.replace('1', "A");
        assert!(matches!(
            problem(&format!("refs/heads/main {upper} refs/heads/main {B}")).1,
            Problem::BadOid {
                field: "local oid",
                ..
            }
        ));
        assert!(matches!(
            problem(&format!("refs/heads/main {A} refs/heads/main {}", &B[..39])).1,
            Problem::BadOid {
                field: "remote oid",
                ..
            }
        ));
        assert_eq!(
            problem(&format!(
                "refs/heads/main {A} refs/heads/main {}",
                "2".repeat(64)
            ))
            .1,
            Problem::OidLengthMismatch {
                local: 40,
                remote: 64
            }
        );
        assert_eq!(
            problem(&format!("(delete) {A} refs/heads/main {B}")).1,
            Problem::DeleteWithObject
        );
        assert!(matches!(
            problem(&format!("refs/heads/main {Z} refs/heads/main {B}")).1,
            Problem::ZeroOidWithoutDelete { .. }
        ));
        assert_eq!(
            problem(&format!("refs/heads/m\u{1b}ain {A} refs/heads/main {B}")).1,
            Problem::ControlCharacter { field: "local ref" }
        );
        let msg = parse_stdin(&format!("{good}\r")).unwrap_err().to_string();
        assert_eq!(
            msg,
            "pre-push input line 1: contains a carriage return (CRLF line endings are not accepted)"
        );
    }

    fn ref_name() -> impl Strategy<Value = String> {
        "refs/(heads|tags|remotes/origin)/[A-Za-z0-9._/-]{1,24}"
    }

    /// A push source as typed: a ref, or a revision expression with spaces.
    fn local_name() -> impl Strategy<Value = String> {
        prop_oneof![
            ref_name(),
            "HEAD\\^\\{/[a-z ]{1,12}\\}",
            "[A-Za-z0-9 ^~:{}/]{1,20}"
        ]
    }

    fn hex_oid(len: usize) -> impl Strategy<Value = ObjectId> {
        proptest::collection::vec(0u8..16, len).prop_map(|nibbles| {
            let s: String = nibbles
                .iter()
                .map(|n| char::from_digit(u32::from(*n), 16).unwrap())
                .collect();
            ObjectId::from_hex(s.as_bytes()).unwrap()
        })
    }

    fn update() -> impl Strategy<Value = RefUpdate> {
        (prop_oneof![Just(40usize), Just(64usize)], 0u8..3).prop_flat_map(|(len, kind)| {
            (local_name(), hex_oid(len), ref_name(), hex_oid(len)).prop_filter_map(
                "non-null oids",
                move |(local_ref, local_oid, remote_ref, remote_oid)| {
                    if local_oid.is_null() || remote_oid.is_null() {
                        return None;
                    }
                    let null = ObjectId::null(local_oid.kind());
                    Some(match kind {
                        0 => RefUpdate {
                            local_ref,
                            local_oid,
                            remote_ref,
                            remote_oid,
                            kind: UpdateKind::Update,
                        },
                        1 => RefUpdate {
                            local_ref,
                            local_oid,
                            remote_ref,
                            remote_oid: null,
                            kind: UpdateKind::Create,
                        },
                        _ => RefUpdate {
                            local_ref: DELETE_REF.into(),
                            local_oid: null,
                            remote_ref,
                            remote_oid,
                            kind: UpdateKind::Delete,
                        },
                    })
                },
            )
        })
    }

    proptest! {
        #[test]
        fn rendered_updates_parse_back(updates in proptest::collection::vec(update(), 0..6)) {
            let input: String = updates.iter().map(|u| format!("{u}\n")).collect();
            prop_assert_eq!(parse_stdin(&input), Ok(updates));
        }

        #[test]
        fn arbitrary_input_never_panics(input in "\\PC*|[ 0-9a-f()\\n\\r/a-z]{0,200}") {
            let _ = parse_stdin(&input);
        }

        #[test]
        fn arbitrary_lines_with_valid_shape_never_panic(
            a in "[^ \\n]{0,12}", b in "[0-9a-fA-F]{38,66}", c in "[^ \\n]{0,12}", d in "[0-9a-fA-F]{38,66}"
        ) {
            let _ = parse_stdin(&format!("{a} {b} {c} {d}\n"));
        }
    }
}
