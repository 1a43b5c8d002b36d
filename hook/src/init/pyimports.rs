//! The imports of a Python source file, found without Python: a small tokenizer that knows
//! where strings, comments and bracketed continuations are, and a parser for the two import
//! statements on top of its tokens.
//!
//! What counts as an import (the same as for CPython, at the `ast` level):
//!
//! * `import a.b as c, d` — one [`Import`] per dotted name;
//! * `from a.b import c, d`, `from a import (c,\n d,)`, `from . import x`, `from ..a import *` —
//!   one [`Import`] with the names (`*` for a star import) and the number of leading dots;
//! * wherever a statement may start: at the beginning of a logical line, after `;`, and after the
//!   `:` of a compound statement on the same line (`if TYPE_CHECKING: import x`). Imports in
//!   function bodies, `try`/`except ImportError` and `if TYPE_CHECKING:` blocks all count;
//! * `pytest_plugins = ["pkg.plugin", ...]` (pytest loads those modules) and calls
//!   `importlib.import_module("x")` / `__import__("x")` / `runpy.run_module("x")` with a literal
//!   argument. Calls with any other argument are reported in [`Scan::dynamic`], since what they
//!   load cannot be known;
//! * `python -m x` written into a test's subprocess command: the two strings `"-m", "x"` in a
//!   row, or `-m x` inside one string (`"python -m x --help"`).
//!
//! Never imports: text in comments, strings, docstrings and f-strings (also nested f-string
//! quotes and format specs), `yield from x`, `raise E from e`, attribute names.
//! Line continuations (`\` at the end of a line) and newlines inside brackets join lines.

/// How an import was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// `import a.b`
    Import,
    /// `from a.b import c`
    From,
    /// A string in `pytest_plugins = [...]`.
    Plugin,
    /// `importlib.import_module("a.b")`, `__import__("a.b")` or `runpy.run_module("a.b")` with
    /// a literal argument.
    Call,
    /// A module run as a program, `python -m a.b`: the strings `"-m", "a.b"` of an argument
    /// list (`[sys.executable, "-m", "a.b"]`) or one string holding `-m a.b`. Tests that run a
    /// project's command-line module in a subprocess need it as much as an import.
    Run,
}

/// One imported module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub kind: ImportKind,
    /// Leading dots of a relative import; 0 for an absolute one.
    pub level: usize,
    /// The dotted module name; empty for `from . import x`.
    pub module: String,
    /// For `from M import a, b`: the names (`*` for a star import); empty otherwise.
    pub names: Vec<String>,
    /// 1-based line of the statement.
    pub line: usize,
}

/// Everything [`scan`] found in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub imports: Vec<Import>,
    /// Short single-line string literals (not f-strings), for spotting data file names.
    pub strings: Vec<String>,
    /// Lines with `import_module(...)` / `__import__(...)` whose argument is not a literal.
    pub dynamic: Vec<usize>,
    /// The first line of module-level code (outside every `def` and `class`, inside `try` or
    /// `if` blocks too) that can skip the module as a whole when it is imported:
    /// `pytest.importorskip(...)`, `pytest.skip(..., allow_module_level=True)` or `raise
    /// unittest.SkipTest(...)`. pytest then collects no tests from it.
    pub module_skip: Option<usize>,
}

/// Scan Python source for imports.
pub fn scan(source: &str) -> Scan {
    let tokens = tokenize(source);
    let mut scan = parse(&tokens);
    scan.module_skip = module_skip(source, &tokens);
    scan
}

