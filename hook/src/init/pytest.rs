//! pytest's configuration at the repository root, as far as `checkdef init` needs it:
//! which file it is, `testpaths`, `python_files` and `pythonpath`.
//!
//! The file is chosen as pytest does: `pytest.toml` (also `.pytest.toml`, pytest 9) and then
//! `pytest.ini` (also `.pytest.ini`) always win, then
//! `pyproject.toml` with `[tool.pytest.ini_options]` (or pytest 9's native `[tool.pytest]`),
//! then `tox.ini` with `[pytest]`, then `setup.cfg` with `[tool:pytest]`. INI values that are
//! lists are whitespace-separated and may continue on indented lines.
use super::deps::RepoFiles;

/// What `checkdef init` uses of pytest's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PytestConfig {
    /// The configuration file, if any.
    pub file: Option<String>,
    /// `testpaths` (empty: search everywhere).
    pub testpaths: Vec<String>,
    /// `python_files` (default `test_*.py *_test.py`).
    pub python_files: Vec<String>,
    /// `pythonpath`, when set.
    pub pythonpath: Option<Vec<String>>,
}

impl Default for PytestConfig {
    fn default() -> Self {
        PytestConfig {
            file: None,
            testpaths: Vec::new(),
            python_files: vec!["test_*.py".to_owned(), "*_test.py".to_owned()],
            pythonpath: None,
        }
    }
}

impl PytestConfig {
    /// Whether a file's base name matches `python_files` (fnmatch patterns).
    pub fn matches_python_files(&self, name: &str) -> bool {
        self.python_files.iter().any(|p| {
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .is_ok_and(|g| g.compile_matcher().is_match(name))
        })
    }

    /// Whether `path` is below one of `testpaths` (or there are none). Entries may be globs.
    pub fn in_testpaths(&self, path: &str) -> bool {
        if self.testpaths.is_empty() {
            return true;
        }
        self.testpaths.iter().any(|tp| {
            let tp = tp.trim_start_matches("./").trim_end_matches('/');
            if tp.is_empty() || tp == "." {
                return true;
            }
            if path == tp || path.starts_with(&format!("{tp}/")) {
                return true;
            }
            // A glob testpath: match it against each ancestor directory of `path`.
            let Ok(g) = globset::GlobBuilder::new(tp)
                .literal_separator(true)
                .build()
            else {
                return false;
            };
            let m = g.compile_matcher();
            let mut dir = path;
            while let Some((d, _)) = dir.rsplit_once('/') {
                if m.is_match(d) {
                    return true;
                }
                dir = d;
            }
            m.is_match(path)
        })
    }
}

