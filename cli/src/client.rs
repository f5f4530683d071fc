//! Runs one CLI command against the API with the generated Connect client.

use crate::api::{Api, call_error};
use crate::args::{
    Cli, Command, CreateArgs, GatewayCommand, HostCommand, LogCommand, Target, Wait,
};
use crate::progress::{self, Goal};
use crate::{history, hosts, log};
use krane_proto::krane::v1::{
    CreateGatewayRequest, DeleteGatewayRequest, GatewayRequest, ListGatewaysRequest,
    UpdateGatewayRequest,
};
use std::process::ExitCode;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let api = Api::new(&cli)?;
    let command = match cli.command {
        Command::Gateway(command) => command,
        Command::Host(HostCommand::List) => return hosts::list(&api).await,
        Command::Log(LogCommand::Export(args)) => return log::export::run(&api, &args).await,
        Command::Log(LogCommand::Replay(args)) => return log::replay::run(&api, &args).await,
    };
    match command {
        GatewayCommand::Create(args) => create(&api, args).await,
        GatewayCommand::Get(target) => get(&api, &target).await,
        GatewayCommand::Delete { target, wait } => delete(&api, &target, &wait).await,
        GatewayCommand::Scale {
            target,
            replicas,
            wait,
        } => scale(&api, &target, replicas, &wait).await,
        GatewayCommand::Watch(target) => progress::watch(&api, &target).await,
        GatewayCommand::List { namespace } => list(&api, &namespace).await,
        GatewayCommand::History {
            target,
            limit,
            follow: false,
        } => history::show(&api, &target, limit).await,
        GatewayCommand::History {
            target,
            limit,
            follow: true,
        } => history::follow(&api, &target, limit).await,
    }
}

async fn create(api: &Api, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let gateway = GatewayRequest {
        namespace: args.target.namespace.clone(),
        workspace_id: args.workspace_id.clone(),
        gateway_id: args.target.id.clone(),
        image: args.image.clone(),
        replicas: args.replicas,
        cpu_millicores: args.cpu_millicores,
        memory_size_mib: args.memory_mib,
        update_policy: None,
    };
    let request = CreateGatewayRequest {
        gateway: Some(gateway),
    };
    let response = api
        .client
        .create_gateway(&request)
        .await
        .map_err(|error| call_error("CreateGateway", error))?
        .into_inner();
    if args.wait.detach {
        progress::print_json_or(api.output, &response, || {
            println!(
                "gateway {}/{} accepted",
                args.target.namespace, args.target.id
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    progress::follow(api, &args.target, Goal::Running(args.replicas), &args.wait).await
}

async fn get(api: &Api, target: &Target) -> anyhow::Result<ExitCode> {
    let Some(gateway) = api.get(target).await? else {
        anyhow::bail!("gateway {}/{} not found", target.namespace, target.id);
    };
    progress::print_json_or(api.output, &gateway, || progress::print_table(&gateway));
    Ok(ExitCode::SUCCESS)
}

async fn delete(api: &Api, target: &Target, wait: &Wait) -> anyhow::Result<ExitCode> {
    let request = DeleteGatewayRequest {
        namespace: target.namespace.clone(),
        gateway_id: target.id.clone(),
    };
    api.client
        .delete_gateway(&request)
        .await
        .map_err(|error| call_error("DeleteGateway", error))?;
    if wait.detach {
        progress::print_json_or(api.output, &serde_json::json!({"accepted": true}), || {
            println!("deletion of {}/{} accepted", target.namespace, target.id)
        });
        return Ok(ExitCode::SUCCESS);
    }
    progress::follow(api, target, Goal::Gone, wait).await
}

async fn scale(api: &Api, target: &Target, replicas: u32, wait: &Wait) -> anyhow::Result<ExitCode> {
    let current = api.get(target).await?.and_then(|gateway| gateway.gateway);
    let Some(gateway) = current else {
        anyhow::bail!("gateway {}/{} not found", target.namespace, target.id);
    };
    let request = UpdateGatewayRequest {
        gateway: Some(scaled(gateway, replicas)),
    };
    let response = api
        .client
        .update_gateway(&request)
        .await
        .map_err(|error| call_error("UpdateGateway", error))?
        .into_inner();
    if wait.detach {
        progress::print_json_or(api.output, &response, || {
            println!(
                "scaling of {}/{} to {replicas} accepted",
                target.namespace, target.id
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    progress::follow(api, target, Goal::Running(replicas), wait).await
}

/// The gateway's spec as shown, with `replicas`; an update policy that replaces more replicas
/// at once than there will be replaces them all at once instead (the API refuses more).
fn scaled(mut gateway: GatewayRequest, replicas: u32) -> GatewayRequest {
    gateway.replicas = replicas;
    if let Some(policy) = gateway.update_policy.as_mut() {
        policy.parallelism = policy.parallelism.min(replicas);
    }
    gateway
}

async fn list(api: &Api, namespace: &str) -> anyhow::Result<ExitCode> {
    let request = ListGatewaysRequest {
        namespace: namespace.to_string(),
    };
    let listed = api
        .client
        .list_gateways(&request)
        .await
        .map_err(|error| call_error("ListGateways", error))?
        .into_inner();
    progress::print_json_or(api.output, &listed, || progress::print_list(&listed));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use krane_proto::krane::v1::UpdatePolicy;

    #[test]
    fn scaling_below_the_update_parallelism_keeps_the_policy_valid() {
        let gateway = GatewayRequest {
            replicas: 4,
            update_policy: Some(UpdatePolicy {
                parallelism: 3,
                max_surge: 1,
                ..UpdatePolicy::default()
            }),
            ..GatewayRequest::default()
        };
        let down = scaled(gateway.clone(), 2);
        let policy = down.update_policy.unwrap_or_default();
        assert_eq!(
            (down.replicas, policy.parallelism, policy.max_surge),
            (2, 2, 1)
        );
        let up = scaled(gateway, 6).update_policy.unwrap_or_default();
        assert_eq!(up.parallelism, 3);
        assert_eq!(scaled(GatewayRequest::default(), 2).update_policy, None);
    }
}
