//! Typed ADT (HL7 v2 chapter 3): the message header, patient identifiers (CX), names (XPN),
//! merge information (MRG), and the rules that turn a message into an [`AdtMessage`] or an
//! [`Hl7Error`] with the table 0357 code and ERR-2 location the ACK needs.
//!
//! Identifiers and names are read from escape-decoded leaves; [`Cx::to_cx_string`] writes the
//! canonical, re-escaped `id^^^ns&uid&type^typecode` form used as a key and in the REST API.

use std::borrow::Cow;

pub use crate::error::{ErrorCode, Hl7Error, Location};
use crate::escape;
use crate::message::{Component, Field, Leaf, Message, NULL_VALUE, Repetition, Segment, Separators};

/// The MSH fields needed to route, deduplicate and acknowledge a message.
///
/// Composite fields (MSH-3/4/5/6 HD, MSH-11 PT) are kept as canonical strings: each leaf is
/// escape-decoded and re-escaped with the default separators `|^~\&`, so the same sender reads
/// the same whatever separators it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// MSH-3 (HD).
    pub sending_application: String,
    /// MSH-4 (HD).
    pub sending_facility: String,
    /// MSH-5 (HD).
    pub receiving_application: String,
    /// MSH-6 (HD).
    pub receiving_facility: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-9.1.
    pub message_code: String,
    /// MSH-9.2 (after [`parse_adt`], EVN-1 when MSH-9.2 was empty).
    pub trigger_event: String,
    /// MSH-9.3.
    pub message_structure: String,
    /// MSH-11 (PT, e.g. `P` or `P^T`).
    pub processing_id: String,
    /// MSH-12.1.
    pub version: String,
    /// MSH-15; a value outside HL7 table 0155 reads as `None`.
    pub accept_ack_type: Option<AckCondition>,
    /// MSH-16; a value outside HL7 table 0155 reads as `None`.
    pub application_ack_type: Option<AckCondition>,
    /// MSH-18, first repetition.
    pub charset: String,
    pub separators: Separators,
    /// MSH-7.1.
    pub datetime: String,
}

impl MessageHeader {
    /// True when MSH-15 or MSH-16 is valued: the sender asked for enhanced-mode acknowledgment.
    pub fn is_enhanced_mode(&self) -> bool {
        self.accept_ack_type.is_some() || self.application_ack_type.is_some()
    }
}

/// HL7 table 0155 (accept/application acknowledgment conditions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCondition {
    Always,
    Never,
    Error,
    Success,
}

impl AckCondition {
    pub fn parse(value: &str) -> Option<AckCondition> {
        match value {
            "AL" => Some(AckCondition::Always),
            "NE" => Some(AckCondition::Never),
            "ER" => Some(AckCondition::Error),
            "SU" => Some(AckCondition::Success),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AckCondition::Always => "AL",
            AckCondition::Never => "NE",
            AckCondition::Error => "ER",
            AckCondition::Success => "SU",
        }
    }
}

/// Reads the MSH segment only, so a message with a bad body can still be acknowledged.
///
/// Requires MSH-9, MSH-10 and MSH-12 (101) and a version from 2.2 to 2.8 (203).
pub fn parse_header(text: &str) -> Result<MessageHeader, Hl7Error> {
    let separators = Separators::from_msh(text)?;
    let line = crate::message::lines(text).next().unwrap_or("");
    let msh = Segment::from_line(line, separators).ok_or_else(|| {
        Hl7Error::new(ErrorCode::SegmentSequence, Location::new("MSH", 1, 0, 0), "MSH segment id invalid")
    })?;
    let header = header_from_msh(&msh);
    let required = [
        (9, header.message_code.is_empty(), "MSH-9 (message type) missing"),
        (10, header.control_id.is_empty(), "MSH-10 (message control id) missing"),
        (12, header.version.is_empty(), "MSH-12 (version id) missing"),
    ];
    for (field, missing, message) in required {
        if missing {
            return Err(Hl7Error::new(ErrorCode::RequiredFieldMissing, Location::new("MSH", 1, field, 0), message));
        }
    }
    if !is_supported_version(&header.version) {
        return Err(Hl7Error::new(
            ErrorCode::UnsupportedVersion,
            Location::new("MSH", 1, 12, 0),
            "MSH-12 version not supported (2.2 to 2.8)",
        ));
    }
    Ok(header)
}

