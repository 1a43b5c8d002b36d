//! From the file as written to the resolved [`Config`]: every check, with file:line:column errors.
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use globset::GlobSetBuilder;
use toml::Spanned;

use super::*;

/// A glob for messages: a pattern can be megabytes long.
pub(super) fn clip_glob(p: &str) -> String {
    const MAX: usize = 80;
    if p.len() <= MAX {
        return p.to_owned();
    }
    let mut end = MAX;
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &p[..end], p.len())
}

/// The located error for a configuration whose globs parse but do not compile: the first glob
/// (in file order) that fails to compile on its own, else the segment whose globs are too much
/// together.
pub(super) fn locate_uncompilable(
    segments: &[Segment],
    segment_spans: &[Range<usize>],
    err: &globset::Error,
    ctx: &Ctx<'_>,
) -> ConfigError {
    let alone = |g: &str| {
        let glob = compile_glob(g).ok()?;
        GlobSetBuilder::new().add(glob).build().err()
    };
    let spans = ctx.glob_spans.borrow();
    let mut globs: Vec<(&str, Range<usize>)> = segments
        .iter()
        .flat_map(|s| s.include.iter().chain(&s.exclude))
        .filter(|g| plain_glob(g).is_none())
        .filter_map(|g| Some((g.as_str(), spans.get(g.as_str())?.clone())))
        .collect();
    globs.sort_by_key(|(_, span)| span.start);
    globs.dedup_by_key(|(g, _)| *g);
    for (g, span) in &globs {
        if let Some(e) = alone(g) {
            return ctx.error_hint(
                span.clone(),
                format!(
                    "invalid glob `{}`: too large to compile ({})",
                    clip_glob(g),
                    e.kind()
                ),
                Some("split it into several simpler globs"),
            );
        }
    }
    // Each compiles alone: point at the segment with the most globs that need the engine.
    let i = segments
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| {
            s.include
                .iter()
                .chain(&s.exclude)
                .filter(|g| plain_glob(g).is_none())
                .map(String::len)
                .sum::<usize>()
        })
        .map_or(0, |(i, _)| i);
    ctx.error_hint(
        segment_spans.get(i).cloned().unwrap_or(0..0),
        format!(
            "the globs of the configuration are too large to compile together ({}), the largest share being segment `{}`'s",
            err.kind(),
            segments.get(i).map_or("", |s| s.name.as_str())
        ),
        Some("use fewer or simpler globs (plain paths and `DIR/**` cost nothing)"),
    )
}

pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
    /// Where each glob was first written (the `tests` entry for those the shorthand adds), to
    /// locate a glob that parses but does not compile (see [`locate_uncompilable`]).
    pub(super) glob_spans: std::cell::RefCell<HashMap<String, Range<usize>>>,
}

impl Ctx<'_> {
    fn note_glob(&self, glob: &str, span: Range<usize>) {
        self.glob_spans
            .borrow_mut()
            .entry(glob.to_owned())
            .or_insert(span);
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.error_hint(span, message, None)
    }

    fn error_hint(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: hint.map(str::to_owned),
        }
    }

    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim_end().replace('\n', "; ");
        self.error(e.span().unwrap_or(0..0), message)
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

