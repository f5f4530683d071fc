//! The reconcile loop on the in-memory runtime and a real nats-server (started by the test on
//! a free port with a temporary store): convergence, idempotency, deletion, and a rolling
//! update that waits by requeueing instead of sleeping.

use super::fixtures::{key, spec};
use super::{Outcome, ROLLOUT_POLL, Reconciler};
use crate::context::Worker;
use crate::hosts::HostIdentity;
use crate::hosts::view::HostsView;
use crate::index::RecordIndex;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::held::Remembering;
use crate::runtime::{ContainerRuntime, PullProgress};
use krane_core::command::Command;
use krane_core::event::{InstanceObserved, ObservedState};
use krane_core::record::{GatewayRecord, InstanceStatus};
use krane_core::rollout::UpdatePolicy;
use krane_core::spec::GatewaySpec;
use krane_store::{NatsArgs, Store};
use krane_tests::NatsServer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Setup {
    _nats: NatsServer,
    store: Store,
    runtime: Arc<FakeRuntime>,
}

impl Setup {
    async fn start() -> Self {
        let nats = NatsServer::start().await;
        let args = NatsArgs::url(nats.url());
        let store = krane_store::connect(&args, "reconcile-test", Duration::from_secs(5))
            .await
            .expect("store");
        Self {
            _nats: nats,
            store,
            runtime: Arc::new(FakeRuntime::with_images(&["img:1", "img:2"])),
        }
    }

    /// A reconciler on host h1.
    fn reconciler(&self, rollout_timeout: Duration) -> Reconciler {
        Reconciler::new(self.worker(), 4, rollout_timeout)
    }

    /// Host h1's context: the fake runtime as it is, no index, no hosts heard.
    fn worker(&self) -> Worker {
        Worker {
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            host: HostIdentity {
                host_id: "h1".into(),
                advertise_host: "127.0.0.1".into(),
            },
            hosts: HostsView::new(Duration::from_secs(15)),
            records: RecordIndex::default(),
            images: Arc::default(),
            held: Default::default(),
        }
    }

    /// Stores a command as the API does (publish, then fold into the record); returns its
    /// sequence.
    async fn command(&self, command: &Command) -> u64 {
        // Every publish is another decision: another message id.
        static SEEN_REVISION: AtomicU64 = AtomicU64::new(1);
        let revision = SEEN_REVISION.fetch_add(1, Ordering::Relaxed);
        let seq = self
            .store
            .publish_command(command, revision)
            .await
            .expect("stored");
        self.store
            .project_command(seq, command)
            .await
            .expect("projected");
        seq
    }

    /// Another host's report about one replica.
    async fn report_from(
        &self,
        host: &str,
        replica: u32,
        spec: &GatewaySpec,
        state: ObservedState,
    ) {
        let event = InstanceObserved {
            namespace: spec.namespace.clone(),
            gateway_id: spec.gateway_id.clone(),
            replica,
            template: spec.template(),
            state,
            address: String::new(),
            reason: String::new(),
            host_id: host.into(),
        };
        self.store
            .append_events(&spec.key(), None, &[event])
            .await
            .expect("reported");
    }

    /// Stores a command and reconciles until it converged.
    async fn converge(&self, reconciler: &Reconciler, command: &Command) {
        self.command(command).await;
        assert_eq!(reconciled(reconciler).await, Outcome::Converged);
    }

    /// Two replicas of img:1 here, converged; then an update to `image` stored as the API
    /// stores one (returning to img:1 if it fails).
    async fn update_from_img1(&self, reconciler: &Reconciler, image: &str) {
        self.update_from_img1_with(reconciler, 2, image, UpdatePolicy::default())
            .await;
    }

    /// `replicas` replicas of img:1 here, converged; then an update to `image` with `policy`
    /// stored as the API stores one (its extra replica, if it surges, not placed yet).
    async fn update_from_img1_with(
        &self,
        reconciler: &Reconciler,
        replicas: u32,
        image: &str,
        policy: UpdatePolicy,
    ) {
        let placement = vec!["h1".to_string(); replicas as usize];
        let old = spec(replicas, "img:1");
        self.converge(reconciler, &Command::create(old.clone(), placement.clone()))
            .await;
        let update = krane_core::rollout::Rollout {
            policy,
            previous: Some(Box::new(old)),
            ..Default::default()
        };
        self.command(&Command::create_with(
            spec(replicas, image),
            placement,
            update,
        ))
        .await;
    }

