//! Hot reload: reading the configuration file again once it has settled, and deciding what applies.
//! The watcher that calls this (a directory watch and SIGHUP) is the server's
//! (`server::reload`).
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
pub struct FileId {
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
pub struct LastRead {
    /// Its text, parsed already: the same text again is not parsed again.
    text: Option<String>,
    /// Which file it was: another one is read soon after an event, the same one once quiet.
    file: Option<FileId>,
}

impl LastRead {
    /// The text read at start-up, from a file not identified yet.
    pub fn new(text: String) -> Self {
        Self {
            text: Some(text),
            file: None,
        }
    }

    /// Which file was read last, once known.
    pub fn file(&self) -> Option<FileId> {
        self.file
    }
}

/// Returns once the file `path` leads to may be read after a directory event: [`SETTLE`] later
/// when it is another file than `last_read` (the events of one swap or rename come within it), or
/// once the same file has had no event and no change of its modification time or length for
/// [`IN_PLACE_SETTLE`].
pub async fn settled(path: &Path, last_read: Option<FileId>, changed: &mut mpsc::Receiver<()>) {
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
pub fn reload(
    source: &Source,
    running: &Config,
    last: &mut LastRead,
    forced: bool,
) -> Option<Reload> {
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
}
