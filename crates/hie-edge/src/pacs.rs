//! Opens the configured PACS adapter behind the broker's [`Pacs`] port.

use std::sync::Arc;

use hie_dicom_net::MoveRouter;
use hie_outbound::pacs::{DicomWebPacs, DimsePacs, FolderAdapter, Pacs, PacsError, PacsSettings};

/// The adapter for `settings`, for commands that only query the PACS (`kos build`, `backfill`):
/// no listener runs, so no C-MOVE is routed. Nothing is read or connected yet.
pub async fn open(settings: &PacsSettings) -> Result<Arc<dyn Pacs>, PacsError> {
    open_with_router(settings, MoveRouter::new()).await
}

/// The adapter for `settings`. Nothing is read or connected yet: a PACS that is down at start
/// does not keep the broker from starting (it is retried when used). `router` is the one the
/// DICOM listener routes C-MOVE sub-operations through (`[pacs] retrieve = "c-move"`).
pub async fn open_with_router(settings: &PacsSettings, router: MoveRouter) -> Result<Arc<dyn Pacs>, PacsError> {
    Ok(match settings {
        PacsSettings::Folder { path } => Arc::new(FolderAdapter::new(path.clone())),
        PacsSettings::DicomWeb(settings) => Arc::new(DicomWebPacs::new(settings.clone())?),
        PacsSettings::Dimse(settings) => Arc::new(DimsePacs::new(settings.clone(), router)),
    })
}
