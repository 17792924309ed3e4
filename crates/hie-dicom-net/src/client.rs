//! The requestor side of association establishment (DICOM PS3.8 7.1, 9.3.2 and 9.3.3; PS3.7
//! Annex D.3.3): [`connect`] opens the TCP connection, sends the A-ASSOCIATE-RQ (Maximum Length,
//! Implementation Class UID and Version Name, SCP/SCU Role Selection for contexts where we act as
//! SCP) and turns the answer into an [`Association`], a [`NetError::Rejected`] that says why in
//! words, or an abort.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQSource, AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason, RequestorRoles,
    UserVariableItem,
};
use hie_dimse::uids;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::association::{AbortedBy, Association, AssociationParts, PresentationContext};
use crate::error::{NetError, TimeoutKind, Violation};
use crate::pdu_io::{self, PduError, PduLimits, PduReader, PduWriter, pdu_name};
use crate::{APPLICATION_CONTEXT_NAME, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// Timers of the requestor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP connection.
    pub connect: Duration,
    /// ARTIM (PS3.8 9.1.5): waiting for A-ASSOCIATE-AC/RJ, and for A-RELEASE-RP.
    pub association: Duration,
    /// Waiting for the next PDU during an operation (and for a write to drain).
    pub dimse: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { connect: DEFAULT_CONNECT_TIMEOUT, association: DEFAULT_ARTIM, dimse: DEFAULT_DIMSE_TIMEOUT }
    }
}

/// How we present ourselves when we open an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Our AE title (Calling-AE-title).
    pub calling_ae_title: String,
    /// The peer's AE title (Called-AE-title).
    pub called_ae_title: String,
    /// The Maximum Length we declare and receive (PS3.8 D.1.1); never 0 (we always bound it).
    pub max_pdu_length: u32,
    pub timeouts: Timeouts,
}

impl ClientOptions {
    /// Options with [`DEFAULT_MAX_PDU_LENGTH`] and default timeouts.
    pub fn new(calling_ae_title: impl Into<String>, called_ae_title: impl Into<String>) -> ClientOptions {
        ClientOptions {
            calling_ae_title: calling_ae_title.into(),
            called_ae_title: called_ae_title.into(),
            max_pdu_length: DEFAULT_MAX_PDU_LENGTH,
            timeouts: Timeouts::default(),
        }
    }
}

/// A presentation context to propose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedContext {
    pub abstract_syntax: String,
    /// In order of preference; the acceptor picks one.
    pub transfer_syntaxes: Vec<String>,
    /// Whether we ask to act as SCP for this SOP class (PS3.7 D.3.3.4): C-GET needs it for the
    /// storage classes of the instances it retrieves.
    pub scp_role: bool,
}

impl ProposedContext {
    /// A context where we are SCU.
    pub fn new(abstract_syntax: &str, transfer_syntaxes: &[&str]) -> ProposedContext {
        ProposedContext {
            abstract_syntax: abstract_syntax.to_owned(),
            transfer_syntaxes: transfer_syntaxes.iter().map(|ts| (*ts).to_owned()).collect(),
            scp_role: false,
        }
    }

    /// A context where we ask for the SCP role.
    pub fn scp(abstract_syntax: &str, transfer_syntaxes: &[&str]) -> ProposedContext {
        ProposedContext { scp_role: true, ..ProposedContext::new(abstract_syntax, transfer_syntaxes) }
    }

    /// Verification (C-ECHO) in Explicit and Implicit VR Little Endian.
    pub fn verification() -> ProposedContext {
        ProposedContext::new(uids::VERIFICATION, UNCOMPRESSED)
    }

    /// Every class of `hie_dimse::uids::STORAGE_SOP_CLASSES` with the SCP role, for the C-STORE
    /// sub-operations of a C-GET.
    pub fn storage_scp(transfer_syntaxes: &[&str]) -> Vec<ProposedContext> {
        uids::STORAGE_SOP_CLASSES.iter().map(|class| ProposedContext::scp(class, transfer_syntaxes)).collect()
    }
}

/// Explicit VR Little Endian, then Implicit VR Little Endian: what every peer can take, in
/// dcmtk's default order of preference.
pub const UNCOMPRESSED: &[&str] = &[uids::EXPLICIT_VR_LITTLE_ENDIAN, uids::IMPLICIT_VR_LITTLE_ENDIAN];

