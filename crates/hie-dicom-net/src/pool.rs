//! [`AssociationPool`]: associations to one peer for one purpose (one set of proposed contexts),
//! at most `max_open` open at once (idle ones included), idle ones reused for up to
//! `idle_timeout`. Negotiation costs a round trip and, at many PACS, a log line and a process
//! or thread per association (Morvan et al. measured per-object negotiation dominating C-STORE
//! of large studies), so a broker that queries and retrieves often keeps a few open.
//!
//! Reuse checks the idle association first (open, nothing unread, the socket neither closed by
//! the peer nor holding an A-ABORT); one that turns out dead is replaced by a new association,
//! once, transparently. A peer that vanished without closing cannot be seen that way: the first
//! operation on it fails after the DIMSE timeout, and [`NetError::is_connection_lost`] tells the
//! caller it may retry on a fresh association.
//!
//! [`PooledAssociation::give_back`] returns an association for reuse; dropping it instead
//! releases it (in a background task, or by A-ABORT when no runtime is left);
//! [`PooledAssociation::discard`] aborts it at once, for an association left in the middle of an
//! operation (a release there would wait on a peer still answering the operation).
//!
//! A pool made with [`AssociationPool::for_host`] resolves the peer's name each time it opens an
//! association (`tokio::net::lookup_host`), so a PACS whose address changes is followed; the
//! addresses are tried in the resolver's order.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::association::Association;
use crate::client::{ClientOptions, ProposedContext, connect};
use crate::error::{NetError, TimeoutKind};

/// Sizing of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most associations open at once, in use or idle.
    pub max_open: usize,
    /// An idle association older than this is released instead of reused.
    pub idle_timeout: Duration,
    /// Most idle associations kept; one given back beyond them is released. Idle associations
    /// are not free for the peer: Orthanc 1.10 steps every open association on a few worker
    /// threads (`DicomThreadsCount`, 4), an idle one holding a thread for a 1-second wait for
    /// its next command, so with more associations open than threads each command on the busy
    /// one waited up to a second (seen as 5 ms per instance on a 2,000-instance C-GET, see
    /// docs/performance.md).
    pub max_idle: usize,
    /// How long [`AssociationPool::acquire`] waits for a free slot.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            max_open: DEFAULT_MAX_OPEN,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_idle: DEFAULT_MAX_IDLE,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

/// A pool of associations to one peer with one set of proposed contexts. Clones share the pool.
#[derive(Clone)]
pub struct AssociationPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for AssociationPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssociationPool").field("target", &self.inner.target).field("idle", &self.idle_count()).finish()
    }
}

struct PoolInner {
    target: Target,
    client: ClientOptions,
    contexts: Vec<ProposedContext>,
    options: PoolOptions,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    returned: Notify,
}