pub(super) fn resolve(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    if *raw.version.get_ref() != VERSION {
        return Err(ctx.error(
            raw.version.span(),
            format!(
                "unsupported config version {} (this checkdef understands version {VERSION})",
                raw.version.get_ref()
            ),
        ));
    }
    let defaults = raw.defaults.unwrap_or_default();
    for g in defaults.include.iter().chain(&defaults.exclude) {
        check_glob(g, ctx)?;
    }
    check_env_map(&defaults.env, ctx)?;
    for v in defaults.passthrough.iter().chain(&defaults.redact_env) {
        check_var_name(v, ctx)?;
    }
    for f in defaults.fingerprint.iter().flatten() {
        check_fingerprint(f, ctx)?;
    }
    duration_field(defaults.timeout.as_ref(), "timeout", ctx)?;
    let fingerprint_timeout = duration_field(
        defaults.fingerprint_timeout.as_ref(),
        "fingerprint_timeout",
        ctx,
    )?
    .unwrap_or(DEFAULT_FINGERPRINT_TIMEOUT);

    if raw.segment.is_empty() {
        return Err(ctx.error(
            raw.version.span(),
            "no [[segment]] is declared (add at least one segment with a name, include and command)",
        ));
    }
    let mut seen: HashMap<String, Range<usize>> = HashMap::new();
    let mut segments = Vec::with_capacity(raw.segment.len());
    let mut segment_spans = Vec::with_capacity(raw.segment.len());
    for spanned in raw.segment {
        let seg_span = spanned.span();
        segment_spans.push(seg_span.clone());
        let seg = spanned.into_inner();
        let name = seg.name.get_ref().clone();
        check_segment_name(&seg.name, ctx)?;
        if let Some(first) = seen.get(&name) {
            let (line, _) = line_column(ctx.text, first.start);
            return Err(ctx.error(
                seg.name.span(),
                format!("duplicate segment name `{name}` (first declared on line {line})"),
            ));
        }
        seen.insert(name.clone(), seg.name.span());
        segments.push(resolve_segment(seg, seg_span, &defaults, ctx)?);
    }

    let cache = match raw.cache {
        Some(c) => resolve_cache(c, ctx)?,
        None => CacheConfig::default(),
    };
    let hook = match raw.hook {
        Some(h) => HookConfig {
            mode: h.mode,
            commits: h.commits,
            tags: h.tags,
            budget: duration_field(h.budget.as_ref(), "budget", ctx)?,
            on_budget: h.on_budget,
        },
        None => HookConfig::default(),
    };
    let redact_env = distinct(defaults.redact_env.iter().map(|s| s.get_ref().clone()));
    // Validation by building what will be used: a glob can parse and still be too large for
    // the glob engine (alone, or together with the others).
    let matcher = Matcher::new(&segments)
        .map_err(|e| locate_uncompilable(&segments, &segment_spans, &e, ctx))?;
    Ok(Config {
        path: ctx.path.to_path_buf(),
        segments,
        cache,
        hook,
        redact_env,
        fingerprint_timeout,
        matcher,
    })
}

/// A duration-valued field (`timeout`), validated with file:line:column.
pub(super) fn duration_field(
    value: Option<&Spanned<String>>,
    field: &str,
    ctx: &Ctx<'_>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    value
        .map(|v| {
            crate::duration::parse(v.get_ref())
                .map_err(|why| ctx.error(v.span(), format!("{field}: {why}")))
        })
        .transpose()
}

pub(super) fn resolve_segment(
    seg: RawSegment,
    seg_span: Range<usize>,
    defaults: &RawDefaults,
    ctx: &Ctx<'_>,
) -> Result<Segment, ConfigError> {
    let name = seg.name.get_ref().clone();
    let own_include = seg
        .include
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or(&[]);
    let tests = seg.tests.as_ref().map(|l| l.get_ref().as_slice());
    if own_include.is_empty() && tests.is_none_or(|t| t.is_empty()) {
        let span = seg.include.as_ref().map_or(seg.name.span(), |l| l.span());
        return Err(ctx.error(
            span,
            format!(
                "segment `{name}` has no inputs (give it `include = [...]` globs or the pytest `tests = [...]` shorthand)"
            ),
        ));
    }
    for g in own_include.iter().chain(&seg.exclude) {
        check_glob(g, ctx)?;
    }
    let command = segment_command(&seg, &name, seg_span, ctx)?;

    let mut include: Vec<String> = defaults
        .include
        .iter()
        .chain(own_include)
        .map(|s| s.get_ref().clone())
        .collect();
    let declared_include = distinct(include.clone());
    if let Some(tests) = tests {
        include.extend(pytest_inputs(tests.iter().map(|s| s.get_ref().as_str())));
        for t in tests {
            for g in pytest_inputs([t.get_ref().as_str()]) {
                ctx.note_glob(&g, t.span());
            }
        }
    }
    let include = distinct(include);
    let exclude = distinct(
        defaults
            .exclude
            .iter()
            .chain(&seg.exclude)
            .map(|s| s.get_ref().clone()),
    );

    check_env_map(&seg.env, ctx)?;
    for v in &seg.passthrough {
        check_var_name(v, ctx)?;
    }
    for f in seg.fingerprint.iter().flatten() {
        check_fingerprint(f, ctx)?;
    }
    let (env, passthrough) = segment_env(&seg, defaults);
    let timeout = match duration_field(seg.timeout.as_ref(), "timeout", ctx)? {
        Some(t) => t,
        None => duration_field(defaults.timeout.as_ref(), "timeout", ctx)?
            .unwrap_or(DEFAULT_CHECK_TIMEOUT),
    };
    let (fingerprint, fingerprint_watch) = segment_fingerprints(&seg, defaults, &command);
    // Exit code 5 means "no tests collected" only to pytest: the rule is refused on any other
    // command, and `[defaults] no_tests` applies to the pytest checks only.
    let is_pytest = tests.is_some() || crate::run::warm::is_pytest_command(&command);
    let no_tests = match &seg.no_tests {
        Some(n) if *n.get_ref() == NoTests::Pass && !is_pytest => {
            return Err(ctx.error(
                n.span(),
                format!(
                    "segment `{name}`: `no_tests` applies to pytest checks only (`tests = [...]`, or a command that is plainly `pytest ...` or `python -m pytest ...`); for another command, exit 0 is its pass"
                ),
            ));
        }
        Some(n) => *n.get_ref(),
        None if is_pytest => defaults.no_tests.unwrap_or_default(),
        None => NoTests::Fail,
    };

    Ok(Segment {
        name,
        description: seg.description,
        include,
        exclude,
        declared_include,
        command,
        tests: seg.tests.map(|t| {
            t.into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect()
        }),
        env,
        passthrough,
        fingerprint,
        fingerprint_watch,
        sandbox: seg.sandbox,
        network: seg.network,
        timeout,
        runner: seg.runner.or(defaults.runner).unwrap_or_default(),
        no_tests,
        matcher: OnceLock::new(),
    })
}