/// The ADT trigger events hie-edge handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdtEvent {
    A01,
    A02,
    A03,
    A04,
    A05,
    A08,
    A11,
    A13,
    A28,
    A31,
    A40,
    A47,
}

/// What an ADT event does to patient identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdtKind {
    /// Create or update a patient (A01..A31).
    Demographics,
    /// A40: the MRG-1 patient is merged into the PID-3 patient.
    Merge,
    /// A47: the MRG-1 identifier is replaced by the PID-3 identifier.
    ChangeIdentifier,
}

impl AdtEvent {
    pub fn parse(trigger: &str) -> Option<AdtEvent> {
        let event = match trigger {
            "A01" => AdtEvent::A01,
            "A02" => AdtEvent::A02,
            "A03" => AdtEvent::A03,
            "A04" => AdtEvent::A04,
            "A05" => AdtEvent::A05,
            "A08" => AdtEvent::A08,
            "A11" => AdtEvent::A11,
            "A13" => AdtEvent::A13,
            "A28" => AdtEvent::A28,
            "A31" => AdtEvent::A31,
            "A40" => AdtEvent::A40,
            "A47" => AdtEvent::A47,
            _ => return None,
        };
        Some(event)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdtEvent::A01 => "A01",
            AdtEvent::A02 => "A02",
            AdtEvent::A03 => "A03",
            AdtEvent::A04 => "A04",
            AdtEvent::A05 => "A05",
            AdtEvent::A08 => "A08",
            AdtEvent::A11 => "A11",
            AdtEvent::A13 => "A13",
            AdtEvent::A28 => "A28",
            AdtEvent::A31 => "A31",
            AdtEvent::A40 => "A40",
            AdtEvent::A47 => "A47",
        }
    }

    pub fn kind(&self) -> AdtKind {
        match self {
            AdtEvent::A40 => AdtKind::Merge,
            AdtEvent::A47 => AdtKind::ChangeIdentifier,
            _ => AdtKind::Demographics,
        }
    }

    /// True when each PID must be followed by an MRG.
    pub fn has_merge_groups(&self) -> bool {
        self.kind() != AdtKind::Demographics
    }
}

/// HD (hierarchic designator): an assigning authority or application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hd {
    pub namespace_id: String,
    pub universal_id: String,
    pub universal_id_type: String,
}

impl Hd {
    pub fn is_empty(&self) -> bool {
        self.namespace_id.is_empty() && self.universal_id.is_empty() && self.universal_id_type.is_empty()
    }

    /// `ns&uid&type` with trailing empty parts left off, each part escaped with default separators.
    pub fn to_hd_string(&self, separator: char) -> String {
        let separators = Separators::default();
        join_trimmed(
            [&self.namespace_id, &self.universal_id, &self.universal_id_type]
                .iter()
                .map(|part| escape::encode(part, &separators)),
            separator,
        )
    }

    fn from_component(component: Component<'_>) -> Hd {
        let mut parts = component.subcomponents().map(|subcomponent| subcomponent.value().into_owned());
        Hd {
            namespace_id: parts.next().unwrap_or_default(),
            universal_id: parts.next().unwrap_or_default(),
            universal_id_type: parts.next().unwrap_or_default(),
        }
    }
}

/// CX (extended composite id with check digit), components 1 to 5.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cx {
    pub id: String,
    pub check_digit: String,
    pub check_digit_scheme: String,
    pub authority: Hd,
    pub id_type_code: String,
}

