//! Properties of the planner: whatever the engine shows and whatever is desired, carrying out
//! the plan (and planning again, within a reconcile's rounds) leaves nothing to do, with
//! exactly one container per desired replica, of the current template, and nothing else of
//! the gateway; no plan creates a replica twice.

use krane_core::names::GatewayKey;
use krane_core::spec::GatewaySpec;
use krane_worker::plan::{Action, Desired, plan};
use krane_worker::runtime::{ContainerState, ObservedContainer};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn key() -> GatewayKey {
    GatewayKey::new("ns", "gw")
}

fn spec(replicas: u32) -> GatewaySpec {
    GatewaySpec {
        namespace: "ns".into(),
        gateway_id: "gw".into(),
        workspace_id: "ws".into(),
        image: "img:2".into(),
        replicas,
        cpu_millicores: 100,
        memory_mib: 32,
    }
}

fn desired() -> impl Strategy<Value = Desired> {
    prop_oneof![
        1 => Just(Desired::nothing()),
        4 => (1u32..6, prop::collection::btree_set(0u32..6, 0..6)).prop_map(|(replicas, here)| Desired {
            spec: Some(spec(replicas)),
            replicas: here.into_iter().filter(|replica| *replica < replicas).collect(),
        }),
    ]
}

fn state() -> impl Strategy<Value = ContainerState> {
    prop::sample::select(vec![
        ContainerState::Created,
        ContainerState::Running,
        ContainerState::Restarting,
        ContainerState::Paused,
        ContainerState::Exited,
        ContainerState::Dead,
        ContainerState::Removing,
        ContainerState::Unknown,
    ])
}

/// What an engine may show of the gateway: containers under the replicas' names or stray
/// names, with or without a replica label, of the current, an old or no template.
fn observed() -> impl Strategy<Value = Vec<ObservedContainer>> {
    let container = (
        0u32..8,
        any::<bool>(),
        prop::option::of(0u32..8),
        prop::sample::select(vec!["current", "old", ""]),
        state(),
        prop::option::of(30000u16..30010),
    )
        .prop_map(
            |(n, own_name, replica, template, state, host_port)| ObservedContainer {
                name: if own_name {
                    key().container_name(n)
                } else {
                    format!("stray-{n}")
                },
                gateway: key(),
                replica,
                template: match template {
                    "current" => spec(1).template(),
                    other => other.to_string(),
                },
                state,
                host_port,
                readiness: krane_worker::runtime::Readiness::Ready,
            },
        );
    // An engine has one container per name.
    prop::collection::vec(container, 0..10).prop_map(|containers| {
        let by_name: BTreeMap<String, ObservedContainer> = containers
            .into_iter()
            .map(|container| (container.name.clone(), container))
            .collect();
        by_name.into_values().collect()
    })
}

/// The engine after the actions, as Docker would do them.
fn apply(
    desired: &Desired,
    observed: &[ObservedContainer],
    actions: &[Action],
) -> Vec<ObservedContainer> {
    let mut engine: BTreeMap<String, ObservedContainer> = observed
        .iter()
        .map(|container| (container.name.clone(), container.clone()))
        .collect();
    let fresh = |replica: u32| ObservedContainer {
        name: key().container_name(replica),
        gateway: key(),
        replica: Some(replica),
        template: desired.template(),
        state: ContainerState::Running,
        host_port: Some(31000),
        readiness: krane_worker::runtime::Readiness::Ready,
    };
    for action in actions {
        match action {
            // Docker answers 409 for a name that exists; the worker takes that as done.
            Action::Create { replica } => {
                let created = fresh(*replica);
                engine.entry(created.name.clone()).or_insert(created);
            }
            Action::Start { container, .. } => {
                if let Some(container) = engine.get_mut(container) {
                    container.state = ContainerState::Running;
                }
            }
            Action::Replace { replica, container } | Action::Roll { replica, container } => {
                engine.remove(container);
                let created = fresh(*replica);
                engine.insert(created.name.clone(), created);
            }
            Action::Remove { container, .. } => {
                engine.remove(container);
            }
        }
    }
    engine.into_values().collect()
}

/// Plan/act rounds a reconcile makes at most.
const ROUNDS: usize = 4;

proptest! {
    #[test]
    fn planning_after_the_plan_leaves_nothing_to_do(desired in desired(), observed in observed()) {
        let actions = plan(&key(), &desired, &observed);
        let created: Vec<u32> = actions
            .iter()
            .filter(|action| action.creates())
            .filter_map(Action::replica)
            .collect();
        let unique: BTreeSet<u32> = created.iter().copied().collect();
        prop_assert_eq!(created.len(), unique.len(), "a replica created twice: {:?}", actions);
        // The worker plans and acts again until nothing is left, within its rounds (a
        // container under a replica's name but labelled as another can take a second one).
        let mut after = apply(&desired, &observed, &actions);
        for _ in 1..ROUNDS {
            let next = plan(&key(), &desired, &after);
            after = apply(&desired, &after, &next);
        }
        prop_assert_eq!(plan(&key(), &desired, &after), Vec::<Action>::new());
        let replicas: BTreeSet<u32> = after.iter().filter_map(|c| c.replica).collect();
        prop_assert_eq!(&replicas, &desired.replicas, "exactly the desired replicas run");
        prop_assert_eq!(after.len(), desired.replicas.len(), "one container each, no stray");
        for container in &after {
            prop_assert_eq!(&container.template, &desired.template());
        }
    }
}
