//! Human output of a run on stderr, in the seed's spirit: one line per segment, failures
//! followed by the tail of their log, then a summary; [`HumanReporter`] turns the engine's
//! events into it. Colour only when stderr is a terminal and `NO_COLOR` is unset; every line
//! still reads correctly without colour or emoji. Progress bars only on a TTY, never under `CI`,
//! `--quiet`, `--verbose` (which streams output instead) or `CHECKDEF_NO_PROGRESS` (see
//! [`crate::printer`]).
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::printer::Printer;
pub use crate::printer::Style;
use crate::result::Status;
use crate::run::lines::Piece;
use crate::run::{Event, Origin, Reporter, RunReport, SegmentOutcome};

/// How many log lines follow a failure.
pub const FAILURE_TAIL_LINES: usize = 25;

/// Seconds with two decimals, the unit the seed uses.
pub fn secs(d: f64) -> String {
    format!("{d:.2}s")
}

/// The last `n` lines of a log, lossily decoded, each indented.
pub fn log_tail(log: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!(
            "    … {start} earlier lines (run with -v for the full log)\n"
        ));
    }
    for l in &lines[start..] {
        out.push_str("    ");
        out.push_str(&as_shown(l));
        out.push('\n');
    }
    out
}

/// The longest log line a failure tail shows whole; longer ones keep their end.
pub const TAIL_LINE_CHARS: usize = 2000;

/// A log line as a terminal would leave it: what follows its last `\r` (tqdm-style progress
/// redraws the line in place), and at most [`TAIL_LINE_CHARS`] characters of its end.
fn as_shown(line: &str) -> std::borrow::Cow<'_, str> {
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').next().unwrap_or(line);
    let chars = line.chars().count();
    if chars <= TAIL_LINE_CHARS {
        return line.into();
    }
    let skip = chars - TAIL_LINE_CHARS;
    let rest: String = line.chars().skip(skip).collect();
    format!("… ({skip} characters) {rest}").into()
}