    /// The template of each container of the gateway here, by name.
    async fn templates(&self) -> Vec<(String, String)> {
        let mut containers: Vec<_> = self
            .runtime
            .list_gateway(&key())
            .await
            .expect("listed")
            .into_iter()
            .map(|container| (container.name, container.template))
            .collect();
        containers.sort();
        containers
    }

    async fn record(&self) -> GatewayRecord {
        let stored = self.store.load_record(&key()).await.expect("read");
        stored.record.expect("a record")
    }

    /// A gateway of two replicas, replica 0 here and replica 1 on h2, both running img:1, then
    /// updated to img:2 while h2 replaces its replica first (PENDING on the new template), so
    /// replica 0 here must wait. Returns the new spec.
    async fn update_while_h2_rolls(&self, reconciler: &Reconciler) -> GatewaySpec {
        let placement = vec!["h1".to_string(), "h2".to_string()];
        let old = spec(2, "img:1");
        self.command(&Command::create(old.clone(), placement.clone()))
            .await;
        reconciler.reconcile(&key()).await.expect("created");
        self.report_from("h2", 1, &old, ObservedState::Running)
            .await;
        let new = spec(2, "img:2");
        self.command(&Command::create(new.clone(), placement)).await;
        self.report_from("h2", 1, &new, ObservedState::Pending)
            .await;
        new
    }
}

async fn reconciled(reconciler: &Reconciler) -> Outcome {
    reconciler.reconcile(&key()).await.expect("reconciled")
}

#[tokio::test]
async fn a_create_converges_in_one_reconcile_and_a_second_changes_nothing() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    setup
        .converge(&reconciler, &Command::create(spec(3, "img:1"), Vec::new()))
        .await;
    let names = setup.runtime.container_names();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(reconciled(&reconciler).await, Outcome::Converged);
    assert_eq!(setup.runtime.container_names(), names, "no duplicate");
    let instances = setup.record().await.instances();
    assert!(
        instances
            .iter()
            .all(|i| i.status == InstanceStatus::Running)
    );
}

#[tokio::test]
async fn a_delete_removes_every_container() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    setup
        .converge(&reconciler, &Command::create(spec(2, "img:1"), Vec::new()))
        .await;
    setup.command(&Command::delete(&key())).await;
    assert_eq!(reconciled(&reconciler).await, Outcome::Converged);
    assert!(setup.runtime.container_names().is_empty());
    assert!(setup.record().await.is_gone());
}

#[tokio::test]
async fn a_rollout_waiting_for_another_host_is_requeued_and_holds_no_lock() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let new = setup.update_while_h2_rolls(&reconciler).await;
    let started = Instant::now();
    let requeued = Outcome::Requeue {
        after: ROLLOUT_POLL,
    };
    assert_eq!(reconciled(&reconciler).await, requeued);
    // Not slept on: it came back at once, and the gateway's lock is free for the next caller.
    let again = tokio::time::timeout(Duration::from_secs(5), reconciled(&reconciler))
        .await
        .expect("the lock is not held while waiting");
    assert_eq!(again, requeued);
    assert!(
        started.elapsed() < ROLLOUT_POLL * 4,
        "{:?}",
        started.elapsed()
    );
    let old_here = setup.record().await.observed(0, "h1").cloned();
    assert_eq!(
        old_here.map(|seen| seen.template),
        Some(spec(2, "img:1").template()),
        "replica 0 still runs the old spec"
    );
    // h2's replica runs the new spec: replica 0's turn.
    setup
        .report_from("h2", 1, &new, ObservedState::Running)
        .await;
    assert_eq!(reconciled(&reconciler).await, Outcome::Converged);
    let record = setup.record().await;
    let seen = record.observed(0, "h1").expect("replica 0 reported");
    assert_eq!(seen.template, new.template());
    assert_eq!(seen.state, ObservedState::Running);
}

