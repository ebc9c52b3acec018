//! A TCP proxy between a backend's connection pool and the server, which a
//! test controls: it passes bytes through until told to drop a connection
//! at an exact point of the PostgreSQL protocol.
//!
//! - [`Proxy::cut_next_request`]: the next request any connection sends
//!   never reaches the server; the proxy closes that connection instead.
//!   Nothing of it lands.
//! - [`Proxy::lose_next_answer`]: the next statement any connection sends
//!   runs to the end, and the proxy closes the connection as soon as the
//!   server has said the statement finished (`CommandComplete`) and is
//!   ready again (`ReadyForQuery`, sent once the implicit transaction has
//!   committed), dropping those answers: the write landed, its answer is
//!   lost.
//!
//! - [`Proxy::stall`]: for a while, no byte goes either way on any
//!   connection (a congested or partitioned network that recovers); then
//!   everything held goes on.
//!
//! A mode applies to one connection, the first to start a statement (a
//! Parse, Bind or simple Query message) after it was set; set it while no
//! statement is running. The proxy reads the server's bytes as whole
//! messages, so it works only on connections without TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASS: u8 = 0;
const CUT_NEXT_REQUEST: u8 = 1;
const LOSE_NEXT_ANSWER: u8 = 2;

/// The proxy; it runs until the runtime it was started on ends.
pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stall: Stall,
    counts: Arc<Counts>,
}

/// Round trips that started a statement, by their first message, over
/// every connection.
#[derive(Default)]
struct Counts {
    /// Starting with Parse: the statement was prepared first.
    parsed: AtomicU64,
    /// Starting with Bind: a prepared statement ran.
    bound: AtomicU64,
}

/// Until when no byte is forwarded (shared by every connection).
#[derive(Clone, Default)]
struct Stall(Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl Stall {
    /// Waits out a stall in force, looking again every 10 ms in case it
    /// was ended early.
    async fn wait(&self) {
        loop {
            let until = *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            match until {
                Some(until) if now < until => {
                    let next_look = now + std::time::Duration::from_millis(10);
                    tokio::time::sleep_until(until.min(next_look)).await;
                }
                _ => return,
            }
        }
    }
}

impl Proxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards every
    /// connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(PASS));
        let stall = Stall::default();
        let counts = Arc::new(Counts::default());
        let (shared, shared_stall, shared_counts) =
            (Arc::clone(&mode), stall.clone(), Arc::clone(&counts));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (mode, stall, counts) = (
                    Arc::clone(&shared),
                    shared_stall.clone(),
                    Arc::clone(&shared_counts),
                );
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        // As the client and server would without the proxy:
                        // no Nagle delay on small messages.
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, mode, stall, counts).await;
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            mode,
            stall,
            counts,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next request is dropped with its connection (see the module).
    pub fn cut_next_request(&self) {
        self.mode.store(CUT_NEXT_REQUEST, Ordering::SeqCst);
    }

    /// The next statement lands and its answer is dropped with its
    /// connection (see the module).
    pub fn lose_next_answer(&self) {
        self.mode.store(LOSE_NEXT_ANSWER, Ordering::SeqCst);
    }

    /// Calls off a [`cut_next_request`](Self::cut_next_request) or
    /// [`lose_next_answer`](Self::lose_next_answer) that no statement took.
    pub fn pass(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }

    /// Round trips that started with Parse (a statement prepared) and with
    /// Bind (a prepared statement run) since the last call; resets both.
    pub fn take_round_trips(&self) -> (u64, u64) {
        (
            self.counts.parsed.swap(0, Ordering::SeqCst),
            self.counts.bound.swap(0, Ordering::SeqCst),
        )
    }

    /// Every byte flows again, now.
    pub fn end_stall(&self) {
        *self
            .stall
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// No byte goes either way for `how_long` from now.
    pub fn stall(&self, how_long: std::time::Duration) {
        let until = tokio::time::Instant::now() + how_long;
        *self
            .stall
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }
}

/// Relays one connection both ways until either side closes or a mode ends
/// it.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    mode: Arc<AtomicU8>,
    stall: Stall,
    counts: Arc<Counts>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Set by the requests direction when this connection takes the
    // lose-next-answer mode, before the request goes on; read by the
    // answers direction.
    let armed = Arc::new(AtomicBool::new(false));
    let requests = {
        let (armed, stall) = (Arc::clone(&armed), stall.clone());
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Only a statement takes a mode (a Parse, a Bind or a simple
                // Query starts it), not a Close of a prepared statement the
                // client sends on its own after the last one ended.
                let statement = matches!(buf[0], b'P' | b'B' | b'Q');
                match buf[0] {
                    b'P' => counts.parsed.fetch_add(1, Ordering::SeqCst),
                    b'B' => counts.bound.fetch_add(1, Ordering::SeqCst),
                    _ => 0,
                };
                let taken = if statement {
                    mode.swap(PASS, Ordering::SeqCst)
                } else {
                    PASS
                };
                if taken == CUT_NEXT_REQUEST {
                    // Never forwarded: the connection ends here.
                    return;
                }
                if taken == LOSE_NEXT_ANSWER {
                    armed.store(true, Ordering::SeqCst);
                }
                stall.wait().await;
                if server_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    let answers = async move {
        let mut buf = vec![0u8; 64 * 1024];
        // The server's bytes are read as whole messages (a type byte, then
        // a length that counts itself), so that arming always starts at a
        // message's first byte.
        let mut pending: Vec<u8> = Vec::new();
        let mut dropping = false;
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            let mut forward = Vec::new();
            while pending.len() >= 5 {
                let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]);
                let total = 1 + len as usize;
                if pending.len() < total {
                    break;
                }
                let message: Vec<u8> = pending.drain(..total).collect();
                // Armed: pass what comes before the statement's end, drop
                // its end, and close once the server is ready again.
                if armed.load(Ordering::SeqCst) {
                    match message[0] {
                        b'C' => dropping = true,
                        b'Z' if dropping => {
                            let _ = client_write.write_all(&forward).await;
                            // The statement committed; its answer never
                            // arrives.
                            return;
                        }
                        _ => {}
                    }
                }
                if !dropping {
                    forward.extend_from_slice(&message);
                }
            }
            stall.wait().await;
            if client_write.write_all(&forward).await.is_err() {
                return;
            }
        }
    };
    // Either direction ending ends the connection: both halves drop.
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
}

/// The proxied form of a key-value connection string: the same user,
/// password and database, through `proxy`.
pub fn url_via(url: &str, proxy: SocketAddr) -> Result<String, tokio_postgres::Error> {
    let config: tokio_postgres::Config = url.parse()?;
    let mut out = format!("host={} port={}", proxy.ip(), proxy.port());
    if let Some(user) = config.get_user() {
        out.push_str(&format!(" user={user}"));
    }
    if let Some(db) = config.get_dbname() {
        out.push_str(&format!(" dbname={db}"));
    }
    if let Some(password) = config.get_password() {
        out.push_str(&format!(" password={}", String::from_utf8_lossy(password)));
    }
    Ok(out)
}

/// The server a key-value or URL connection string names (its first TCP
/// host and port).
pub async fn upstream(url: &str) -> Result<SocketAddr, Box<dyn std::error::Error + Send + Sync>> {
    let config: tokio_postgres::Config = url.parse()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => return Err("the proxy needs a TCP host in the database URL".into()),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| format!("{host}:{port} resolves to no address").into())
}