impl Cx {
    /// `id^check^scheme^ns&uid&type^typecode`, trailing empty parts left off, HL7-escaped.
    pub fn to_cx_string(&self) -> String {
        let separators = Separators::default();
        let authority = self.authority.to_hd_string(separators.subcomponent);
        join_trimmed(
            [
                escape::encode(&self.id, &separators),
                escape::encode(&self.check_digit, &separators),
                escape::encode(&self.check_digit_scheme, &separators),
                Cow::Owned(authority),
                escape::encode(&self.id_type_code, &separators),
            ]
            .into_iter(),
            separators.component,
        )
    }

    /// Parses the [`Cx::to_cx_string`] form (default separators); the id must not be empty.
    pub fn parse(text: &str) -> Result<Cx, Hl7Error> {
        let cx = Cx::from_repetition(Repetition::from_raw(text, Separators::default()));
        if cx.id.is_empty() {
            return Err(Hl7Error::new(ErrorCode::RequiredFieldMissing, Location::unknown(), "CX has no id (CX.1)"));
        }
        Ok(cx)
    }

    fn from_repetition(repetition: Repetition<'_>) -> Cx {
        let mut components = repetition.components();
        let mut next_value = || components.next().map(|component| component.value().into_owned()).unwrap_or_default();
        let id = next_value();
        let check_digit = next_value();
        let check_digit_scheme = next_value();
        let authority = components.next().map(Hd::from_component).unwrap_or_default();
        let id_type_code = components.next().map(|component| component.value().into_owned()).unwrap_or_default();
        Cx { id, check_digit, check_digit_scheme, authority, id_type_code }
    }
}

impl std::fmt::Display for Cx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_cx_string())
    }
}

/// XPN (extended person name); the family name is XPN.1.1 (FN.1 surname in v2.3+).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Xpn {
    pub family: String,
    pub given: String,
    /// XPN.3: second and further given names or initials.
    pub middle: String,
    pub suffix: String,
    pub prefix: String,
    /// XPN.7 (HL7 table 0200, e.g. `L` legal).
    pub name_type: String,
}

impl Xpn {
    fn from_repetition(repetition: Repetition<'_>) -> Xpn {
        let part = |n: usize| repetition.component(n).value().trim().to_owned();
        Xpn { family: part(1), given: part(2), middle: part(3), suffix: part(4), prefix: part(5), name_type: part(7) }
    }

    /// True when no name part is valued (the name type alone does not make a name).
    pub fn is_empty(&self) -> bool {
        self.family.is_empty()
            && self.given.is_empty()
            && self.middle.is_empty()
            && self.suffix.is_empty()
            && self.prefix.is_empty()
    }
}

/// The PID fields hie-edge uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pid {
    /// PID-3 repetitions (HL7 null and empty ids skipped), then PID-2 if valued and not a duplicate.
    pub identifiers: Vec<Cx>,
    /// PID-5 repetitions with at least one name part.
    pub names: Vec<Xpn>,
    /// PID-7.1.
    pub birth_date: String,
    /// PID-8.
    pub sex: String,
}

/// The MRG fields hie-edge uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mrg {
    /// MRG-1 repetitions (HL7 null and empty ids skipped).
    pub prior_identifiers: Vec<Cx>,
}

/// One patient of the message: a PID and, for A40/A47, its MRG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientGroup {
    pub pid: Pid,
    pub mrg: Option<Mrg>,
    /// 1-based occurrence of this PID in the message (ERR-2 segment sequence).
    pub pid_index: usize,
}

/// A validated ADT message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdtMessage {
    pub header: MessageHeader,
    pub event: AdtEvent,
    /// One group for A01..A31; one or more PID/MRG groups for A40/A47.
    pub groups: Vec<PatientGroup>,
}