/// See [`Scan::module_skip`]. A logical line starts at the beginning of its physical line
/// (after its indentation), so that line's leading whitespace is the statement's indentation:
/// an unindented `def`, `async def`, `class` or decorator opens a block that the indented lines
/// after it belong to; any other unindented statement closes it.
fn module_skip(source: &str, tokens: &[Token]) -> Option<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let mut in_def = false;
    let mut start = 0;
    while start < tokens.len() {
        let end = tokens[start..]
            .iter()
            .position(|t| t.tok == Tok::Newline)
            .map_or(tokens.len(), |n| start + n);
        let first = &tokens[start];
        let indented = lines
            .get(first.line.saturating_sub(1))
            .is_some_and(|l| l.trim_start_matches('\u{feff}').starts_with([' ', '\t']));
        if !indented {
            in_def = match &first.tok {
                Tok::Name(n) => matches!(n.as_str(), "def" | "class" | "async"),
                Tok::Op('@') => true,
                _ => false,
            };
        }
        if !in_def {
            let stmt = &tokens[start..end];
            let name = |t: &Token, n: &str| matches!(&t.tok, Tok::Name(x) if x == n);
            let raises_skip = stmt.first().is_some_and(|t| name(t, "raise"))
                && stmt.iter().any(|t| name(t, "SkipTest"));
            let skips = stmt.windows(2).any(|w| {
                name(&w[0], "importorskip") && w[1].tok == Tok::Op('(')
                    || name(&w[0], "allow_module_level") && w[1].tok == Tok::Op('=')
            });
            if raises_skip || skips {
                return Some(first.line);
            }
        }
        start = end + 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    /// A single punctuation character.
    Op(char),
    /// A string literal: its (roughly decoded) contents and whether it is an f-/t-string.
    Str(String, bool),
    /// The end of a logical line.
    Newline,
    /// A number or any other token that never matters to imports.
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
    /// Bracket depth at the token (after an opening bracket, before a closing one).
    depth: usize,
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    depth: usize,
    out: Vec<Token>,
    _src: &'a str,
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Whether `p` (already lowercased) is a valid string prefix.
fn is_string_prefix(p: &str) -> bool {
    matches!(
        p,
        "r" | "u" | "b" | "f" | "t" | "br" | "rb" | "fr" | "rf" | "tr" | "rt"
    )
}

fn tokenize(source: &str) -> Vec<Token> {
    let mut lx = Lexer {
        chars: source.chars().collect(),
        pos: 0,
        line: 1,
        depth: 0,
        out: Vec::new(),
        _src: source,
    };
    lx.run();
    lx.out
}

impl Lexer<'_> {
    fn peek(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }

    fn push(&mut self, tok: Tok, line: usize) {
        self.out.push(Token {
            tok,
            line,
            depth: self.depth,
        });
    }

    fn newline(&mut self) {
        if self.depth == 0
            && !matches!(
                self.out.last(),
                None | Some(Token {
                    tok: Tok::Newline,
                    ..
                })
            )
        {
            let line = self.line;
            self.push(Tok::Newline, line);
        }
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            match c {
                '\u{feff}' | ' ' | '\t' | '\x0c' | '\r' => self.pos += 1,
                '\n' => {
                    self.newline();
                    self.line += 1;
                    self.pos += 1;
                }
                '\\' => {
                    // A line continuation (or a stray backslash): never ends a logical line.
                    self.pos += 1;
                    if self.peek(0) == Some('\r') {
                        self.pos += 1;
                    }
                    if self.peek(0) == Some('\n') {
                        self.pos += 1;
                        self.line += 1;
                    }
                }
                '#' => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                '"' | '\'' => {
                    let line = self.line;
                    let (text, _) = self.string("");
                    self.push(Tok::Str(text, false), line);
                }
                c if is_name_start(c) => {
                    let start = self.pos;
                    while self.peek(0).is_some_and(is_name_char) {
                        self.pos += 1;
                    }
                    let name: String = self.chars[start..self.pos].iter().collect();
                    let lower = name.to_ascii_lowercase();
                    if matches!(self.peek(0), Some('"' | '\'')) && is_string_prefix(&lower) {
                        let line = self.line;
                        let (text, fmt) = self.string(&lower);
                        self.push(Tok::Str(text, fmt), line);
                    } else {
                        let line = self.line;
                        self.push(Tok::Name(name), line);
                    }
                }
                c if c.is_ascii_digit()
                    || (c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit())) =>
                {
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '_')
                    {
                        self.pos += 1;
                    }
                    let line = self.line;
                    self.push(Tok::Other, line);
                }
                '(' | '[' | '{' => {
                    let line = self.line;
                    self.push(Tok::Op(c), line);
                    self.depth += 1;
                    self.pos += 1;
                }
                ')' | ']' | '}' => {
                    self.depth = self.depth.saturating_sub(1);
                    let line = self.line;
                    self.push(Tok::Op(c), line);
                    self.pos += 1;
                }
                c => {
                    let line = self.line;
                    self.push(Tok::Op(c), line);
                    self.pos += 1;
                }
            }
        }
        self.newline();
    }

    /// Lex a string literal starting at the opening quote (the prefix is already consumed).
    /// Returns its contents (escapes kept loosely: `\x` becomes `x`) and whether it is
    /// formatted.
    fn string(&mut self, prefix: &str) -> (String, bool) {
        let raw = prefix.contains('r');
        let fmt = prefix.contains('f') || prefix.contains('t');
        let q = self.peek(0).expect("at a quote");
        let triple = self.peek(1) == Some(q) && self.peek(2) == Some(q);
        self.pos += if triple { 3 } else { 1 };
        let mut text = String::new();
        while let Some(c) = self.peek(0) {
            if c == '\\' {
                if let Some(n) = self.peek(1) {
                    if raw {
                        text.push('\\');
                    }
                    if n == '\n' {
                        self.line += 1;
                    } else {
                        text.push(n);
                    }
                    self.pos += 2;
                } else {
                    self.pos += 1;
                }
                continue;
            }
            if c == q {
                if !triple {
                    self.pos += 1;
                    return (text, fmt);
                }
                if self.peek(1) == Some(q) && self.peek(2) == Some(q) {
                    self.pos += 3;
                    return (text, fmt);
                }
            }
            if c == '\n' {
                if !triple {
                    // Unterminated: stop at the end of the line, as Python's error recovery
                    // would, so one bad line cannot swallow the rest of the file.
                    return (text, fmt);
                }
                self.line += 1;
            }
            if fmt && c == '{' {
                if self.peek(1) == Some('{') {
                    text.push('{');
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    self.fexpr();
                }
                continue;
            }
            text.push(c);
            self.pos += 1;
        }
        (text, fmt)
    }

    /// Skip an f-string replacement field after its `{`, up to and including its `}`: an
    /// expression (which may hold strings with any quotes, and brackets), then an optional
    /// `!conversion` and `:format spec` (which may hold nested fields).
    fn fexpr(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            match c {
                '"' | '\'' => {
                    self.string("");
                    continue;
                }
                c if is_name_start(c) => {
                    let start = self.pos;
                    while self.peek(0).is_some_and(is_name_char) {
                        self.pos += 1;
                    }
                    let p: String = self.chars[start..self.pos].iter().collect();
                    let p = p.to_ascii_lowercase();
                    if matches!(self.peek(0), Some('"' | '\'')) && is_string_prefix(&p) {
                        self.string(&p);
                    }
                    continue;
                }
                '(' | '[' | '{' => depth += 1,
                ')' | ']' => depth = depth.saturating_sub(1),
                '}' if depth == 0 => {
                    self.pos += 1;
                    return;
                }
                '}' => depth -= 1,
                ':' if depth == 0 => {
                    self.pos += 1;
                    self.fspec();
                    return;
                }
                '\n' => self.line += 1,
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// Skip a format spec up to and including the `}` that closes its replacement field.
    fn fspec(&mut self) {
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            match c {
                '{' => self.fexpr(),
                '}' => return,
                '\n' => self.line += 1,
                _ => {}
            }
        }
    }
}

