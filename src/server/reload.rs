//! The configuration watcher: a watch on the configuration file's directory and SIGHUP, each
//! leading to a read of the file once it has settled ([`crate::config::reload`] decides when and
//! what applies).

use crate::config::reload::{LastRead, Reload, reload, settled};
use crate::config::{Config, Source};
use std::path::Path;
use tokio::sync::mpsc;

/// Watches `source` until the returned future is dropped, and calls `reloaded` with every
/// reload that found new text. `running` is the configuration the process started with.
pub async fn watch(source: Source, running: Config, reloaded: impl Fn(Reload) + Send + 'static) {
    let (events, mut changed) = mpsc::channel::<()>(1);
    // Kept alive for as long as the loop runs.
    let _watcher = match watch_directory(&source.path, events) {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(path = %source.path.display(), error = %e, "cannot watch the configuration's directory; reload with SIGHUP");
            None
        }
    };
    let mut hangup = hangup_signal();
    let mut last = LastRead::new(source.text.clone());
    // A change between the start-up read and the watch: seen now, not at the next event.
    if let Some(reload) = reload(&source, &running, &mut last, false) {
        reloaded(reload);
    }
    tracing::info!(path = %source.path.display(), watched = _watcher.is_some(), "reloading the configuration on change and on SIGHUP");
    loop {
        let mut forced = tokio::select! {
            Some(()) = changed.recv() => false,
            () = hangup.recv() => true,
        };
        if !forced {
            // SIGHUP does not wait for a file to settle.
            forced = tokio::select! {
                () = settled(&source.path, last.file(), &mut changed) => false,
                () = hangup.recv() => true,
            };
        }
        if forced {
            tracing::info!("SIGHUP received: reading the configuration again");
        }
        if let Some(reload) = reload(&source, &running, &mut last, forced) {
            reloaded(reload);
        }
    }
}

/// Sends on `events` (dropping what the channel cannot hold: one pending event is enough) for
/// every change in the file's directory.
fn watch_directory(
    path: &Path,
    events: mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| changes_something(event.kind)) {
            let _ = events.try_send(());
        }
    })?;
    watcher.watch(directory, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether an event can mean new text: anything but a file opened, read or closed unwritten.
/// notify reports opens too, so without this every read of the file, this module's own included,
/// would wake the watcher for another read: the file would be read again and again for ever.
fn changes_something(kind: notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(access) => access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

/// SIGHUP, or a stream that never yields where there is none.
struct Hangup(Option<tokio::signal::unix::Signal>);

impl Hangup {
    async fn recv(&mut self) {
        match &mut self.0 {
            Some(signal) => {
                if signal.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}

fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Hangup(Some(signal)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by editing the file");
            Hangup(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::changes_something;

    #[test]
    fn only_events_that_can_mean_new_text_count() {
        use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
        assert!(!changes_something(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_something(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes_something(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_something(EventKind::Modify(ModifyKind::Any)));
        assert!(changes_something(EventKind::Create(CreateKind::File)));
    }
}