#[tokio::test]
async fn a_rollout_waiting_past_the_timeout_is_a_retryable_failure() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::ZERO);
    setup.update_while_h2_rolls(&reconciler).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    match reconciled(&reconciler).await {
        Outcome::Failed { permanent, reason } => {
            assert!(!permanent);
            assert!(reason.contains("rolling update waited"), "{reason}");
        }
        other => panic!("expected a retryable failure, got {other:?}"),
    }
}

#[tokio::test]
async fn scaling_down_with_an_image_that_cannot_be_had_still_removes_the_surplus() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let everything_here = vec!["h1".to_string(); 3];
    setup
        .converge(
            &reconciler,
            &Command::create(spec(3, "img:1"), everything_here),
        )
        .await;
    // One replica, of an image no registry has.
    setup
        .command(&Command::create(
            spec(1, "missing:1"),
            vec!["h1".to_string()],
        ))
        .await;
    let outcome = reconciled(&reconciler).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                permanent: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        setup.runtime.container_names(),
        vec![key().container_name(0)],
        "the surplus replicas are removed; replica 0 keeps the old spec"
    );
    let instances = setup.record().await.instances();
    assert_eq!(instances.len(), 1, "{instances:?}");
    // Still serving the old spec, and saying why it was not replaced.
    assert_eq!(instances[0].status, InstanceStatus::Running);
    assert!(instances[0].reason.contains("missing:1"), "{instances:?}");
}

#[tokio::test]
async fn giving_up_on_a_rollout_leaves_the_replicas_still_serving_running() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let everything_here = vec!["h1".to_string(); 3];
    setup
        .converge(
            &reconciler,
            &Command::create(spec(3, "img:1"), everything_here.clone()),
        )
        .await;
    // An update to an image whose containers never start: replica 0 is replaced and fails.
    setup.runtime.fail_image(
        "broken:1",
        crate::runtime::RuntimeError::Unavailable("container exited (code 1)".into()),
    );
    setup
        .command(&Command::create(spec(3, "broken:1"), everything_here))
        .await;
    let outcome = reconciled(&reconciler).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                permanent: false,
                ..
            }
        ),
        "{outcome:?}"
    );
    // Retries are exhausted: the intake gives up.
    reconciler
        .report_unresolved(
            &key(),
            &Command::create(spec(3, "broken:1"), vec!["h1".to_string(); 3]),
            "gave up after 5 attempts: exited",
            ObservedState::Failed,
        )
        .await
        .expect("reported");
    let instances = setup.record().await.instances();
    let statuses: Vec<_> = instances.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        vec![
            InstanceStatus::Failed,
            InstanceStatus::Running,
            InstanceStatus::Running
        ],
        "only the replica being replaced failed: {instances:?}"
    );
    assert!(instances[1..].iter().all(|i| !i.address.is_empty()));
}

#[tokio::test]
async fn a_failure_of_an_older_spec_is_not_reported_over_the_current_one() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    setup
        .converge(&reconciler, &Command::create(spec(1, "img:1"), Vec::new()))
        .await;
    setup
        .converge(&reconciler, &Command::create(spec(1, "img:2"), Vec::new()))
        .await;
    let before = setup.record().await;
    // The intake gives up on the img:1 command only now (its retries ran late).
    reconciler
        .report_unresolved(
            &key(),
            &Command::create(spec(1, "img:1"), Vec::new()),
            "gave up after 5 attempts",
            ObservedState::Failed,
        )
        .await
        .expect("handled");
    assert_eq!(setup.record().await, before);
}

#[tokio::test]
async fn garbage_on_a_live_gateways_subject_does_not_stop_its_repair() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    setup
        .converge(&reconciler, &Command::create(spec(2, "img:1"), Vec::new()))
        .await;
    // A message from another version lands on the subject, then a container is removed
    // behind krane's back.
    setup
        .store
        .jetstream()
        .publish(key().command_subject(), "{\"kind\":\"v9\"}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    crate::runtime::ContainerRuntime::remove(setup.runtime.as_ref(), &key().container_name(1))
        .await
        .expect("removed");
    assert_eq!(reconciled(&reconciler).await, Outcome::Converged);
    assert_eq!(setup.runtime.container_names().len(), 2, "recreated");
}