fn parse(tokens: &[Token]) -> Scan {
    let mut scan = Scan::default();
    let mut at_start = true;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if let Tok::Str(s, false) = &t.tok
            && s.len() <= 200
            && !s.contains('\n')
            && !s.is_empty()
        {
            scan.strings.push(s.clone());
        }
        if let Some(module) = run_module_at(tokens, i) {
            scan.imports.push(Import {
                kind: ImportKind::Run,
                level: 0,
                module,
                names: Vec::new(),
                line: t.line,
            });
        }
        if let Tok::Name(n) = &t.tok
            && (n == "import_module" || n == "__import__" || n == "run_module")
            && matches!(tokens.get(i + 1).map(|t| &t.tok), Some(Tok::Op('(')))
        {
            match tokens.get(i + 2).map(|t| &t.tok) {
                Some(Tok::Str(s, false))
                    if !s.starts_with('.')
                        && matches!(
                            tokens.get(i + 3).map(|t| &t.tok),
                            Some(Tok::Op(')' | ','))
                        ) =>
                {
                    scan.imports.push(Import {
                        kind: ImportKind::Call,
                        level: 0,
                        module: s.clone(),
                        names: Vec::new(),
                        line: t.line,
                    })
                }
                _ => scan.dynamic.push(t.line),
            }
        }
        if at_start && let Tok::Name(n) = &t.tok {
            let next = match n.as_str() {
                "import" => parse_import(tokens, i + 1, t.line, &mut scan.imports),
                "from" => parse_from(tokens, i + 1, t.line, &mut scan.imports),
                "pytest_plugins" => parse_plugins(tokens, i + 1, t.line, &mut scan),
                _ => None,
            };
            if let Some(next) = next {
                i = next;
                at_start = false;
                continue;
            }
        }
        at_start = match &t.tok {
            Tok::Newline | Tok::Op(';') => true,
            Tok::Op(':') => t.depth == 0,
            _ => false,
        };
        i += 1;
    }
    scan
}

