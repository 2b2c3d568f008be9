//! Hot reload: the configuration file is watched, and read again on SIGHUP.
//!
//! The watch is on the file's *directory*, not its inode: a Kubernetes ConfigMap update never
//! writes the mounted file, it makes a new `..<timestamp>` directory and renames a new `..data`
//! symlink over the old one, and an editor often writes a new file and renames it into place.
//! Every event in the directory leads to a read of the file (through its symlinks); only new text
//! is parsed. SIGHUP forces a read at once, even when the watcher saw nothing, for a change made
//! through a symlink chain that leads outside the watched directory.
//!
//! When the read happens depends on which file the path now leads to. Another file than the one
//! last read (a swapped `..data`, a rename into place) was written completely before it was put
//! there, so it is read after [`SETTLE`]. The same file written again in place may be read between
//! two of its writes, and its first part may well be valid YAML (fewer routes, no prefix), so it is
//! read only once it has stopped changing for [`IN_PLACE_SETTLE`].
//!
//! A new file is validated fully before anything changes. A bad one, or one that holds no
//! settings at all (see [`Config::from_file_text`]), is refused with every problem logged, and the
//! running configuration keeps serving. Of a good one, the live settings are applied at once;
//! settings that only a restart can change (see [`Config::restart_needed`]) are reported and keep
//! their running values.

use super::{Config, Source};
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Quiet time after a directory event before the file is read: a ConfigMap update or an editor's
/// save is several events in a few milliseconds.
const SETTLE: Duration = Duration::from_millis(100);

/// Quiet time (no directory event, no change of the file's modification time or length) before a
/// file written in place is read. Writers pause between writes (a script, an editor saving in
/// place, a copy over the file from another machine); 1 s covers pauses of a few hundred
/// milliseconds, and it only delays in-place edits, never a ConfigMap update.
const IN_PLACE_SETTLE: Duration = Duration::from_secs(1);

/// A reload that read new text (or was asked for by SIGHUP and read the file).
#[derive(Debug)]
pub enum Reload {
    /// A new, valid configuration, whose live settings are to apply now.
    Applied(Box<Config>),
    /// The file is unreadable, invalid or holds no settings; the running configuration keeps
    /// serving.
    Refused,
}

/// Which file a path leads to: a file replaced by another has a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
}

/// What a write in progress changes: which file it is, when it was last written and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    file: FileId,
    modified: Option<SystemTime>,
    length: u64,
}

impl Stamp {
    fn of(metadata: &Metadata) -> Self {
        Self {
            file: FileId {
                device: metadata.dev(),
                inode: metadata.ino(),
            },
            modified: metadata.modified().ok(),
            length: metadata.len(),
        }
    }

    /// The stamp of the file `path` leads to (through its symlinks); `None` when there is none.
    fn at(path: &Path) -> Option<Self> {
        std::fs::metadata(path)
            .ok()
            .map(|metadata| Self::of(&metadata))
    }
}

/// The file as last read.
struct LastRead {
    /// Its text, parsed already: the same text again is not parsed again.
    text: Option<String>,
    /// Which file it was: another one is read soon after an event, the same one once quiet.
    file: Option<FileId>,
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
    let mut last = LastRead {
        text: Some(source.text.clone()),
        file: None,
    };
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
                () = settled(&source.path, last.file, &mut changed) => false,
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

/// Returns once the file `path` leads to may be read after a directory event: [`SETTLE`] later
/// when it is another file than `last_read` (the events of one swap or rename come within it), or
/// once the same file has had no event and no change of its modification time or length for
/// [`IN_PLACE_SETTLE`].
async fn settled(path: &Path, last_read: Option<FileId>, changed: &mut mpsc::Receiver<()>) {
    loop {
        tokio::time::sleep(SETTLE).await;
        while changed.try_recv().is_ok() {}
        let Some(before) = Stamp::at(path) else {
            // Gone or unreadable: the read says why.
            return;
        };
        if Some(before.file) != last_read {
            return;
        }
        // The event that ends the wait is one more write: wait again from there.
        let event = tokio::time::timeout(IN_PLACE_SETTLE, changed.recv()).await;
        if !matches!(event, Ok(Some(()))) && Stamp::at(path) == Some(before) {
            return;
        }
    }
}

/// The file's text, and which file it was: both from one open, so they belong together.
fn read(path: &Path) -> std::io::Result<(String, FileId)> {
    let mut file = std::fs::File::open(path)?;
    let stamp = Stamp::of(&file.metadata()?);
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((text, stamp.file))
}

/// Reads the file; `None` when its text is the one already applied.
fn reload(source: &Source, running: &Config, last: &mut LastRead, forced: bool) -> Option<Reload> {
    let path = &source.path;
    let text = match read(path) {
        Ok((text, file)) => {
            last.file = Some(file);
            text
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "configuration reload refused: cannot read the file; the running configuration stays");
            return Some(Reload::Refused);
        }
    };
    // SIGHUP parses again even unchanged text: what it refers to (a CA file) may have changed.
    if !forced && last.text.as_deref() == Some(text.as_str()) {
        return None;
    }
    let name = path.display().to_string();
    let new = match Config::from_file_text(&text, &name, &source.overrides) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(
                problems = e.problems.len(),
                "configuration reload refused; the running configuration stays:\n{e}"
            );
            // Remembered, so that the same broken text is not refused again at every event.
            last.text = Some(text);
            return Some(Reload::Refused);
        }
    };
    last.text = Some(text);
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
    use super::*;
    use tokio::time::Instant;

    /// A file in a directory of its own, and the id of the file as read.
    fn file(text: &str) -> (tempfile::TempDir, std::path::PathBuf, FileId) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tollgate.yaml");
        std::fs::write(&path, text).unwrap();
        let (_, id) = read(&path).unwrap();
        (dir, path, id)
    }

    #[tokio::test(start_paused = true)]
    async fn another_file_is_read_after_the_short_settle() {
        let (dir, path, id) = file("a: 1\n");
        let staged = dir.path().join("staged.yaml");
        std::fs::write(&staged, "a: 2\n").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        let (_events, mut changed) = mpsc::channel(1);
        let started = Instant::now();
        settled(&path, Some(id), &mut changed).await;
        assert_eq!(started.elapsed(), SETTLE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_file_is_read_once_quiet_for_the_in_place_settle() {
        let (_dir, path, id) = file("a: 1\n");
        let (events, mut changed) = mpsc::channel(1);
        let started = Instant::now();
        // A second write 400 ms after the first: the wait starts again from it.
        let writer = tokio::spawn({
            let path = path.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                std::fs::write(&path, "a: 1\nb: 2\n").unwrap();
                events.send(()).await.unwrap();
                events
            }
        });
        settled(&path, Some(id), &mut changed).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(400) + SETTLE + IN_PLACE_SETTLE
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_of_length_without_an_event_restarts_the_wait() {
        let (_dir, path, id) = file("a: 1\n");
        let (_events, mut changed) = mpsc::channel(1);
        let started = Instant::now();
        let writer = tokio::spawn({
            let path = path.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                std::fs::write(&path, "a: 1\nb: 2\n").unwrap();
            }
        });
        settled(&path, Some(id), &mut changed).await;
        writer.await.unwrap();
        // The first quiet period ended with another length: one more, from then.
        assert_eq!(started.elapsed(), (SETTLE + IN_PLACE_SETTLE) * 2);
    }

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
