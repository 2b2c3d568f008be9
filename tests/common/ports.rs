//! Ports on 127.0.0.1 for the processes the tests and benches start: a free one to give a child,
//! and waiting until the child accepts connections on it.
//!
//! Standalone (std only), so that a file a bench includes with `#[path]` can include it too.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (the usual bind-to-0 race is accepted in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Why a child never accepted connections on its port.
#[derive(Debug)]
pub enum NotListening {
    /// It exited first (for a server told to bind a port, often because someone else took it).
    Exited(ExitStatus),
    /// It still runs, but nothing accepted a connection within the limit.
    Silent,
}

/// Waits until something accepts connections on 127.0.0.1:`port`, for at most `limit`, while
/// `child` still runs.
pub fn wait_listening(child: &mut Child, port: u16, limit: Duration) -> Result<(), NotListening> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotListening::Exited(status));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(NotListening::Silent)
}
