//! `DockerRuntime`: the `ContainerRuntime` on a real Docker engine, through bollard.
//! Version-negotiated (Debian's engine speaks API 1.41, older than bollard's default), and
//! every call maps "already so" answers (409 on create, 304 on start, 404 on remove) to success.
//! Listings say whether each container serves ([`readiness`](super::readiness)): its health
//! check, else the last probe of its published port (the change stream probes every running
//! container each `probe_interval` and reports those whose answer changed), and for one that
//! exits, its exit code and last log lines.

use super::pull::{self, PullTally};
use super::readiness::{self, ExitCodes, Health, ProbeBoard, TcpProbe};
use super::{
    ContainerRuntime, ContainerState, ObservedContainer, PullProgressSender, Readiness,
    ReplicaContainer, RuntimeError,
};
use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig,
    HostConfigLogConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use krane_core::names::{self, GatewayKey};
use krane_core::placement::Resources;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info};

/// Log lines of an exiting container carried in its reason.
const LOG_TAIL_LINES: &str = "5";

/// Registry credentials for pulling missing images: sent with pulls from `server` only (with
/// every pull when no server is given).
#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub server: Option<String>,
}

/// How gateway containers are confined, beyond their CPU and memory limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// Most processes a container may run (`--pids-limit`): one fork bomb cannot take the host.
    pub pids_limit: i64,
    /// Size at which a container's log file is rotated (`--log-max-size`, e.g. `10m`).
    pub log_max_size: String,
    /// Log files kept per container (`--log-max-files`).
    pub log_max_files: u32,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            pids_limit: 256,
            log_max_size: "10m".into(),
            log_max_files: 3,
        }
    }
}

pub struct DockerRuntime {
    docker: Docker,
    auth: RegistryAuth,
    pull_timeout: Duration,
    hardening: Hardening,
    readiness: Arc<ReadinessProbing>,
}

/// What tells whether containers serve: the probe, how often it runs, what it last said.
struct ReadinessProbing {
    probe: TcpProbe,
    interval: Duration,
    board: ProbeBoard,
    /// How each container last ended, from the engine's `die` events.
    exit_codes: ExitCodes,
}

/// A listed container with what the listing's status text says of its health.
struct Listed {
    container: ObservedContainer,
    health: Health,
}

