//! The image policy: which images krane runs at all. `--allowed-images` on the API (and the same
//! on the workers, for commands that did not come through it) lists patterns of
//! `registry/repository` names: `*` matches within one path segment, `**` across segments
//! (`registry.example.com/unkey/*`, `registry.example.com/**`). An image is matched by its full
//! name, as Docker resolves it (`nginx:1` is `docker.io/library/nginx`), tag and digest left
//! out. No pattern: every image is allowed.

use crate::spec::FieldError;
use globset::{Glob, GlobBuilder, GlobMatcher};
use oci_spec::distribution::Reference;
use std::str::FromStr;

/// The allowed images; empty allows all.
#[derive(Debug, Clone, Default)]
pub struct ImagePolicy {
    rules: Vec<(String, GlobMatcher)>,
}

impl ImagePolicy {
    /// A policy of `patterns`; an error names the pattern that is not one.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for pattern in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            if !pattern.contains('/') || pattern.contains([':', '@']) {
                return Err(format!(
                    "image pattern {pattern:?}: write registry/repository without tag or digest \
                     (e.g. docker.io/library/nginx, registry.example.com/unkey/*)"
                ));
            }
            let glob: Glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|error| format!("image pattern {pattern:?}: {error}"))?;
            rules.push((pattern.to_string(), glob.compile_matcher()));
        }
        Ok(Self { rules })
    }

    /// True when no pattern restricts images.
    pub fn allows_all(&self) -> bool {
        self.rules.is_empty()
    }

    /// `Ok` when `image` may run; the error says which rule refused it, naming the field.
    pub fn check(&self, image: &str) -> Result<(), FieldError> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let name = full_name(image)
            .ok_or_else(|| FieldError::new("gateway.image", "is not a valid image reference"))?;
        if self.rules.iter().any(|(_, rule)| rule.is_match(&name)) {
            return Ok(());
        }
        let rules: Vec<&str> = self
            .rules
            .iter()
            .map(|(pattern, _)| pattern.as_str())
            .collect();
        Err(FieldError::new(
            "gateway.image",
            format!(
                "{name} is not allowed by the image policy (--allowed-images {})",
                rules.join(",")
            ),
        ))
    }
}

/// The registry an image is pulled from, as Docker resolves the reference (`nginx:1` is
/// `docker.io`, `127.0.0.1:5000/x:1` is `127.0.0.1:5000`); `None` if it is no reference.
pub fn registry_of(image: &str) -> Option<String> {
    let reference = Reference::from_str(image).ok()?;
    Some(reference.registry().to_string())
}

/// `registry/repository` as Docker resolves the reference.
fn full_name(image: &str) -> Option<String> {
    let reference = Reference::from_str(image).ok()?;
    Some(format!(
        "{}/{}",
        reference.registry(),
        reference.repository()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> ImagePolicy {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        ImagePolicy::new(&patterns).expect("valid patterns")
    }

    #[test]
    fn no_pattern_allows_every_image() {
        assert!(policy(&[]).check("anything:1").is_ok());
        assert!(policy(&[]).allows_all());
    }

    #[test]
    fn images_are_matched_by_their_full_name_without_tag_or_digest() {
        let allowed = policy(&[
            "docker.io/library/krane-test-gateway",
            "registry.example.com/unkey/*",
        ]);
        assert!(allowed.check("krane-test-gateway:dev").is_ok());
        assert!(
            allowed
                .check("docker.io/library/krane-test-gateway:slow")
                .is_ok()
        );
        assert!(
            allowed
                .check("registry.example.com/unkey/gateway:v2")
                .is_ok()
        );
        assert!(
            allowed
                .check("registry.example.com/unkey/gateway@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
                .is_ok()
        );
        let refused = allowed
            .check("registry.example.com/unkey/deep/gateway:v2")
            .expect_err("one segment");
        assert_eq!(refused.field, "gateway.image");
        assert!(
            refused.message.contains("registry.example.com/unkey/*"),
            "{refused}"
        );
        assert!(allowed.check("nginx:1").is_err());
        assert!(
            allowed
                .check("registry.example.com.evil.io/unkey/gateway:1")
                .is_err()
        );
        assert!(
            policy(&["registry.example.com/**"])
                .check("registry.example.com/a/b/c:1")
                .is_ok()
        );
    }

    #[test]
    fn the_registry_of_an_image_is_the_one_docker_pulls_from() {
        assert_eq!(registry_of("nginx:1").as_deref(), Some("docker.io"));
        assert_eq!(
            registry_of("127.0.0.1:5000/krane/gw:1").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            registry_of("registry.example.com/unkey/gw@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").as_deref(),
            Some("registry.example.com")
        );
        assert_eq!(registry_of("Not A Reference"), None);
    }

    #[test]
    fn patterns_must_name_a_registry_and_repository() {
        for bad in [
            "nginx",
            "docker.io/library/nginx:1",
            "registry.example.com/[",
            "x/y@sha256:0",
        ] {
            let patterns = vec![bad.to_string()];
            assert!(ImagePolicy::new(&patterns).is_err(), "{bad}");
        }
    }
}
