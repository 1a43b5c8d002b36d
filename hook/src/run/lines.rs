//! Splitting a check's live output into what `-v` prints and what the progress bar shows, in
//! time linear in the output and memory bounded by [`MAX_LINE`], whatever the output looks like
//! (a gigabyte without a newline, tqdm-style `\r` progress).
//!
//! A `\n` (or `\r\n`) ends a [`Piece::Line`]. A `\r` not followed by `\n` is how progress bars
//! redraw a line in place: the text before it becomes a [`Piece::Progress`] and the next text
//! replaces it, as a terminal would show it. A line longer than [`MAX_LINE`] bytes is cut into
//! pieces of at most that size (at a UTF-8 boundary when there is one near the cut).

/// The longest piece ever held or emitted.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line, without its line ending (or a cut part of an overlong one).
    Line(&'a [u8]),
    /// The state of a line that a `\r` is about to redraw.
    Progress(&'a [u8]),
}

#[derive(Debug, Default)]
pub struct Splitter {
    pending: Vec<u8>,
    /// The previous chunk ended with `\r`: whether it ends a line depends on the next byte.
    after_cr: bool,
    /// Bytes examined so far, for tests that the work is linear.
    examined: u64,
}

impl Splitter {
    /// Feed one chunk of output, calling `emit` for every piece it completes.
    pub fn push(&mut self, chunk: &[u8], emit: &mut dyn FnMut(Piece<'_>)) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
                self.examined += 1;
                emit(Piece::Line(&self.pending));
            } else if !self.pending.is_empty() {
                emit(Piece::Progress(&self.pending));
            }
            self.pending.clear();
        }
        while !rest.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let window = &rest[..rest.len().min(room)];
            let found = window.iter().position(|b| *b == b'\n' || *b == b'\r');
            self.examined += found.map_or(window.len(), |i| i + 1) as u64;
            match found {
                Some(i) => {
                    let text = &rest[..i];
                    let end = rest[i];
                    rest = &rest[i + 1..];
                    let crlf = end == b'\r' && rest.first() == Some(&b'\n');
                    if end == b'\r' && rest.is_empty() {
                        // `\r` at the end of the chunk: decided by the next one.
                        self.pending.extend_from_slice(text);
                        self.after_cr = true;
                        return;
                    }
                    let piece_text: &[u8] = if self.pending.is_empty() {
                        text
                    } else {
                        self.pending.extend_from_slice(text);
                        &self.pending
                    };
                    if end == b'\n' || crlf {
                        emit(Piece::Line(piece_text));
                    } else if !piece_text.is_empty() {
                        emit(Piece::Progress(piece_text));
                    }
                    if crlf {
                        rest = &rest[1..];
                        self.examined += 1;
                    }
                    self.pending.clear();
                }
                None if window.len() == room => {
                    // An overlong line: emit what fits, cut where a character starts.
                    let cut = char_boundary(window);
                    if self.pending.is_empty() {
                        emit(Piece::Line(&window[..cut]));
                    } else {
                        self.pending.extend_from_slice(&window[..cut]);
                        emit(Piece::Line(&self.pending));
                        self.pending.clear();
                    }
                    rest = &rest[cut..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    rest = &rest[window.len()..];
                }
            }
        }
    }

    /// The end of the output: whatever is pending is a last line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        if !self.pending.is_empty() {
            emit(Piece::Line(&self.pending));
        }
        self.pending.clear();
        self.after_cr = false;
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.pending.capacity()
    }
}

/// Where to cut `window` (full) so the cut does not split a UTF-8 character: before the last
/// character start within its last 4 bytes, or at the end when there is none or the window is
/// not text.
fn char_boundary(window: &[u8]) -> usize {
    let n = window.len();
    (n.saturating_sub(3)..n)
        .rev()
        .find(|&i| window[i] & 0xC0 != 0x80)
        .filter(|&i| i > 0 && window[i] >= 0xC0)
        .unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Own {
        L(String),
        P(String),
    }

    fn split(chunks: &[&[u8]]) -> Vec<Own> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        let mut emit = |p: Piece<'_>| {
            out.push(match p {
                Piece::Line(l) => Own::L(String::from_utf8_lossy(l).into_owned()),
                Piece::Progress(l) => Own::P(String::from_utf8_lossy(l).into_owned()),
            })
        };
        for c in chunks {
            s.push(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    use Own::{L, P};

    #[test]
    fn lines_progress_and_crlf() {
        assert_eq!(
            split(&[b"a\nb", b"c\n\n", b"tail"]),
            [
                L("a".into()),
                L("bc".into()),
                L("".into()),
                L("tail".into())
            ]
        );
        assert_eq!(
            split(&[b"\r 10%\r 50%", b"\r100%\n"]),
            [P(" 10%".into()), P(" 50%".into()), L("100%".into())]
        );
        assert_eq!(
            split(&[b"dos\r\nline\r", b"\nx\r", b"y\n"]),
            [
                L("dos".into()),
                L("line".into()),
                P("x".into()),
                L("y".into())
            ]
        );
        assert_eq!(split(&[b"end\r"]), [L("end".into())]);
    }

    #[test]
    fn overlong_lines_are_cut_and_memory_stays_bounded() {
        let mut s = Splitter::default();
        let mut pieces = 0usize;
        let mut bytes = 0usize;
        let chunk = vec![b'x'; 16 * 1024 + 7];
        let total = 32usize << 20;
        let mut fed = 0;
        while fed < total {
            s.push(&chunk, &mut |p| {
                let Piece::Line(l) = p else { panic!("{p:?}") };
                assert!(l.len() <= MAX_LINE);
                pieces += 1;
                bytes += l.len();
            });
            fed += chunk.len();
            assert!(s.held() <= 2 * MAX_LINE, "holds {} bytes", s.held());
        }
        s.finish(&mut |p| {
            let Piece::Line(l) = p else { panic!() };
            bytes += l.len();
        });
        assert_eq!(bytes, fed);
        assert!(pieces >= fed / MAX_LINE);
        // Linear: every byte examined once (32 MiB without a newline took 47 s when each
        // chunk rescanned everything pending).
        assert!(s.examined <= fed as u64, "examined {} of {fed}", s.examined);
    }

    #[test]
    fn many_redraws_are_linear() {
        let mut s = Splitter::default();
        let mut progress = 0;
        let mut fed = 0u64;
        for i in 0..100_000 {
            let c = format!("\r{i:>6}/100000 [{}]", "#".repeat(i % 50));
            fed += c.len() as u64;
            s.push(c.as_bytes(), &mut |p| {
                assert!(matches!(p, Piece::Progress(_)));
                progress += 1;
            });
        }
        assert_eq!(progress, 99_999);
        assert!(s.examined <= fed);
    }

    #[test]
    fn cuts_keep_characters_whole() {
        let mut text = vec![b'a'; MAX_LINE - 1];
        text.extend_from_slice("é".as_bytes());
        text.extend_from_slice(b"z\n");
        let out = split(&[&text]);
        assert_eq!(out.len(), 2);
        let L(first) = &out[0] else { panic!() };
        assert_eq!(first.len(), MAX_LINE - 1);
        assert_eq!(out[1], L("éz".into()));
    }
}