impl DockerRuntime {
    async fn list_labelled(
        &self,
        labels: Vec<String>,
    ) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let listed = list(&self.docker, labels).await?;
        let mut containers = Vec::with_capacity(listed.len());
        for Listed {
            mut container,
            health,
        } in listed
        {
            container.readiness = self.assess(&container, health).await;
            containers.push(container);
        }
        Ok(containers)
    }

    /// Whether `container` serves: its health check where it has one, else the last probe of
    /// its port (probed now if it has none yet); one that is not serving and has been
    /// restarted, or that exited, is failing with its exit code and last log lines.
    async fn assess(&self, container: &ObservedContainer, health: Health) -> Readiness {
        let readiness = match (container.state, container.host_port) {
            // The health check decides where the image has one; the port probe otherwise.
            (ContainerState::Running, Some(port)) => {
                let output = match health {
                    Health::Unhealthy => self.last_health_output(&container.name).await,
                    _ => String::new(),
                };
                match readiness::from_health(health, &output) {
                    Some(readiness) => readiness,
                    None => self.probed(container, port).await,
                }
            }
            (ContainerState::Running, None) => return Readiness::Starting(String::new()),
            (ContainerState::Restarting | ContainerState::Exited | ContainerState::Dead, _) => {
                Readiness::Starting(String::new())
            }
            _ => return Readiness::Ready,
        };
        if readiness == Readiness::Ready {
            return readiness;
        }
        match self.exits(&container.name, container.state).await {
            Some(reason) => Readiness::Failing(reason),
            None => readiness,
        }
    }

    async fn probed(&self, container: &ObservedContainer, port: u16) -> Readiness {
        let board = &self.readiness.board;
        let outcome = match board.get(&container.name, port) {
            Some(outcome) => outcome,
            None => {
                let outcome = self.readiness.probe.serves(port).await;
                board.record(&container.name, port, &container.gateway, outcome.clone());
                outcome
            }
        };
        match outcome {
            Ok(()) => Readiness::Ready,
            Err(reason) => Readiness::Starting(format!("starting: {reason}")),
        }
    }

    /// Why a container that is not serving counts as failing, if it does: it exited (or the
    /// engine restarted it since it last exited), with its exit code and last log lines.
    async fn exits(&self, name: &str, state: ContainerState) -> Option<String> {
        let inspected = self.docker.inspect_container(name, None).await.ok()?;
        let restarts = inspected.restart_count.unwrap_or(0);
        let exited = matches!(
            state,
            ContainerState::Restarting | ContainerState::Exited | ContainerState::Dead
        );
        if !exited && restarts == 0 {
            return None;
        }
        // Running again after a restart (maybe since it was listed), the engine shows exit
        // code 0, not how it last ended: that comes from its last `die` event, if this worker
        // saw it. Judged by the state inspected now, not the one listed before.
        let running_again = inspected
            .state
            .as_ref()
            .is_some_and(|state| state.running == Some(true) && state.restarting != Some(true));
        let exit_code = if running_again {
            self.readiness.exit_codes.last(name)
        } else {
            inspected.state.and_then(|state| state.exit_code)
        };
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: LOG_TAIL_LINES.to_string(),
            ..Default::default()
        };
        let logs = self
            .docker
            .logs(name, Some(options))
            .map_ok(|line| line.to_string())
            .try_collect::<Vec<String>>();
        let log_tail = match tokio::time::timeout(Duration::from_secs(2), logs).await {
            Ok(Ok(lines)) => lines.concat(),
            _ => String::new(),
        };
        Some(readiness::exit_reason(exit_code, restarts, &log_tail))
    }

    /// The output of the container's last health check.
    async fn last_health_output(&self, name: &str) -> String {
        let Ok(inspected) = self.docker.inspect_container(name, None).await else {
            return String::new();
        };
        inspected
            .state
            .and_then(|state| state.health)
            .and_then(|health| health.log)
            .and_then(|log| log.last().cloned())
            .and_then(|last| last.output)
            .unwrap_or_default()
    }

    /// Confines the containers it creates from now on as `hardening` says.
    pub fn with_hardening(mut self, hardening: Hardening) -> Self {
        self.hardening = hardening;
        self
    }

    /// Probes published ports at `probe` every `interval` (default: 127.0.0.1 every second,
    /// which suits a worker on the engine's own host; use the host's address on the network
    /// where ports are published when the worker runs elsewhere, e.g. in a container).
    pub fn with_probe(mut self, probe: TcpProbe, interval: Duration) -> Self {
        self.readiness = Arc::new(ReadinessProbing {
            probe,
            interval,
            board: ProbeBoard::default(),
            exit_codes: ExitCodes::default(),
        });
        self
    }

    /// Connects to `docker_host` (`unix://…`, `tcp://…`) or the local default socket, and
    /// negotiates the API version. Fails if the engine does not answer.
    pub async fn connect(
        docker_host: Option<&str>,
        auth: RegistryAuth,
        pull_timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        let docker = match docker_host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|error| RuntimeError::Unavailable(error.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|error| RuntimeError::Unavailable(error.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|error| RuntimeError::Unavailable(error.to_string()))?;
        info!(api_version = %docker.client_version(), "connected to the Docker engine");
        let runtime = Self {
            docker,
            auth,
            pull_timeout,
            hardening: Hardening::default(),
            readiness: Arc::new(ReadinessProbing {
                probe: TcpProbe {
                    host: "127.0.0.1".into(),
                    timeout: Duration::from_secs(1),
                },
                interval: Duration::from_secs(1),
                board: ProbeBoard::default(),
                exit_codes: ExitCodes::default(),
            }),
        };
        Ok(runtime)
    }

    /// Pulls `image` with the worker's credentials (when they are for its registry), telling
    /// `progress` how far it got. A pull the registry refuses (no such image, no access) is
    /// permanent; one that times out or fails mid-way may pass next time.
    async fn pull(&self, image: &str, progress: &PullProgressSender) -> Result<(), RuntimeError> {
        let with_credentials = self.auth.username.is_some()
            && pull::sends_credentials(image, self.auth.server.as_deref());
        info!(image, with_credentials, "image missing; pulling");
        let credentials = self
            .auth
            .username
            .as_ref()
            .filter(|_| with_credentials)
            .map(|username| DockerCredentials {
                username: Some(username.clone()),
                password: self.auth.password.clone(),
                serveraddress: self.auth.server.clone(),
                ..Default::default()
            });
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut tally = PullTally::default();
        let pull = self
            .docker
            .create_image(Some(options), None, credentials)
            .try_for_each(|message| {
                tally.record(&message);
                progress.send_replace(Some(tally.progress()));
                async { Ok(()) }
            });
        let refused = |reason: String| RuntimeError::ImageUnavailable {
            image: image.to_string(),
            reason,
        };
        let failed = |reason: String| RuntimeError::PullFailed {
            image: image.to_string(),
            reason,
        };
        match tokio::time::timeout(self.pull_timeout, pull).await {
            Ok(Ok(())) => Ok(()),
            // The engine started the pull and reported a failure in its progress messages
            // (a layer that did not download, a registry gone mid-way).
            Ok(Err(DockerError::DockerStreamError { error })) => {
                Err(failed(format!("pull failed: {error}")))
            }
            Ok(Err(error)) if is_connection_error(&error) => {
                Err(RuntimeError::Unavailable(error.to_string()))
            }
            // The engine answered the pull with an error: the registry's reason
            // ("unauthorized: authentication required", "manifest unknown" …).
            Ok(Err(error)) => Err(refused(format!("pull failed: {}", describe(&error)))),
            Err(_) => Err(failed(format!(
                "pull did not finish within {}",
                humantime::format_duration(self.pull_timeout)
            ))),
        }
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|error| RuntimeError::Unavailable(describe(&error)))
    }

    async fn capacity(&self) -> Result<Resources, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|error| RuntimeError::Unavailable(describe(&error)))?;
        let cpus = u64::try_from(info.ncpu.unwrap_or(0)).unwrap_or(0);
        let bytes = u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0);
        Ok(Resources {
            millicores: cpus.saturating_mul(1000),
            mib: bytes / (1 << 20),
        })
    }

    async fn ensure_image(
        &self,
        image: &str,
        progress: &PullProgressSender,
    ) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(error) if status_of(&error) == Some(404) => self.pull(image, progress).await,
            Err(error) => Err(classify(error)),
        }
    }

    async fn list_gateway(&self, key: &GatewayKey) -> Result<Vec<ObservedContainer>, RuntimeError> {
        // Ids are validated to [a-zA-Z0-9_.-], so they cannot inject into the label filter.
        self.list_labelled(vec![
            format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE),
            format!("{}={}", names::LABEL_NAMESPACE, key.namespace),
            format!("{}={}", names::LABEL_GATEWAY_ID, key.gateway_id),
        ])
        .await
    }

    async fn list_owned(&self, host_id: &str) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.list_labelled(owned_labels(host_id)).await
    }

    fn changes(&self, host_id: &str) -> BoxStream<'static, Result<GatewayKey, RuntimeError>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![
                    format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE),
                    format!("{}={host_id}", names::LABEL_HOST_ID),
                ],
            ),
            // State changes that can leave a replica not running or not serving (and health
            // checks passing again); our own creates and starts need no reaction.
            (
                "event".to_string(),
                [
                    "die",
                    "stop",
                    "kill",
                    "destroy",
                    "pause",
                    "oom",
                    "health_status",
                ]
                .map(String::from)
                .to_vec(),
            ),
        ]);
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let readiness = self.readiness.clone();
        let engine = self.docker.events(Some(options)).filter_map(move |event| {
            let readiness = readiness.clone();
            async move {
                match event {
                    Ok(event) => {
                        let attributes = event.actor?.attributes?;
                        if let Some(name) = attributes.get("name") {
                            match event.action.as_deref() {
                                Some("die") => {
                                    let code = attributes
                                        .get("exitCode")
                                        .and_then(|code| code.parse().ok());
                                    if let Some(code) = code {
                                        readiness.exit_codes.died(name, code);
                                    }
                                }
                                Some("destroy") => readiness.exit_codes.forget(name),
                                _ => {}
                            }
                        }
                        let namespace = attributes.get(names::LABEL_NAMESPACE)?;
                        let gateway_id = attributes.get(names::LABEL_GATEWAY_ID)?;
                        Some(Ok(GatewayKey::new(namespace, gateway_id)))
                    }
                    Err(error) => Some(Err(classify(error))),
                }
            }
        });
        let probes = probe_changes(
            self.docker.clone(),
            owned_labels(host_id),
            self.readiness.clone(),
        )
        .map(|key| Some(Ok(key)));
        // The engine's stream ends when the engine goes away; the probes end with it.
        let engine = engine
            .map(Some)
            .chain(futures::stream::once(async { None }));
        futures::stream::select(engine, probes)
            .take_while(|item| std::future::ready(item.is_some()))
            .filter_map(std::future::ready)
            .boxed()
    }

    async fn create_and_start(&self, container: &ReplicaContainer) -> Result<(), RuntimeError> {
        let port = format!("{}/tcp", names::GATEWAY_PORT);
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    // Empty: the engine picks a free host port.
                    host_port: Some(String::new()),
                }]),
            )])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            nano_cpus: Some(container.nano_cpus),
            memory: Some(container.memory_bytes),
            // Confined by default: no capability but binding low ports, a process limit,
            // rotated logs, never privileged, no host mounts, no host network.
            privileged: Some(false),
            security_opt: Some(vec!["no-new-privileges".into()]),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["NET_BIND_SERVICE".into()]),
            pids_limit: Some(self.hardening.pids_limit),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), self.hardening.log_max_size.clone()),
                    (
                        "max-file".to_string(),
                        self.hardening.log_max_files.to_string(),
                    ),
                ])),
            }),
            network_mode: Some("bridge".into()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(container.image.clone()),
            labels: Some(container.labels.clone().into_iter().collect()),
            env: Some(container.env.clone()),
            exposed_ports: Some(vec![port]),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(container.name.clone()),
            ..Default::default()
        };
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => {}
            // Same name exists: a redelivery (or a second worker) got here first.
            Err(error) if status_of(&error) == Some(409) => {}
            Err(error) if status_of(&error) == Some(404) => {
                return Err(RuntimeError::ImageUnavailable {
                    image: container.image.clone(),
                    reason: describe(&error),
                });
            }
            Err(error) => return Err(classify(error)),
        }
        self.start(&container.name).await
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .start_container(name, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if status_of(&error) == Some(304) => Ok(()),
            Err(error) => Err(classify(error)),
        }
    }

    async fn stop(&self, name: &str) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(10),
            ..Default::default()
        };
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // Stopped already (304), or gone (404).
            Err(error) if matches!(status_of(&error), Some(304 | 404)) => Ok(()),
            Err(error) => Err(classify(error)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone already, or its removal is already under way.
            Err(error) if matches!(status_of(&error), Some(404 | 409)) => Ok(()),
            Err(error) => Err(classify(error)),
        }
    }
}