/// Find and read pytest's configuration at the root.
pub fn load(files: &RepoFiles, read: &dyn Fn(&str) -> Option<Vec<u8>>) -> PytestConfig {
    let text = |p: &str| -> Option<String> {
        if !files.is_file(p) {
            return None;
        }
        read(p).map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    // pytest 9's own TOML files come first and, like pytest.ini, win even when empty.
    for name in ["pytest.toml", ".pytest.toml"] {
        if let Some(t) = text(name) {
            return from_pytest_toml(name, &t);
        }
    }
    for name in ["pytest.ini", ".pytest.ini"] {
        if let Some(t) = text(name) {
            let section = ini_section(&t, "pytest").unwrap_or_default();
            return from_ini(name, &section);
        }
    }
    if let Some(t) = text("pyproject.toml")
        && let Some(cfg) = from_pyproject(&t)
    {
        return cfg;
    }
    if let Some(t) = text("tox.ini")
        && let Some(section) = ini_section(&t, "pytest")
    {
        return from_ini("tox.ini", &section);
    }
    if let Some(t) = text("setup.cfg")
        && let Some(section) = ini_section(&t, "tool:pytest")
    {
        return from_ini("setup.cfg", &section);
    }
    PytestConfig::default()
}

fn from_ini(file: &str, section: &[(String, String)]) -> PytestConfig {
    let mut cfg = PytestConfig {
        file: Some(file.to_owned()),
        ..PytestConfig::default()
    };
    for (k, v) in section {
        let list: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
        match k.as_str() {
            "testpaths" => cfg.testpaths = list,
            "python_files" if !list.is_empty() => cfg.python_files = list,
            "pythonpath" => cfg.pythonpath = Some(list),
            _ => {}
        }
    }
    cfg
}

fn from_pyproject(text: &str) -> Option<PytestConfig> {
    let doc: toml::Table = toml::from_str(text).ok()?;
    let pytest = doc.get("tool")?.get("pytest")?;
    let table = match pytest.get("ini_options") {
        Some(t) => t.as_table()?,
        None => pytest.as_table()?,
    };
    Some(from_toml_table("pyproject.toml", table))
}

/// `pytest.toml` / `.pytest.toml`: the `[pytest]` table (none or an unreadable file: pytest's
/// defaults, the file still being the configuration).
fn from_pytest_toml(file: &str, text: &str) -> PytestConfig {
    let doc: Option<toml::Table> = toml::from_str(text).ok();
    match doc.as_ref().and_then(|d| d.get("pytest")?.as_table()) {
        Some(table) => from_toml_table(file, table),
        None => PytestConfig {
            file: Some(file.to_owned()),
            ..PytestConfig::default()
        },
    }
}

fn from_toml_table(file: &str, table: &toml::Table) -> PytestConfig {
    let list = |key: &str| -> Option<Vec<String>> {
        match table.get(key)? {
            toml::Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
            toml::Value::Array(a) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        }
    };
    let mut cfg = PytestConfig {
        file: Some(file.to_owned()),
        ..PytestConfig::default()
    };
    if let Some(t) = list("testpaths") {
        cfg.testpaths = t;
    }
    if let Some(p) = list("python_files").filter(|p| !p.is_empty()) {
        cfg.python_files = p;
    }
    cfg.pythonpath = list("pythonpath");
    cfg
}

/// The `key = value` pairs of `[name]` in an INI file (`None` when there is no such section).
/// Keys are lowercased; `:` works like `=`; indented lines continue the previous value;
/// lines starting with `#` or `;` are comments.
pub fn ini_section(text: &str, name: &str) -> Option<Vec<(String, String)>> {
    let mut found = false;
    let mut inside = false;
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') && trimmed.ends_with(']') && !line.starts_with([' ', '\t']) {
            inside = trimmed[1..trimmed.len() - 1].trim() == name;
            found |= inside;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(trimmed);
            }
            continue;
        }
        let split = trimmed.find(['=', ':']);
        if let Some(i) = split {
            out.push((
                trimmed[..i].trim().to_ascii_lowercase(),
                trimmed[i + 1..].trim().to_owned(),
            ));
        }
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_from(list: &[(&str, &str)]) -> PytestConfig {
        let files = RepoFiles::new(list.iter().map(|(p, _)| p.to_string()));
        let map: std::collections::HashMap<String, Vec<u8>> = list
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        load(&files, &|p| map.get(p).cloned())
    }

    #[test]
    fn pytest_ini_wins_even_when_empty() {
        let c = load_from(&[
            ("pytest.ini", "[pytest]\n"),
            (
                "pyproject.toml",
                "[tool.pytest.ini_options]\npythonpath = 'src'\n",
            ),
        ]);
        assert_eq!(c.file.as_deref(), Some("pytest.ini"));
        assert_eq!(c.pythonpath, None);
    }

    #[test]
    fn ini_lists_and_continuations() {
        let c = load_from(&[(
            "tox.ini",
            "[tox]\nenvlist = py3\n[pytest]\ntestpaths =\n    tests\n    integration\npython_files = check_*.py\npythonpath: src lib\n",
        )]);
        assert_eq!(c.file.as_deref(), Some("tox.ini"));
        assert_eq!(c.testpaths, ["tests", "integration"]);
        assert_eq!(c.python_files, ["check_*.py"]);
        assert_eq!(c.pythonpath, Some(vec!["src".into(), "lib".into()]));
        assert!(c.matches_python_files("check_a.py"));
        assert!(!c.matches_python_files("test_a.py"));
        assert!(c.in_testpaths("integration/x/check_a.py"));
        assert!(!c.in_testpaths("other/check_a.py"));
    }

    #[test]
    fn setup_cfg_and_pyproject() {
        let c = load_from(&[(
            "setup.cfg",
            "[metadata]\nname = x\n[tool:pytest]\naddopts = -q\n",
        )]);
        assert_eq!(c.file.as_deref(), Some("setup.cfg"));
        let c = load_from(&[(
            "pyproject.toml",
            "[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\npythonpath = [\".\", \"src\"]\n",
        )]);
        assert_eq!(c.testpaths, ["tests"]);
        assert_eq!(c.pythonpath, Some(vec![".".into(), "src".into()]));
        let c = load_from(&[(
            "pyproject.toml",
            "[tool.pytest]\npython_files = [\"t_*.py\"]\n",
        )]);
        assert_eq!(c.python_files, ["t_*.py"]);
        // A pyproject.toml without pytest settings is not pytest's configuration.
        let c = load_from(&[("pyproject.toml", "[project]\nname = \"x\"\n")]);
        assert_eq!(c, PytestConfig::default());
    }

    #[test]
    fn pytest_toml_comes_first() {
        let c = load_from(&[
            (
                "pytest.toml",
                "[pytest]\ntestpaths = [\"t\"]\npythonpath = [\"src\"]\n",
            ),
            ("pytest.ini", "[pytest]\ntestpaths = other\n"),
        ]);
        assert_eq!(c.file.as_deref(), Some("pytest.toml"));
        assert_eq!(c.testpaths, ["t"]);
        assert_eq!(c.pythonpath, Some(vec!["src".into()]));
        // Even without a [pytest] table it is the configuration, as in pytest.
        let c = load_from(&[(".pytest.toml", ""), ("pytest.ini", "[pytest]\n")]);
        assert_eq!(c.file.as_deref(), Some(".pytest.toml"));
    }

    #[test]
    fn glob_testpaths() {
        let c = PytestConfig {
            testpaths: vec!["pkgs/*/tests".into()],
            ..PytestConfig::default()
        };
        assert!(c.in_testpaths("pkgs/a/tests/test_x.py"));
        assert!(!c.in_testpaths("pkgs/a/src/test_x.py"));
    }
}