#[tokio::test]
async fn a_subject_without_a_readable_command_is_left_alone() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    setup
        .converge(&reconciler, &Command::create(spec(1, "img:1"), Vec::new()))
        .await;
    // Every kept command of the gateway becomes unreadable: purge the subject, then garbage.
    let stream = setup
        .store
        .jetstream()
        .get_stream(krane_core::names::COMMANDS_STREAM)
        .await
        .expect("stream");
    stream
        .purge()
        .filter(key().command_subject())
        .await
        .expect("purged");
    setup
        .store
        .jetstream()
        .publish(key().command_subject(), "garbage".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    assert!(reconciler.reconcile(&key()).await.is_err());
    assert_eq!(
        setup.runtime.container_names().len(),
        1,
        "nothing removed on a guess"
    );
}

#[tokio::test]
async fn a_command_asking_of_this_host_what_it_converged_at_needs_no_reconcile() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let spec = spec(2, "img:1");
    let first = Command::create(spec.clone(), vec!["h1".into(), "h2".into()]);
    let seq = setup.command(&first).await;
    let outcome = reconciler.reconcile_command(&key(), seq, &first).await;
    assert_eq!(outcome.expect("reconciled"), Outcome::Converged);
    // Replica 1 moves from h2 to h3; replica 0 stays here with the same spec. The engine is
    // down, so a reconcile could not converge: this one is answered from memory.
    setup.runtime.set_down(true);
    let moved = Command::create(spec, vec!["h1".into(), "h3".into()]);
    let seq = setup.command(&moved).await;
    let outcome = reconciler.reconcile_command(&key(), seq, &moved).await;
    assert_eq!(outcome.expect("settled"), Outcome::Converged);
    // A new spec asks something else of this host: that one reconciles (and meets the outage).
    let updated = Command::create(
        super::fixtures::spec(2, "img:2"),
        vec!["h1".into(), "h3".into()],
    );
    let seq = setup.command(&updated).await;
    let outcome = reconciler.reconcile_command(&key(), seq, &updated).await;
    assert!(!matches!(outcome, Ok(Outcome::Converged)), "{outcome:?}");
}

