//! When a role process stops: on SIGTERM, on Ctrl-C, and — for roles that `strata up` starts —
//! when standard input reaches end-of-file.
//!
//! The supervisor holds each role's stdin pipe and never writes to it, so the pipe closes when
//! the supervisor exits for any reason, SIGKILL included: a role started with
//! `--exit-on-stdin-eof` then drains and exits, and no role outlives its supervisor, without any
//! platform-specific "parent death" call.

/// Resolves on SIGTERM, SIGINT, or (when `exit_on_stdin_eof`) end-of-file on stdin.
pub async fn signal(exit_on_stdin_eof: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let stdin_eof = async {
        if !exit_on_stdin_eof {
            return std::future::pending::<()>().await;
        }
        // A plain thread, not tokio's stdin: a blocking read inside the runtime would keep the
        // runtime (and so the process) from exiting after shutdown.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received: draining"),
        _ = stdin_eof => tracing::info!("supervisor gone (stdin closed): draining"),
    }
}

/// Resolves on SIGTERM or SIGINT only (for `strata up` itself, whose stdin is the user's).
pub async fn requested() {
    signal(false).await
}

/// Waits until the role is told to stop ([`signal`]) or the engine it runs is no longer
/// running (`running` is asked every half second). `true`: told to stop; `false`: the engine
/// died, and the role should exit with an error so that its supervisor restarts it.
pub async fn signal_or_exit(exit_on_stdin_eof: bool, mut running: impl FnMut() -> bool) -> bool {
    let stop = signal(exit_on_stdin_eof);
    tokio::pin!(stop);
    let mut watch = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut stop => return true,
            _ = watch.tick() => {
                if !running() {
                    return false;
                }
            }
        }
    }
}
