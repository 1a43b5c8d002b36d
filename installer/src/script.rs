//! The `pre-push` script checkdef installs: how it is written and how it is recognised.
//!
//! The script is POSIX sh. It reads git's ref lines from stdin once (byte for byte, trailing newlines
//! included), runs `pre-push.local` next to itself first when that is executable, giving it the
//! same arguments and a copy of stdin, and stops the push with that hook's exit status if it fails.
//! Then it runs `<checkdef> hook pre-push "$@"` with another copy of stdin, where `<checkdef>` is
//! the absolute path of the binary that installed it, or `checkdef` from `PATH` when that path is
//! gone. When neither exists it exits 1 and says how to bypass the hook.
//!
//! The second line, [`MARKER`], identifies the script as checkdef's. The script is a function of the
//! binary path and of whether install moved an existing hook aside, both written into it, so
//! [`parse`] can tell an untouched script from one edited by hand by rendering it again.
use std::path::PathBuf;

/// Which git hook a script is: checkdef installs `pre-push` (the checks) and, with
/// `checkdef install --warm`, `post-commit` (pre-warming: `checkdef warm` after each commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    PrePush,
    PostCommit,
}

impl HookKind {
    /// The hook's file name in the hooks directory.
    pub fn file_name(self) -> &'static str {
        match self {
            HookKind::PrePush => "pre-push",
            HookKind::PostCommit => "post-commit",
        }
    }

    /// Where a pre-existing hook of this kind is kept (and run first) while checkdef's is
    /// installed.
    pub fn local_name(self) -> &'static str {
        match self {
            HookKind::PrePush => "pre-push.local",
            HookKind::PostCommit => "post-commit.local",
        }
    }

    fn marker_prefix(self) -> &'static str {
        match self {
            HookKind::PrePush => MARKER_PREFIX,
            HookKind::PostCommit => POST_COMMIT_MARKER_PREFIX,
        }
    }

    fn moved_line(self) -> &'static str {
        match self {
            HookKind::PrePush => MOVED_LINE,
            HookKind::PostCommit => POST_COMMIT_MOVED_LINE,
        }
    }
}

/// The header line that marks a hook as checkdef's, up to the version number.
pub const MARKER_PREFIX: &str = "# checkdef pre-push hook v";
/// The same for the post-commit hook.
pub const POST_COMMIT_MARKER_PREFIX: &str = "# checkdef post-commit hook v";
/// The full header line of the post-commit hook written by this version.
pub const POST_COMMIT_MARKER: &str = "# checkdef post-commit hook v1 — managed by checkdef install";
const POST_COMMIT_MOVED_LINE: &str =
    "# moved-aside: post-commit.local (restored by checkdef uninstall)";
/// The version of the script written by this crate.
pub const VERSION: u32 = 1;
/// The full header line written by this version.
pub const MARKER: &str = "# checkdef pre-push hook v1 — managed by checkdef install";
/// Present only when `checkdef install` moved an existing hook to `pre-push.local`; `checkdef
/// uninstall` moves it back only then.
const MOVED_LINE: &str = "# moved-aside: pre-push.local (restored by checkdef uninstall)";
const BIN_PREFIX: &str = "checkdef_bin=";

/// What a checkdef hook script is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptParams {
    pub kind: HookKind,
    /// The absolute path of the checkdef binary the hook calls first.
    pub checkdef_exe: PathBuf,
    /// Whether install moved a pre-existing hook to `pre-push.local` (uninstall restores it).
    pub moved_aside: bool,
}

/// A hook file recognised as checkdef's (it carries the marker line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedScript {
    pub kind: HookKind,
    /// The version in the marker line.
    pub version: u32,
    /// The binary path written in the script, when it could be read back.
    pub checkdef_exe: Option<PathBuf>,
    /// Whether the script says install moved a hook aside.
    pub moved_aside: bool,
    /// Whether the file differs from what this crate would write for the same parameters
    /// (edited by hand, or written by another version).
    pub modified: bool,
}