struct Idle {
    association: Association,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

/// Where a pool connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Addr(SocketAddr),
    /// Resolved at each connection.
    Host {
        host: String,
        port: u16,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl AssociationPool {
    /// A pool to the peer at `addr`.
    pub fn new(
        addr: SocketAddr,
        client: ClientOptions,
        contexts: Vec<ProposedContext>,
        options: PoolOptions,
    ) -> AssociationPool {
        AssociationPool::with_target(Target::Addr(addr), client, contexts, options)
    }

    /// A pool to the peer named `host` (a name or an IP address), resolved at each connection.
    pub fn for_host(
        host: impl Into<String>,
        port: u16,
        client: ClientOptions,
        contexts: Vec<ProposedContext>,
        options: PoolOptions,
    ) -> AssociationPool {
        AssociationPool::with_target(Target::Host { host: host.into(), port }, client, contexts, options)
    }

    fn with_target(
        target: Target,
        client: ClientOptions,
        contexts: Vec<ProposedContext>,
        options: PoolOptions,
    ) -> AssociationPool {
        AssociationPool {
            inner: Arc::new(PoolInner {
                target,
                client,
                contexts,
                slots: Arc::new(Semaphore::new(options.max_open.max(1))),
                options,
                idle: Mutex::new(Vec::new()),
                returned: Notify::new(),
            }),
        }
    }

    /// An association: a live idle one if there is one, else a new one when a slot is free,
    /// else the first to come back or free up within `acquire_timeout`.
    pub async fn acquire(&self) -> Result<PooledAssociation, NetError> {
        let deadline = Instant::now() + self.inner.options.acquire_timeout;
        loop {
            let returned = self.inner.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(pooled) = self.take_idle() {
                return Ok(pooled);
            }
            if let Ok(permit) = self.inner.slots.clone().try_acquire_owned() {
                return self.open(permit).await;
            }
            tokio::select! {
                _ = &mut returned => {}
                permit = self.inner.slots.clone().acquire_owned() => {
                    if let Ok(permit) = permit {
                        return self.open(permit).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(NetError::Timeout { which: TimeoutKind::PoolAcquire, after: self.inner.options.acquire_timeout });
                }
            }
        }
    }

    /// A new association, never an idle one: the idle ones are closed first (aborted: after a
    /// reused association turned out dead, its siblings most likely are too, for example after
    /// the PACS restarted).
    pub async fn acquire_fresh(&self) -> Result<PooledAssociation, NetError> {
        let stale: Vec<Idle> = std::mem::take(&mut *self.lock_idle());
        // Dropping an Idle aborts its association (best effort) and frees its slot.
        drop(stale);
        self.acquire_new().await
    }

    /// A new association once a slot is free (within `acquire_timeout`).
    async fn acquire_new(&self) -> Result<PooledAssociation, NetError> {
        let acquire = self.inner.slots.clone().acquire_owned();
        match tokio::time::timeout(self.inner.options.acquire_timeout, acquire).await {
            Ok(Ok(permit)) => self.open(permit).await,
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => {
                Err(NetError::Timeout { which: TimeoutKind::PoolAcquire, after: self.inner.options.acquire_timeout })
            }
        }
    }

    /// Where this pool connects to (`host:port` or the address).
    pub fn target(&self) -> String {
        self.inner.target.to_string()
    }

    /// How many idle associations wait for reuse.
    pub fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }

    /// The newest live idle association; expired and dead ones are closed on the way. When
    /// the last one found was dead, its slot opens a replacement (the "replaced once" rule).
    fn take_idle(&self) -> Option<PooledAssociation> {
        loop {
            let mut idle = self.lock_idle().pop()?;
            if idle.since.elapsed() > self.inner.options.idle_timeout {
                close_in_background(idle.association);
                continue;
            }
            if idle.association.probe_idle() {
                return Some(PooledAssociation {
                    association: Some(idle.association),
                    permit: Some(idle.permit),
                    pool: self.inner.clone(),
                    reused: true,
                });
            }
            tracing::debug!(peer = %self.inner.target, "pooled association found dead; replacing it");
            drop(idle.association);
        }
    }

    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<PooledAssociation, NetError> {
        let association = match &self.inner.target {
            Target::Addr(addr) => connect(*addr, &self.inner.client, &self.inner.contexts).await?,
            Target::Host { host, port } => self.connect_host(host, *port).await?,
        };
        Ok(PooledAssociation {
            association: Some(association),
            permit: Some(permit),
            pool: self.inner.clone(),
            reused: false,
        })
    }

    /// Resolves `host` now and connects to the first address that takes a TCP connection; a
    /// peer that answers and then rejects or fails the association is not tried again at
    /// another address.
    async fn connect_host(&self, host: &str, port: u16) -> Result<Association, NetError> {
        let timeouts = self.inner.client.timeouts;
        let resolved = match tokio::time::timeout(timeouts.connect, tokio::net::lookup_host((host, port))).await {
            Err(_) => return Err(NetError::Timeout { which: TimeoutKind::Connect, after: timeouts.connect }),
            Ok(Err(source)) => return Err(NetError::Resolve { host: host.to_owned(), source }),
            Ok(Ok(addresses)) => addresses,
        };
        let mut last = None;
        for addr in resolved {
            match connect(addr, &self.inner.client, &self.inner.contexts).await {
                Err(error @ (NetError::Connect { .. } | NetError::Timeout { which: TimeoutKind::Connect, .. })) => {
                    tracing::debug!(peer = %addr, %error, "trying the next address");
                    last = Some(error);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| NetError::Resolve {
            host: host.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolved to no address"),
        }))
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.inner.lock_idle()
    }
}

impl PoolInner {
    fn lock_idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Pushes and pops only: a panic elsewhere cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An association on loan from a pool.
pub struct PooledAssociation {
    association: Option<Association>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<PoolInner>,
    reused: bool,
}

impl std::fmt::Debug for PooledAssociation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledAssociation")
            .field("association", &self.association)
            .field("reused", &self.reused)
            .finish()
    }
}

impl PooledAssociation {
    /// Whether this association served an earlier loan.
    pub fn was_reused(&self) -> bool {
        self.reused
    }

    /// Returns the association for reuse (closed ones are dropped instead).
    pub fn give_back(mut self) {
        let (Some(association), Some(permit)) = (self.association.take(), self.permit.take()) else { return };
        if !association.is_open() {
            return;
        }
        let mut idle = self.pool.lock_idle();
        if idle.len() >= self.pool.options.max_idle {
            drop(idle);
            close_in_background(association);
            // The slot frees up with the permit, which wakes an acquire waiting for one.
            drop(permit);
            return;
        }
        idle.push(Idle { association, permit, since: Instant::now() });
        drop(idle);
        self.pool.returned.notify_one();
    }

    /// Aborts the association now (A-ABORT, best effort, without waiting): for one left in the
    /// middle of an operation, which must neither go back to the pool nor wait for a release.
    pub fn discard(mut self) {
        // Association's Drop sends the A-ABORT; the permit is freed after it.
        drop(self.association.take());
    }

    /// Releases the association now instead of returning it.
    pub async fn close(mut self) -> Result<(), NetError> {
        match self.association.take() {
            Some(association) if association.is_open() => association.release().await,
            _ => Ok(()),
        }
    }
}

impl Deref for PooledAssociation {
    type Target = Association;

    fn deref(&self) -> &Association {
        // Present from construction until `give_back`/`close`/drop, which consume `self`.
        self.association.as_ref().unwrap_or_else(|| unreachable!("association taken before the loan ended"))
    }
}

impl DerefMut for PooledAssociation {
    fn deref_mut(&mut self) -> &mut Association {
        self.association.as_mut().unwrap_or_else(|| unreachable!("association taken before the loan ended"))
    }
}

impl Drop for PooledAssociation {
    fn drop(&mut self) {
        if let Some(association) = self.association.take() {
            close_in_background(association);
        }
        // The permit drops after the association is handed to its closing task, so a waiting
        // acquire may open a new one while the old one finishes its release.
    }
}

/// Releases in a task when a runtime is there; else the association's own drop aborts it.
fn close_in_background(association: Association) {
    if !association.is_open() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let _ = association.release().await;
            });
        }
        Err(_) => drop(association),
    }
}

const DEFAULT_MAX_OPEN: usize = 4;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_IDLE: usize = 1;
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
