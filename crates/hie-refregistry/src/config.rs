//! The settings of the built-in registry and repository. `hie-edge` fills [`RefRegistryConfig`]
//! from its `[registry]` table; this crate reads no settings itself.

use std::time::Duration;

use hie_core::Oid;

/// Settings of the reference registry/repository pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefRegistryConfig {
    /// The repository's repositoryUniqueId (ITI TF-3 4.2.3.2.18): set on every DocumentEntry an
    /// ITI-41 stores, and the only RepositoryUniqueId ITI-43 serves.
    pub repository_unique_id: Oid,
    /// The affinity domain's assigning authority (ITI TF-2a 3.8.4.1.3): the one PID-3 domain the
    /// feed stores, and the authority every patientId in metadata must carry.
    pub patient_id_authority: Oid,
    /// The homeCommunityId, written `urn:oid:<oid>` as `home` on query results when set.
    pub home_community_id: Option<Oid>,
    /// The most objects one stored query may return; more is XDSTooManyResults.
    pub max_results: usize,
    /// HTTP body cap of both endpoints (larger requests get HTTP 413).
    pub max_request_bytes: usize,
    /// The ITI-8 MLLP listener.
    pub feed: FeedConfig,
}

/// Settings of the ITI-8 Patient Identity Feed listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// MLLP frame cap: a longer frame closes the connection, no byte beyond it is buffered.
    pub max_frame_bytes: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// MSH-3 of our ACKs (HD, default separators).
    pub application: String,
    /// MSH-4 of our ACKs (HD, default separators).
    pub facility: String,
}

impl RefRegistryConfig {
    /// The defaults around the two identifiers every deployment must choose.
    pub fn new(repository_unique_id: Oid, patient_id_authority: Oid) -> RefRegistryConfig {
        RefRegistryConfig {
            repository_unique_id,
            patient_id_authority,
            home_community_id: None,
            max_results: DEFAULT_MAX_RESULTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            feed: FeedConfig::default(),
        }
    }

    /// Checks what the types cannot: limits that must not be zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = [
            ("max_results", self.max_results),
            ("max_request_bytes", self.max_request_bytes),
            ("feed.max_frame_bytes", self.feed.max_frame_bytes),
            ("feed.max_connections", self.feed.max_connections),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err(ConfigError::Zero { key });
            }
        }
        if self.feed.idle_timeout.is_zero() {
            return Err(ConfigError::Zero { key: "feed.idle_timeout" });
        }
        Ok(())
    }

    /// `urn:oid:<homeCommunityId>` when one is set.
    pub fn home(&self) -> Option<String> {
        self.home_community_id.as_ref().map(|oid| format!("{HOME_COMMUNITY_PREFIX}{oid}"))
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            application: DEFAULT_APPLICATION.to_owned(),
            facility: DEFAULT_FACILITY.to_owned(),
        }
    }
}

/// A setting this crate cannot run with (the operator's configuration is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit set to zero.
    #[error("registry setting {key} must be greater than zero")]
    Zero { key: &'static str },
}

/// homeCommunityId values are OIDs in URN form (ITI TF-2b 3.38.4.1.2.1).
pub const HOME_COMMUNITY_PREFIX: &str = "urn:oid:";
/// Stored query results per answer (NIST's public registry caps at a few hundred too).
pub const DEFAULT_MAX_RESULTS: usize = 500;
/// 64 MiB: a large KOS or report with room for MTOM framing.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// 1 MiB MLLP frames (reliability-security S7).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Idle MLLP connections are closed after this.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent feed connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// MSH-3 of the feed's ACKs.
pub const DEFAULT_APPLICATION: &str = "HIE_REFREGISTRY";
/// MSH-4 of the feed's ACKs.
pub const DEFAULT_FACILITY: &str = "HIE_EDGE";