/// Opens an association with the peer at `addr`, proposing `contexts` (IDs 1, 3, 5... in order).
///
/// An A-ASSOCIATE-AC that accepts none of them is released and reported as
/// [`NetError::NoAcceptedContext`] for the first proposed abstract syntax.
pub async fn connect(
    addr: SocketAddr,
    options: &ClientOptions,
    contexts: &[ProposedContext],
) -> Result<Association, NetError> {
    let request = association_rq(options, contexts)?;
    let stream = match timeout(options.timeouts.connect, TcpStream::connect(addr)).await {
        Err(_) => return Err(NetError::Timeout { which: TimeoutKind::Connect, after: options.timeouts.connect }),
        Ok(Err(source)) => return Err(NetError::Connect { addr, source }),
        Ok(Ok(stream)) => stream,
    };
    pdu_io::configure_socket(&stream)?;
    let mut stream = stream;
    let mut writer = PduWriter::new();
    let mut reader = PduReader::new();
    let artim = options.timeouts.association;
    match timeout(artim, writer.write(&mut stream, &Pdu::AssociationRQ(request.clone()))).await {
        Err(_) => return Err(NetError::Timeout { which: TimeoutKind::Write, after: artim }),
        Ok(Err(PduError::Encode { pdu, detail })) => return Err(NetError::InvalidRequest(format!("{pdu}: {detail}"))),
        Ok(Err(PduError::Io(error))) => return Err(NetError::Io(error)),
        Ok(Err(error)) => return Err(NetError::Io(std::io::Error::other(error.to_string()))),
        Ok(Ok(())) => {}
    }
    let limits = PduLimits::new(options.max_pdu_length);
    let answer = match timeout(artim, reader.read(&mut stream, &limits)).await {
        Err(_) => {
            abort_raw(&mut stream, &mut writer, AbortRQSource::ServiceUser).await;
            return Err(NetError::Timeout { which: TimeoutKind::Association, after: artim });
        }
        Ok(Err(PduError::Closed | PduError::Truncated { .. })) => {
            return Err(NetError::Closed { context: "before answering our A-ASSOCIATE-RQ" });
        }
        Ok(Err(PduError::Io(error))) => return Err(NetError::Io(error)),
        Ok(Err(error)) => {
            let source = AbortRQSource::ServiceProvider(
                error.abort_reason().unwrap_or(dicom_ul::pdu::AbortRQServiceProviderReason::InvalidPduParameter),
            );
            abort_raw(&mut stream, &mut writer, source).await;
            return Err(NetError::PeerViolation(Violation::Pdu(error)));
        }
        Ok(Ok(pdu)) => pdu,
    };
    let accept = match answer {
        Pdu::AssociationAC(accept) => accept,
        Pdu::AssociationRJ(reject) => {
            // PS3.8 9.2 AE-4: the requestor closes the transport after an A-ASSOCIATE-RJ.
            drop(stream);
            return Err(NetError::Rejected { result: reject.result, reason: reject.source });
        }
        Pdu::AbortRQ { source } => {
            return Err(NetError::Aborted {
                by: AbortedBy::Peer,
                reason: source,
                context: "during association negotiation",
            });
        }
        other => {
            let source = AbortRQSource::ServiceProvider(dicom_ul::pdu::AbortRQServiceProviderReason::UnexpectedPdu);
            abort_raw(&mut stream, &mut writer, source).await;
            return Err(NetError::PeerViolation(Violation::UnexpectedPdu {
                pdu: pdu_name(&other),
                state: "in answer to our A-ASSOCIATE-RQ",
            }));
        }
    };
    let negotiated = match accepted_contexts(&request, &accept, contexts) {
        Ok(negotiated) => negotiated,
        Err(detail) => {
            let source =
                AbortRQSource::ServiceProvider(dicom_ul::pdu::AbortRQServiceProviderReason::InvalidPduParameter);
            abort_raw(&mut stream, &mut writer, source).await;
            return Err(NetError::PeerViolation(Violation::BadAssociateAc(detail)));
        }
    };
    let peer_max_pdu = accept
        .user_variables
        .iter()
        .find_map(|item| match item {
            UserVariableItem::MaxLength(max) => Some(*max),
            _ => None,
        })
        .unwrap_or(0);
    let peer_addr = stream.peer_addr().unwrap_or(addr);
    let association = Association::new(AssociationParts {
        stream,
        reader,
        contexts: negotiated,
        peer_max_pdu,
        our_max_pdu: options.max_pdu_length,
        calling_ae_title: options.calling_ae_title.clone(),
        called_ae_title: options.called_ae_title.clone(),
        peer_addr,
        read_timeout: options.timeouts.dimse,
        read_timeout_kind: TimeoutKind::Dimse,
        artim,
    })
    .await?;
    if association.contexts().is_empty() {
        let abstract_syntax = contexts.first().map(|context| context.abstract_syntax.clone()).unwrap_or_default();
        let _ = association.release().await;
        return Err(NetError::NoAcceptedContext { abstract_syntax, as_scp: false });
    }
    tracing::debug!(
        peer = %peer_addr,
        called = %options.called_ae_title,
        accepted = association.contexts().len(),
        proposed = contexts.len(),
        "association established"
    );
    Ok(association)
}

