//! `GatewaySpec`: what a Create or Update asks a gateway to be, once it passed validation. The
//! API turns a `krane.v1.GatewayRequest` into a candidate spec and [`GatewaySpec::validate`]s it;
//! only valid specs are stored, so the worker never sees an id that could break a name, a label
//! filter or a subject. Field errors name the request's field path (`gateway.replicas`).
//!
//! Documented bounds (README "Validation"):
//! - `namespace`, `gateway_id`: 1–63 chars of `[a-zA-Z0-9][a-zA-Z0-9_.-]*`
//! - `workspace_id`: at most 255 printable chars (may be empty)
//! - `image`: a valid image reference, at most 255 chars
//! - `replicas`: 1–[`MAX_REPLICAS`]
//! - `cpu_millicores`: [`MIN_CPU_MILLICORES`]–[`MAX_CPU_MILLICORES`] (Docker's `NanoCPUs` floor is 0.01 CPU)
//! - `memory_size_mib`: [`MIN_MEMORY_MIB`]–[`MAX_MEMORY_MIB`] (Docker refuses less than 6 MiB)

use crate::names::{GatewayKey, short_hash};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

pub const MAX_ID_LEN: usize = 63;
pub const MAX_WORKSPACE_ID_LEN: usize = 255;
pub const MAX_IMAGE_LEN: usize = 255;
pub const MAX_REPLICAS: u32 = 64;
pub const MIN_CPU_MILLICORES: u32 = 10;
pub const MAX_CPU_MILLICORES: u32 = 64_000;
pub const MIN_MEMORY_MIB: u64 = 6;
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// A request field that failed validation; `field` is the proto field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// What a gateway should be: validated, so every field is safe to use as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySpec {
    pub namespace: String,
    pub gateway_id: String,
    pub workspace_id: String,
    pub image: String,
    pub replicas: u32,
    pub cpu_millicores: u32,
    pub memory_mib: u64,
}

impl GatewaySpec {
    /// Checks every field against the documented bounds; the error names the first bad field
    /// by its path in the request (`gateway.<field>`).
    pub fn validate(self) -> Result<Self, FieldError> {
        validate_key(&self.namespace, &self.gateway_id, "gateway.")?;
        validate_workspace_id(&self.workspace_id)?;
        validate_image(&self.image)?;
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(FieldError::new(
                "gateway.replicas",
                format!("must be between 1 and {MAX_REPLICAS}"),
            ));
        }
        if !(MIN_CPU_MILLICORES..=MAX_CPU_MILLICORES).contains(&self.cpu_millicores) {
            return Err(FieldError::new(
                "gateway.cpu_millicores",
                format!("must be between {MIN_CPU_MILLICORES} and {MAX_CPU_MILLICORES}"),
            ));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(FieldError::new(
                "gateway.memory_size_mib",
                format!(
                    "must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} (Docker refuses less than 6 MiB)"
                ),
            ));
        }
        Ok(self)
    }

    pub fn key(&self) -> GatewayKey {
        GatewayKey::new(&self.namespace, &self.gateway_id)
    }

    /// Hash of everything that shapes one replica's container. Replicas whose container carries
    /// another template are replaced; a change of `replicas` alone leaves the others alone.
    pub fn template(&self) -> String {
        short_hash(&[
            &self.workspace_id,
            &self.image,
            &self.cpu_millicores.to_string(),
            &self.memory_mib.to_string(),
        ])
    }

    /// Docker `NanoCPUs`: millicores × 10^6.
    pub fn nano_cpus(&self) -> i64 {
        i64::from(self.cpu_millicores) * 1_000_000
    }

    /// Docker `Memory` in bytes: MiB × 2^20 (bounded by validation, so it fits).
    pub fn memory_bytes(&self) -> i64 {
        i64::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(i64::MAX)
    }
}

/// Validates the `namespace`/`gateway_id` pair of any request. `prefix` is the path of the
/// message holding them (`"gateway."` for create, `""` for get/delete).
pub fn validate_key(
    namespace: &str,
    gateway_id: &str,
    prefix: &'static str,
) -> Result<GatewayKey, FieldError> {
    let (namespace_field, gateway_field) = match prefix {
        "" => ("namespace", "gateway_id"),
        _ => ("gateway.namespace", "gateway.gateway_id"),
    };
    validate_id(namespace, namespace_field)?;
    validate_id(gateway_id, gateway_field)?;
    Ok(GatewayKey::new(namespace, gateway_id))
}

/// Validates the `namespace` of a request that names a namespace only (ListGateways).
pub fn validate_namespace(namespace: &str) -> Result<(), FieldError> {
    validate_id(namespace, "namespace")
}

