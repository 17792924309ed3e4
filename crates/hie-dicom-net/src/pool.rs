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
//! releases it (in a background task, or by A-ABORT when no runtime is left).

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
    /// How long [`AssociationPool::acquire`] waits for a free slot.
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            max_open: DEFAULT_MAX_OPEN,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
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
        f.debug_struct("AssociationPool").field("addr", &self.inner.addr).field("idle", &self.idle_count()).finish()
    }
}

struct PoolInner {
    addr: SocketAddr,
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

impl AssociationPool {
    pub fn new(
        addr: SocketAddr,
        client: ClientOptions,
        contexts: Vec<ProposedContext>,
        options: PoolOptions,
    ) -> AssociationPool {
        AssociationPool {
            inner: Arc::new(PoolInner {
                addr,
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
            tracing::debug!(peer = %self.inner.addr, "pooled association found dead; replacing it");
            drop(idle.association);
        }
    }

    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<PooledAssociation, NetError> {
        let association = connect(self.inner.addr, &self.inner.client, &self.inner.contexts).await?;
        Ok(PooledAssociation {
            association: Some(association),
            permit: Some(permit),
            pool: self.inner.clone(),
            reused: false,
        })
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
        self.pool.lock_idle().push(Idle { association, permit, since: Instant::now() });
        self.pool.returned.notify_one();
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
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
