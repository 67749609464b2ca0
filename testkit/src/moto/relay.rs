//! A loopback TCP relay in front of moto that can be taken down and
//! brought back on the same port, on its own thread and runtime so it works
//! whatever runtime (or none) the test uses.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::ports::{self, Port};

enum Command {
    /// Listen (true) or refuse connections (false); acknowledged once in
    /// effect.
    SetUp(bool, oneshot::Sender<()>),
}

/// Handle to the relay thread; dropping it stops the thread.
#[derive(Debug)]
pub(super) struct Relay {
    port: u16,
    /// Reserved for the relay's whole life, down times included.
    _reserved: Port,
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a reserved port and relays every connection to
    /// `127.0.0.1:upstream_port`.
    pub(super) fn start(upstream_port: u16) -> Self {
        let (listener, reserved) = ports::listen();
        let port = reserved.get();
        listener
            .set_nonblocking(true)
            .expect("relay: set_nonblocking");
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("moto-relay-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("relay runtime");
                rt.block_on(run(listener, port, upstream_port, rx));
            })
            .expect("spawn relay thread");
        Self {
            port,
            _reserved: reserved,
            commands: Some(tx),
            thread: Some(thread),
        }
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// Brings the listener up or down and waits until that is in effect.
    pub(super) async fn set_up(&self, up: bool) {
        let (ack_tx, ack_rx) = oneshot::channel();
        self.commands
            .as_ref()
            .expect("relay running")
            .send(Command::SetUp(up, ack_tx))
            .unwrap_or_else(|_| panic!("relay thread has stopped"));
        ack_rx
            .await
            .unwrap_or_else(|_| panic!("relay thread stopped before acknowledging"));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Closing the channel ends the relay loop.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(
    first: StdListener,
    port: u16,
    upstream_port: u16,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
    let mut listener = Some(TcpListener::from_std(first).expect("relay listener"));
    let mut connections = JoinSet::new();
    loop {
        let command = match &listener {
            Some(l) => {
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((client, _)) = accepted {
                            connections.spawn(relay_one(client, upstream));
                        }
                        continue;
                    }
                    Some(()) = async { connections.join_next().await.map(|_| ()) }, if !connections.is_empty() => continue,
                    command = commands.recv() => command,
                }
            }
            None => commands.recv().await,
        };
        match command {
            None => return,
            Some(Command::SetUp(up, ack)) => {
                if up && listener.is_none() {
                    listener = Some(rebind(port).await);
                } else if !up {
                    listener = None;
                    connections.abort_all();
                    while connections.join_next().await.is_some() {}
                }
                let _ = ack.send(());
            }
        }
    }
}

/// Binds the same port again; retried briefly in case the kernel has not
/// released it yet.
async fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!(
                "relay: cannot listen on 127.0.0.1:{port} again: {e}; held: {:?}",
                ports::holders(port)
            ),
        }
    }
}

async fn relay_one(mut client: TcpStream, upstream: SocketAddr) {
    // If moto is gone the client sees its connection closed, as with a
    // server that died mid-request.
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}
