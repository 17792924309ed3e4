//! C-MOVE correlation (DICOM PS3.4 C.4.2, PS3.7 9.3.1.1): the instances of a C-MOVE arrive on
//! another association, opened by the PACS to our storage SCP, each C-STORE-RQ carrying the Move
//! Originator Application Entity Title (0000,1030) and Message ID (0000,1031) of the C-MOVE-RQ
//! that caused it. [`MoveRouter`] lives here, not in the broker's inbound or outbound crates,
//! because the SCU side (outbound) registers moves and the SCP side (inbound) routes to them, and
//! those crates must not depend on each other: the binary creates one router and hands a clone
//! to each.
//!
//! A registration yields the instances through a bounded channel of [`MoveEvent`]s, so a slow
//! consumer slows the PACS through TCP flow control (our SCP stops reading) instead of growing
//! memory: at most `channel_capacity` fragments (each at most our maximum PDU length) wait.
//!
//! A C-STORE-RQ without Move Originator fields, or with fields that match no move in flight, is
//! never attributed to a move: the SCP hands it to its ordinary storage handler (nothing is
//! lost, nothing is misattributed), and the move that expected it finds fewer instances than the
//! PACS claims, which its verdict reports as a failure (see `scu::RetrieveFailure`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hie_dimse::Status;
use tokio::sync::{mpsc, oneshot};

use crate::error::NetError;
use crate::sink::{InstanceInfo, StoreSink};

/// Shared between the C-MOVE SCU and the storage SCP; clones share the same moves.
#[derive(Clone)]
pub struct MoveRouter {
    inner: Arc<Mutex<RouterState>>,
    channel_capacity: usize,
}

impl std::fmt::Debug for MoveRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoveRouter").field("in_flight", &self.in_flight()).finish()
    }
}

#[derive(Default)]
struct RouterState {
    moves: HashMap<u16, Route>,
    /// The next Message ID to try.
    next_message_id: u16,
}

struct Route {
    originator_ae: String,
    events: mpsc::Sender<MoveEvent>,
}

/// What a registered move receives, in order, for each instance: `Begin`, `Data`..., then `End`
/// (answer it with the C-STORE-RSP status) or `Aborted`.
#[derive(Debug)]
pub enum MoveEvent {
    Begin(InstanceInfo),
    Data(Bytes),
    /// The data set is complete: send the status for the C-STORE-RSP. Dropping the reply
    /// answers 0xA700 (out of resources).
    End(oneshot::Sender<Status>),
    /// The storing association died mid-instance.
    Aborted(String),
}

/// One C-MOVE in flight: its Message ID and the instances routed to it. Dropping it ends the
/// registration; instances still arriving for it are refused with 0xA700.
pub struct MoveRegistration {
    message_id: u16,
    events: mpsc::Receiver<MoveEvent>,
    router: MoveRouter,
}

impl std::fmt::Debug for MoveRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoveRegistration").field("message_id", &self.message_id).finish()
    }
}

impl MoveRouter {
    /// A router whose registrations buffer at most [`DEFAULT_CHANNEL_CAPACITY`] events each.
    pub fn new() -> MoveRouter {
        MoveRouter::with_channel_capacity(DEFAULT_CHANNEL_CAPACITY)
    }

    /// A router whose registrations buffer at most `channel_capacity` (at least 1) events each.
    pub fn with_channel_capacity(channel_capacity: usize) -> MoveRouter {
        MoveRouter {
            inner: Arc::new(Mutex::new(RouterState { moves: HashMap::new(), next_message_id: 1 })),
            channel_capacity: channel_capacity.max(1),
        }
    }

    /// Registers a C-MOVE that `originator_ae` (our calling AE title towards the PACS) is about
    /// to send, and allocates its Message ID: unique among the moves in flight through this
    /// router, so that one router per process makes it unique process-wide.
    pub fn register(&self, originator_ae: &str) -> Result<(u16, MoveRegistration), NetError> {
        let (sender, receiver) = mpsc::channel(self.channel_capacity);
        let mut state = self.lock();
        if state.moves.len() >= MAX_IN_FLIGHT {
            return Err(NetError::InvalidRequest(format!("{MAX_IN_FLIGHT} C-MOVEs already in flight")));
        }
        // With fewer than 65 535 moves registered a free ID exists; the scan stops at it.
        let mut message_id = state.next_message_id;
        while message_id == 0 || state.moves.contains_key(&message_id) {
            message_id = message_id.wrapping_add(1);
        }
        state.next_message_id = message_id.wrapping_add(1);
        state.moves.insert(message_id, Route { originator_ae: originator_ae.trim().to_owned(), events: sender });
        drop(state);
        Ok((message_id, MoveRegistration { message_id, events: receiver, router: self.clone() }))
    }

    /// The sink for a C-STORE-RQ carrying these Move Originator fields, if they name a move in
    /// flight (the AE title compared without its padding).
    pub fn route(&self, originator_ae: &str, message_id: u16) -> Option<MoveSink> {
        let state = self.lock();
        let route = state.moves.get(&message_id)?;
        (route.originator_ae == originator_ae.trim()).then(|| MoveSink {
            events: route.events.clone(),
            failed: false,
            instance_open: false,
        })
    }

