//! The `tests` shorthand: the pytest command and the files pytest reads.

/// The configuration file names pytest looks for, in its order of precedence (pytest 9's
/// `CONFIG_LOADERS_BY_NAME`; pytest 8 reads all but the two `.toml` ones). pytest searches
/// each of them in the common ancestor of its test arguments and every directory above it, so
/// the `tests` shorthand adds each name in every directory on a test's path.
pub const PYTEST_CONFIG_FILES: [&str; 7] = [
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
];

/// Files besides the configuration that pytest reads, in every directory from the rootdir down
/// to a test: `conftest.py` (loaded), `__init__.py` (it decides a test module's package and so
/// its import name, and is imported), and `setup.py`, whose presence makes its directory the
/// rootdir when no configuration file is found (and the rootdir decides which conftest.py files
/// are loaded).
pub const PYTEST_PATH_FILES: [&str; 3] = ["conftest.py", "__init__.py", "setup.py"];

/// The file or directory part of a pytest node id (`tests/test_a.py::test_x` → `tests/test_a.py`).
pub(crate) fn test_file(test: &str) -> &str {
    test.split_once("::").map_or(test, |(f, _)| f)
}

/// `python3 -m pytest <tests>` with each test quoted for `sh` when needed.
pub fn pytest_command<'a>(tests: impl IntoIterator<Item = &'a str>) -> String {
    let mut cmd = String::from("python3 -m pytest");
    for t in tests {
        cmd.push(' ');
        cmd.push_str(&shell_quote(t));
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=+,@%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The inputs the `tests` shorthand adds: the tests themselves (as a file or a directory), and
/// every file pytest itself reads for them in each directory from the repository root down to
/// each test (the test itself, when it is a directory, included): the configuration files
/// ([`PYTEST_CONFIG_FILES`]) and [`PYTEST_PATH_FILES`]. A directory test's `<dir>/**` covers
/// what lies below it.
pub fn pytest_inputs<'a>(tests: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut dirs: Vec<String> = vec![String::new()];
    let mut own: Vec<String> = Vec::new();
    for t in tests {
        let file = test_file(t).trim_end_matches('/');
        let escaped = globset::escape(file);
        own.push(escaped.clone());
        own.push(format!("{escaped}/**"));
        let comps: Vec<&str> = file.split('/').collect();
        // Every proper prefix is a directory on the path. The entry itself is one too unless
        // it names a module (a directory test's `/**` covers its files already, but pytest's
        // configuration search starts there, so they are listed for clarity).
        let last = if file.ends_with(".py") {
            comps.len() - 1
        } else {
            comps.len()
        };
        for k in 1..=last {
            dirs.push(comps[..k].join("/"));
        }
    }
    for d in distinct(dirs) {
        for name in PYTEST_CONFIG_FILES.iter().chain(&PYTEST_PATH_FILES) {
            out.push(if d.is_empty() {
                (*name).to_owned()
            } else {
                format!("{}/{name}", globset::escape(&d))
            });
        }
    }
    out.extend(own);
    distinct(out)
}

pub(super) fn distinct(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}