fn validate_id(value: &str, field: &'static str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_ID_LEN} characters"),
        ));
    }
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !(first_ok && rest_ok) {
        return Err(FieldError::new(
            field,
            "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        ));
    }
    Ok(())
}

fn validate_workspace_id(value: &str) -> Result<(), FieldError> {
    if value.len() > MAX_WORKSPACE_ID_LEN {
        return Err(FieldError::new(
            "gateway.workspace_id",
            format!("must be at most {MAX_WORKSPACE_ID_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            "gateway.workspace_id",
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn validate_image(image: &str) -> Result<(), FieldError> {
    const FIELD: &str = "gateway.image";
    if image.is_empty() {
        return Err(FieldError::new(FIELD, "must not be empty"));
    }
    if image.len() > MAX_IMAGE_LEN {
        return Err(FieldError::new(
            FIELD,
            format!("must be at most {MAX_IMAGE_LEN} characters"),
        ));
    }
    // The OCI parser accepts upper case in repository paths and surrounding blanks; Docker does not.
    let repository = image.split(['@']).next().unwrap_or(image);
    let path = repository
        .rsplit_once('/')
        .map_or(repository, |(_, last)| last);
    let name = path.split(':').next().unwrap_or(path);
    if image.chars().any(char::is_whitespace) || name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(FieldError::new(FIELD, "is not a valid image reference"));
    }
    oci_spec::distribution::Reference::from_str(image)
        .map(|_| ())
        .map_err(|error| FieldError::new(FIELD, format!("is not a valid image reference: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GatewaySpec {
        GatewaySpec {
            namespace: "acme".into(),
            workspace_id: "ws_1".into(),
            gateway_id: "gw_1".into(),
            image: "krane-test-gateway:dev".into(),
            replicas: 3,
            cpu_millicores: 250,
            memory_mib: 64,
        }
    }

    fn field_of(request: GatewaySpec) -> &'static str {
        match request.validate() {
            Ok(spec) => panic!("expected a field error, got {spec:?}"),
            Err(error) => error.field,
        }
    }

    #[test]
    fn a_valid_request_becomes_a_spec() {
        let spec = request().validate().expect("valid");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.nano_cpus(), 250_000_000);
        assert_eq!(spec.memory_bytes(), 64 * 1024 * 1024);
        assert_eq!(spec.key(), GatewayKey::new("acme", "gw_1"));
    }

    #[test]
    fn ids_must_be_docker_name_safe_and_bounded() {
        for bad in [
            "",
            "-lead",
            ".lead",
            "with space",
            "ünï",
            "a/b",
            "a*b",
            "a>b",
            "x=y",
        ] {
            let mut r = request();
            r.gateway_id = bad.into();
            assert_eq!(field_of(r), "gateway.gateway_id", "{bad:?}");
            let mut r = request();
            r.namespace = bad.into();
            assert_eq!(field_of(r), "gateway.namespace", "{bad:?}");
        }
        let mut r = request();
        r.gateway_id = "a".repeat(MAX_ID_LEN + 1);
        assert_eq!(field_of(r), "gateway.gateway_id");
        let mut r = request();
        r.gateway_id = "A0_.-z".into();
        assert!(r.validate().is_ok());
    }

    #[test]
    fn image_must_be_a_reference() {
        for bad in ["", "UPPER:tag", "a b", "img:", "::", "img@sha256:zz"] {
            let mut r = request();
            r.image = bad.into();
            assert_eq!(field_of(r), "gateway.image", "{bad:?}");
        }
        for good in [
            "busybox",
            "ghcr.io/unkeyed/gateway:v1.2.3",
            "localhost:5000/a/b:latest",
            "registry.example.com/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let mut r = request();
            r.image = good.into();
            assert!(r.validate().is_ok(), "{good}");
        }
    }

    #[test]
    fn numbers_are_bounded() {
        type Mutation = fn(&mut GatewaySpec);
        let cases: [(Mutation, &str); 6] = [
            (|r| r.replicas = 0, "gateway.replicas"),
            (|r| r.replicas = MAX_REPLICAS + 1, "gateway.replicas"),
            (|r| r.cpu_millicores = 0, "gateway.cpu_millicores"),
            (|r| r.cpu_millicores = u32::MAX, "gateway.cpu_millicores"),
            (|r| r.memory_mib = 5, "gateway.memory_size_mib"),
            (|r| r.memory_mib = u64::MAX, "gateway.memory_size_mib"),
        ];
        for (mutate, field) in cases {
            let mut r = request();
            mutate(&mut r);
            assert_eq!(field_of(r), field);
        }
    }

    #[test]
    fn workspace_id_may_be_empty_but_not_hostile() {
        let mut r = request();
        r.workspace_id = String::new();
        assert!(r.validate().is_ok());
        let mut r = request();
        r.workspace_id = "a\nb".into();
        assert_eq!(field_of(r), "gateway.workspace_id");
    }

    #[test]
    fn template_changes_with_what_shapes_a_container_only() {
        let spec = request().validate().expect("valid");
        let mut scaled = spec.clone();
        scaled.replicas = 5;
        assert_eq!(spec.template(), scaled.template());
        let mut new_image = spec.clone();
        new_image.image = "other:v2".into();
        assert_ne!(spec.template(), new_image.template());
    }
}