/// A segment's command: its `command`, or the pytest run of its `tests` (exactly one of them).
fn segment_command(
    seg: &RawSegment,
    name: &str,
    seg_span: Range<usize>,
    ctx: &Ctx<'_>,
) -> Result<String, ConfigError> {
    let command = match (&seg.command, &seg.tests) {
        (Some(c), Some(t)) => {
            let span = if c.span().start > t.span().start {
                c.span()
            } else {
                t.span()
            };
            return Err(ctx.error(
                span,
                format!("segment `{name}` sets both `command` and `tests`; use one of them"),
            ));
        }
        (Some(c), None) => {
            check_nonempty(c, "command", ctx)?;
            c.get_ref().clone()
        }
        (None, Some(t)) => {
            if t.get_ref().is_empty() {
                return Err(ctx.error(
                    t.span(),
                    format!("segment `{name}` has an empty `tests` list"),
                ));
            }
            for test in t.get_ref() {
                check_test_path(test, ctx)?;
            }
            pytest_command(t.get_ref().iter().map(|s| s.get_ref().as_str()))
        }
        (None, None) => {
            return Err(ctx.error(
                seg.name.span().start..seg_span.end.min(seg.name.span().end),
                format!("segment `{name}` has no `command` (or pytest `tests = [...]` shorthand)"),
            ));
        }
    };
    Ok(command)
}

/// A segment's hashed environment (`[defaults] env`, then its own) and its passthrough
/// variables (`PATH` always, unless `env` sets it), sorted and distinct.
fn segment_env(
    seg: &RawSegment,
    defaults: &RawDefaults,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in defaults.env.iter().chain(&seg.env) {
        env.insert(k.get_ref().clone(), v.get_ref().clone());
    }
    let mut passthrough: Vec<String> = defaults
        .passthrough
        .iter()
        .chain(&seg.passthrough)
        .map(|s| s.get_ref().clone())
        .chain(std::iter::once("PATH".to_owned()))
        .filter(|v| !env.contains_key(v))
        .collect();
    passthrough.sort();
    passthrough.dedup();
    (env, passthrough)
}

/// A segment's fingerprints (`[defaults]`'s, then its own, distinct; by default the Python
/// environment of a check that runs Python) and the watch lists of the commands that may be
/// kept across invocations.
#[allow(clippy::type_complexity)]
fn segment_fingerprints(
    seg: &RawSegment,
    defaults: &RawDefaults,
    command: &str,
) -> (Vec<Fingerprint>, BTreeMap<String, Vec<String>>) {
    let declared = || {
        defaults
            .fingerprint
            .iter()
            .flatten()
            .chain(seg.fingerprint.iter().flatten())
    };
    let mut fingerprint: Vec<Fingerprint> = Vec::new();
    for f in declared() {
        let f = f.get_ref().resolved();
        if !fingerprint.iter().any(|known| known.key() == f.key()) {
            fingerprint.push(f);
        }
    }
    // Nothing declared (not even `fingerprint = []`): a check that runs Python depends on its
    // environment, so that is hashed by default (docs/configuration.md).
    if defaults.fingerprint.is_none() && seg.fingerprint.is_none() {
        let interpreter = match &seg.tests {
            Some(_) => Some("python3"),
            None => crate::pyenv::command_interpreter(command),
        };
        if let Some(i) = interpreter {
            fingerprint.push(Fingerprint::Python(i.to_owned()));
        }
    }
    // A command is reused across invocations only if every declaration of it says what it
    // depends on; the watch lists of several declarations add up.
    let mut fingerprint_watch: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for fp in &fingerprint {
        let Fingerprint::Command(cmd) = fp else {
            continue;
        };
        let mut watch = Vec::new();
        let all_watched = declared()
            .filter(|f| f.get_ref().resolved() == *fp)
            .all(|f| match f.get_ref().watch() {
                None => false,
                Some(w) => {
                    watch.extend(w.iter().cloned());
                    true
                }
            });
        if all_watched {
            watch.sort();
            watch.dedup();
            fingerprint_watch.insert(cmd.clone(), watch);
        }
    }
    (fingerprint, fingerprint_watch)
}

