//! The engine driven through the library with a recording reporter: it reports every step as
//! an event and prints nothing itself.
use std::sync::{Arc, Mutex};

use checkdef::cache::Caches;
use checkdef::cli::GlobalArgs;
use checkdef::context::{Context, Env};
use checkdef::git::{Repo, Target};
use checkdef::run::lines::Piece;
use checkdef::run::{self, Event, Reporter, RunOptions};

use crate::support::TestRepo;

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Reporter for Recorder {
    fn report(&self, event: Event<'_>) {
        let text = match event {
            Event::Warning(w) => format!("warning {w}"),
            Event::Cached(o) => format!("cached {} {}", o.name, o.status().as_str()),
            Event::Started { segment } => format!("started {segment}"),
            Event::Waiting { segment } => format!("waiting {segment}"),
            Event::Output { segment, piece } => {
                let (Piece::Line(l) | Piece::Progress(l)) = piece;
                format!("output {segment} {}", String::from_utf8_lossy(l))
            }
            Event::Undeclared { message } => format!("undeclared {message}"),
            Event::Finished {
                outcome,
                interrupted,
            } => format!(
                "finished {} {}{}",
                outcome.name,
                outcome.status().as_str(),
                if interrupted { " interrupted" } else { "" }
            ),
            Event::Summary(s) => format!("summary {s}"),
        };
        self.0.lock().unwrap().push(text);
    }

    fn wants_output(&self) -> bool {
        true
    }
}

const CONFIG: &str = r#"version = 1

[[segment]]
name = "good"
include = ["good/**"]
command = "echo checking good; test -f good/value"

[[segment]]
name = "bad"
include = ["bad/**"]
command = "echo secret-$TOKEN; exit 3"
passthrough = ["TOKEN"]

[defaults]
redact_env = ["TOKEN"]
"#;

#[test]
fn the_engine_reports_events_and_prints_nothing() {
    let repo = TestRepo::new();
    repo.write("good/value", "1\n")
        .write("bad/value", "1\n")
        .write("checkdef.toml", CONFIG);
    repo.commit("init");
    // The environment the engine sees is the one it is given, not the test process's.
    let env = Env::from_pairs([
        ("PATH", std::env::var("PATH").unwrap()),
        ("HOME", repo.home.display().to_string()),
        ("CHECKDEF_CACHE_DIR", repo.cache.display().to_string()),
        ("CHECKDEF_ISOLATION", "off".to_owned()),
        (
            "CHECKDEF_SANDBOX_DIR",
            repo.tmp.path().display().to_string(),
        ),
        ("TOKEN", "hunter2".to_owned()),
    ]);
    let ctx = Context::with_env(&GlobalArgs::default(), None, env);
    let r = Repo::discover(&repo.root).unwrap();
    let config = ctx.load_config(&r).unwrap();
    let head = r.resolve_commit("HEAD").unwrap();
    let plan = checkdef::plan::build_plan(
        &r,
        &config,
        ctx.env(),
        &ctx.fingerprints(),
        &Target::Commit(head),
        None,
    )
    .unwrap();
    let opts = RunOptions {
        jobs: 1,
        push: false,
        hit_logs: false,
        redact_env: config.redact_env.clone(),
        force: false,
        env: ctx.env().clone(),
        sandbox: ctx.settings.sandbox.clone(),
        supervisor: env!("CARGO_BIN_EXE_checkdef").into(),
        deadline: None,
        warn_if_slow: false,
    };
    let rt = ctx.runtime().unwrap();
    let go = || {
        let recorder = Arc::new(Recorder::default());
        let caches = Caches::open(ctx.cache_settings(&config.cache).unwrap()).unwrap();
        let (_tx, rx) = run::interrupt_channel();
        let report = rt
            .block_on(run::run_plan(
                &r,
                &plan,
                caches,
                &opts,
                rx,
                recorder.clone(),
            ))
            .unwrap();
        let events = recorder.0.lock().unwrap().clone();
        (report, events)
    };

    let (report, events) = go();
    assert_eq!((report.passed(), report.failed()), (1, 1), "{events:#?}");
    // Longest expected first: with no history, the one with more inputs; here they tie, so
    // check each segment's own order rather than the interleaving.
    for (seg, line, verdict) in [
        ("good", "checking good", "passed"),
        ("bad", "secret-[redacted:TOKEN]", "failed"),
    ] {
        let mine: Vec<&String> = events
            .iter()
            .filter(|e| e.split(' ').nth(1) == Some(seg))
            .collect();
        assert_eq!(
            mine,
            [
                &format!("started {seg}"),
                &format!("output {seg} {line}"),
                &format!("finished {seg} {verdict}"),
            ],
            "{events:#?}"
        );
    }
    assert!(
        events.iter().all(|e| !e.contains("hunter2")),
        "live output is redacted before it is reported: {events:#?}"
    );

    // The pass is stored: the next run reports it as cached and starts only the failure.
    let (_, events) = go();
    assert!(
        events.contains(&"cached good passed".to_owned()),
        "{events:#?}"
    );
    assert!(events.contains(&"started bad".to_owned()), "{events:#?}");
    assert!(!events.contains(&"started good".to_owned()), "{events:#?}");
}