/// Render the hook script. `checkdef_exe` must be valid UTF-8 (checked by the caller).
pub fn render(params: &ScriptParams) -> String {
    if params.kind == HookKind::PostCommit {
        return render_post_commit(params);
    }
    let exe = params.checkdef_exe.to_string_lossy();
    let moved = if params.moved_aside {
        format!("{MOVED_LINE}\n")
    } else {
        String::new()
    };
    let bin = sh_quote(&exe);
    format!(
        r#"#!/bin/sh
{MARKER}
# Runs pre-push.local (if executable) first, then the checkdef pre-push checks.
# Skip once: git push --no-verify.  Remove: checkdef uninstall.
{moved}{BIN_PREFIX}{bin}
hook_dir=$(dirname -- "$0")
# git writes one line per pushed ref on stdin; keep an exact copy for each consumer.
stdin=$(cat; printf x)
stdin=${{stdin%x}}
if [ -x "$hook_dir/pre-push.local" ]; then
	printf '%s' "$stdin" | "$hook_dir/pre-push.local" "$@"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "checkdef: $hook_dir/pre-push.local failed (exit $rc); push blocked" >&2
		exit "$rc"
	fi
fi
if [ ! -x "$checkdef_bin" ]; then
	if command -v checkdef >/dev/null 2>&1; then
		checkdef_bin=checkdef
	else
		echo "checkdef: cannot run the pre-push checks: $checkdef_bin does not exist and checkdef is not on PATH" >&2
		echo "hint: reinstall checkdef and run 'checkdef install', or skip the checks once with 'git push --no-verify'" >&2
		exit 1
	fi
fi
printf '%s' "$stdin" | "$checkdef_bin" hook pre-push "$@"
"#
    )
}

/// The post-commit hook: `post-commit.local` first (when executable), then `checkdef warm`,
/// which starts the new commit's misses in the background and returns at once, so `git commit`
/// is not held up. git ignores a post-commit hook's exit status; the hook still passes on
/// `post-commit.local`'s, as the pre-push hook does.
fn render_post_commit(params: &ScriptParams) -> String {
    let exe = params.checkdef_exe.to_string_lossy();
    let moved = if params.moved_aside {
        format!("{POST_COMMIT_MOVED_LINE}\n")
    } else {
        String::new()
    };
    let bin = sh_quote(&exe);
    format!(
        r#"#!/bin/sh
{POST_COMMIT_MARKER}
# Runs post-commit.local (if executable) first, then starts the new commit's checks in the
# background (checkdef warm). Remove: checkdef uninstall.
{moved}{BIN_PREFIX}{bin}
hook_dir=$(dirname -- "$0")
rc=0
if [ -x "$hook_dir/post-commit.local" ]; then
	"$hook_dir/post-commit.local" "$@"
	rc=$?
fi
if [ ! -x "$checkdef_bin" ]; then
	command -v checkdef >/dev/null 2>&1 || exit "$rc"
	checkdef_bin=checkdef
fi
"$checkdef_bin" warm --quiet </dev/null || :
exit "$rc"
"#
    )
}

/// Whether `content` carries checkdef's marker line (within the first lines), of any kind.
pub fn is_ours(content: &[u8]) -> bool {
    kind_of(content).is_some()
}

/// Which checkdef hook `content` is, by its marker line.
pub fn kind_of(content: &[u8]) -> Option<HookKind> {
    [HookKind::PrePush, HookKind::PostCommit]
        .into_iter()
        .find(|k| marker_version(content, *k).is_some())
}