/// Parses and validates an ADT message (text from [`crate::charset::decode_to_utf8`]).
///
/// Errors, in the order checked: header (see [`parse_header`]); MSH-9.1 not `ADT` (200 at
/// MSH^1^9^1); segment structure (100); trigger (MSH-9.2, else EVN-1) not supported (201 at
/// MSH^1^9^2); no PID (100 at PID^1); a PID without identifiers (101 at PID^n^3); for A40/A47 a PID
/// without MRG or an MRG without PID (100 at MRG^n); MRG-1 without identifiers (101 at MRG^n^1).
pub fn parse_adt(text: &str) -> Result<AdtMessage, Hl7Error> {
    let mut header = parse_header(text)?;
    if header.message_code != "ADT" {
        return Err(Hl7Error::new(
            ErrorCode::UnsupportedMessageType,
            Location::new("MSH", 1, 9, 1),
            "message type not supported (ADT only)",
        ));
    }
    let message = Message::parse(text)?;
    if header.trigger_event.is_empty()
        && let Some(evn) = message.segment("EVN", 1)
    {
        header.trigger_event = evn.field(1).value().into_owned();
    }
    let event = AdtEvent::parse(&header.trigger_event).ok_or_else(|| {
        Hl7Error::new(ErrorCode::UnsupportedEvent, Location::new("MSH", 1, 9, 2), "trigger event not supported")
    })?;
    let groups = patient_groups(&message, event)?;
    Ok(AdtMessage { header, event, groups })
}

