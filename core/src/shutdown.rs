//! Shutdown plumbing shared by the binaries: SIGTERM or SIGINT cancels one token, and every
//! loop takes that token as an input (stop taking work, finish or hand back what is in flight).

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Cancels `stop` on the first SIGTERM or SIGINT.
pub async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot listen for signals; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM received"),
        _ = interrupt.recv() => info!("SIGINT received"),
    }
    stop.cancel();
}