#[tokio::test]
async fn a_command_for_other_hosts_needs_no_engine_call_once_this_hosts_containers_were_listed() {
    let setup = Setup::start().await;
    let stop = CancellationToken::new();
    let mut worker = setup.worker();
    (worker.runtime, worker.held) = Remembering::wrap(setup.runtime.clone());
    tokio::spawn(crate::index::follow(
        setup.store.clone(),
        worker.records.clone(),
        stop.clone(),
    ));
    let runtime = worker.runtime.clone();
    let records = worker.records.clone();
    let reconciler = Reconciler::new(worker, 4, Duration::from_secs(60));
    let elsewhere = Command::create(spec(2, "img:1"), vec!["h2".into(), "h3".into()]);
    let seq = setup.command(&elsewhere).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while records
        .get(&key())
        .is_none_or(|record| record.intent_seq != seq)
    {
        assert!(
            Instant::now() < deadline,
            "the index never showed the command"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The engine is down: a delivery that has to ask it cannot settle.
    setup.runtime.set_down(true);
    let outcome = reconciler.reconcile_command(&key(), seq, &elsewhere).await;
    assert!(
        !matches!(outcome, Ok(Outcome::Converged)),
        "before this host's containers were listed the engine is asked: {outcome:?}"
    );
    setup.runtime.set_down(false);
    runtime
        .list_owned("h1")
        .await
        .expect("listed, as the resync does");
    setup.runtime.set_down(true);
    let listings = setup.runtime.gateway_listings();
    let outcome = reconciler.reconcile_command(&key(), seq, &elsewhere).await;
    assert_eq!(outcome.expect("settled from memory"), Outcome::Converged);
    assert_eq!(
        setup.runtime.gateway_listings(),
        listings,
        "the engine was not asked"
    );
    stop.cancel();
}

/// Reconciles until the outcome is no longer a requeue (at most `rounds` times).
async fn settled(reconciler: &Reconciler, rounds: usize) -> Outcome {
    for _ in 0..rounds {
        let outcome = reconciled(reconciler).await;
        if !matches!(outcome, Outcome::Requeue { .. }) {
            return outcome;
        }
    }
    panic!("still requeued after {rounds} reconciles");
}

#[tokio::test]
async fn an_update_whose_new_replica_keeps_exiting_is_rolled_back_and_the_old_spec_serves_again() {
    let setup = Setup::start().await;
    setup.runtime.crash_image("img:bad", "exited with code 3");
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let old = spec(2, "img:1");
    setup.update_from_img1(&reconciler, "img:bad").await;
    assert_eq!(settled(&reconciler, 20).await, Outcome::Converged);
    let record = setup.record().await;
    assert_eq!(
        record.intent.spec(),
        Some(&old),
        "back on the previous spec"
    );
    let rollout = record.intent.rollout().expect("a rollout");
    let reason = rollout.rolled_back.clone().unwrap_or_default();
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(
        record
            .instances()
            .iter()
            .all(|i| i.status == InstanceStatus::Running),
        "{:?}",
        record.instances()
    );
    assert_eq!(setup.runtime.running_names().len(), 2);
}

#[tokio::test]
async fn an_update_that_serves_is_marked_done() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    setup.update_from_img1(&reconciler, "img:2").await;
    assert_eq!(settled(&reconciler, 20).await, Outcome::Converged);
    let record = setup.record().await;
    assert_eq!(record.intent.spec(), Some(&spec(2, "img:2")));
    assert_eq!(
        record.intent.rollout().map(|r| r.previous.clone()),
        Some(None),
        "done"
    );
    assert!(
        record
            .instances()
            .iter()
            .all(|i| i.status == InstanceStatus::Running)
    );
}

#[tokio::test]
async fn an_update_that_surges_runs_its_extra_replica_first_and_removes_it_when_done() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let surge = UpdatePolicy {
        max_surge: 1,
        ..UpdatePolicy::default()
    };
    setup
        .update_from_img1_with(&reconciler, 2, "img:2", surge)
        .await;
    assert_eq!(settled(&reconciler, 20).await, Outcome::Converged);
    // The command that marked the update done no longer wants the extra replica: gone with it.
    let outcome = settled(&reconciler, 20).await;
    assert_eq!(outcome, Outcome::Converged);
    let record = setup.record().await;
    let rollout = record.intent.rollout().expect("a rollout");
    assert_eq!(rollout.previous, None, "done");
    assert_eq!(record.intent.wanted_replicas(), 2);
    assert_eq!(record.intent.placement(), ["h1", "h1"]);
    let new = spec(2, "img:2").template();
    assert_eq!(
        setup.templates().await,
        vec![
            (key().container_name(0), new.clone()),
            (key().container_name(1), new)
        ],
        "exactly the replicas, no extra one left"
    );
    assert_eq!(
        record
            .instances()
            .iter()
            .map(|i| i.status)
            .collect::<Vec<_>>(),
        vec![InstanceStatus::Running; 2]
    );
}

#[tokio::test]
async fn an_update_whose_extra_replica_fails_is_rolled_back_before_touching_a_replica() {
    let setup = Setup::start().await;
    setup.runtime.crash_image("img:bad", "exited with code 3");
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let surge = UpdatePolicy {
        max_surge: 1,
        ..UpdatePolicy::default()
    };
    setup
        .update_from_img1_with(&reconciler, 2, "img:bad", surge)
        .await;
    assert_eq!(settled(&reconciler, 20).await, Outcome::Converged);
    let record = setup.record().await;
    let rollout = record.intent.rollout().expect("a rollout");
    let reason = rollout.rolled_back.clone().unwrap_or_default();
    assert!(
        reason.starts_with("extra replica 2 of img:bad failed: exited with code 3"),
        "{reason}"
    );
    let old = spec(2, "img:1").template();
    assert_eq!(
        setup.templates().await,
        vec![
            (key().container_name(0), old.clone()),
            (key().container_name(1), old)
        ],
        "the replicas never left the old spec, and the extra one is gone"
    );
}

