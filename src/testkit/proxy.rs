//! [`FaultProxy`]: a TCP proxy that injects latency, partitions and resets.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::Rng;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

/// Time limit for connecting to the upstream node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Chunks that may be in flight (delayed) per direction before reads pause.
const IN_FLIGHT: usize = 64;
/// Read buffer size per direction.
const CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Blackhole,
    Reset,
}

#[derive(Debug, Clone, Copy)]
struct Faults {
    latency: Duration,
    jitter: Duration,
    mode: Mode,
}

impl Faults {
    const NONE: Self = Self {
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
        mode: Mode::Pass,
    };
}

#[derive(Debug)]
struct Shared {
    faults: Mutex<Faults>,
    /// Bumped to tear down every open connection.
    epoch: watch::Sender<u64>,
}

impl Shared {
    fn faults(&self) -> Faults {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn drop_connections(&self) {
        self.epoch.send_modify(|e| *e = e.wrapping_add(1));
    }
}

/// A TCP proxy in front of one Redis node that injects faults on demand.
///
/// It listens on `127.0.0.1:<random port>` and forwards each accepted
/// connection to `upstream`. Faults can be changed at any time from any task
/// or thread; they apply to data read after the change:
///
/// * [`set_latency`](Self::set_latency) / [`set_jitter`](Self::set_jitter):
///   delay every chunk, in each direction, preserving order.
/// * [`blackhole`](Self::blackhole): a partition. Connections are accepted
///   and kept open but nothing is forwarded; data is dropped, not buffered.
/// * [`reset`](Self::reset): reset every connection now and every new one
///   at once. [`disconnect_all`](Self::disconnect_all) is the one-shot form.
/// * [`heal`](Self::heal): back to plain pass-through.
///
/// A connection that lost data to a blackhole, or was accepted during one,
/// stays dead (silent) after [`heal`](Self::heal), like a TCP stream that can
/// no longer make progress, so a client never reads a reply meant for
/// another request; clients must time out and reconnect. Connections that
/// stayed idle during the blackhole keep working. Latency applies to data
/// only, not to connection setup.
///
/// Dropping the proxy stops its listener and closes all its connections.
/// It must be started inside a Tokio runtime.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_redlock::testkit::{FaultProxy, ping};
///
/// # async fn demo(node: std::net::SocketAddr) -> std::io::Result<()> {
/// let proxy = FaultProxy::start(node).await?;
/// proxy.set_latency(Duration::from_millis(50));
/// assert!(ping(proxy.addr(), Duration::from_secs(1)).await); // ~100 ms round trip
/// proxy.blackhole();
/// assert!(!ping(proxy.addr(), Duration::from_millis(300)).await);
/// proxy.heal();
/// assert!(ping(proxy.addr(), Duration::from_secs(1)).await);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a pass-through proxy to `upstream` on a free loopback port.
    ///
    /// # Panics
    /// If called outside a Tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::NONE),
            epoch: watch::Sender::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Ok(Self {
            addr,
            upstream,
            shared,
            task,
        })
    }

    /// Address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The node this proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Delays every chunk by `latency` in each direction (so a request/reply
    /// round trip gains about twice that). `Duration::ZERO` turns it off.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.update(|f| f.latency = latency);
    }

    /// Adds a random extra delay in `0..=jitter` per chunk, on top of the
    /// latency. Ordering within a connection is preserved.
    pub fn set_jitter(&self, jitter: Duration) {
        self.shared.update(|f| f.jitter = jitter);
    }

    /// Partitions the node: connections (existing and new) stay open but
    /// nothing is forwarded in either direction, and data is discarded.
    pub fn blackhole(&self) {
        self.shared.update(|f| f.mode = Mode::Blackhole);
    }

    /// Abruptly resets (TCP RST) every open connection, and every new one as
    /// soon as it is accepted, until [`heal`](Self::heal).
    pub fn reset(&self) {
        self.shared.update(|f| f.mode = Mode::Reset);
        self.shared.drop_connections();
    }

    /// Resets every open connection once; new connections work normally.
    pub fn disconnect_all(&self) {
        self.shared.drop_connections();
    }

    /// Clears every fault (latency, jitter, blackhole, reset): new
    /// connections pass through untouched. Connections that lost data to a
    /// blackhole, or were accepted during one, stay dead.
    pub fn heal(&self) {
        self.shared.update(|f| *f = Faults::NONE);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the accept task's future drops its JoinSet, which aborts
        // every connection task and closes their sockets.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let _ = client.set_nodelay(true);
                    // Subscribe before the task starts so a reset issued
                    // right after accept still reaches this connection.
                    let epoch = shared.epoch.subscribe();
                    conns.spawn(handle(client, upstream, Arc::clone(&shared), epoch));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::debug!(error = %e, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Closes a socket with RST instead of FIN.
fn abort(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut epoch: watch::Receiver<u64>,
) {
    match shared.faults().mode {
        Mode::Reset => return abort(client),
        Mode::Blackhole => return sink(client, epoch).await,
        Mode::Pass => {}
    }
    let connected = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)) => r,
        _ = epoch.changed() => return abort(client),
    };
    let mut server = match connected {
        Ok(Ok(server)) => server,
        // Upstream down: the client sees its connection reset.
        _ => return abort(client),
    };
    let _ = server.set_nodelay(true);

    let poisoned = AtomicBool::new(false);
    let clean = {
        let (client_rd, client_wr) = client.split();
        let (server_rd, server_wr) = server.split();
        let to_server = pipe(client_rd, server_wr, &shared, &poisoned);
        let to_client = pipe(server_rd, client_wr, &shared, &poisoned);
        tokio::pin!(to_server, to_client);
        let (mut to_server_done, mut to_client_done) = (false, false);
        loop {
            tokio::select! {
                r = &mut to_server, if !to_server_done => {
                    if r.is_err() { break false; }
                    to_server_done = true;
                    // Client closed a dead connection: nothing left to do.
                    if poisoned.load(Ordering::Relaxed) { break true; }
                }
                r = &mut to_client, if !to_client_done => {
                    if r.is_err() { break false; }
                    to_client_done = true;
                }
                _ = epoch.changed() => break false,
            }
            if to_server_done && to_client_done {
                break true;
            }
        }
    };
    if !clean {
        abort(client);
        abort(server);
    }
}

