//! `checkdef run --junit FILE`: a well-formed JUnit XML report with cached, passed and failed
//! testcases, parsed back with a minimal strict XML reader.
use crate::support::{TestRepo, shell_layout};

/// A parsed XML element.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn attr(&self, k: &str) -> &str {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("<{}> has no {k}", self.name))
    }
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    fn property(&self, name: &str) -> Option<&str> {
        self.child("properties")?
            .all("property")
            .find(|p| p.attr("name") == name)
            .map(|p| p.attr("value"))
    }
}

/// A strict reader for the XML subset a JUnit report uses: one declaration, elements,
/// attributes in double quotes, text and the five entities plus numeric references. Panics on
/// anything malformed.
struct Reader<'a> {
    s: &'a str,
    i: usize,
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }
    fn skip_ws(&mut self) {
        while self.rest().starts_with(|c: char| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn expect(&mut self, t: &str) {
        assert!(
            self.rest().starts_with(t),
            "expected {t:?} at {:?}",
            &self.rest()[..self.rest().len().min(40)]
        );
        self.i += t.len();
    }
    fn name(&mut self) -> String {
        let end = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || "-_:.".contains(c)))
            .unwrap();
        assert!(end > 0, "empty name at {}", self.i);
        let n = self.rest()[..end].to_owned();
        self.i += end;
        n
    }
    fn unescape(raw: &str) -> String {
        let mut out = String::new();
        let mut rest = raw;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            let end = rest[i..].find(';').expect("unterminated entity") + i;
            let ent = &rest[i + 1..end];
            match ent {
                "amp" => out.push('&'),
                "lt" => out.push('<'),
                "gt" => out.push('>'),
                "quot" => out.push('"'),
                "apos" => out.push('\''),
                e if e.starts_with("#x") => {
                    out.push(char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap())
                }
                e if e.starts_with('#') => {
                    out.push(char::from_u32(e[1..].parse().unwrap()).unwrap())
                }
                e => panic!("unknown entity &{e};"),
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
    fn element(&mut self) -> Element {
        self.expect("<");
        let name = self.name();
        let mut attrs = Vec::new();
        loop {
            self.skip_ws();
            if self.rest().starts_with("/>") {
                self.i += 2;
                return Element {
                    name,
                    attrs,
                    children: vec![],
                    text: String::new(),
                };
            }
            if self.rest().starts_with('>') {
                self.i += 1;
                break;
            }
            let k = self.name();
            self.expect("=\"");
            let end = self.rest().find('"').unwrap();
            let raw = &self.rest()[..end];
            assert!(!raw.contains('<'), "raw < in attribute {k}");
            attrs.push((k, Self::unescape(raw)));
            self.i += end + 1;
        }
        let mut children = Vec::new();
        let mut text = String::new();
        loop {
            if self.rest().starts_with("</") {
                self.i += 2;
                let close = self.name();
                assert_eq!(close, name, "mismatched close tag");
                self.skip_ws();
                self.expect(">");
                return Element {
                    name,
                    attrs,
                    children,
                    text,
                };
            }
            if self.rest().starts_with('<') {
                children.push(self.element());
                continue;
            }
            let end = self.rest().find('<').expect("unterminated element");
            text.push_str(&Self::unescape(&self.rest()[..end]));
            self.i += end;
        }
    }
}

fn parse_xml(s: &str) -> Element {
    for c in s.chars() {
        assert!(
            matches!(c, '\t' | '\n' | '\r') || (c as u32) >= 0x20,
            "character {c:?} is not allowed in XML 1.0"
        );
    }
    let mut r = Reader { s, i: 0 };
    r.expect("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    r.skip_ws();
    let root = r.element();
    r.skip_ws();
    assert_eq!(r.i, s.len(), "trailing content after the root element");
    root
}

#[test]
fn junit_report_with_cached_passed_and_failed_cases() {
    let repo = TestRepo::new();
    shell_layout(&repo);
    repo.commit("init");
    repo.checkdef_env(&["run", "-s", "foo"], &[]).expect_code(0);
    // bar fails with output that needs escaping and a colour sequence.
    repo.write(
        "src/bar/value",
        "bad <value> & \"quotes\" \u{1b}[31mred\u{1b}[0m\n",
    );
    repo.write(
        "checkdef.toml",
        &crate::support::SHELL_CONFIG.replace(
            "echo checking bar; grep -qx ok src/bar/value",
            r"echo checking bar; cat src/bar/value; printf 'bell\\007\\n'; grep -qx ok src/bar/value",
        ),
    );
    let out = repo.run_json(&["--junit", "reports/junit.xml"], &[]);
    out.expect_code(1);
    let xml = std::fs::read_to_string(repo.path("reports/junit.xml")).unwrap();
    let root = parse_xml(&xml);
    assert_eq!(root.name, "testsuites");
    let suites: Vec<&Element> = root.all("testsuite").collect();
    assert_eq!(suites.len(), 1);
    let suite = suites[0];
    assert_eq!(suite.attr("name"), "checkdef");
    assert_eq!(suite.attr("tests"), "2");
    assert_eq!(suite.attr("failures"), "1");
    assert_eq!(suite.attr("timestamp").len(), 19);
    let cases: Vec<&Element> = suite.all("testcase").collect();
    assert_eq!(cases.len(), 2);

    let foo = cases.iter().find(|c| c.attr("name") == "foo").unwrap();
    assert_eq!(foo.attr("classname"), "checkdef");
    assert_eq!(foo.property("cached"), Some("true"));
    assert_eq!(foo.property("source"), Some("local"));
    assert!(foo.child("failure").is_none());
    let note = &foo.child("system-out").unwrap().text;
    assert!(
        note.starts_with("cached (local), original ") && note.ends_with('s'),
        "{note}"
    );
    assert_eq!(
        foo.property("input_hash").unwrap(),
        out.seg("foo")["input_hash"].as_str().unwrap()
    );

    let bar = cases.iter().find(|c| c.attr("name") == "bar").unwrap();
    assert_eq!(bar.property("cached"), Some("false"));
    let failure = bar.child("failure").expect("a failure element");
    assert_eq!(failure.attr("message"), "exit 1");
    assert!(
        failure
            .text
            .contains("bad <value> & \"quotes\" red\nbell\u{FFFD}\n"),
        "{:?}",
        failure.text
    );
    assert!(
        bar.child("system-out")
            .unwrap()
            .text
            .contains("checking bar")
    );

    // Re-running writes a fresh report atomically (no temporary files are left behind).
    repo.write("src/bar/value", "ok\n");
    let again = repo.run_json(&["--junit", "reports/junit.xml"], &[]);
    again.expect_code(0);
    let root = parse_xml(&std::fs::read_to_string(repo.path("reports/junit.xml")).unwrap());
    assert_eq!(root.child("testsuite").unwrap().attr("failures"), "0");
    let names: Vec<String> = std::fs::read_dir(repo.path("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["junit.xml"]);
}
