//! Smoke test of the benchmark: a shrunken S1 (10 requests at once against 5 per
//! second), ours against the seed fix, in-process; the report has its structure, the
//! server's best as its yardstick, and ours returned no error to any caller.

use std::path::PathBuf;

use mistral_bench::scenario::{self, Size};
use mistral_bench::suite::{Isolation, Options, run_scenarios};
use mistral_bench::workload::Workload;
use mistral_bench::{Report, Strategy};

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mistral-bench-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn quick_s1_ours_against_the_seed_fix() {
    let mut s1 = scenario::all(Size::Quick)
        .into_iter()
        .find(|s| s.id == "S1")
        .expect("S1 exists");
    s1.workload = Workload::uniform(scenario::MODEL, 10, 40);
    s1.threads = 10;
    s1.tasks = 10;
    s1.budget = std::time::Duration::from_secs(15);
    s1.strategies = vec![Strategy::OursBlocking, Strategy::SeedFix];
    let dir = out_dir();
    let options = Options {
        size: Size::Quick,
        out_dir: dir.clone(),
        isolation: Isolation::InProcess,
        scenarios: Vec::new(),
        strategies: Vec::new(),
        criterion: None,
        micro: false,
        plots: true,
        grid: false,
        capacity_table: None,
    };
    let report = run_scenarios(&options, &[s1]);

    // Structure: one row per strategy, targets checked on ours only, files written.
    assert_eq!(report.rows.len(), 2, "{:#?}", report.rows);
    let ours = report.row("S1", Strategy::OursBlocking).expect("ours' row");
    let seed = report
        .row("S1", Strategy::SeedFix)
        .expect("the seed fix's row");
    assert_eq!((ours.work, seed.work), (10, 10));
    assert!(!ours.checks.is_empty() && seed.checks.is_empty());
    assert!(
        ours.checks
            .iter()
            .any(|c| c.what.starts_with("faster than the seed fix"))
    );
    assert_eq!(seed.succeeded + seed.errors + seed.unfinished, 10);
    // The yardstick: 5 at once from the bucket of 5, then one every 0.2 s.
    let best = ours.best_s.expect("the server's best");
    assert!((best - 1.0).abs() < 1e-6, "{best}");
    assert!(
        ours.checks
            .iter()
            .any(|c| c.what == "makespan ÷ server's best")
    );
    assert!(seed.attempts_per_request.is_some_and(|a| a >= 1.0));
    let markdown = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    for part in [
        "| scenario | strategy | done | makespan | server's best | makespan ÷ best | goodput ÷ best | 429s |",
        "## Targets (ours)",
        "| S1 | ours-blocking |",
        "| S1 | seed-fix |",
    ] {
        assert!(
            markdown.contains(part),
            "report.md lacks {part:?}:\n{markdown}"
        );
    }
    let json = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let parsed: Report = serde_json::from_str(&json).expect("report.json parses");
    assert_eq!(parsed.rows.len(), 2);
    assert!(dir.join("S1.svg").is_file());

    // Ours: every caller got its answer.
    assert_eq!(
        ours.errors, 0,
        "ours surfaced errors: {:?}",
        ours.error_samples
    );
    assert_eq!(ours.unfinished, 0);
    assert_eq!(ours.succeeded, 10);
    let _ = std::fs::remove_dir_all(&dir);
}
