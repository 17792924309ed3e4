//! The built-in reference XDS Document Registry and Document Repository, so that hie-edge runs
//! end to end on one machine and its tests have a registry that enforces the rules.
//!
//! Actors and transactions:
//! - Document Registry: ITI-42 Register Document Set-b ([`RefRegistry::register`]), ITI-18
//!   Registry Stored Query ([`RefRegistry::query`]: FindDocuments, FindSubmissionSets,
//!   GetDocuments, GetAssociations, GetSubmissionSetAndContents, GetRelatedDocuments), ITI-57
//!   Update Document Set ([`RefRegistry::update`]: availability status and new versions), and
//!   the ITI-8 Patient Identity Feed over MLLP ([`RefRegistry::serve_feed`]).
//! - Document Repository: ITI-41 Provide and Register ([`RefRegistry::provide_and_register`])
//!   and ITI-43 Retrieve Document Set ([`RefRegistry::retrieve`]).
//! - SOAP on HTTP: [`RefRegistry::router`] serves `POST /xds/registry` and `POST /xds/repository`.
//!
//! Everything is stored in the broker's database, in the `reg_*` tables of
//! `hie_store::refregistry`. A submission is checked completely, then written in one transaction,
//! or refused with the XDS errors of every rule it broke and nothing written.
//!
//! Modules:
//! - [`config`]: [`RefRegistryConfig`], which `hie-edge` fills from `[registry]`.
//! - `metadata`: the rules a submission must meet on its own, and its id mapping.
//! - `register`: the rules that need the registry's state, and the writes.
//! - `query`: the stored queries. `render`: stored rows back to ebRIM.
//! - `repository`: ITI-41 and ITI-43. `feed`: ITI-8.
//! - `http`: the axum edge. `rescue`: the one place that picks XDS error codes and SOAP faults.
//! - [`error`]: the [`Violation`]s a request can be refused for.

pub mod config;
pub mod error;
mod feed;
mod http;
mod ids;
mod metadata;
mod query;
mod register;
mod render;
mod repository;
mod rescue;

use std::sync::Arc;

use hie_store::Store;
use hie_xds::messages::{
    AdhocQueryRequest, AdhocQueryResponse, ProvideAndRegisterRequest, RegistryResponse, RetrieveDocumentSetRequest,
    RetrieveDocumentSetResponse, SubmitObjectsRequest,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{ConfigError, FeedConfig, RefRegistryConfig};
pub use error::{Failure, Violation};
pub use http::{REGISTRY_PATH, REPOSITORY_PATH};
pub use repository::sha1_hex;

use crate::error::Failure as OperationFailure;
use crate::metadata::Mode;
use crate::rescue::Actor;

/// The registry/repository pair over one store; cheap to clone.
#[derive(Clone)]
pub struct RefRegistry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub store: Store,
    pub config: RefRegistryConfig,
}

impl std::fmt::Debug for RefRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefRegistry").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl RefRegistry {
    /// A registry over `store` (already migrated), with `config`.
    pub fn new(store: Store, config: RefRegistryConfig) -> Result<RefRegistry, ConfigError> {
        config.validate()?;
        Ok(RefRegistry { inner: Arc::new(Inner { store, config }) })
    }

    /// The settings in use.
    pub fn config(&self) -> &RefRegistryConfig {
        &self.inner.config
    }

    /// ITI-42 Register Document Set-b.
    pub async fn register(&self, request: &SubmitObjectsRequest) -> RegistryResponse {
        rescue::registry_response(submit(&self.inner, request, Mode::Register).await, Actor::Registry, "ITI-42")
    }

    /// ITI-57 Update Document Set.
    pub async fn update(&self, request: &SubmitObjectsRequest) -> RegistryResponse {
        rescue::registry_response(submit(&self.inner, request, Mode::Update).await, Actor::Registry, "ITI-57")
    }

    /// ITI-41 Provide and Register Document Set-b (the documents are moved into the store).
    pub async fn provide_and_register(&self, request: ProvideAndRegisterRequest) -> RegistryResponse {
        let result = repository::provide_and_register(&self.inner, request).await;
        rescue::registry_response(result, Actor::Repository, "ITI-41")
    }

    /// ITI-18 Registry Stored Query.
    pub async fn query(&self, request: &AdhocQueryRequest) -> AdhocQueryResponse {
        rescue::query_response(query::run(&self.inner, request).await)
    }

    /// ITI-43 Retrieve Document Set.
    pub async fn retrieve(&self, request: &RetrieveDocumentSetRequest) -> RetrieveDocumentSetResponse {
        rescue::retrieve_response(repository::retrieve(&self.inner, request).await)
    }

    /// ITI-8: one HL7 message (an MLLP frame's payload) in, its ACK out (UTF-8 text).
    pub async fn feed(&self, frame: &[u8]) -> String {
        feed::handle_frame(&self.inner, frame).await
    }

    /// The SOAP services, to mount on the HTTPS listener: `POST /xds/registry` and
    /// `POST /xds/repository`.
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.inner))
    }

    /// Serves the ITI-8 feed over MLLP on `listener` until `shutdown` turns true.
    pub async fn serve_feed(&self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        feed::serve(Arc::clone(&self.inner), listener, shutdown).await;
    }
}

/// ITI-42 and ITI-57: plan, then check and write in one transaction.
async fn submit(registry: &Inner, request: &SubmitObjectsRequest, mode: Mode) -> Result<(), OperationFailure> {
    let now = hie_store::now_micros();
    let now_dtm = now_dtm();
    let mut plan = metadata::plan(request, mode, &registry.config, now, &now_dtm).map_err(OperationFailure::Refused)?;
    let mut tx = registry.store.begin().await?;
    match register::apply(&mut tx, &mut plan, now, &now_dtm).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(())
        }
        Err(failure) => {
            tx.rollback().await?;
            Err(failure)
        }
    }
}

/// The registry's clock as DTM in UTC (Folder lastUpdateTime).
pub(crate) fn now_dtm() -> String {
    let seconds = u64::try_from(hie_store::now_micros() / MICROS_PER_SECOND).unwrap_or(0);
    hie_core::clock::hl7_timestamp(seconds)
}

const MICROS_PER_SECOND: i64 = 1_000_000;
