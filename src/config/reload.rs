//! Hot reload: the configuration file is watched, and read again on SIGHUP.
//!
//! The watch is on the file's *directory*, not its inode: a Kubernetes ConfigMap update never
//! writes the mounted file, it makes a new `..<timestamp>` directory and renames a new `..data`
//! symlink over the old one, and an editor often writes a new file and renames it into place.
//! Every event in the directory leads to a read of the file (through its symlinks); only new text
//! is parsed. SIGHUP forces a read even when the watcher saw nothing, for a change made through a
//! symlink chain that leads outside the watched directory.
//!
//! A new file is validated fully before anything changes. A bad one is refused with every problem
//! logged, and the running configuration keeps serving. Of a good one, the live settings are
//! applied at once; settings that only a restart can change (see [`Config::restart_needed`]) are
//! reported and keep their running values.

use super::{Config, Source};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after a directory event before the file is read: a ConfigMap update or an editor's
/// save is several events in a few milliseconds.
const SETTLE: Duration = Duration::from_millis(100);

/// A reload that read new text (or was asked for by SIGHUP and read the file).
#[derive(Debug)]
pub enum Reload {
    /// A new, valid configuration, whose live settings are to apply now.
    Applied(Box<Config>),
    /// The file is unreadable or invalid; the running configuration keeps serving.
    Refused,
}

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
    let mut last_text = Some(source.text.clone());
    // A change between the start-up read and the watch: seen now, not at the next event.
    if let Some(reload) = reload(&source, &running, &mut last_text, false) {
        reloaded(reload);
    }
    tracing::info!(path = %source.path.display(), watched = _watcher.is_some(), "reloading the configuration on change and on SIGHUP");
    loop {
        let forced = tokio::select! {
            Some(()) = changed.recv() => {
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
                false
            }
            () = hangup.recv() => {
                tracing::info!("SIGHUP received: reading the configuration again");
                true
            }
        };
        if let Some(reload) = reload(&source, &running, &mut last_text, forced) {
            reloaded(reload);
        }
    }
}

/// Reads the file; `None` when its text is the one already applied.
fn reload(
    source: &Source,
    running: &Config,
    last_text: &mut Option<String>,
    forced: bool,
) -> Option<Reload> {
    let path = &source.path;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "configuration reload refused: cannot read the file; the running configuration stays");
            return Some(Reload::Refused);
        }
    };
    // SIGHUP parses again even unchanged text: what it refers to (a CA file) may have changed.
    if !forced && last_text.as_deref() == Some(text.as_str()) {
        return None;
    }
    let name = path.display().to_string();
    let new = match Config::from_yaml(&text, &name, &source.overrides) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(
                problems = e.problems.len(),
                "configuration reload refused; the running configuration stays:\n{e}"
            );
            // Remembered, so that the same broken text is not refused again at every event.
            *last_text = Some(text);
            return Some(Reload::Refused);
        }
    };
    *last_text = Some(text);
    let restart = running.restart_needed(&new);
    if !restart.is_empty() {
        tracing::warn!(
            settings = restart.join(", "),
            "configuration reload: these settings changed but only apply after a restart; they keep their running values"
        );
    }
    tracing::info!(
        path = %path.display(),
        routes = new.routes.routes().len(),
        path_prefix = %new.path_prefix,
        failure_mode = ?new.failure_mode,
        "configuration reloaded"
    );
    Some(Reload::Applied(Box::new(new)))
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
        if event.is_ok() {
            let _ = events.try_send(());
        }
    })?;
    watcher.watch(directory, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
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