/// The label filter of the krane containers `host_id` owns.
fn owned_labels(host_id: &str) -> Vec<String> {
    vec![
        format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE),
        format!("{}={host_id}", names::LABEL_HOST_ID),
    ]
}

/// Every container with all of `labels`, running or not.
async fn list(docker: &Docker, labels: Vec<String>) -> Result<Vec<Listed>, RuntimeError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), labels)])),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(classify)?;
    Ok(containers.into_iter().filter_map(listed).collect())
}

/// Probes at once, at most.
const PROBE_PARALLELISM: usize = 64;

/// Every `interval`, probes the published port of each running container in `labels` that
/// has no health check, and in between, every [`readiness::STARTING_PROBE`], those that did
/// not serve at their last probe; yields the gateways of those whose answer changed.
fn probe_changes(
    docker: Docker,
    labels: Vec<String>,
    probing: Arc<ReadinessProbing>,
) -> impl futures::Stream<Item = GatewayKey> + Send + 'static {
    let tick = readiness::STARTING_PROBE.min(probing.interval);
    let start = (docker, labels, probing, Instant::now());
    futures::stream::unfold(start, move |state| async move {
        let (docker, labels, probing, mut last_round) = state;
        tokio::time::sleep(tick).await;
        let changed = if last_round.elapsed() >= probing.interval {
            last_round = Instant::now();
            probe_round(&docker, &labels, &probing).await
        } else {
            probe_not_serving(&probing).await
        };
        let state = (docker, labels, probing, last_round);
        Some((futures::stream::iter(changed), state))
    })
    .flatten()
}

