//! The Document Repository: ITI-41 Provide and Register Document Set-b (ITI TF-2b 3.41.4.1.3)
//! and ITI-43 Retrieve Document Set (ITI TF-2b 3.43.4.1.3).
//!
//! ITI-41: every DocumentEntry needs its Document and every Document its DocumentEntry; the
//! repository computes each document's SHA-1 and size, refuses a submitted hash or size that does
//! not match (XDSRepositoryMetadataError, ITI41-25), sets hash, size and its repositoryUniqueId
//! on the entries, then registers the metadata. The built-in pair shares one database, so the
//! bytes and the registration commit in one transaction: a refused registration stores no bytes.
//!
//! ITI-43: documents of another repositoryUniqueId are XDSUnknownRepositoryId, unknown ones
//! XDSDocumentUniqueIdError, each with the DocumentUniqueId as location; some found is
//! PartialSuccess. The repository serves what it stores, whatever the entry's status
//! (a Deprecated document stays retrievable, ITI TF-3 4.1.4).

use std::collections::HashMap;

use hie_store::refregistry::{self, PutDocument, RepositoryDocumentRow};
use hie_xds::RegistryObject;
use hie_xds::messages::{DocumentResponse, ProvideAndRegisterRequest, RetrieveDocumentSetRequest};
use sha1::{Digest, Sha1};

use crate::error::{Failure, Violation};
use crate::metadata::{self, Mode};
use crate::{Inner, register};

/// Stores the documents and registers their metadata, all or nothing.
pub(crate) async fn provide_and_register(registry: &Inner, request: ProvideAndRegisterRequest) -> Result<(), Failure> {
    let ProvideAndRegisterRequest { mut submission, documents } = request;
    let mut violations = Vec::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (index, document) in documents.iter().enumerate() {
        if by_id.insert(document.id.as_str(), index).is_some() {
            violations.push(Violation::RepositoryMetadata {
                document: document.id.clone(),
                problem: "more than one Document has this id".to_owned(),
            });
        }
    }
    let repository_unique_id = registry.config.repository_unique_id.to_string();
    let mut used = vec![false; documents.len()];
    let mut stored = Vec::with_capacity(documents.len());
    let mut unique_ids: Vec<String> = Vec::new();
    let now = hie_store::now_micros();
    for object in &mut submission.objects {
        let RegistryObject::DocumentEntry(entry) = object else {
            continue;
        };
        let Some(&index) = by_id.get(entry.id.as_str()) else {
            violations.push(Violation::MissingDocument { entry: entry.id.clone() });
            continue;
        };
        used[index] = true;
        let content = &documents[index].content;
        let hash = sha1_hex(content);
        let size = content.len();
        if entry.hash.as_ref().is_some_and(|given| !given.trim().eq_ignore_ascii_case(&hash)) {
            violations.push(Violation::RepositoryMetadata {
                document: entry.id.clone(),
                problem: "the hash does not match the document's SHA-1".to_owned(),
            });
        }
        if entry.size.as_ref().is_some_and(|given| given.trim() != size.to_string()) {
            violations.push(Violation::RepositoryMetadata {
                document: entry.id.clone(),
                problem: "the size does not match the document's length".to_owned(),
            });
        }
        entry.hash = Some(hash.clone());
        entry.size = Some(size.to_string());
        entry.repository_unique_id = Some(repository_unique_id.clone());
        if let Some(unique_id) = &entry.unique_id {
            if unique_ids.contains(unique_id) {
                violations.push(Violation::RepositoryDuplicateUniqueIdInMessage { unique_id: unique_id.clone() });
            }
            unique_ids.push(unique_id.clone());
            stored.push((index, unique_id.trim().to_owned(), entry.mime_type.clone(), hash, size));
        }
    }
    for (document, used) in documents.iter().zip(&used) {
        if !used {
            violations.push(Violation::MissingDocumentMetadata { document: document.id.clone() });
        }
    }
    if !violations.is_empty() {
        return Err(Failure::Refused(violations));
    }
    let now_dtm = crate::now_dtm();
    let mut plan =
        metadata::plan(&submission, Mode::Register, &registry.config, now, &now_dtm).map_err(Failure::Refused)?;

    let mut tx = registry.store.begin().await?;
    let mut conflicts = Vec::new();
    let mut documents = documents;
    for (index, unique_id, mime_type, hash, size) in stored {
        let row = RepositoryDocumentRow {
            unique_id: unique_id.clone(),
            mime_type,
            hash,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            content: std::mem::take(&mut documents[index].content),
            created_at: now,
        };
        if let PutDocument::Conflict { .. } = refregistry::put_repository_document(&mut tx, &row).await? {
            conflicts.push(Violation::NonIdenticalHash { unique_id });
        }
    }
    if !conflicts.is_empty() {
        tx.rollback().await?;
        return Err(Failure::Refused(conflicts));
    }
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

/// What a retrieve found: the documents, and a violation per document not returned.
pub(crate) struct Retrieved {
    pub documents: Vec<DocumentResponse>,
    pub missing: Vec<Violation>,
}

/// Answers an ITI-43 request.
pub(crate) async fn retrieve(registry: &Inner, request: &RetrieveDocumentSetRequest) -> Result<Retrieved, Failure> {
    let repository_unique_id = registry.config.repository_unique_id.as_str();
    let home = registry.config.home();
    let mut missing = Vec::new();
    let mut wanted = Vec::new();
    for document in &request.documents {
        let document_unique_id = document.document_unique_id.trim().to_owned();
        if let (Some(asked), Some(ours)) = (&document.home_community_id, &home)
            && asked.trim() != ours
        {
            missing.push(Violation::UnknownCommunity { home_community_id: asked.clone(), document_unique_id });
        } else if document.repository_unique_id.trim() != repository_unique_id {
            missing.push(Violation::UnknownRepository {
                repository_unique_id: document.repository_unique_id.clone(),
                document_unique_id,
            });
        } else {
            wanted.push(document_unique_id);
        }
    }
    let rows = registry.store.reg_repository_documents(&wanted).await?;
    let mut by_unique_id: HashMap<String, RepositoryDocumentRow> =
        rows.into_iter().map(|row| (row.unique_id.clone(), row)).collect();
    let mut documents = Vec::with_capacity(wanted.len());
    for unique_id in wanted {
        // A document asked for twice is returned once.
        match by_unique_id.remove(&unique_id) {
            Some(row) => documents.push(DocumentResponse {
                home_community_id: home.clone(),
                repository_unique_id: repository_unique_id.to_owned(),
                document_unique_id: row.unique_id,
                new_repository_unique_id: None,
                new_document_unique_id: None,
                mime_type: row.mime_type,
                document: row.content,
            }),
            None if documents.iter().any(|document: &DocumentResponse| document.document_unique_id == unique_id) => {}
            None => missing.push(Violation::UnknownDocument { document_unique_id: unique_id }),
        }
    }
    Ok(Retrieved { documents, missing })
}

/// The XDS hash: SHA-1 in lower-case hexadecimal (ITI TF-3 4.2.3.2.11).
pub fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}