#[tokio::test]
async fn an_update_replacing_two_at_once_is_marked_done() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(60));
    let parallel = UpdatePolicy {
        parallelism: 2,
        ..UpdatePolicy::default()
    };
    setup
        .update_from_img1_with(&reconciler, 3, "img:2", parallel)
        .await;
    assert_eq!(settled(&reconciler, 20).await, Outcome::Converged);
    let record = setup.record().await;
    assert_eq!(record.intent.spec(), Some(&spec(3, "img:2")));
    assert_eq!(
        record.intent.rollout().map(|r| r.previous.clone()),
        Some(None)
    );
    assert_eq!(setup.runtime.running_names().len(), 3);
}

#[tokio::test]
async fn replicas_waiting_for_their_image_show_the_pulls_progress_at_most_once_a_second() {
    let setup = Setup::start().await;
    let reconciler = Arc::new(setup.reconciler(Duration::from_secs(60)));
    // Six steps 300 ms apart: reported as they come, there would be six reasons.
    let steps = (1..=6)
        .map(|step| PullProgress {
            downloaded: step * 1_000_000,
            total: 6_000_000,
        })
        .collect();
    setup
        .runtime
        .pull_slowly("img:3", steps, Duration::from_millis(300));
    setup
        .command(&Command::create(spec(2, "img:3"), Vec::new()))
        .await;
    let reconciling = tokio::spawn({
        let reconciler = reconciler.clone();
        async move { reconciled(&reconciler).await }
    });
    let mut reasons: Vec<String> = Vec::new();
    while !reconciling.is_finished() {
        let stored = setup.store.load_record(&key()).await.expect("read");
        for instance in stored.record.map(|r| r.instances()).unwrap_or_default() {
            if instance.status == InstanceStatus::Pending
                && instance.reason.starts_with("pulling img:3")
                && !reasons.contains(&instance.reason)
            {
                reasons.push(instance.reason);
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(reconciling.await.expect("joined"), Outcome::Converged);
    assert!(
        reasons.len() >= 2 && reasons.len() <= 3,
        "a report a second over 1.8 s of pulling: {reasons:?}"
    );
    assert_eq!(reasons[0], "pulling img:3: 1.0 MB of 6.0 MB");
    let instances = setup.record().await.instances();
    assert!(
        instances
            .iter()
            .all(|i| i.status == InstanceStatus::Running && i.reason.is_empty()),
        "{instances:?}"
    );
}

impl Setup {
    /// The record's revision: the bucket's, which only the test's one key writes.
    async fn revision(&self) -> u64 {
        let stored = self.store.load_record(&key()).await.expect("read");
        stored.revision
    }

    async fn assert_running(&self, replicas: usize) {
        let instances = self.record().await.instances();
        assert_eq!(instances.len(), replicas, "{instances:?}");
        assert!(
            instances
                .iter()
                .all(|i| i.status == InstanceStatus::Running),
            "{instances:?}"
        );
    }
}

#[tokio::test]
async fn replicas_created_at_once_are_reported_once_running() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(5));
    setup
        .command(&Command::create(spec(3, "img:1"), vec!["h1".into(); 3]))
        .await;
    let before = setup.revision().await;
    assert_eq!(reconciled(&reconciler).await, Outcome::Converged);
    assert_eq!(
        setup.revision().await - before,
        1,
        "no PENDING announcement before a quick create"
    );
    setup.assert_running(3).await;
}

#[tokio::test]
async fn replicas_still_being_created_are_announced_pending() {
    let setup = Setup::start().await;
    let reconciler = Arc::new(setup.reconciler(Duration::from_secs(5)));
    setup
        .runtime
        .create_slowly("img:1", super::execute::ANNOUNCE_AFTER * 4);
    setup
        .command(&Command::create(spec(2, "img:1"), vec!["h1".into(); 2]))
        .await;
    let before = setup.revision().await;
    let reconciling = tokio::spawn({
        let reconciler = reconciler.clone();
        async move { reconciled(&reconciler).await }
    });
    // Reported PENDING by h1 (not only PENDING for want of a report, as before any).
    let announced = |record: &GatewayRecord| {
        (0..2).all(|replica| {
            record
                .observed(replica, "h1")
                .is_some_and(|seen| seen.state == ObservedState::Pending)
        })
    };
    let mut seen_announced = false;
    while !reconciling.is_finished() {
        seen_announced |= announced(&setup.record().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reconciling.await.expect("joined"), Outcome::Converged);
    assert!(seen_announced, "announced PENDING while the creates ran");
    assert_eq!(
        setup.revision().await - before,
        2,
        "announced, then running"
    );
    setup.assert_running(2).await;
}

#[tokio::test]
async fn an_update_announces_its_replacements_before_acting() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(5));
    setup.update_from_img1(&reconciler, "img:2").await;
    let before = setup.revision().await;
    let watch = setup
        .store
        .watch_record(&key(), before)
        .await
        .expect("watch");
    let _ = reconciled(&reconciler).await;
    let mut watch = std::pin::pin!(watch);
    let first = futures::StreamExt::next(&mut watch)
        .await
        .expect("a write")
        .expect("a record")
        .record
        .expect("kept");
    let replaced: Vec<_> = first
        .instances()
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Pending)
        .collect();
    assert!(
        !replaced.is_empty(),
        "the first write after the update announces the replacement: {:?}",
        first.instances()
    );
}