/// The module a `-m` at token `i` runs: `"-m", "a.b"` (two strings of an argument list) or one
/// string holding `-m a.b` among its words.
fn run_module_at(tokens: &[Token], i: usize) -> Option<String> {
    let Some(Tok::Str(s, false)) = tokens.get(i).map(|t| &t.tok) else {
        return None;
    };
    if s == "-m" {
        if op_at(tokens, i + 1) != Some(',') {
            return None;
        }
        return match tokens.get(i + 2).map(|t| &t.tok) {
            Some(Tok::Str(m, false)) if is_dotted_name(m) => Some(m.clone()),
            _ => None,
        };
    }
    let mut words = s.split_ascii_whitespace();
    while let Some(w) = words.next() {
        if w == "-m" {
            return words
                .next()
                .filter(|m| is_dotted_name(m))
                .map(str::to_owned);
        }
    }
    None
}

/// `a`, `a.b_c`: a module name as `-m` takes it.
pub(crate) fn is_dotted_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
        })
}

fn name_at(tokens: &[Token], i: usize) -> Option<&str> {
    match tokens.get(i).map(|t| &t.tok) {
        Some(Tok::Name(n)) => Some(n),
        _ => None,
    }
}

fn op_at(tokens: &[Token], i: usize) -> Option<char> {
    match tokens.get(i).map(|t| &t.tok) {
        Some(Tok::Op(c)) => Some(*c),
        _ => None,
    }
}

/// `a.b.c` starting at `i`: the name and the index after it.
fn dotted(tokens: &[Token], mut i: usize) -> Option<(String, usize)> {
    let mut name = name_at(tokens, i)?.to_owned();
    i += 1;
    while op_at(tokens, i) == Some('.')
        && let Some(n) = name_at(tokens, i + 1)
    {
        name.push('.');
        name.push_str(n);
        i += 2;
    }
    Some((name, i))
}

/// After `import`: `a.b [as c] (, d [as e])*`. Returns the index after the statement.
fn parse_import(
    tokens: &[Token],
    mut i: usize,
    line: usize,
    out: &mut Vec<Import>,
) -> Option<usize> {
    let mut any = false;
    while let Some((module, next)) = dotted(tokens, i) {
        any = true;
        out.push(Import {
            kind: ImportKind::Import,
            level: 0,
            module,
            names: Vec::new(),
            line,
        });
        i = next;
        if name_at(tokens, i) == Some("as") {
            i += 2;
        }
        if op_at(tokens, i) == Some(',') {
            i += 1;
        } else {
            break;
        }
    }
    any.then_some(i)
}

