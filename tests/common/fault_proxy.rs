//! A TCP proxy between tollgate and a real `redis-server` that injects network faults on demand:
//! added latency, a black hole (a dead NAT entry or a vanished host), or connection resets.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the traffic from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward every chunk at once.
    Pass,
    /// Forward every chunk, in both directions, after this added latency.
    Delay(Duration),
    /// Every established connection stops forwarding in both directions, for good, even after
    /// the mode goes back to `Pass` (a dead NAT entry: nothing tells either end). New connections
    /// are still accepted, but while the mode lasts they forward nothing either, also for good.
    BlackHole,
    /// Every connection is closed with a TCP RST; while the mode lasts, new connections are
    /// accepted and reset at once.
    Reset,
}

/// What the connections watch: the mode, and how many times each lasting fault was switched on,
/// so that a connection notices a black hole or a reset even when the mode changed back before
/// it looked.
#[derive(Debug, Clone, Copy)]
struct State {
    fault: Fault,
    black_holes: u64,
    resets: u64,
}

/// The proxy, listening on `127.0.0.1:port` and forwarding to `127.0.0.1:upstream`. Dropping it
/// ends every connection it holds.
pub struct FaultProxy {
    pub port: u16,
    state: watch::Sender<State>,
}

impl FaultProxy {
    /// Starts forwarding to a server on `127.0.0.1:upstream`, in `Pass` mode.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (state, watcher) = watch::channel(State {
            fault: Fault::Pass,
            black_holes: 0,
            resets: 0,
        });
        tokio::spawn(accept(listener, upstream, watcher));
        Self { port, state }
    }

    /// A `redis://` URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Switches the mode; connections react at once.
    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|state| {
            state.fault = fault;
            match fault {
                Fault::BlackHole => state.black_holes += 1,
                Fault::Reset => state.resets += 1,
                Fault::Pass | Fault::Delay(_) => {}
            }
        });
    }
}

async fn accept(listener: TcpListener, upstream: u16, mut state: watch::Receiver<State>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(connection(client, upstream, state.clone()));
                }
            }
            // The proxy was dropped.
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

async fn connection(client: TcpStream, upstream: u16, mut state: watch::Receiver<State>) {
    let born = *state.borrow_and_update();
    match born.fault {
        Fault::Reset => return reset(client),
        Fault::BlackHole => return black_hole(client, None, born, state).await,
        Fault::Pass | Fault::Delay(_) => {}
    }
    match TcpStream::connect(("127.0.0.1", upstream)).await {
        Ok(server) => forward(client, server, born, state).await,
        Err(_) => reset(client),
    }
}

/// Copies both ways until either side closes or a fault ends the connection.
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    born: State,
    mut state: watch::Receiver<State>,
) {
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    loop {
        let (n, to_server) = tokio::select! {
            read = client.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => (n, true),
            },
            read = server.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => (n, false),
            },
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *state.borrow_and_update();
                if now.resets != born.resets {
                    return reset(client);
                }
                if now.black_holes != born.black_holes {
                    return black_hole(client, Some(server), born, state).await;
                }
                continue;
            }
        };
        let fault = state.borrow().fault;
        if let Fault::Delay(latency) = fault {
            tokio::time::sleep(latency).await;
        }
        // A fault switched on during the delay swallows the chunk.
        let now = *state.borrow();
        if now.resets != born.resets {
            return reset(client);
        }
        if now.black_holes != born.black_holes {
            return black_hole(client, Some(server), born, state).await;
        }
        let written = if to_server {
            server.write_all(&up[..n]).await
        } else {
            client.write_all(&down[..n]).await
        };
        if written.is_err() {
            return;
        }
    }
}

/// Holds the sockets open and forwards nothing, until a reset or the proxy's end.
async fn black_hole(
    client: TcpStream,
    server: Option<TcpStream>,
    born: State,
    mut state: watch::Receiver<State>,
) {
    while state.changed().await.is_ok() {
        if state.borrow_and_update().resets != born.resets {
            drop(server);
            return reset(client);
        }
    }
}

/// Closes with RST rather than FIN: SO_LINGER 0, then close.
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}