    /// How many moves are registered.
    pub fn in_flight(&self) -> usize {
        self.lock().moves.len()
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        // The state is a map updated in single statements; a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is still sound to use.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MoveRouter {
    fn default() -> MoveRouter {
        MoveRouter::new()
    }
}

impl MoveRegistration {
    /// The Message ID to send the C-MOVE-RQ with.
    pub fn message_id(&self) -> u16 {
        self.message_id
    }

    /// The next event; `None` only when no SCP can route to this move any more (never while
    /// the registration is alive, since the router keeps a sender).
    pub async fn next_event(&mut self) -> Option<MoveEvent> {
        self.events.recv().await
    }

    /// An event already queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<MoveEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for MoveRegistration {
    fn drop(&mut self) {
        self.router.lock().moves.remove(&self.message_id);
    }
}

/// The [`StoreSink`] the SCP uses for an instance routed to a move: it forwards into the
/// registration's channel and waits for the consumer's status at the end.
pub struct MoveSink {
    events: mpsc::Sender<MoveEvent>,
    failed: bool,
    instance_open: bool,
}

impl std::fmt::Debug for MoveSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoveSink").field("instance_open", &self.instance_open).finish()
    }
}

impl StoreSink for MoveSink {
    async fn begin(&mut self, instance: &InstanceInfo) -> Result<(), Status> {
        self.instance_open = true;
        self.events.send(MoveEvent::Begin(instance.clone())).await.map_err(|_| self.gone())
    }

    async fn data(&mut self, fragment: Bytes) -> Result<(), Status> {
        self.events.send(MoveEvent::Data(fragment)).await.map_err(|_| self.gone())
    }

    async fn end(&mut self) -> Status {
        self.instance_open = false;
        let (reply, answer) = oneshot::channel();
        if self.events.send(MoveEvent::End(reply)).await.is_err() {
            return self.gone();
        }
        answer.await.unwrap_or(Status::OUT_OF_RESOURCES)
    }

    async fn abort(&mut self, reason: &NetError) {
        if self.instance_open && !self.failed {
            let _ = self.events.send(MoveEvent::Aborted(reason.to_string())).await;
        }
        self.instance_open = false;
    }
}

impl MoveSink {
    /// The registration was dropped: the move is over, nobody takes the instance.
    fn gone(&mut self) -> Status {
        self.failed = true;
        Status::OUT_OF_RESOURCES
    }
}

/// Events buffered per move before the storing association waits.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 16;
/// Message IDs are 16-bit and 0 is not used.
const MAX_IN_FLIGHT: usize = u16::MAX as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_unique_among_moves_in_flight_and_routes_need_the_ae() {
        let router = MoveRouter::new();
        let (first, registration) = router.register("BROKER").unwrap();
        let (second, _other) = router.register("BROKER").unwrap();
        assert_ne!(first, second);
        assert!(router.route("BROKER", first).is_some());
        assert!(router.route("BROKER  ", first).is_some(), "padding is not significant");
        assert!(router.route("SOMEONE", first).is_none(), "another originator");
        assert!(router.route("BROKER", 999).is_none(), "no such move");
        drop(registration);
        assert!(router.route("BROKER", first).is_none(), "the registration ended");
        assert_eq!(router.in_flight(), 1);
    }

    #[tokio::test]
    async fn a_routed_instance_reaches_the_registration_and_its_status_comes_back() {
        let router = MoveRouter::with_channel_capacity(2);
        let (id, mut registration) = router.register("BROKER").unwrap();
        let mut sink = router.route("BROKER", id).unwrap();
        let store = tokio::spawn(async move {
            let info = InstanceInfo {
                sop_class_uid: "1.2".to_owned(),
                sop_instance_uid: "1.2.3".to_owned(),
                transfer_syntax_uid: "1.2.840.10008.1.2".to_owned(),
            };
            sink.begin(&info).await.unwrap();
            for chunk in 0..5u8 {
                sink.data(Bytes::from(vec![chunk; 10])).await.unwrap();
            }
            sink.end().await
        });
        let mut received = Vec::new();
        loop {
            match registration.next_event().await.unwrap() {
                MoveEvent::Begin(info) => assert_eq!(info.sop_instance_uid, "1.2.3"),
                MoveEvent::Data(bytes) => received.extend_from_slice(&bytes),
                MoveEvent::End(reply) => {
                    reply.send(Status(0xB000)).unwrap();
                    break;
                }
                MoveEvent::Aborted(reason) => panic!("aborted: {reason}"),
            }
        }
        assert_eq!(received.len(), 50);
        assert_eq!(store.await.unwrap(), Status(0xB000));
    }

    #[tokio::test]
    async fn a_finished_move_refuses_late_instances() {
        let router = MoveRouter::new();
        let (id, registration) = router.register("BROKER").unwrap();
        let mut sink = router.route("BROKER", id).unwrap();
        drop(registration);
        let info = InstanceInfo {
            sop_class_uid: "1.2".to_owned(),
            sop_instance_uid: "1.2.3".to_owned(),
            transfer_syntax_uid: "1.2.840.10008.1.2".to_owned(),
        };
        assert_eq!(sink.begin(&info).await, Err(Status::OUT_OF_RESOURCES));
    }
}