/// The A-ASSOCIATE-RQ for `contexts`, after checking what we were asked to send.
fn association_rq(options: &ClientOptions, contexts: &[ProposedContext]) -> Result<AssociationRQ, NetError> {
    check_ae_title("calling AE title", &options.calling_ae_title)?;
    check_ae_title("called AE title", &options.called_ae_title)?;
    if options.max_pdu_length == 0 {
        return Err(NetError::InvalidRequest(
            "max_pdu_length 0 (unlimited) is not allowed: we bound what we receive".to_owned(),
        ));
    }
    if contexts.is_empty() || contexts.len() > MAX_PRESENTATION_CONTEXTS {
        return Err(NetError::InvalidRequest(format!(
            "{} presentation contexts proposed; an association carries 1 to {MAX_PRESENTATION_CONTEXTS} (PS3.8 9.3.2.2)",
            contexts.len()
        )));
    }
    for context in contexts {
        check_uid("abstract syntax", &context.abstract_syntax)?;
        if context.transfer_syntaxes.is_empty() {
            return Err(NetError::InvalidRequest(format!(
                "no transfer syntax proposed for {}",
                context.abstract_syntax
            )));
        }
        for ts in &context.transfer_syntaxes {
            check_uid("transfer syntax", ts)?;
        }
    }
    let presentation_contexts = contexts
        .iter()
        .zip(context_ids())
        .map(|(context, id)| PresentationContextProposed {
            id,
            abstract_syntax: context.abstract_syntax.clone(),
            transfer_syntaxes: context.transfer_syntaxes.clone(),
        })
        .collect();
    let mut user_variables = vec![
        UserVariableItem::MaxLength(options.max_pdu_length),
        UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_owned()),
    ];
    // PS3.7 D.3.3.4: one role selection item per SOP class, not per context. We ask for the SCP
    // role where any context of the class wants it, and keep the SCU role only where another
    // context of the same class is proposed without it.
    let mut roles: BTreeMap<&str, RequestorRoles> = BTreeMap::new();
    for context in contexts.iter().filter(|context| context.scp_role) {
        let scu = contexts.iter().any(|other| other.abstract_syntax == context.abstract_syntax && !other.scp_role);
        roles.insert(&context.abstract_syntax, RequestorRoles { scu, scp: true });
    }
    // Sub-items in ascending item type (PS3.7 D.3.3): 51H, 52H, 54H, 55H.
    user_variables.extend(
        roles.into_iter().map(|(class, roles)| UserVariableItem::ScuScpRoleSelectionSubItem(class.to_owned(), roles)),
    );
    user_variables.push(UserVariableItem::ImplementationVersionName(IMPLEMENTATION_VERSION_NAME.to_owned()));
    Ok(AssociationRQ {
        protocol_version: PROTOCOL_VERSION,
        calling_ae_title: options.calling_ae_title.clone(),
        called_ae_title: options.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT_NAME.to_owned(),
        presentation_contexts,
        user_variables,
    })
}

/// The contexts the A-ASSOCIATE-AC accepted, with the roles granted; an error names what in the
/// AC contradicts our RQ.
fn accepted_contexts(
    request: &AssociationRQ,
    accept: &dicom_ul::pdu::AssociationAC,
    contexts: &[ProposedContext],
) -> Result<Vec<PresentationContext>, String> {
    let granted: BTreeMap<&str, RequestorRoles> = accept
        .user_variables
        .iter()
        .filter_map(|item| match item {
            UserVariableItem::ScuScpRoleSelectionSubItem(class, roles) => Some((trim_uid(class), *roles)),
            _ => None,
        })
        .collect();
    let mut negotiated = Vec::new();
    for result in &accept.presentation_contexts {
        let Some(index) = request.presentation_contexts.iter().position(|proposed| proposed.id == result.id) else {
            return Err(format!("result for presentation context {}, which we did not propose", result.id));
        };
        if result.reason != PresentationContextResultReason::Acceptance {
            continue;
        }
        let proposal = &contexts[index];
        let transfer_syntax = trim_uid(&result.transfer_syntax);
        if !proposal.transfer_syntaxes.iter().any(|ts| ts == transfer_syntax) {
            return Err(format!(
                "presentation context {} accepted with transfer syntax {transfer_syntax}, which we did not propose",
                result.id
            ));
        }
        // PS3.7 D.3.3.4: without a role selection item in the AC the default roles apply
        // (requestor SCU, acceptor SCP); with one, SCP is ours if granted, and SCU stays ours
        // unless the acceptor granted us the SCP role alone.
        let (scu, scp) = match (proposal.scp_role, granted.get(proposal.abstract_syntax.as_str())) {
            (true, Some(roles)) => (roles.scu || !roles.scp, roles.scp),
            _ => (true, false),
        };
        negotiated.push(PresentationContext {
            id: result.id,
            abstract_syntax: proposal.abstract_syntax.clone(),
            transfer_syntax: transfer_syntax.to_owned(),
            scu,
            scp,
        });
    }
    Ok(negotiated)
}

