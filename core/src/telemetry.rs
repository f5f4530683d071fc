//! Logging set-up shared by the binaries: human-readable by default, JSON on request, level
//! from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests starting several services in one process) keeps the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
