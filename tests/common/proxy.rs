//! A TCP proxy for fault injection: rowsync connects to the proxy's port (the config URL names
//! it instead of the server's), and the test breaks the network in between at will.
//!
//! - `cut()` resets every connection open at that moment, both halves (SO_LINGER 0, so each
//!   side gets a RST, as when a middlebox drops its state or a host reboots);
//! - `set_admit(Admit::Refuse)` resets new connections at once;
//! - `set_admit(Admit::Blackhole)` is a network partition where packets vanish: new
//!   connections are accepted and held without a byte going either way, and established ones
//!   stop delivering (what they carry waits, as TCP retransmits would). When the partition
//!   lifts, held connections reach the server and held bytes flow again;
//! - `set_latency` / `set_rate` slow every connection down (each chunk read waits the latency,
//!   and bytes are paced to the rate);
//! - `flap(every, period)` cuts every connection every `every` for `period`, in the background.
//!
//! The proxy runs on its own runtime thread, so it keeps forwarding while a test thread blocks
//! (a `rowsync status` run, a server restart) and works from sync and async code alike.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What happens to a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Forwarded to the server.
    Forward,
    /// Reset at once.
    Refuse,
    /// Held without forwarding; established connections stop delivering too.
    Blackhole,
}

#[derive(Debug, Clone, Copy, Default)]
struct Shaping {
    latency: Duration,
    bytes_per_sec: Option<u64>,
}

struct Shared {
    upstream: u16,
    /// Every open connection watches the token current when it opened; `cut` cancels it and
    /// puts a fresh one in its place for the connections that come after.
    generation: Mutex<CancellationToken>,
    admit: watch::Sender<Admit>,
    shaping: Mutex<Shaping>,
    accepted: AtomicU64,
    cuts: AtomicU64,
}

impl Shared {
    fn generation(&self) -> CancellationToken {
        self.generation.lock().unwrap().clone()
    }

    fn shaping(&self) -> Shaping {
        *self.shaping.lock().unwrap()
    }

    fn cut(&self) {
        let old = std::mem::replace(
            &mut *self.generation.lock().unwrap(),
            CancellationToken::new(),
        );
        old.cancel();
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

/// A running proxy to `127.0.0.1:upstream`; stops (dropping every connection) when dropped.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listens on a free port and forwards to `upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        // Bound here, registered with the proxy's runtime inside it (a test calls this from
        // its own runtime, where `block_on` is refused).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            generation: Mutex::new(CancellationToken::new()),
            admit: watch::channel(Admit::Forward).0,
            shaping: Mutex::new(Shaping::default()),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("proxy listener");
            accept_loop(listener, accepting).await
        });
        Proxy {
            port,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `url` with the server's port replaced by the proxy's.
    pub fn route(&self, url: &str) -> String {
        url.replace(
            &format!("127.0.0.1:{}/", self.shared.upstream),
            &format!("127.0.0.1:{}/", self.port),
        )
    }

    /// Resets every connection open now (new ones are admitted as `set_admit` says).
    pub fn cut(&self) {
        self.shared.cut();
    }

    pub fn set_admit(&self, admit: Admit) {
        self.shared.admit.send_replace(admit);
    }

    /// Delay added to every chunk forwarded, each way.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.shaping.lock().unwrap().latency = latency;
    }

    /// Bytes per second each connection may carry each way (`None`: unlimited).
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared.shaping.lock().unwrap().bytes_per_sec = bytes_per_sec;
    }

    /// Back to a plain forwarder: admits all, no latency, no rate limit (open connections
    /// stay open).
    pub fn heal(&self) {
        self.set_admit(Admit::Forward);
        *self.shared.shaping.lock().unwrap() = Shaping::default();
    }

    /// Cuts every connection every `every`, for `period`, in the background.
    pub fn flap(&self, every: Duration, period: Duration) {
        let shared = self.shared.clone();
        let until = Instant::now() + period;
        self.runtime.as_ref().unwrap().spawn(async move {
            while Instant::now() + every <= until {
                tokio::time::sleep(every).await;
                shared.cut();
            }
        });
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Cuts made so far (by `cut` and `flap`).
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.cut();
        if let Some(rt) = self.runtime.take() {
            // Tests drop it inside their own runtime, where a blocking shutdown is refused.
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        tokio::spawn(serve(client, shared.clone()));
    }
}

/// Resets `stream` when dropped: SO_LINGER 0 makes the close a RST, not a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let cut = shared.generation();
    let mut admit = shared.admit.subscribe();
    // Held while the network is partitioned; whatever the client sends meanwhile waits.
    let mut held = Vec::new();
    loop {
        let now = *admit.borrow_and_update();
        match now {
            Admit::Refuse => return reset(client),
            Admit::Forward => break,
            Admit::Blackhole => {
                let mut buf = [0u8; 4096];
                tokio::select! {
                    _ = cut.cancelled() => return reset(client),
                    changed = admit.changed() => if changed.is_err() { return },
                    n = client.read(&mut buf) => match n {
                        // The client gave up.
                        Ok(0) | Err(_) => return,
                        Ok(n) => held.extend_from_slice(&buf[..n]),
                    },
                }
            }
        }
    }
    let server = tokio::select! {
        _ = cut.cancelled() => return reset(client),
        s = TcpStream::connect(("127.0.0.1", shared.upstream)) => s,
    };
    let Ok(mut server) = server else {
        // The server is down: the client sees a reset, as it would connecting directly.
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    if !held.is_empty() && server.write_all(&held).await.is_err() {
        return reset(client);
    }
    {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(&mut client_read, &mut server_write, &shared);
        let down = pump(&mut server_read, &mut client_write, &shared);
        tokio::select! {
            _ = cut.cancelled() => {}
            // One direction ended (a close or an error): the connection is over.
            _ = up => {}
            _ = down => {}
        }
    }
    reset(client);
    reset(server);
}

/// Copies one direction, with the latency, rate and partition in force at each chunk.
async fn pump<R, W>(from: &mut R, to: &mut W, shared: &Shared)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut admit = shared.admit.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Partitioned: the bytes wait until it lifts.
        while *admit.borrow_and_update() == Admit::Blackhole {
            if admit.changed().await.is_err() {
                return;
            }
        }
        let shaping = shared.shaping();
        if !shaping.latency.is_zero() {
            tokio::time::sleep(shaping.latency).await;
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            // Paced in slices of a tenth of a second's worth.
            let take = match shaping.bytes_per_sec {
                Some(rate) => (rate as usize / 10).clamp(1, chunk.len()),
                None => chunk.len(),
            };
            if to.write_all(&chunk[..take]).await.is_err() {
                return;
            }
            chunk = &chunk[take..];
            if let Some(rate) = shaping.bytes_per_sec {
                tokio::time::sleep(Duration::from_secs_f64(take as f64 / rate.max(1) as f64)).await;
            }
        }
    }
}