/// Probes again the containers that did not serve at their last probe.
async fn probe_not_serving(probing: &ReadinessProbing) -> Vec<GatewayKey> {
    futures::stream::iter(probing.board.not_serving())
        .map(|(name, port, gateway)| async move {
            let outcome = probing.probe.serves(port).await;
            probing
                .board
                .record(&name, port, &gateway, outcome)
                .then_some(gateway)
        })
        .buffer_unordered(PROBE_PARALLELISM)
        .filter_map(std::future::ready)
        .collect()
        .await
}

async fn probe_round(
    docker: &Docker,
    labels: &[String],
    probing: &ReadinessProbing,
) -> Vec<GatewayKey> {
    let listed = match list(docker, labels.to_vec()).await {
        Ok(listed) => listed,
        Err(error) => {
            debug!(%error, "cannot list containers to probe; next round");
            return Vec::new();
        }
    };
    let names: HashSet<String> = listed.iter().map(|l| l.container.name.clone()).collect();
    probing.board.retain(&names);
    let probed = listed
        .into_iter()
        .filter_map(|Listed { container, health }| {
            match (container.state, container.host_port, health) {
                (ContainerState::Running, Some(port), Health::None) => Some((container, port)),
                _ => None,
            }
        });
    futures::stream::iter(probed)
        .map(|(container, port)| async move {
            let outcome = probing.probe.serves(port).await;
            probing
                .board
                .record(&container.name, port, &container.gateway, outcome)
                .then_some(container.gateway)
        })
        .buffer_unordered(PROBE_PARALLELISM)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// A listed container: its observation (readiness not assessed yet) and the health its
/// status text shows.
fn listed(summary: ContainerSummary) -> Option<Listed> {
    let health = readiness::health_in_status(summary.status.as_deref().unwrap_or_default());
    let container = observed_container(summary)?;
    Some(Listed { container, health })
}

/// Turns a listed container into an observation; containers without a name or gateway
/// labels are skipped.
fn observed_container(summary: ContainerSummary) -> Option<ObservedContainer> {
    let name = summary
        .names
        .as_ref()?
        .first()?
        .trim_start_matches('/')
        .to_string();
    let labels = summary.labels.unwrap_or_default();
    let gateway = GatewayKey::new(
        labels.get(names::LABEL_NAMESPACE)?,
        labels.get(names::LABEL_GATEWAY_ID)?,
    );
    let state = match summary.state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        Some(ContainerSummaryStateEnum::REMOVING | ContainerSummaryStateEnum::STOPPING) => {
            ContainerState::Removing
        }
        _ => ContainerState::Unknown,
    };
    // A container may have no published ports at all (stopped, or made by hand): no panic.
    let host_port = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|port| port.private_port == names::GATEWAY_PORT && port.public_port.is_some())
        .and_then(|port| port.public_port);
    Some(ObservedContainer {
        name,
        gateway,
        replica: labels
            .get(names::LABEL_REPLICA)
            .and_then(|replica| replica.parse().ok()),
        template: labels
            .get(names::LABEL_TEMPLATE)
            .cloned()
            .unwrap_or_default(),
        state,
        host_port,
        readiness: Readiness::Ready,
    })
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn describe(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn is_connection_error(error: &DockerError) -> bool {
    status_of(error).is_none()
}

/// 4xx answers are the engine refusing this request (permanent); anything else — 5xx,
/// connection refused, timeouts — may pass.
fn classify(error: DockerError) -> RuntimeError {
    match status_of(&error) {
        Some(status) if (400..500).contains(&status) => RuntimeError::Rejected(describe(&error)),
        _ => RuntimeError::Unavailable(describe(&error)),
    }
}
