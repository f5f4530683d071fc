//! Shutdown plumbing shared by the binaries: SIGTERM or SIGINT cancels one token, and every
//! loop takes that token as an input (stop taking work, finish or hand back what is in flight).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Installs SIGTERM/SIGINT handlers now (so a signal arriving during start-up is not lost to
/// the default action) and cancels `stop` on the first one. Call it first thing in `main`.
pub fn cancel_on_signal(stop: CancellationToken) {
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot listen for signals; stop with SIGKILL");
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received"),
            _ = interrupt.recv() => info!("SIGINT received"),
        }
        stop.cancel();
    });
}
