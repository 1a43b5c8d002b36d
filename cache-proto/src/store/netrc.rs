//! A small `.netrc` parser, for HTTP basic auth the way Nix (through curl) does it.
//!
//! Format: whitespace-separated tokens. `machine <host>` starts an entry, `default` starts the
//! fallback entry, `login <name>`, `password <secret>` and `account <x>` fill the current
//! entry, and `macdef <name>` skips a macro definition up to the next empty line. Tokens may be
//! double-quoted with `\"` and `\\` escapes. A host matches a `machine` entry by name
//! (case-insensitively, port ignored, like curl); otherwise the `default` entry applies.

use std::fmt;

use thiserror::Error;

/// A malformed netrc file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {reason}")]
pub struct NetrcError {
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Credentials from a netrc entry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `login`.
    pub login: String,
    /// `password`, empty when the entry has none.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Default)]
struct Entry {
    /// `None` for `default`.
    machine: Option<String>,
    login: Option<String>,
    password: Option<String>,
}

/// A parsed netrc file.
#[derive(Debug, Clone, Default)]
pub struct Netrc {
    entries: Vec<Entry>,
}

struct Tokens<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Tokens<'_> {
    /// The next token and its line; quoted tokens are unescaped.
    fn next(&mut self) -> Result<Option<(String, usize)>, NetrcError> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            if bytes[self.pos] == b'\n' {
                self.line += 1;
            }
            self.pos += 1;
        }
        if self.pos >= bytes.len() {
            return Ok(None);
        }
        let line = self.line;
        if bytes[self.pos] == b'"' {
            self.pos += 1;
            let mut out = String::new();
            let mut chars = self.text[self.pos..].char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.pos += i + 1;
                        return Ok(Some((out, line)));
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => break,
                    },
                    '\n' => {
                        self.line += 1;
                        out.push(c);
                    }
                    _ => out.push(c),
                }
            }
            return Err(NetrcError {
                line,
                reason: "unterminated quoted token".into(),
            });
        }
        let start = self.pos;
        while self.pos < bytes.len() && !bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        Ok(Some((self.text[start..self.pos].to_owned(), line)))
    }

    /// Skips a `macdef` body: everything up to an empty line.
    fn skip_macro(&mut self) {
        match self.text[self.pos..].find("\n\n") {
            Some(i) => {
                self.line += self.text[self.pos..self.pos + i + 2].matches('\n').count();
                self.pos += i + 2;
            }
            None => self.pos = self.text.len(),
        }
    }
}

impl Netrc {
    /// Parses the text of a netrc file.
    pub fn parse(text: &str) -> Result<Netrc, NetrcError> {
        let mut t = Tokens {
            text,
            pos: 0,
            line: 1,
        };
        let mut entries: Vec<Entry> = Vec::new();
        while let Some((tok, line)) = t.next()? {
            let mut value = |what: &str| -> Result<String, NetrcError> {
                t.next()?.map(|(v, _)| v).ok_or_else(|| NetrcError {
                    line,
                    reason: format!("'{what}' without a value"),
                })
            };
            match tok.as_str() {
                "machine" => {
                    let host = value("machine")?;
                    entries.push(Entry {
                        machine: Some(host),
                        ..Entry::default()
                    });
                }
                "default" => entries.push(Entry::default()),
                "login" | "password" | "account" => {
                    let v = value(&tok)?;
                    let Some(entry) = entries.last_mut() else {
                        return Err(NetrcError {
                            line,
                            reason: format!("'{tok}' before any 'machine' or 'default'"),
                        });
                    };
                    match tok.as_str() {
                        "login" => entry.login = Some(v),
                        "password" => entry.password = Some(v),
                        _ => {}
                    }
                }
                "macdef" => {
                    value("macdef")?;
                    t.skip_macro();
                }
                _ => {
                    // The word itself is not shown: after an unquoted password with a space, it
                    // is the rest of that password.
                    return Err(NetrcError {
                        line,
                        reason: "unexpected word (expected machine, default, login, password, \
                                 account or macdef; the word is not shown, it may be a secret)"
                            .into(),
                    });
                }
            }
        }
        Ok(Netrc { entries })
    }

    /// The credentials for `host`: its first `machine` entry, else the `default` entry.
    pub fn credentials_for(&self, host: &str) -> Option<Credentials> {
        let entry = self
            .entries
            .iter()
            .find(|e| {
                e.machine
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(host))
            })
            .or_else(|| self.entries.iter().find(|e| e.machine.is_none()))?;
        if entry.login.is_none() && entry.password.is_none() {
            return None;
        }
        Some(Credentials {
            login: entry.login.clone().unwrap_or_default(),
            password: entry.password.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let n = Netrc::parse(
            "machine 127.0.0.1 login alice password s3cret\n\
             macdef init\ncd /x\nls\n\n\
             machine cache.example login \"bob smith\" password \"p\\\"w\"\n\
             default login anon password x\n",
        )
        .unwrap();
        assert_eq!(
            n.credentials_for("127.0.0.1"),
            Some(Credentials {
                login: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(n.credentials_for("CACHE.example").unwrap().password, "p\"w");
        assert_eq!(
            n.credentials_for("CACHE.example").unwrap().login,
            "bob smith"
        );
        assert_eq!(n.credentials_for("other").unwrap().login, "anon");
        assert!(!format!("{:?}", n.credentials_for("other")).contains('x'));
        let none = Netrc::parse("machine a login b\n").unwrap();
        assert_eq!(none.credentials_for("z"), None);
    }

    #[test]
    fn errors() {
        assert_eq!(Netrc::parse("machine a\nlogin").unwrap_err().line, 2);
        assert_eq!(Netrc::parse("login x").unwrap_err().line, 1);
        assert_eq!(Netrc::parse("machine a\n\nbogus y").unwrap_err().line, 3);
        assert!(Netrc::parse("machine \"a").is_err());
        assert!(Netrc::parse("").unwrap().credentials_for("a").is_none());
    }

    #[test]
    fn errors_never_show_a_password() {
        let e = Netrc::parse("machine h login u password s3 cr3t\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(!e.to_string().contains("cr3t"), "{e}");
    }
}