pub(super) fn resolve_cache(c: RawCache, ctx: &Ctx<'_>) -> Result<CacheConfig, ConfigError> {
    if let Some(remote) = &c.remote {
        let url = remote.get_ref();
        let ok = ["http://", "https://", "file://", "s3://"]
            .iter()
            .any(|scheme| {
                url.len() > scheme.len() && url[..scheme.len()].eq_ignore_ascii_case(scheme)
            });
        if !ok || url.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(ctx.error(
                remote.span(),
                format!(
                    "invalid cache remote `{}` (expected an http://, https://, s3:// or file:// URL)",
                    cache_proto::RedactedUrl::new(url)
                ),
            ));
        }
        if url.starts_with("s3://")
            && let Err(e) = cache_proto::store::S3Location::parse(url)
        {
            return Err(ctx.error(remote.span(), format!("invalid cache remote: {e}")));
        }
    }
    let mut keys = Vec::new();
    for k in &c.trusted_public_keys {
        let (key, label) = match k.get_ref() {
            RawKey::Plain(s) => (s.clone(), None),
            RawKey::Labelled(l) => (l.key.clone(), l.label.clone()),
        };
        let name = check_public_key(&key).map_err(|why| {
            ctx.error(
                k.span(),
                format!("invalid trusted public key `{key}`: {why}"),
            )
        })?;
        if let Some(label) = &label
            && (label.is_empty() || label.chars().any(char::is_whitespace))
        {
            return Err(ctx.error(
                k.span(),
                format!("invalid key label `{label}` (expected a word such as `ci`)"),
            ));
        }
        if keys.iter().any(|t: &KeyEntry| t.key == key) {
            return Err(ctx.error(
                k.span(),
                format!("trusted public key `{name}` is listed twice"),
            ));
        }
        keys.push(KeyEntry { name, key, label });
    }
    let accept = c.accept.as_ref().map(|a| *a.get_ref()).unwrap_or_default();
    if accept == Accept::CiOnly && !keys.iter().any(|k| k.label.as_deref() == Some("ci")) {
        let span = c.accept.as_ref().map(|a| a.span()).unwrap_or(0..0);
        return Err(ctx.error(
            span,
            "accept = \"ci-only\" needs at least one trusted public key labelled \"ci\" (write it as { key = \"...\", label = \"ci\" })",
        ));
    }
    let timeout_secs = match &c.timeout_secs {
        Some(t) if *t.get_ref() <= 0 || *t.get_ref() > 3600 => {
            return Err(ctx.error(t.span(), "timeout-secs must be between 1 and 3600"));
        }
        Some(t) => Some(*t.get_ref() as u64),
        None => None,
    };
    Ok(CacheConfig {
        remote: c.remote.map(Spanned::into_inner),
        trusted_public_keys: keys,
        accept,
        timeout_secs,
    })
}

/// Check `name:base64` where the base64 part decodes to a 32-byte ed25519 key; return the name.
pub(super) fn check_public_key(key: &str) -> Result<String, &'static str> {
    use base64::Engine as _;
    let (name, b64) = key.split_once(':').ok_or("expected `name:base64`")?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the key name before `:` is empty or contains whitespace");
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the part after `:` is not valid base64")?;
    if bytes.len() != 32 {
        return Err("the decoded key is not 32 bytes (an ed25519 public key)");
    }
    Ok(name.to_owned())
}

pub(super) fn check_segment_name(name: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let n = name.get_ref();
    let why = if n.is_empty() {
        Some("it is empty".to_owned())
    } else if n.starts_with('.') {
        Some("it starts with `.`".to_owned())
    } else if n.len() > MAX_SEGMENT_NAME_LEN {
        Some(format!(
            "it is longer than {MAX_SEGMENT_NAME_LEN} characters"
        ))
    } else {
        n.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._+?=-".contains(*c)))
            .map(|c| format!("it contains {c:?}"))
    };
    match why {
        Some(why) => Err(ctx.error(
            name.span(),
            format!("invalid segment name `{n}`: {why} (allowed: letters, digits and . _ + ? = -)"),
        )),
        None => Ok(()),
    }
}

