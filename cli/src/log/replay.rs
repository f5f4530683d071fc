//! `krane log replay`: re-issues a recording's calls against `--api` in order, with their
//! recorded gaps (scaled by `--speed`), waits for the stack to settle, then compares each
//! gateway the recording names with its recorded outcome. Progress goes to standard error;
//! the differences (or that there are none) to standard output.

use super::file;
use super::outcome::{self, Actual, Call, Expected, Key, Step};
use crate::api::Api;
use crate::args::{ReplayArgs, Speed};
use connectrpc_axum_client::ClientError;
use krane_proto::krane::v1::{CreateGatewayRequest, DeleteGatewayRequest, UpdateGatewayRequest};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Tries of a call the API answers `unavailable` (the stack is still starting, or busy).
const CALL_ATTEMPTS: u32 = 10;
/// How often the gateways are read while the stack settles.
const SETTLE_POLL: Duration = Duration::from_millis(500);

pub async fn run(api: &Api, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let entries = file::read(&args.file)?;
    let (steps, left_out) = outcome::steps(&entries)?;
    let expected = outcome::expected(&entries);
    eprintln!(
        "replaying {} calls of {} ({} commands of workers left out) against {} gateways",
        steps.len(),
        args.file.display(),
        left_out,
        expected.len()
    );
    let mut differences = Vec::new();
    let mut previous: Option<&Step> = None;
    for step in &steps {
        if let (Some(before), Speed::Times(factor)) = (previous, args.speed) {
            let gap = step.at.duration_since(before.at).unwrap_or_default();
            tokio::time::sleep(gap.div_f64(factor)).await;
        }
        previous = Some(step);
        if let Err(error) = issue(api, &step.call).await {
            let refused = format!("line {}: the call was refused: {error}", step.line);
            eprintln!("{refused}");
            differences.push(refused);
        }
    }
    let actual = settle(api, &expected, args.settle_timeout).await?;
    for (key, wanted) in &expected {
        let shown = actual.get(key).cloned().flatten();
        println!("{}/{}: {}", key.0, key.1, outcome::describe(&shown));
        for difference in outcome::differences(wanted, &shown) {
            differences.push(format!("{}/{}: {difference}", key.0, key.1));
        }
    }
    if differences.is_empty() {
        println!(
            "the replay matches the recorded outcome: {} gateways",
            expected.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for difference in &differences {
            println!("{difference}");
        }
        println!(
            "{} differences from the recorded outcome",
            differences.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// Makes one call, again while the API answers `unavailable`.
async fn issue(api: &Api, call: &Call) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        let result = match call {
            Call::Create(gateway) => {
                let request = CreateGatewayRequest {
                    gateway: Some(gateway.clone()),
                };
                api.client.create_gateway(&request).await.map(drop)
            }
            Call::Update(gateway) => {
                let request = UpdateGatewayRequest {
                    gateway: Some(gateway.clone()),
                };
                api.client.update_gateway(&request).await.map(drop)
            }
            Call::Delete((namespace, gateway_id)) => {
                let request = DeleteGatewayRequest {
                    namespace: namespace.clone(),
                    gateway_id: gateway_id.clone(),
                };
                api.client.delete_gateway(&request).await.map(drop)
            }
        };
        match result {
            Ok(()) => return Ok(()),
            Err(error) if unavailable(&error) && attempt < CALL_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => {
                return Err(format!(
                    "{:?}: {}",
                    error.code(),
                    error.message().unwrap_or("no message")
                ));
            }
        }
    }
}

fn unavailable(error: &ClientError) -> bool {
    error.code() as i32 == 14
}

/// Reads every gateway until each matches its recorded outcome or has settled (nothing
/// pending or terminating), or `timeout` passes; answers what was read last.
async fn settle(
    api: &Api,
    expected: &BTreeMap<Key, Expected>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<Key, Actual>> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let mut actual = BTreeMap::new();
        let mut waiting = 0;
        for (key, wanted) in expected {
            let target = crate::args::Target {
                namespace: key.0.clone(),
                id: key.1.clone(),
            };
            let shown = api.get(&target).await?;
            // Matching too early is not enough (old replicas serve while an update rolls): a
            // gateway is done once settled, or matching an outcome that is itself pending.
            let matches = outcome::differences(wanted, &shown).is_empty();
            let done = outcome::settled(&shown) || (matches && outcome::expects_pending(wanted));
            if !done {
                waiting += 1;
            }
            actual.insert(key.clone(), shown);
        }
        if waiting == 0 || started.elapsed() >= timeout {
            if waiting > 0 {
                eprintln!("{waiting} gateways still settling after {timeout:?}; comparing now");
            }
            return Ok(actual);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "waiting for {waiting} of {} gateways to settle ({}s)",
                expected.len(),
                started.elapsed().as_secs()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}
