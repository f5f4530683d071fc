//! Pulls, pure: how far a pull got, from the engine's progress messages ([`PullTally`]), how
//! that reads in a reason, and whether the worker's registry credentials go with a pull
//! ([`sends_credentials`]: only to the registry they are for).

use super::PullProgress;
use bollard::models::CreateImageInfo;
use std::collections::BTreeMap;
use std::fmt;

/// The layers of one pull as the engine reported them: bytes downloaded of each layer's size.
#[derive(Debug, Default)]
pub struct PullTally {
    layers: BTreeMap<String, (u64, u64)>,
}

impl PullTally {
    /// Takes one progress message of the engine into account.
    pub fn record(&mut self, info: &CreateImageInfo) {
        let (Some(layer), Some(status)) = (info.id.as_deref(), info.status.as_deref()) else {
            return;
        };
        let detail = info.progress_detail.as_ref();
        let known = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok());
        match status {
            "Downloading" => {
                let current = detail.and_then(|d| known(d.current)).unwrap_or(0);
                let total = detail.and_then(|d| known(d.total)).unwrap_or(0);
                if total > 0 {
                    self.layers
                        .insert(layer.to_string(), (current.min(total), total));
                }
            }
            // Past the download: the whole layer is here.
            "Verifying Checksum" | "Download complete" | "Extracting" | "Pull complete" => {
                if let Some((current, total)) = self.layers.get_mut(layer) {
                    *current = *total;
                }
            }
            _ => {}
        }
    }

    /// Bytes downloaded so far of the layers whose size is known.
    pub fn progress(&self) -> PullProgress {
        self.layers
            .values()
            .fold(PullProgress::default(), |sum, (current, total)| {
                PullProgress {
                    downloaded: sum.downloaded.saturating_add(*current),
                    total: sum.total.saturating_add(*total),
                }
            })
    }
}

impl fmt::Display for PullProgress {
    /// `12.3 MB of 40.0 MB` (decimal megabytes, as `docker pull` shows them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let megabytes = |bytes: u64| bytes as f64 / 1_000_000.0;
        write!(
            f,
            "{:.1} MB of {:.1} MB",
            megabytes(self.downloaded),
            megabytes(self.total)
        )
    }
}

/// The reason a replica waiting for its image shows: `pulling <image>: 12.3 MB of 40.0 MB`,
/// or `pulling <image>` until the size of a layer is known.
pub fn pulling_reason(image: &str, progress: Option<PullProgress>) -> String {
    match progress {
        Some(progress) if progress.total > 0 => format!("pulling {image}: {progress}"),
        _ => format!("pulling {image}"),
    }
}

/// Whether the worker's credentials go with a pull of `image`: only to `server`, the registry
/// they are for (`--registry-server`: `host[:port]`, with or without `https://`; Docker Hub's
/// `https://index.docker.io/v1/` is `docker.io`), so a gateway naming another registry never
/// receives them. Without a server they go with every pull.
pub fn sends_credentials(image: &str, server: Option<&str>) -> bool {
    let Some(server) = server else {
        return true;
    };
    let Some(registry) = krane_core::images::registry_of(image) else {
        return false;
    };
    normalized_registry(server) == normalized_registry(&registry)
}

fn normalized_registry(server: &str) -> String {
    let server = server.trim();
    let server = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = server
        .split('/')
        .next()
        .unwrap_or(server)
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn message(layer: &str, status: &str, current: i64, total: i64) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(layer.into()),
            status: Some(status.into()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn progress_adds_up_the_layers_being_downloaded() {
        let mut tally = PullTally::default();
        tally.record(&CreateImageInfo {
            id: Some("1".into()),
            status: Some("Pulling from krane/big".into()),
            ..Default::default()
        });
        tally.record(&message("a", "Pulling fs layer", 0, 0));
        assert_eq!(tally.progress(), PullProgress::default());
        tally.record(&message("a", "Downloading", 12_300_000, 40_000_000));
        tally.record(&message("b", "Downloading", 0, 10_000_000));
        assert_eq!(
            tally.progress(),
            PullProgress {
                downloaded: 12_300_000,
                total: 50_000_000
            }
        );
        tally.record(&message("b", "Download complete", 0, 0));
        tally.record(&message("a", "Downloading", 20_000_000, 40_000_000));
        assert_eq!(tally.progress().downloaded, 30_000_000);
        // Extraction counts its own bytes; the download is done by then.
        tally.record(&message("a", "Extracting", 1, 40_000_000));
        assert_eq!(tally.progress().downloaded, 50_000_000);
    }

    #[test]
    fn the_reason_names_the_image_and_how_far_it_got() {
        let progress = PullProgress {
            downloaded: 12_345_678,
            total: 40_000_000,
        };
        assert_eq!(
            pulling_reason("127.0.0.1:5000/x:1", Some(progress)),
            "pulling 127.0.0.1:5000/x:1: 12.3 MB of 40.0 MB"
        );
        assert_eq!(pulling_reason("x:1", None), "pulling x:1");
        assert_eq!(
            pulling_reason("x:1", Some(PullProgress::default())),
            "pulling x:1"
        );
    }

    #[test]
    fn credentials_go_only_to_the_registry_they_are_for() {
        assert!(sends_credentials("evil.example.com/x:1", None));
        assert!(sends_credentials(
            "127.0.0.1:5000/krane/gw:1",
            Some("127.0.0.1:5000")
        ));
        assert!(sends_credentials(
            "registry.example.com/unkey/gw:1",
            Some("https://Registry.example.com/")
        ));
        assert!(sends_credentials(
            "nginx:1",
            Some("https://index.docker.io/v1/")
        ));
        assert!(!sends_credentials(
            "evil.example.com/x:1",
            Some("registry.example.com")
        ));
        assert!(!sends_credentials(
            "127.0.0.1:5001/krane/gw:1",
            Some("127.0.0.1:5000")
        ));
        assert!(!sends_credentials("nginx:1", Some("registry.example.com")));
    }
}
