#!/usr/bin/env python3
"""Drives krane's GatewayService with the official Python Connect client (`connectrpc`).

Usage: connect_client.py <base URL> <namespace>

Needs on PYTHONPATH: the `connectrpc` runtime and the `krane.v1` modules generated from
proto/krane/v1/gateway.proto by `protoc-gen-py` and `protoc-gen-connectrpc` (the Rust test
`independent_clients` generates them with `buf generate`). A worker must be running, so
gateways become RUNNING.

For every protocol, codec and HTTP version below it creates a gateway, gets it, watches it until
RUNNING, lists it, sends an invalid request, deletes the gateway and waits until it is gone.
Prints `ok <variant>` per variant; exits non-zero at the first mismatch.
"""

from __future__ import annotations

import sys
import time

from connectrpc.code import Code
from connectrpc.codec import Codec, proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from pyqwest import HTTPVersion, SyncClient, SyncHTTPTransport

from krane.v1.gateway_connect import GatewayServiceClientSync
from krane.v1.gateway_pb import (
    CreateGatewayRequest,
    DeleteGatewayRequest,
    GatewayRequest,
    GatewayStatus,
    GetGatewayRequest,
    ListGatewaysRequest,
    WatchGatewayRequest,
)

TIMEOUT_MS = 30_000
REPLICAS = 2

# (name, protocol, codec, HTTP version); gRPC needs HTTP/2, the others run on both.
VARIANTS: list[tuple[str, ProtocolType, Codec, HTTPVersion]] = [
    ("connect-json-http1", ProtocolType.CONNECT, proto_json_codec(), HTTPVersion.HTTP1),
    ("connect-proto-http1", ProtocolType.CONNECT, proto_binary_codec(), HTTPVersion.HTTP1),
    ("connect-json-h2c", ProtocolType.CONNECT, proto_json_codec(), HTTPVersion.HTTP2),
    ("connect-proto-h2c", ProtocolType.CONNECT, proto_binary_codec(), HTTPVersion.HTTP2),
    ("grpc-proto-h2c", ProtocolType.GRPC, proto_binary_codec(), HTTPVersion.HTTP2),
    ("grpcweb-proto-http1", ProtocolType.GRPC_WEB, proto_binary_codec(), HTTPVersion.HTTP1),
]


class Mismatch(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Mismatch(what)


def expect_error(call, code: Code, message_prefix: str) -> ConnectError:
    try:
        response = call()
    except ConnectError as error:
        check(error.code == code, f"expected {code}, got {error.code}: {error.message}")
        check(
            error.message.startswith(message_prefix),
            f"expected a message starting with {message_prefix!r}, got {error.message!r}",
        )
        return error
    raise Mismatch(f"expected {code}, got a response: {response}")


def spec(namespace: str, gateway_id: str, replicas: int = REPLICAS) -> GatewayRequest:
    return GatewayRequest(
        namespace=namespace,
        workspace_id="ws_python",
        gateway_id=gateway_id,
        image="krane-test-gateway:dev",
        replicas=replicas,
        cpu_millicores=100,
        memory_size_mib=16,
    )


def same_spec(got: GatewayRequest | None, want: GatewayRequest) -> bool:
    fields = (
        "namespace",
        "workspace_id",
        "gateway_id",
        "image",
        "replicas",
        "cpu_millicores",
        "memory_size_mib",
    )
    return got is not None and all(getattr(got, f) == getattr(want, f) for f in fields)


def exercise(client: GatewayServiceClientSync, namespace: str, gateway_id: str) -> None:
    want = spec(namespace, gateway_id)
    created = client.create_gateway(CreateGatewayRequest(gateway=want), timeout_ms=TIMEOUT_MS)
    check(created.status == GatewayStatus.PENDING, f"create answered {created.status}")

    got = client.get_gateway(
        GetGatewayRequest(namespace=namespace, gateway_id=gateway_id), timeout_ms=TIMEOUT_MS
    )
    check(len(got.instances) == REPLICAS, f"get: {len(got.instances)} instances: {got}")
    ids = {instance.id for instance in got.instances}
    check(len(ids) == REPLICAS and "" not in ids, f"get: instance ids {ids}")
    check(same_spec(got.gateway, want), f"get: spec {got.gateway} is not {want}")

    # The first message is the current state, then one per change, until RUNNING.
    running = None
    for update in client.watch_gateway(
        WatchGatewayRequest(namespace=namespace, gateway_id=gateway_id), timeout_ms=TIMEOUT_MS
    ):
        check(
            update.status in (GatewayStatus.PENDING, GatewayStatus.RUNNING),
            f"watch: status {update.status}: {update}",
        )
        if update.status == GatewayStatus.RUNNING:
            running = update
            break
    check(running is not None, "watch ended before the gateway was RUNNING")
    check(
        {instance.id for instance in running.instances} == ids,
        f"watch: instances {running.instances} are not {ids}",
    )
    check(
        all(i.status == GatewayStatus.RUNNING and i.address for i in running.instances),
        f"watch: not every instance runs with an address: {running.instances}",
    )

    listed = client.list_gateways(ListGatewaysRequest(namespace=namespace), timeout_ms=TIMEOUT_MS)
    summary = next((g for g in listed.gateways if g.gateway_id == gateway_id), None)
    check(summary is not None, f"list: {gateway_id} missing from {listed}")
    check(summary.status == GatewayStatus.RUNNING, f"list: status {summary.status}")
    check(same_spec(summary.gateway, want), f"list: spec {summary.gateway}")

    expect_error(
        lambda: client.create_gateway(
            CreateGatewayRequest(gateway=spec(namespace, gateway_id, replicas=0)),
            timeout_ms=TIMEOUT_MS,
        ),
        Code.INVALID_ARGUMENT,
        "gateway.replicas",
    )

    client.delete_gateway(
        DeleteGatewayRequest(namespace=namespace, gateway_id=gateway_id), timeout_ms=TIMEOUT_MS
    )
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        try:
            got = client.get_gateway(
                GetGatewayRequest(namespace=namespace, gateway_id=gateway_id),
                timeout_ms=TIMEOUT_MS,
            )
        except ConnectError as error:
            check(error.code == Code.NOT_FOUND, f"get after delete: {error.code} {error.message}")
            break
        check(
            all(i.status == GatewayStatus.TERMINATING for i in got.instances),
            f"get after delete: {got.instances}",
        )
        check(time.monotonic() < deadline, f"{gateway_id} still there after delete: {got}")
        time.sleep(0.2)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, namespace = sys.argv[1], sys.argv[2]
    for name, protocol, codec, http_version in VARIANTS:
        with (
            SyncHTTPTransport(http_version=http_version, enable_otel=False) as transport,
            GatewayServiceClientSync(
                base_url,
                protocol=protocol,
                codec=codec,
                http_client=SyncClient(transport),
                # The client's defaults: it gzips request bodies, which krane-api accepts.
            ) as client,
        ):
            try:
                exercise(client, namespace, f"py-{name}")
            except (Mismatch, ConnectError) as error:
                print(f"FAILED {name}: {type(error).__name__}: {error}", file=sys.stderr)
                return 1
        print(f"ok {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