/// Sends A-ABORT on a connection that never became an association, then closes it.
async fn abort_raw(stream: &mut TcpStream, writer: &mut PduWriter, source: AbortRQSource) {
    let _ = timeout(Duration::from_secs(1), writer.write(stream, &Pdu::AbortRQ { source })).await;
}

/// UIDs arrive padded with a NUL (PS3.5 9.1) or spaces; compare them without.
pub(crate) fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// AE title (PS3.5 6.2, PS3.8 9.3.2): 1 to 16 characters of the default repertoire, no
/// backslash or control character, not all spaces.
pub(crate) fn check_ae_title(what: &str, ae_title: &str) -> Result<(), NetError> {
    let valid = (1..=MAX_AE_TITLE_LEN).contains(&ae_title.len())
        && ae_title.bytes().all(|byte| (0x20..0x7F).contains(&byte) && byte != b'\\')
        && ae_title.bytes().any(|byte| byte != b' ');
    if valid { Ok(()) } else { Err(NetError::InvalidRequest(format!("{what} {ae_title:?} is not a valid AE title"))) }
}

fn check_uid(what: &str, uid: &str) -> Result<(), NetError> {
    let valid = (1..=MAX_UID_LEN).contains(&uid.len()) && uid.bytes().all(|byte| byte.is_ascii_digit() || byte == b'.');
    if valid { Ok(()) } else { Err(NetError::InvalidRequest(format!("{what} {uid:?} is not a valid UID"))) }
}

/// Presentation context IDs: odd integers 1 to 255 (PS3.8 9.3.2.2).
fn context_ids() -> impl Iterator<Item = u8> {
    (1..=u8::MAX).step_by(2)
}