fn marker_version(content: &[u8], kind: HookKind) -> Option<u32> {
    let text = String::from_utf8_lossy(&content[..content.len().min(4096)]);
    text.lines().take(5).find_map(|line| {
        let rest = line.strip_prefix(kind.marker_prefix())?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// Recognise a checkdef hook and check whether it is exactly what [`render`] would write.
/// `None` when the content is not a checkdef hook.
pub fn parse(content: &[u8]) -> Option<ParsedScript> {
    let kind = kind_of(content)?;
    let version = marker_version(content, kind)?;
    let text = String::from_utf8_lossy(content);
    let checkdef_exe = text
        .lines()
        .find_map(|line| line.strip_prefix(BIN_PREFIX))
        .and_then(sh_unquote)
        .map(PathBuf::from);
    let moved_aside = text.lines().any(|line| line == kind.moved_line());
    let modified = match &checkdef_exe {
        Some(exe) => {
            let expected = render(&ScriptParams {
                kind,
                checkdef_exe: exe.clone(),
                moved_aside,
            });
            expected.as_bytes() != content
        }
        None => true,
    };
    Some(ParsedScript {
        kind,
        version,
        checkdef_exe,
        moved_aside,
        modified,
    })
}

/// Quote `s` for sh: single quotes, with each `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Undo [`sh_quote`] (a sequence of `'…'` parts and `\'`); `None` for anything else.
fn sh_unquote(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(r"\'") {
            out.push('\'');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'')?;
            out.push_str(&r[..end]);
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn params(exe: &str, moved: bool) -> ScriptParams {
        ScriptParams {
            kind: HookKind::PrePush,
            checkdef_exe: PathBuf::from(exe),
            moved_aside: moved,
        }
    }

    #[test]
    fn render_then_parse_is_unmodified() {
        for exe in ["/usr/bin/checkdef", "/opt/it's here/checkdef", "/a b/'c'/d"] {
            for moved in [false, true] {
                let s = render(&params(exe, moved));
                let p = parse(s.as_bytes()).expect("ours");
                assert_eq!(p.version, VERSION);
                assert_eq!(p.checkdef_exe.as_deref(), Some(Path::new(exe)));
                assert_eq!(p.moved_aside, moved);
                assert!(!p.modified, "{s}");
            }
        }
    }

    #[test]
    fn post_commit_scripts_round_trip_and_are_told_apart() {
        for moved in [false, true] {
            let p = ScriptParams {
                kind: HookKind::PostCommit,
                ..params("/a b/checkdef", moved)
            };
            let s = render(&p);
            assert_eq!(s.lines().nth(1), Some(POST_COMMIT_MARKER));
            assert!(s.contains("warm"), "{s}");
            let parsed = parse(s.as_bytes()).expect("ours");
            assert_eq!(parsed.kind, HookKind::PostCommit);
            assert_eq!(parsed.moved_aside, moved);
            assert!(!parsed.modified, "{s}");
            assert!(parse(format!("{s}#\n").as_bytes()).unwrap().modified);
        }
        let pre = render(&params("/x/checkdef", false));
        assert_eq!(parse(pre.as_bytes()).unwrap().kind, HookKind::PrePush);
        assert_eq!(kind_of(b"#!/bin/sh\nexit 0\n"), None);
    }

    #[test]
    fn marker_is_second_line() {
        let s = render(&params("/x/checkdef", false));
        assert_eq!(s.lines().nth(1), Some(MARKER));
        assert!(MARKER.starts_with(MARKER_PREFIX));
    }

    #[test]
    fn edits_are_detected() {
        let s = render(&params("/x/checkdef", true));
        let edited = s.replace("exit \"$rc\"", "exit 0");
        assert!(parse(edited.as_bytes()).unwrap().modified);
        let appended = format!("{s}echo hi\n");
        assert!(parse(appended.as_bytes()).unwrap().modified);
        let no_bin = s.replace(BIN_PREFIX, "bin=");
        let p = parse(no_bin.as_bytes()).unwrap();
        assert!(p.modified);
        assert_eq!(p.checkdef_exe, None);
    }

    #[test]
    fn foreign_scripts_are_not_ours() {
        assert!(parse(b"#!/bin/sh\nexit 0\n").is_none());
        assert!(!is_ours(b""));
        assert!(!is_ours(b"#!/bin/sh\n# mentions checkdef pre-push hook\n"));
    }

    #[test]
    fn quoting_round_trips() {
        for s in ["", "a", "'", "''", "a'b'c", r"\'", "x y"] {
            assert_eq!(sh_unquote(&sh_quote(s)).as_deref(), Some(s));
        }
        assert_eq!(sh_unquote("abc"), None);
        assert_eq!(sh_unquote("'abc"), None);
    }
}