pub(super) fn check_glob(g: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let p = g.get_ref();
    ctx.note_glob(p, g.span());
    let why = if p.is_empty() {
        Some("it is empty".to_owned())
    } else if p.starts_with('/') {
        Some("patterns are relative to the repository root; remove the leading `/`".to_owned())
    } else if p == "." || p.starts_with("./") || p.split('/').any(|c| c == ".." || c == ".") {
        Some(
            "`.` and `..` components never match; write the path from the repository root"
                .to_owned(),
        )
    } else if p.ends_with('/') {
        Some(format!(
            "patterns match files, not directories; write `{p}**`"
        ))
    } else {
        compile_glob(p).err().map(|e| e.kind().to_string())
    };
    match why {
        Some(why) => Err(ctx.error(g.span(), format!("invalid glob `{}`: {why}", clip_glob(p)))),
        None => Ok(()),
    }
}

pub(super) fn check_var_name(v: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let n = v.get_ref();
    if n.is_empty() || n.contains('=') || n.contains('\0') || n.chars().any(char::is_whitespace) {
        return Err(ctx.error(v.span(), format!("invalid environment variable name `{n}`")));
    }
    Ok(())
}

pub(super) fn check_env_map(
    env: &BTreeMap<Spanned<String>, Spanned<String>>,
    ctx: &Ctx<'_>,
) -> Result<(), ConfigError> {
    for (k, v) in env {
        check_var_name(k, ctx)?;
        if v.get_ref().contains('\0') {
            return Err(ctx.error(
                v.span(),
                format!("the value of `{}` contains a NUL byte", k.get_ref()),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_nonempty(
    s: &Spanned<String>,
    what: &str,
    ctx: &Ctx<'_>,
) -> Result<(), ConfigError> {
    if s.get_ref().trim().is_empty() {
        return Err(ctx.error(s.span(), format!("empty {what}")));
    }
    if s.get_ref().contains('\0') {
        return Err(ctx.error(s.span(), format!("{what} contains a NUL byte")));
    }
    Ok(())
}

pub(super) fn check_fingerprint(
    f: &Spanned<RawFingerprint>,
    ctx: &Ctx<'_>,
) -> Result<(), ConfigError> {
    if let RawFingerprint::Table(t) = f.get_ref() {
        let problem = match (&t.command, &t.watch, &t.python) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => None,
            (Some(_), None, None) => Some(
                "missing field `watch` (a watched command needs `watch = [...]`; a plain command is just a string)",
            ),
            (Some(_), _, Some(_)) => Some(
                "a fingerprint table has either `command` (with `watch`) or `python`, not both",
            ),
            (None, _, None) => {
                Some("a fingerprint table needs `command` (with `watch`) or `python`")
            }
            (None, Some(_), Some(_)) => Some(
                "`watch` belongs to a command; `{ python = ... }` tracks its environment itself",
            ),
        };
        if let Some(p) = problem {
            return Err(ctx.error(f.span(), p));
        }
        if let Some(p) = &t.python {
            let p = Spanned::new(f.span(), p.clone());
            check_nonempty(&p, "python interpreter", ctx)?;
            return Ok(());
        }
    }
    let command = Spanned::new(f.span(), f.get_ref().resolved().key());
    check_nonempty(&command, "fingerprint command", ctx)?;
    if let Some(watch) = f.get_ref().watch() {
        for entry in watch {
            // Variable names follow the rule of `passthrough`; paths must not be empty.
            let what = match entry.strip_prefix('$') {
                Some(var)
                    if var.is_empty()
                        || var.contains(['=', '\0'])
                        || var.chars().any(char::is_whitespace) =>
                {
                    "an environment variable name after `$`"
                }
                Some(_) => continue,
                None if entry.trim().is_empty() || entry.contains('\0') => "a file path",
                None => continue,
            };
            return Err(ctx.error(
                f.span(),
                format!(
                    "fingerprint `{}`: watch entry `{entry}` is not {what}",
                    command.get_ref()
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_test_path(t: &Spanned<String>, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let file = test_file(t.get_ref());
    if file.is_empty()
        || file.starts_with('/')
        || file
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        || t.get_ref().contains('\0')
    {
        return Err(ctx.error(
            t.span(),
            format!(
                "invalid test path `{}` (expected a file or directory relative to the repository root, optionally with ::node)",
                t.get_ref()
            ),
        ));
    }
    Ok(())
}