/// A connection accepted while blackholed: read and discard until the client
/// closes or connections are reset. It never reaches the upstream.
async fn sink(mut client: TcpStream, mut epoch: watch::Receiver<u64>) {
    let mut buf = vec![0u8; CHUNK];
    let reset = loop {
        tokio::select! {
            r = client.read(&mut buf) => match r {
                Ok(0) | Err(_) => break false,
                Ok(_) => {}
            },
            _ = epoch.changed() => break true,
        }
    };
    if reset {
        abort(client);
    }
}

/// Copies `from` to `to`, applying the current faults per chunk. Delayed
/// chunks are queued with their delivery time, so latency does not limit
/// throughput and order is kept. Half-closes `to` at EOF unless poisoned.
async fn pipe<R, W>(
    mut from: R,
    mut to: W,
    shared: &Shared,
    poisoned: &AtomicBool,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, Instant)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut last = Instant::now();
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(()); // dropping `tx` ends the writer
            }
            let faults = shared.faults();
            if faults.mode != Mode::Pass || poisoned.load(Ordering::Relaxed) {
                poisoned.store(true, Ordering::Relaxed);
                continue;
            }
            let at = (Instant::now() + faults.latency + sample(faults.jitter)).max(last);
            last = at;
            if tx.send((buf[..n].to_vec(), at)).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async {
        while let Some((chunk, at)) = rx.recv().await {
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            // A partition that started while the chunk was in flight drops it.
            if shared.faults().mode != Mode::Pass || poisoned.load(Ordering::Relaxed) {
                poisoned.store(true, Ordering::Relaxed);
                continue;
            }
            to.write_all(&chunk).await?;
        }
        if !poisoned.load(Ordering::Relaxed) {
            to.shutdown().await?;
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

/// Uniform random duration in `0..=max`.
fn sample(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}