/// What we receive by default: dicom-ul's large buffer size (256 KiB minus the PDU header), big
/// enough that per-PDU costs vanish on bulk data (crates-and-performance.md B.4).
pub const DEFAULT_MAX_PDU_LENGTH: u32 = 262_144 - dicom_ul::pdu::PDU_HEADER_SIZE;
/// PS3.8 9.3.2: at most 128 presentation contexts (odd IDs 1 to 255).
pub const MAX_PRESENTATION_CONTEXTS: usize = 128;
/// PS3.8 9.3.2: protocol version 1 (bit 0).
pub(crate) const PROTOCOL_VERSION: u16 = 0x0001;
const MAX_AE_TITLE_LEN: usize = 16;
const MAX_UID_LEN: usize = 64;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_ARTIM: Duration = Duration::from_secs(30);
const DEFAULT_DIMSE_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{AssociationAC, PresentationContextResult};

    fn ac(results: Vec<PresentationContextResult>, user_variables: Vec<UserVariableItem>) -> AssociationAC {
        AssociationAC {
            protocol_version: 1,
            calling_ae_title: "US".to_owned(),
            called_ae_title: "THEM".to_owned(),
            application_context_name: APPLICATION_CONTEXT_NAME.to_owned(),
            presentation_contexts: results,
            user_variables,
        }
    }

    fn result(id: u8, reason: PresentationContextResultReason, ts: &str) -> PresentationContextResult {
        PresentationContextResult { id, reason, transfer_syntax: ts.to_owned() }
    }

    #[test]
    fn request_carries_roles_per_class_and_our_identity() {
        let options = ClientOptions::new("US", "THEM");
        let mut contexts = vec![ProposedContext::new(uids::STUDY_ROOT_GET, UNCOMPRESSED)];
        contexts.extend(ProposedContext::storage_scp(UNCOMPRESSED));
        contexts.push(ProposedContext::new(uids::STORAGE_SOP_CLASSES[0], UNCOMPRESSED));
        let request = association_rq(&options, &contexts).unwrap();
        assert_eq!(request.presentation_contexts[0].id, 1);
        assert_eq!(request.presentation_contexts[1].id, 3);
        let roles: Vec<_> = request
            .user_variables
            .iter()
            .filter_map(|item| match item {
                UserVariableItem::ScuScpRoleSelectionSubItem(class, roles) => Some((class.clone(), *roles)),
                _ => None,
            })
            .collect();
        assert_eq!(roles.len(), uids::STORAGE_SOP_CLASSES.len());
        let first = roles.iter().find(|(class, _)| class == uids::STORAGE_SOP_CLASSES[0]).unwrap();
        assert_eq!(first.1, RequestorRoles { scu: true, scp: true }, "also proposed without the SCP role");
        let other = roles.iter().find(|(class, _)| class == uids::STORAGE_SOP_CLASSES[1]).unwrap();
        assert_eq!(other.1, RequestorRoles { scu: false, scp: true });
        assert!(request.user_variables.contains(&UserVariableItem::MaxLength(DEFAULT_MAX_PDU_LENGTH)));
        assert!(
            request
                .user_variables
                .contains(&UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_owned()))
        );
    }

    #[test]
    fn request_refuses_what_cannot_be_sent() {
        let too_long = ClientOptions::new("A_CALLING_AE_TITLE_17", "THEM");
        assert!(matches!(
            association_rq(&too_long, &[ProposedContext::verification()]),
            Err(NetError::InvalidRequest(_))
        ));
        let many = vec![ProposedContext::verification(); 129];
        assert!(matches!(association_rq(&ClientOptions::new("US", "THEM"), &many), Err(NetError::InvalidRequest(_))));
        let bad_uid = ProposedContext::new("1.2.x", UNCOMPRESSED);
        assert!(matches!(
            association_rq(&ClientOptions::new("US", "THEM"), &[bad_uid]),
            Err(NetError::InvalidRequest(_))
        ));
    }

    #[test]
    fn accept_gives_contexts_transfer_syntaxes_and_roles() {
        let options = ClientOptions::new("US", "THEM");
        let contexts = vec![
            ProposedContext::new(uids::STUDY_ROOT_GET, UNCOMPRESSED),
            ProposedContext::scp(uids::STORAGE_SOP_CLASSES[0], UNCOMPRESSED),
            ProposedContext::scp(uids::STORAGE_SOP_CLASSES[1], UNCOMPRESSED),
            ProposedContext::new(uids::VERIFICATION, UNCOMPRESSED),
        ];
        let request = association_rq(&options, &contexts).unwrap();
        let accept = ac(
            vec![
                result(1, PresentationContextResultReason::Acceptance, uids::IMPLICIT_VR_LITTLE_ENDIAN),
                // Padded with a NUL, as some peers send it.
                result(3, PresentationContextResultReason::Acceptance, "1.2.840.10008.1.2.1\0"),
                result(5, PresentationContextResultReason::Acceptance, uids::EXPLICIT_VR_LITTLE_ENDIAN),
                result(7, PresentationContextResultReason::AbstractSyntaxNotSupported, uids::EXPLICIT_VR_LITTLE_ENDIAN),
            ],
            vec![UserVariableItem::ScuScpRoleSelectionSubItem(
                uids::STORAGE_SOP_CLASSES[0].to_owned(),
                RequestorRoles { scu: false, scp: true },
            )],
        );
        let negotiated = accepted_contexts(&request, &accept, &contexts).unwrap();
        assert_eq!(negotiated.len(), 3, "the rejected verification context is left out");
        assert_eq!((negotiated[0].scu, negotiated[0].scp), (true, false));
        assert_eq!(negotiated[1].transfer_syntax, uids::EXPLICIT_VR_LITTLE_ENDIAN);
        assert_eq!((negotiated[1].scu, negotiated[1].scp), (false, true), "SCP role granted");
        assert_eq!((negotiated[2].scu, negotiated[2].scp), (true, false), "no role item: default roles");

        let wrong_ts =
            ac(vec![result(1, PresentationContextResultReason::Acceptance, "1.2.840.10008.1.2.4.50")], vec![]);
        assert!(accepted_contexts(&request, &wrong_ts, &contexts).unwrap_err().contains("did not propose"));
        let wrong_id =
            ac(vec![result(9, PresentationContextResultReason::Acceptance, uids::EXPLICIT_VR_LITTLE_ENDIAN)], vec![]);
        assert!(accepted_contexts(&request, &wrong_id, &contexts).unwrap_err().contains("did not propose"));
    }
}