/// After `from`: `.* [a.b] import (names | (names) | *)`.
fn parse_from(tokens: &[Token], mut i: usize, line: usize, out: &mut Vec<Import>) -> Option<usize> {
    let mut level = 0;
    while op_at(tokens, i) == Some('.') {
        level += 1;
        i += 1;
    }
    let mut module = String::new();
    if name_at(tokens, i) != Some("import")
        && let Some((m, next)) = dotted(tokens, i)
    {
        module = m;
        i = next;
    }
    if name_at(tokens, i) != Some("import") || (level == 0 && module.is_empty()) {
        return None;
    }
    i += 1;
    let paren = op_at(tokens, i) == Some('(');
    if paren {
        i += 1;
    }
    let mut names = Vec::new();
    loop {
        if op_at(tokens, i) == Some('*') {
            names.push("*".to_owned());
            i += 1;
        } else if let Some(n) = name_at(tokens, i) {
            names.push(n.to_owned());
            i += 1;
            if name_at(tokens, i) == Some("as") {
                i += 2;
            }
        } else {
            break;
        }
        if op_at(tokens, i) == Some(',') {
            i += 1;
        } else {
            break;
        }
    }
    if paren && op_at(tokens, i) == Some(')') {
        i += 1;
    }
    out.push(Import {
        kind: ImportKind::From,
        level,
        module,
        names,
        line,
    });
    Some(i)
}

