//! Bad input through every protocol: `invalid_argument` naming the field, never a panic, and
//! nothing stored changes. Unknown gateways are `not_found`.

use krane_proto::krane::v1::GatewayRequest;
use krane_tests::client::{INVALID_ARGUMENT, NOT_FOUND, gateway_request};
use krane_tests::{Krane, Protocol, unique_namespace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_naming_the_field() {
    let namespace = unique_namespace("bad");
    let krane = Krane::start(&namespace).await;
    type Mutation = fn(&mut GatewayRequest);
    let cases: [(Mutation, &str); 8] = [
        (|r| r.gateway_id.clear(), "gateway.gateway_id"),
        (|r| r.gateway_id = "../etc".into(), "gateway.gateway_id"),
        (|r| r.namespace = "a b".into(), "gateway.namespace"),
        (|r| r.image.clear(), "gateway.image"),
        (|r| r.image = "Not A Ref".into(), "gateway.image"),
        (|r| r.replicas = 0, "gateway.replicas"),
        (|r| r.memory_size_mib = 5, "gateway.memory_size_mib"),
        (|r| r.cpu_millicores = 0, "gateway.cpu_millicores"),
    ];
    for protocol in Protocol::ALL {
        let client = krane.client(protocol);
        let missing = client.create(None).await.expect_err("no gateway");
        assert_eq!(missing.code, INVALID_ARGUMENT, "{protocol:?}");
        assert!(missing.message.starts_with("gateway"), "{missing:?}");
        for (mutate, field) in cases {
            let mut request = gateway_request(&namespace, "g", 1);
            mutate(&mut request);
            let error = client.create(Some(request)).await.expect_err(field);
            assert_eq!(error.code, INVALID_ARGUMENT, "{protocol:?} {field}");
            assert!(error.message.starts_with(field), "{protocol:?}: {error:?}");
        }
        let error = client.get("", "g").await.expect_err("empty namespace");
        assert_eq!(error.code, INVALID_ARGUMENT);
        assert!(error.message.starts_with("namespace"), "{error:?}");
        let error = client.delete(&namespace, "a*b").await.expect_err("bad id");
        assert_eq!(error.code, INVALID_ARGUMENT);
        assert!(error.message.starts_with("gateway_id"), "{error:?}");
        let error = client
            .get(&namespace, "unknown")
            .await
            .expect_err("unknown");
        assert_eq!(error.code, NOT_FOUND, "{protocol:?}");
    }
    // Nothing was stored by any of it.
    let records = krane.store.all_records().await.expect("records");
    assert!(records.is_empty(), "{records:?}");
}
