//! The scenarios of `tests/scenarios/` replayed into fresh docker-compose stacks by
//! `scripts/replay.sh` (each its own project, port, token and host id, torn down after; those
//! of `multi-host/` on three hosts: two extra engines with a compose worker each): every one
//! reaches its recorded outcome, and one replayed twice into two fresh stacks ends the same way
//! both times (replay is deterministic where the system is).

use krane_tests::docker;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `krane` binary beside this test's (`<target>/debug/krane`, built by `cargo test`).
fn krane_cli() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|dir| dir.join("krane")))
        .filter(|cli| cli.exists())
        .expect("the krane binary beside the tests (cargo test --workspace builds it)")
}

/// Replays `scenario` into a fresh stack: its exit code and standard output.
fn replay(scenario: &Path) -> (Option<i32>, String) {
    let output = Command::new("bash")
        .arg(root().join("scripts/replay.sh"))
        .arg(scenario)
        .env("KRANE_CLI", krane_cli())
        .output()
        .expect("run scripts/replay.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "{}:\n{stdout}{}",
        scenario.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reaches_its_recorded_outcome_and_replays_the_same_twice() {
    docker::require_test_image().await;
    let mut scenarios: Vec<PathBuf> = ["tests/scenarios", "tests/scenarios/multi-host"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root().join(dir)).expect("a scenario directory"))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 6, "{scenarios:?}");
    assert!(
        scenarios
            .iter()
            .any(|path| path.to_string_lossy().contains("/multi-host/")),
        "a scenario on several hosts: {scenarios:?}"
    );
    let mut outcomes = Vec::new();
    for scenario in &scenarios {
        let (code, out) = replay(scenario);
        assert_eq!(code, Some(0), "{}: {out}", scenario.display());
        assert!(out.contains("matches the recorded outcome"), "{out}");
        outcomes.push(out);
    }
    let again = scenarios
        .iter()
        .position(|path| path.ends_with("create-delete-race.jsonl"))
        .expect("the create/delete race scenario");
    let (code, out) = replay(&scenarios[again]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, outcomes[again], "the same scenario, two fresh stacks");
}