/// After `pytest_plugins`: `= "a"`, `= ["a", "b"]`, `+= (...)`.
fn parse_plugins(tokens: &[Token], mut i: usize, line: usize, scan: &mut Scan) -> Option<usize> {
    if op_at(tokens, i) == Some('+') {
        i += 1;
    }
    if op_at(tokens, i) != Some('=') || op_at(tokens, i + 1) == Some('=') {
        return None;
    }
    i += 1;
    while let Some(t) = tokens.get(i) {
        match &t.tok {
            Tok::Newline | Tok::Op(';') if t.depth == 0 => break,
            Tok::Str(s, false) => scan.imports.push(Import {
                kind: ImportKind::Plugin,
                level: 0,
                module: s.clone(),
                names: Vec::new(),
                line,
            }),
            _ => {}
        }
        i += 1;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(kind, level, module, names)` of every import, compactly.
    fn imports(src: &str) -> Vec<String> {
        scan(src)
            .imports
            .iter()
            .map(|i| {
                let dots = ".".repeat(i.level);
                match i.kind {
                    ImportKind::Import => format!("import {}", i.module),
                    ImportKind::From => {
                        format!("from {dots}{} import {}", i.module, i.names.join(","))
                    }
                    ImportKind::Plugin => format!("plugin {}", i.module),
                    ImportKind::Call => format!("call {}", i.module),
                    ImportKind::Run => format!("run {}", i.module),
                }
            })
            .collect()
    }

    #[test]
    fn plain_imports() {
        assert_eq!(
            imports("import a.b as c, d\nimport os\n"),
            ["import a.b", "import d", "import os"]
        );
        assert_eq!(
            imports("from a.b import c, d as e\n"),
            ["from a.b import c,d"]
        );
        assert_eq!(imports("from a import *"), ["from a import *"]);
    }

    #[test]
    fn relative_imports() {
        assert_eq!(
            imports(
                "from . import x\nfrom .. import y, z\nfrom .m import n\nfrom ...p.q import r\n"
            ),
            [
                "from . import x",
                "from .. import y,z",
                "from .m import n",
                "from ...p.q import r"
            ]
        );
        // `...` is one token in Python; it must still count as three dots.
        assert_eq!(imports("from ...a import b"), ["from ...a import b"]);
    }

    #[test]
    fn parenthesised_and_continued() {
        let src = "from pkg.mod import (\n    alpha,  # first\n    beta as b,\n    gamma,\n)\nimport x, \\\n    y\nfrom z \\\n  import w\n";
        assert_eq!(
            imports(src),
            [
                "from pkg.mod import alpha,beta,gamma",
                "import x",
                "import y",
                "from z import w"
            ]
        );
    }

    #[test]
    fn strings_comments_and_docstrings_are_not_imports() {
        let src = r#""""Module docstring.

import fake_in_docstring
from fake import x
"""
# import fake_in_comment
s = "import fake_in_string"
t = '''
from fake2 import y
'''
u = f"{'import nope'} {x!r:>{width}} from q import r"
v = f"{d["k"]}"  # 3.12 nested quotes
w = rb'\'import raw\''
import real
def f():
    """from fake3 import z"""
    from real2 import thing
"#;
        assert_eq!(imports(src), ["import real", "from real2 import thing"]);
    }

    #[test]
    fn statement_positions() {
        let src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.types import T\nif TYPE_CHECKING: import pkg.other\nx = 1; import semi\ntry:\n    import fast\nexcept ImportError:\n    import slow\n";
        assert_eq!(
            imports(src),
            [
                "from typing import TYPE_CHECKING",
                "from pkg.types import T",
                "import pkg.other",
                "import semi",
                "import fast",
                "import slow"
            ]
        );
        // `from` that does not start a statement.
        assert_eq!(
            imports("def g():\n    yield from gen()\n    raise E from e\nd = {1: 2}\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn plugins_and_calls() {
        let src = "pytest_plugins = [\"tests.fixtures.db\", 'tests.fixtures.web']\nimport importlib\nm = importlib.import_module(\"pkg.late\")\nn = importlib.import_module(name)\no = __import__('pkg.old')\n";
        let s = scan(src);
        assert_eq!(
            imports(src),
            [
                "plugin tests.fixtures.db",
                "plugin tests.fixtures.web",
                "import importlib",
                "call pkg.late",
                "call pkg.old"
            ]
        );
        assert_eq!(s.dynamic, [4]);
    }

    #[test]
    fn a_module_that_skips_itself_as_a_whole() {
        let skip = |src: &str| scan(src).module_skip;
        assert_eq!(
            skip("import pytest\nyaml = pytest.importorskip('yaml')\n"),
            Some(2)
        );
        assert_eq!(
            skip(
                "import pytest\ntry:\n    import yaml\nexcept ImportError:\n    pytest.skip('no yaml',\n        allow_module_level=True)\n"
            ),
            Some(5)
        );
        assert_eq!(
            skip("import unittest\nif not HAVE:\n    raise unittest.SkipTest('no recommonmark')\n"),
            Some(3)
        );
        // Inside a test, a fixture or a class, it skips a test, not the module.
        assert_eq!(
            skip("import pytest\ndef test_y():\n    pytest.importorskip('yaml')\n"),
            None
        );
        assert_eq!(
            skip("@pytest.fixture\ndef y():\n    return pytest.importorskip('yaml')\nX = 1\n"),
            None
        );
        assert_eq!(
            skip(
                "class TestY:\n    def setup_method(self):\n        raise unittest.SkipTest('x')\n"
            ),
            None
        );
        // Words in strings, comments and docstrings are not code.
        assert_eq!(
            skip(
                "\"\"\"Uses pytest.importorskip(...)\nraise SkipTest\n\"\"\"\n# importorskip(x)\ndef test_x():\n    pass\n"
            ),
            None
        );
    }

    #[test]
    fn modules_run_with_dash_m() {
        let src = "argv = [sys.executable, '-m', 'pkg.tool', '--x']\n\
                   subprocess.run(['python3', \"-m\", \"pkg.cli\"])\n\
                   os.system('python -m pkg.other --help')\n\
                   runpy.run_module('pkg.main')\n\
                   a = ['-m', some_name]\n\
                   b = ['-m', 'not a module']\n\
                   c = '-m'\n\
                   d = f'{sys.executable} -m pkg.fstring'\n";
        assert_eq!(
            imports(src),
            [
                "run pkg.tool",
                "run pkg.cli",
                "run pkg.other",
                "call pkg.main"
            ]
        );
    }

    #[test]
    fn lines_and_strings() {
        let s = scan("\"\"\"doc\nstring\"\"\"\n\nimport a\nopen('data/x.json')\n");
        assert_eq!(s.imports[0].line, 4);
        assert!(s.strings.contains(&"data/x.json".to_owned()));
    }

    #[test]
    fn unterminated_string_does_not_swallow_the_file() {
        assert_eq!(imports("x = 'oops\nimport a\n"), ["import a"]);
    }

    #[test]
    fn crlf_and_bom() {
        assert_eq!(
            imports("\u{feff}import a\r\nfrom b import (\r\n c,\r\n)\r\n"),
            ["import a", "from b import c"]
        );
    }
}