#[test]
fn an_announcement_waits_only_for_creates_of_missing_replicas_outside_an_update() {
    use super::execute::announcement_may_wait;
    use super::plan::Action;
    let create = Action::Create { replica: 0 };
    let roll = Action::Roll {
        replica: 1,
        container: "c1".into(),
    };
    let replace = Action::Replace {
        replica: 1,
        container: "c1".into(),
    };
    let record_of = |command: &Command| GatewayRecord::apply_command(None, 1, command);
    let fresh = record_of(&Command::create(spec(2, "img:1"), Vec::new())).expect("record");
    let only_create = [create.clone()];
    assert!(announcement_may_wait(&only_create, None));
    assert!(announcement_may_wait(&only_create, Some(&fresh)));
    assert!(!announcement_may_wait(
        &[create.clone(), roll],
        Some(&fresh)
    ));
    assert!(!announcement_may_wait(&[replace], Some(&fresh)));
    let updating = record_of(&Command::create_with(
        spec(2, "img:2"),
        Vec::new(),
        krane_core::rollout::Rollout {
            previous: Some(Box::new(spec(2, "img:1"))),
            ..Default::default()
        },
    ))
    .expect("record");
    assert!(!announcement_may_wait(&only_create, Some(&updating)));
}

#[tokio::test]
async fn work_done_as_planned_ends_the_reconcile_without_another_round() {
    let setup = Setup::start().await;
    let reconciler = setup.reconciler(Duration::from_secs(5));
    setup
        .converge(&reconciler, &Command::create(spec(2, "img:1"), Vec::new()))
        .await;
    assert_eq!(
        setup.runtime.gateway_listings(),
        2,
        "listed before and after creating; nothing read again"
    );
    setup.command(&Command::delete(&key())).await;
    assert_eq!(reconciled(&reconciler).await, Outcome::Converged);
    assert_eq!(setup.runtime.gateway_listings(), 4);
    assert!(setup.runtime.container_names().is_empty());
    assert!(setup.record().await.is_gone());
}

#[tokio::test]
async fn a_reconcile_starting_from_a_lagging_index_copy_loses_no_other_hosts_report() {
    let setup = Setup::start().await;
    let placement = vec!["h1".to_string(), "h1".to_string(), "h2".to_string()];
    let wanted = spec(3, "img:1");
    setup
        .command(&Command::create(wanted.clone(), placement))
        .await;
    // The index holds the record as the command left it; h2's report lands after that.
    let lagging = setup.store.load_record(&key()).await.expect("read");
    setup
        .report_from("h2", 2, &wanted, ObservedState::Running)
        .await;
    let mut worker = setup.worker();
    worker.records = RecordIndex::holding(&[lagging]);
    let reconciler = Reconciler::new(worker, 4, Duration::from_secs(5));
    assert_eq!(reconciled(&reconciler).await, Outcome::Converged);
    let mut running: Vec<(u32, String)> = setup
        .record()
        .await
        .instances()
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Running)
        .map(|i| (i.replica, i.host_id))
        .collect();
    running.sort();
    assert_eq!(
        running,
        [(0, "h1".to_string()), (1, "h1".into()), (2, "h2".into())]
    );
}