fn patient_groups(message: &Message<'_>, event: AdtEvent) -> Result<Vec<PatientGroup>, Hl7Error> {
    let mut groups: Vec<PatientGroup> = Vec::new();
    let mut n_pid = 0;
    let mut n_mrg = 0;
    for segment in message.segments() {
        match segment.id().as_bytes() {
            b"PID" => {
                n_pid += 1;
                if !event.has_merge_groups() && n_pid > 1 {
                    continue;
                }
                if event.has_merge_groups() && groups.last().is_some_and(|group| group.mrg.is_none()) {
                    return Err(missing_mrg(n_mrg + 1));
                }
                groups.push(PatientGroup { pid: parse_pid(segment, n_pid)?, mrg: None, pid_index: n_pid });
            }
            b"MRG" => {
                n_mrg += 1;
                if !event.has_merge_groups() {
                    continue;
                }
                match groups.last_mut() {
                    Some(group) if group.mrg.is_none() => group.mrg = Some(parse_mrg(segment, n_mrg)?),
                    _ => {
                        return Err(Hl7Error::new(
                            ErrorCode::SegmentSequence,
                            Location::new("MRG", n_mrg, 0, 0),
                            "MRG segment without a preceding PID",
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if groups.is_empty() {
        return Err(Hl7Error::new(ErrorCode::SegmentSequence, Location::new("PID", 1, 0, 0), "PID segment missing"));
    }
    if event.has_merge_groups() && groups.last().is_some_and(|group| group.mrg.is_none()) {
        return Err(missing_mrg(n_mrg + 1));
    }
    Ok(groups)
}

fn parse_pid(segment: &Segment<'_>, sequence: usize) -> Result<Pid, Hl7Error> {
    let mut identifiers = identifiers(segment.field(3).repetitions());
    for external in identifiers_iter(segment.field(2).repetitions()) {
        if !identifiers.contains(&external) {
            identifiers.push(external);
        }
    }
    if identifiers.is_empty() {
        return Err(Hl7Error::new(
            ErrorCode::RequiredFieldMissing,
            Location::new("PID", sequence, 3, 0),
            "PID-3 (patient identifier list) has no identifier",
        ));
    }
    let names = segment
        .field(5)
        .repetitions()
        .filter(|repetition| !repetition.is_null())
        .map(Xpn::from_repetition)
        .filter(|name| !name.is_empty())
        .collect();
    Ok(Pid {
        identifiers,
        names,
        birth_date: segment.field(7).value().into_owned(),
        sex: segment.field(8).value().into_owned(),
    })
}

fn parse_mrg(segment: &Segment<'_>, sequence: usize) -> Result<Mrg, Hl7Error> {
    let prior_identifiers = identifiers(segment.field(1).repetitions());
    if prior_identifiers.is_empty() {
        return Err(Hl7Error::new(
            ErrorCode::RequiredFieldMissing,
            Location::new("MRG", sequence, 1, 0),
            "MRG-1 (prior patient identifier list) has no identifier",
        ));
    }
    Ok(Mrg { prior_identifiers })
}

fn identifiers<'a>(repetitions: impl Iterator<Item = Repetition<'a>>) -> Vec<Cx> {
    identifiers_iter(repetitions).collect()
}

/// CX repetitions with a real id: `""` (HL7 null) and empty ids are not identifiers.
fn identifiers_iter<'a>(repetitions: impl Iterator<Item = Repetition<'a>>) -> impl Iterator<Item = Cx> {
    repetitions
        .filter(|repetition| {
            let id = repetition.component(1);
            !id.is_empty() && !id.is_null()
        })
        .map(Cx::from_repetition)
        .filter(|cx| !cx.id.is_empty())
}

fn missing_mrg(sequence: usize) -> Hl7Error {
    Hl7Error::new(
        ErrorCode::SegmentSequence,
        Location::new("MRG", sequence, 0, 0),
        "PID segment not followed by the MRG segment this event requires",
    )
}

/// Reads the header fields without validating them (shared with `ack::salvage_header`).
pub(crate) fn header_from_msh(msh: &Segment<'_>) -> MessageHeader {
    // Split MSH once; MSH-1 is at index 0.
    let mut fields = [Field::empty(*msh.separators()); 18];
    for (slot, field) in fields.iter_mut().zip(msh.fields()) {
        *slot = field;
    }
    let field = |n: usize| fields[n - 1];
    let message_type = field(9);
    MessageHeader {
        sending_application: canonical(field(3).repetition(1)),
        sending_facility: canonical(field(4).repetition(1)),
        receiving_application: canonical(field(5).repetition(1)),
        receiving_facility: canonical(field(6).repetition(1)),
        control_id: field(10).value().into_owned(),
        message_code: message_type.component(1).value().into_owned(),
        trigger_event: message_type.component(2).value().into_owned(),
        message_structure: message_type.component(3).value().into_owned(),
        processing_id: canonical(field(11).repetition(1)),
        version: field(12).component(1).value().into_owned(),
        accept_ack_type: AckCondition::parse(&field(15).value()),
        application_ack_type: AckCondition::parse(&field(16).value()),
        charset: field(18).value().into_owned(),
        separators: *msh.separators(),
        datetime: field(7).value().into_owned(),
    }
}

/// A repetition rewritten with default separators: leaves decoded and re-escaped, HL7 null kept as
/// `""`, trailing empty parts left off.
pub(crate) fn canonical(repetition: Repetition<'_>) -> String {
    let separators = Separators::default();
    // Fast path for the common case: already in default separators, with no escapes, nulls or
    // subcomponents, the canonical form is the raw text without trailing empty components.
    let raw = repetition.raw();
    if *repetition.separators() == separators && !raw.contains(['\\', '"', '&', '~', '|']) {
        return raw.trim_end_matches('^').to_owned();
    }
    join_trimmed(
        repetition.components().map(|component| {
            Cow::Owned(join_trimmed(
                component.subcomponents().map(|subcomponent| match subcomponent.leaf() {
                    Leaf::Empty => Cow::Borrowed(""),
                    Leaf::Null => Cow::Borrowed(NULL_VALUE),
                    Leaf::Value(value) => Cow::Owned(escape::encode(&value, &separators).into_owned()),
                }),
                separators.subcomponent,
            ))
        }),
        separators.component,
    )
}

fn is_supported_version(version: &str) -> bool {
    let mut parts = version.split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    let numeric = |part: &str| !part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit());
    if !numeric(major) || !numeric(minor) || !parts.all(numeric) {
        return false;
    }
    major == "2" && matches!(minor.parse::<u16>(), Ok(2..=8))
}

/// Joins parts with `separator`, leaving trailing empty parts off.
fn join_trimmed<'a>(parts: impl Iterator<Item = Cow<'a, str>>, separator: char) -> String {
    let parts: Vec<Cow<'a, str>> = parts.collect();
    let n_valued = parts.iter().rposition(|part| !part.is_empty()).map_or(0, |at| at + 1);
    let mut out = String::new();
    for (i, part) in parts[..n_valued].iter().enumerate() {
        if i > 0 {
            out.push(separator);
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A01: &str = "MSH|^~\\&|APP|FAC^1.2^ISO|HIE|X|20240101120000||ADT^A01^ADT_A01|C1|P^T|2.5.1|||AL|NE||UNICODE UTF-8\r\
        EVN|A01|20240101\r\
        PID|1|EXT1|\"\"^^^&2.71&ISO~^^^X~123^^^HOSP&1.2.3&ISO^MR~M\\S\\1^^^&1.9&ISO||Müller&vd^Jörg^K^Jr^Dr^^L~^^^^^^B~\"\"|x|19700101|M\r\
        PID|2||999^^^HOSP\r";

    fn error_of(text: &str) -> (u16, String) {
        let error = parse_adt(text).unwrap_err();
        (error.code.code(), error.location.to_string())
    }

    #[test]
    fn header_fields() {
        let header = parse_header(A01).unwrap();
        assert_eq!(header.sending_application, "APP");
        assert_eq!(header.sending_facility, "FAC^1.2^ISO");
        assert_eq!(header.control_id, "C1");
        assert_eq!(
            (header.message_code.as_str(), header.trigger_event.as_str(), header.message_structure.as_str()),
            ("ADT", "A01", "ADT_A01")
        );
        assert_eq!(header.processing_id, "P^T");
        assert_eq!(header.version, "2.5.1");
        assert_eq!(header.accept_ack_type, Some(AckCondition::Always));
        assert_eq!(header.application_ack_type, Some(AckCondition::Never));
        assert!(header.is_enhanced_mode());
        assert_eq!(header.charset, "UNICODE UTF-8");
        assert_eq!(header.datetime, "20240101120000");
    }

    #[test]
    fn identifiers_names_and_first_group_only() {
        let message = parse_adt(A01).unwrap();
        assert_eq!(message.event, AdtEvent::A01);
        assert_eq!(message.groups.len(), 1);
        let pid = &message.groups[0].pid;
        let ids: Vec<String> = pid.identifiers.iter().map(Cx::to_cx_string).collect();
        assert_eq!(ids, ["123^^^HOSP&1.2.3&ISO^MR", "M\\S\\1^^^&1.9&ISO", "EXT1"]);
        assert_eq!(pid.identifiers[1].id, "M^1");
        assert_eq!(pid.names.len(), 1);
        assert_eq!(pid.names[0].family, "Müller");
        assert_eq!(pid.names[0].given, "Jörg");
        assert_eq!(pid.names[0].name_type, "L");
        assert_eq!((pid.birth_date.as_str(), pid.sex.as_str()), ("19700101", "M"));
    }

    #[test]
    fn versions() {
        for (version, ok) in [
            ("2.2", true),
            ("2.3.1", true),
            ("2.5.1", true),
            ("2.8", true),
            ("2.8.2", true),
            ("2.1", false),
            ("2.9", false),
            ("3.0", false),
            ("2", false),
            ("2.x", false),
            ("2.5.", false),
        ] {
            assert_eq!(is_supported_version(version), ok, "{version}");
        }
        assert_eq!(error_of(&A01.replace("|2.5.1|", "|2.9|")), (203, "MSH^1^12".into()));
    }

    #[test]
    fn rejections() {
        assert_eq!(error_of(&A01.replace("ADT^A01^ADT_A01", "ORU^R01")), (200, "MSH^1^9^1".into()));
        assert_eq!(error_of(&A01.replace("ADT^A01^ADT_A01", "ADT^A99")), (201, "MSH^1^9^2".into()));
        assert_eq!(error_of(&A01.replace("|C1|", "||")), (101, "MSH^1^10".into()));
        assert_eq!(error_of(&A01.replace("ADT^A01^ADT_A01", "")), (101, "MSH^1^9".into()));
        assert_eq!(
            error_of("MSH|^~\\&|A|B|||1||ADT^A01|1|P|2.5\rPID|1|\"\"|\"\"^^^&1.2&ISO~^^^X\r"),
            (101, "PID^1^3".into())
        );
        assert_eq!(error_of("MSH|^~\\&|A|B|||1||ADT^A01|1|P|2.5\rEVN|A01\r"), (100, "PID^1".into()));
    }

    #[test]
    fn trigger_falls_back_to_evn() {
        let message = parse_adt("MSH|^~\\&|A|B|||1||ADT|1|P|2.3\rEVN|A08\rPID|||1\r").unwrap();
        assert_eq!(message.event, AdtEvent::A08);
        assert_eq!(message.header.trigger_event, "A08");
    }

    #[test]
    fn merge_groups() {
        let msh = "MSH|^~\\&|A|B|||1||ADT^A40|1|P|2.5\rEVN|A40\r";
        let message = parse_adt(&format!("{msh}PID|||1^^^H\rPD1\rMRG|2^^^H~\"\"\rPID|||3^^^H\rMRG|4^^^H\r")).unwrap();
        assert_eq!(message.event.kind(), AdtKind::Merge);
        let pairs: Vec<(usize, String, String)> = message
            .groups
            .iter()
            .map(|group| {
                let mrg = group.mrg.as_ref().unwrap();
                (group.pid_index, group.pid.identifiers[0].to_cx_string(), mrg.prior_identifiers[0].to_cx_string())
            })
            .collect();
        assert_eq!(pairs, [(1, "1^^^H".into(), "2^^^H".into()), (2, "3^^^H".into(), "4^^^H".into())]);

        assert_eq!(error_of(&format!("{msh}PID|||1\r")), (100, "MRG^1".into()));
        assert_eq!(error_of(&format!("{msh}PID|||1\rMRG|2\rPID|||3\r")), (100, "MRG^2".into()));
        assert_eq!(error_of(&format!("{msh}PID|||1\rPID|||3\rMRG|2\r")), (100, "MRG^1".into()));
        assert_eq!(error_of(&format!("{msh}MRG|2\rPID|||1\r")), (100, "MRG^1".into()));
        assert_eq!(error_of(&format!("{msh}PID|||1\rMRG|2\rMRG|3\r")), (100, "MRG^2".into()));
        assert_eq!(error_of(&format!("{msh}PID|||1\rMRG||x\r")), (101, "MRG^1^1".into()));
        assert_eq!(error_of(&format!("{msh}PID|||1\rMRG|2\rPID|||3\rMRG|\"\"\r")), (101, "MRG^2^1".into()));
    }

    #[test]
    fn cx_round_trip() {
        let cx = Cx::parse("a\\S\\b^^^NS&1.2.3&ISO^MR").unwrap();
        assert_eq!(cx.id, "a^b");
        assert_eq!(cx.authority.namespace_id, "NS");
        assert_eq!(cx.authority.universal_id, "1.2.3");
        assert_eq!(cx.id_type_code, "MR");
        assert_eq!(cx.to_cx_string(), "a\\S\\b^^^NS&1.2.3&ISO^MR");
        assert_eq!(Cx::parse("1^^^&1.2&ISO").unwrap().to_cx_string(), "1^^^&1.2&ISO");
        assert_eq!(Cx::parse("1^^^NS").unwrap().to_cx_string(), "1^^^NS");
        assert_eq!(Cx::parse("1").unwrap().to_cx_string(), "1");
        assert_eq!(Cx::parse("^^^NS").unwrap_err().code, ErrorCode::RequiredFieldMissing);
    }

    #[test]
    fn canonical_rewrites_separators() {
        let message = Message::parse("MSH*#~\\$*APP#1.2\\F\\3#ISO*F$x*").unwrap();
        let msh = message.segments()[0];
        assert_eq!(canonical(msh.field(3).repetition(1)), "APP^1.2*3^ISO");
        assert_eq!(canonical(msh.field(4).repetition(1)), "F&x");
    }
}