/// Progress display: one spinner per running check with its elapsed time and last output line.
pub struct Progress {
    mp: MultiProgress,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
        }
    }

    pub fn multi(&self) -> &MultiProgress {
        &self.mp
    }

    pub fn start(&self, name: &str, width: usize) -> ProgressBar {
        let pb = self.mp.add(ProgressBar::new_spinner());
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:{width}}}  running  {{elapsed:>4}}  {{wide_msg:.dim}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        pb.set_style(style);
        pb.set_prefix(name.to_owned());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// The seed-style line for one segment.
pub fn outcome_line(o: &SegmentOutcome, width: usize, style: &Style) -> String {
    let name = format!("{:width$}", o.name);
    match (o.status(), o.origin) {
        (Status::Passed, Origin::Cache(src)) => {
            let mut s = format!(
                "✅ {name}  {}  cached ({}), original {}",
                style.green("PASSED"),
                src.as_str(),
                secs(o.original_duration_s.unwrap_or(0.0))
            );
            if let Some(k) = &o.signed_by {
                s.push_str(&format!(", signed by {k}"));
            }
            s
        }
        (Status::Passed, Origin::Run) => format!(
            "✅ {name}  {}  {}",
            style.green("PASSED"),
            secs(o.duration_s)
        ),
        (Status::Failed, _) => {
            let how = o.verdict.to_string();
            format!(
                "❌ {name}  {}  {how}, {}",
                style.red("FAILED"),
                secs(o.duration_s)
            )
        }
    }
}

/// A note and a hint when checks that could have run warm ran in fresh processes because the
/// interpreter on `PATH` is a shim (pyenv's `~/.pyenv/shims/python3`): every such check pays a
/// Python start-up and a pytest import, silently, unless the run says so.
pub fn runner_hint(printer: &crate::printer::Printer, r: &RunReport) {
    let shims: Vec<&str> = r
        .segments
        .iter()
        .filter(|o| o.runner == Some(crate::config::Runner::Process))
        .filter_map(|o| o.runner_note.as_deref())
        .filter(|n| crate::run::warm::note_is_shim(n))
        .collect();
    let Some(first) = shims.first() else {
        return;
    };
    let n = shims.len();
    printer.info(&format!(
        "note: {n} check{} ran in fresh processes, not in the warm pytest runner: {first}",
        if n == 1 { "" } else { "s" }
    ));
    if !printer.is_quiet() {
        printer.hint(
            "put the interpreter's own directory first on PATH (with pyenv: PATH=\"$(pyenv prefix)/bin:$PATH\"); see docs/configuration.md, \"Runners: warm and process\"",
        );
    }
}

/// The summary line.
pub fn summary_line(r: &RunReport, style: &Style) -> String {
    let verdict = if r.all_passed() {
        style.green(&style.bold("all checks passed"))
    } else if r.interrupted {
        style.red(&style.bold("interrupted"))
    } else {
        style.red(&style.bold(&format!("{} failed", r.failed())))
    };
    format!(
        "checkdef: {verdict}: {} passed ({} ran, {} cached), {} failed in {} wall; {} saved by the cache",
        r.passed(),
        r.ran(),
        r.cached(),
        r.failed(),
        secs(r.wall_s),
        secs(r.seconds_saved())
    )
}

/// How often `-v` prints a line that `\r` keeps redrawing.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The [`Reporter`] of `checkdef run` and the hook: prints each event through the printer.
pub struct HumanReporter {
    printer: Printer,
    style: Style,
    /// Stream each check's output live, replay cached results' logs.
    verbose: bool,
    /// The width of the segment-name column.
    width: usize,
    progress: Mutex<Bars>,
    /// When each segment's `\r` progress redraw was last printed under `-v`.
    last_progress: Mutex<HashMap<String, Instant>>,
}

#[derive(Default)]
struct Bars {
    multi: Option<Progress>,
    running: HashMap<String, ProgressBar>,
}

impl HumanReporter {
    /// For the segments of `plan` (names padded to the longest).
    pub fn for_plan(printer: Printer, verbose: bool, plan: &crate::plan::Plan) -> HumanReporter {
        let width = plan.segments.iter().map(|s| s.name.len()).max();
        HumanReporter::new(printer, verbose, width.unwrap_or(0))
    }

    /// For segments whose longest name is `width` characters long.
    pub fn new(printer: Printer, verbose: bool, width: usize) -> HumanReporter {
        HumanReporter {
            printer,
            style: printer.style(),
            verbose,
            width,
            progress: Mutex::new(Bars::default()),
            last_progress: Mutex::new(HashMap::new()),
        }
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, Bars> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A line above the progress bars, if any are shown.
    fn line(&self, text: &str) {
        let bars = self.bars();
        let mp = bars.multi.as_ref().map(Progress::multi);
        self.printer.line_above(mp, text);
    }
}

impl Reporter for HumanReporter {
    fn wants_output(&self) -> bool {
        self.verbose || self.style.progress
    }

    fn report(&self, event: Event<'_>) {
        match event {
            Event::Warning(w) => {
                self.line(&self.printer.warning_line(w.message));
                if let Some(h) = w.hint {
                    self.line(&self.printer.hint_line(h));
                }
            }
            Event::Cached(o) => {
                if !self.style.quiet {
                    self.line(&outcome_line(o, self.width, &self.style));
                }
                if self.verbose {
                    self.line(&self.style.dim(&String::from_utf8_lossy(&o.log)));
                }
            }
            Event::Started { segment } => {
                if self.style.progress && !self.verbose {
                    let mut bars = self.bars();
                    let bar = bars
                        .multi
                        .get_or_insert_with(Progress::new)
                        .start(segment, self.width);
                    bars.running.insert(segment.to_owned(), bar);
                }
            }
            Event::Waiting { segment } => self.line(&self.style.dim(&format!(
                "checkdef: {segment} is being run by another checkdef (a background run or another push); waiting for its result"
            ))),
            Event::Output { segment, piece } => {
                if self.verbose {
                    let l = match piece {
                        Piece::Line(l) => l,
                        Piece::Progress(l) => {
                            // A progress bar redrawn a thousand times is one line on a
                            // terminal, not a thousand: print it at most every few seconds (its
                            // final state comes with its newline).
                            let mut last =
                                self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
                            let now = Instant::now();
                            if last
                                .get(segment)
                                .is_some_and(|t| now.duration_since(*t) < PROGRESS_EVERY)
                            {
                                return;
                            }
                            last.insert(segment.to_owned(), now);
                            l
                        }
                    };
                    let prefix = self.style.dim(&format!("{segment:w$} │ ", w = self.width));
                    self.printer
                        .line(&format!("{prefix}{}", String::from_utf8_lossy(l)));
                } else if let Some(bar) = self.bars().running.get(segment) {
                    let (Piece::Line(l) | Piece::Progress(l)) = piece;
                    let text = String::from_utf8_lossy(l);
                    let t = text.trim();
                    if !t.is_empty() {
                        bar.set_message(t.to_owned());
                    }
                }
            }
            Event::Undeclared { message } => self.line(&self.style.red(message)),
            Event::Finished {
                outcome,
                interrupted,
            } => {
                if let Some(bar) = self.bars().running.remove(&outcome.name) {
                    bar.finish_and_clear();
                }
                let failed = !outcome.passed();
                if !self.style.quiet || failed {
                    self.line(&outcome_line(outcome, self.width, &self.style));
                    if failed && !interrupted && !self.verbose {
                        self.line(log_tail(&outcome.log, FAILURE_TAIL_LINES).trim_end());
                    }
                }
            }
            Event::Summary(line) => self.line(&format!("checkdef: {line}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let log = (1..=30).map(|i| format!("l{i}\n")).collect::<String>();
        let t = log_tail(log.as_bytes(), 3);
        assert!(t.contains("27 earlier lines"));
        assert!(t.ends_with("    l28\n    l29\n    l30\n"));
        assert_eq!(log_tail(b"one", 5), "    one\n");
    }

    #[test]
    fn tail_lines_show_what_a_terminal_would() {
        let t = log_tail(b"\r 10%\r 50%\r100% done\nnext\r\n", 5);
        assert_eq!(t, "    100% done\n    next\n");
        let long = "y".repeat(TAIL_LINE_CHARS + 10);
        let t = log_tail(long.as_bytes(), 1);
        assert!(t.starts_with("    … (10 characters) y"), "{}", &t[..40]);
        assert_eq!(
            t.trim_end().chars().filter(|c| *c == 'y').count(),
            TAIL_LINE_CHARS
        );
    }
}
