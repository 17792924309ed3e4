//! Opens the configured PACS adapter behind the broker's [`Pacs`] port.

use std::sync::Arc;

use hie_outbound::pacs::{DicomWebPacs, FolderAdapter, Pacs, PacsError, PacsSettings};

/// The adapter for `settings`. Nothing is read or connected yet: a PACS that is down at start
/// does not keep the broker from starting (it is retried when used).
pub async fn open(settings: &PacsSettings) -> Result<Arc<dyn Pacs>, PacsError> {
    Ok(match settings {
        PacsSettings::Folder { path } => Arc::new(FolderAdapter::new(path.clone())),
        PacsSettings::DicomWeb(settings) => Arc::new(DicomWebPacs::new(settings.clone())?),
        PacsSettings::Dimse(settings) => {
            return Err(PacsError::Unreachable(format!(
                "dimse {}@{}:{}: the DIMSE adapter is not available in this build",
                settings.ae_title, settings.host, settings.port
            )));
        }
    })
}
