//! When a role process stops: on SIGTERM, on Ctrl-C, and — for roles that `strata up` starts —
//! when standard input reaches end-of-file.
//!
//! The supervisor holds each role's stdin pipe and never writes to it, so the pipe closes when
//! the supervisor exits for any reason, SIGKILL included: a role started with
//! `--exit-on-stdin-eof` then drains and exits, and no role outlives its supervisor, without any
//! platform-specific "parent death" call.

/// Resolves on SIGTERM, SIGINT, or (when `exit_on_stdin_eof`) end-of-file on stdin.
///
/// The signal handlers are installed when this is called, not when the future is first
/// polled: a role calls it before it announces readiness, so a SIGTERM sent the moment the
/// role is ready drains it instead of killing it with the signal's default action.
pub fn signal(exit_on_stdin_eof: bool) -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let interrupt = async {
            match interrupt {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let stdin_eof = async {
            if !exit_on_stdin_eof {
                return std::future::pending::<()>().await;
            }
            // A plain thread, not tokio's stdin: a blocking read inside the runtime would keep
            // the runtime (and so the process) from exiting after shutdown.
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
            _ = interrupt => tracing::info!("interrupt received: draining"),
            _ = stdin_eof => tracing::info!("supervisor gone (stdin closed): draining"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT only (for `strata up` itself, whose stdin is the user's).
pub fn requested() -> impl std::future::Future<Output = ()> + Send {
    signal(false)
}

/// Waits until the role is told to stop ([`signal`]) or the engine it runs is no longer
/// running (`running` is asked every half second). `true`: told to stop; `false`: the engine
/// died, and the role should exit with an error so that its supervisor restarts it.
/// Like [`signal`], its handlers are installed when it is called.
pub fn signal_or_exit(
    exit_on_stdin_eof: bool,
    mut running: impl FnMut() -> bool + Send,
) -> impl std::future::Future<Output = bool> + Send {
    let stop = signal(exit_on_stdin_eof);
    async move {
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
}

#[cfg(test)]
mod tests {
    /// The handlers are installed by the call: a SIGTERM that arrives before the future is
    /// first polled (a supervisor stopping a role the moment it announced readiness) stops
    /// it. Were they installed on the first poll, the signal's default action would end this
    /// test process instead.
    #[tokio::test]
    async fn a_sigterm_sent_before_the_first_poll_is_caught() {
        let stop = super::signal(false);
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        tokio::time::timeout(std::time::Duration::from_secs(10), stop)
            .await
            .expect("the SIGTERM resolves the stop future");
    }
}
