//! Interop with a real peer on the wire: dcmtk's `echoscu`, `findscu`, `storescu`, `getscu` and
//! `movescu` (Debian package `dcmtk`) talk to a minimal acceptor written here on std sockets and
//! dicom-ul's PDU reader and writer. Every command set dcmtk sends is decoded with our decoder,
//! checked field by field, and re-encoded byte for byte; every response dcmtk gets is ours, and
//! dcmtk's exit code says whether it accepted it.
//!
//! `UPDATE_EXPECT=1` also saves the captured command sets as `test_data/ok/dcmtk-*.bin` for the
//! golden tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output};
use std::thread;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationAC, PDataValueType, Pdu, PresentationContextResult, PresentationContextResultReason, UserVariableItem,
    read_pdu, write_pdu,
};
use hie_dimse::command::{CEchoRsp, CFindRsp, CGetRsp, CMoveRsp, CStoreRq, CStoreRsp, StatusDetail};
use hie_dimse::pdata::{self, MaxPduLength};
use hie_dimse::{
    Command, DataSetType, Event, Limits, MessageAssembler, Priority, Status, SubOperations, decode, encode, uids,
};

const SECONDARY_CAPTURE: &str = dicom_dictionary_std::uids::SECONDARY_CAPTURE_IMAGE_STORAGE;

/// What our acceptor declares it receives; small so that dcmtk must fragment larger data sets.
const OUR_MAX_PDU: u32 = 4096;

/// Bound for reading the A-ASSOCIATE-RQ.
const ASSOCIATE_RQ_MAX: u32 = 1 << 20;

/// One message received from the peer: its raw command set, the decoded command, the data set.
#[derive(Debug)]
struct Received {
    presentation_context_id: u8,
    raw_command: Vec<u8>,
    command: Command,
    data: Option<Vec<u8>>,
    data_fragments: usize,
}

/// What the acceptor answers a message with: commands, each with an optional data set, sent on
/// a presentation context.
struct Reply {
    presentation_context_id: u8,
    command: Command,
    data: Option<Vec<u8>>,
}

/// The accepted presentation contexts, so a handler can send on a storage context (C-GET).
struct Session {
    contexts: Vec<(u8, String)>,
}

fn our_capture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/ok")
}

/// Accepts one association on `listener`, accepts every presentation context with its first
/// transfer syntax (and any SCP role asked for), feeds P-DATA through our assembler and answers
/// each complete message with `handler`, until A-RELEASE or A-ABORT. Returns every message.
fn serve_one(
    listener: TcpListener,
    mut handler: impl FnMut(&Session, &Received) -> Vec<Reply> + Send + 'static,
) -> thread::JoinHandle<Vec<Received>> {
    thread::spawn(move || {
        let mut stream = accept_within(&listener, Duration::from_secs(20));
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buffer = Vec::new();
        // Our maximum bounds P-DATA-TF PDUs only (PS3.8 D.1.1); an A-ASSOCIATE-RQ proposing many
        // contexts (getscu, storescu) is larger.
        let Pdu::AssociationRQ(request) = read_one(&mut stream, &mut buffer, ASSOCIATE_RQ_MAX) else {
            panic!("expected A-ASSOCIATE-RQ")
        };
        let mut peer_max = 0;
        let mut roles = Vec::new();
        for item in &request.user_variables {
            match item {
                UserVariableItem::MaxLength(max) => peer_max = *max,
                UserVariableItem::ScuScpRoleSelectionSubItem(uid, asked) => {
                    roles.push(UserVariableItem::ScuScpRoleSelectionSubItem(uid.clone(), *asked));
                }
                _ => {}
            }
        }
        let peer_max = MaxPduLength::from_peer(peer_max).unwrap();
        let session = Session {
            contexts: request.presentation_contexts.iter().map(|pc| (pc.id, pc.abstract_syntax.clone())).collect(),
        };
        let mut user_variables = vec![
            UserVariableItem::MaxLength(OUR_MAX_PDU),
            UserVariableItem::ImplementationClassUID("1.2.826.0.1.3680043.10.1535.1".to_owned()),
        ];
        user_variables.extend(roles);
        let accept = AssociationAC {
            protocol_version: 1,
            calling_ae_title: request.calling_ae_title.clone(),
            called_ae_title: request.called_ae_title.clone(),
            application_context_name: request.application_context_name.clone(),
            presentation_contexts: request
                .presentation_contexts
                .iter()
                .map(|pc| PresentationContextResult {
                    id: pc.id,
                    reason: PresentationContextResultReason::Acceptance,
                    // Implicit VR Little Endian when offered: the data sets this acceptor sends
                    // (C-GET sub-operations) are written in it.
                    transfer_syntax: pc
                        .transfer_syntaxes
                        .iter()
                        .find(|ts| ts.trim_end_matches('\0') == uids::IMPLICIT_VR_LITTLE_ENDIAN)
                        .unwrap_or(&pc.transfer_syntaxes[0])
                        .clone(),
                })
                .collect(),
            user_variables,
        };
        send(&mut stream, &Pdu::AssociationAC(accept));

        let mut assembler = MessageAssembler::new(Limits::default());
        let mut received = Vec::new();
        let mut raw_command = Vec::new();
        let mut current: Option<Received> = None;
        loop {
            match read_one(&mut stream, &mut buffer, OUR_MAX_PDU) {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type == PDataValueType::Command {
                            raw_command.extend_from_slice(&pdv.data);
                        }
                        let (next, event) = assembler.handle(pdv).unwrap();
                        assembler = next;
                        let complete = match event {
                            None => None,
                            Some(Event::Command { presentation_context_id, command }) => {
                                let message = Received {
                                    presentation_context_id,
                                    raw_command: std::mem::take(&mut raw_command),
                                    data: command.has_data_set().then(Vec::new),
                                    command,
                                    data_fragments: 0,
                                };
                                if message.data.is_some() {
                                    current = Some(message);
                                    None
                                } else {
                                    Some(message)
                                }
                            }
                            Some(Event::DataFragment { bytes, last, .. }) => {
                                let message = current.as_mut().unwrap();
                                message.data.as_mut().unwrap().extend_from_slice(&bytes);
                                message.data_fragments += 1;
                                if last { current.take() } else { None }
                            }
                        };
                        if let Some(message) = complete {
                            for reply in handler(&session, &message) {
                                let mut command_set = Vec::new();
                                encode(&reply.command, &mut command_set);
                                let pc_id = reply.presentation_context_id;
                                for pdu in pdata::fragment(pc_id, PDataValueType::Command, &command_set, peer_max) {
                                    send(&mut stream, &pdu);
                                }
                                if let Some(data) = &reply.data {
                                    for pdu in pdata::fragment(pc_id, PDataValueType::Data, data, peer_max) {
                                        send(&mut stream, &pdu);
                                    }
                                }
                            }
                            received.push(message);
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    assert!(assembler.is_between_messages(), "release in the middle of a message");
                    send(&mut stream, &Pdu::ReleaseRP);
                    return received;
                }
                Pdu::AbortRQ { .. } => return received,
                other => panic!("unexpected PDU {}", other.short_description()),
            }
        }
    })
}

/// Accepts one connection, or panics after `timeout` so that a peer that never connects fails
/// the test instead of hanging it.
fn accept_within(listener: &TcpListener, timeout: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("no peer connected: {error}"),
        }
    }
}

fn read_one(stream: &mut TcpStream, buffer: &mut Vec<u8>, max_pdu_length: u32) -> Pdu {
    loop {
        let mut view: &[u8] = buffer;
        if let Some(pdu) = read_pdu(&mut view, max_pdu_length, true).unwrap() {
            let consumed = buffer.len() - view.len();
            buffer.drain(..consumed);
            return pdu;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "peer closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn send(stream: &mut TcpStream, pdu: &Pdu) {
    let mut bytes = Vec::new();
    write_pdu(&mut bytes, pdu).unwrap();
    stream.write_all(&bytes).unwrap();
}

fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    (listener, port)
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = Process::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} not runnable: {e}"));
    if !output.status.success() {
        eprintln!(
            "{program} {args:?} failed: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// Checks that our encoder gives back exactly the bytes dcmtk sent, and saves them as a golden
/// case under UPDATE_EXPECT.
fn assert_reencodes(message: &Received, golden_name: &str) {
    assert_eq!(decode(&message.raw_command, &Limits::default()).unwrap(), message.command);
    let mut ours = Vec::new();
    encode(&message.command, &mut ours);
    assert_eq!(ours, message.raw_command, "our encoding differs from dcmtk's for {golden_name}");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(our_capture_dir().join(format!("{golden_name}.bin")), &message.raw_command).unwrap();
    }
}

fn success_detail() -> StatusDetail {
    StatusDetail::default()
}

#[test]
fn echoscu_sends_c_echo_and_accepts_our_response() {
    let (listener, port) = listen();
    let server = serve_one(listener, |_, message| {
        let Command::CEchoRq(request) = &message.command else { panic!("expected C-ECHO-RQ") };
        vec![Reply {
            presentation_context_id: message.presentation_context_id,
            command: Command::CEchoRsp(CEchoRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid.clone()),
                status: Status::SUCCESS,
                detail: success_detail(),
            }),
            data: None,
        }]
    });
    let output = run("echoscu", &["-aet", "ECHOSCU", "-aec", "HIE_EDGE", "127.0.0.1", &port]);
    let messages = server.join().unwrap();
    assert!(output.status.success(), "echoscu refused our C-ECHO-RSP");

    let [message] = &messages[..] else { panic!("expected one message, got {messages:?}") };
    let Command::CEchoRq(request) = &message.command else { panic!("expected C-ECHO-RQ") };
    assert_eq!(request.affected_sop_class_uid, uids::VERIFICATION);
    assert_eq!(message.command.data_set_type(), DataSetType::NONE);
    assert_reencodes(message, "dcmtk-echoscu-c-echo-rq");
}

#[test]
fn findscu_sends_c_find_and_accepts_pending_then_success() {
    let (listener, port) = listen();
    let server = serve_one(listener, |_, message| {
        let Command::CFindRq(request) = &message.command else { panic!("expected C-FIND-RQ") };
        let respond = |status, data_set_type| {
            Command::CFindRsp(CFindRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid.clone()),
                status,
                data_set_type,
                detail: success_detail(),
            })
        };
        // One match: the identifier itself, in the transfer syntax dcmtk sent it in.
        vec![
            Reply {
                presentation_context_id: message.presentation_context_id,
                command: respond(Status::PENDING, DataSetType::PRESENT),
                data: message.data.clone(),
            },
            Reply {
                presentation_context_id: message.presentation_context_id,
                command: respond(Status::SUCCESS, DataSetType::NONE),
                data: None,
            },
        ]
    });
    let output = run(
        "findscu",
        &["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID=P1", "127.0.0.1", &port],
    );
    let messages = server.join().unwrap();
    assert!(output.status.success(), "findscu refused our C-FIND-RSPs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("E:"), "findscu reported an error: {stderr}");

    let [message] = &messages[..] else { panic!("expected one message, got {messages:?}") };
    let Command::CFindRq(request) = &message.command else { panic!("expected C-FIND-RQ") };
    assert_eq!(request.affected_sop_class_uid, uids::STUDY_ROOT_FIND);
    assert_eq!(request.priority, Priority::Medium);
    assert!(message.data.as_ref().is_some_and(|data| !data.is_empty()), "identifier expected");
    assert_reencodes(message, "dcmtk-findscu-c-find-rq");
}

#[test]
fn storescu_streams_an_instance_in_fragments() {
    let dir = tempdir("storescu");
    let file = dir.join("sc.dcm");
    // 10 000 bytes of pixel-like data so that dcmtk must split the data set across several PDVs
    // within our 4 KiB maximum.
    write_secondary_capture(&file, "1.2.826.0.1.3680043.10.1535.99.1", 10_000);
    let (listener, port) = listen();
    let server = serve_one(listener, |_, message| {
        let Command::CStoreRq(request) = &message.command else { panic!("expected C-STORE-RQ") };
        vec![Reply {
            presentation_context_id: message.presentation_context_id,
            command: Command::CStoreRsp(CStoreRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid.clone()),
                affected_sop_instance_uid: Some(request.affected_sop_instance_uid.clone()),
                status: Status::SUCCESS,
                detail: success_detail(),
            }),
            data: None,
        }]
    });
    let output = run("storescu", &["-aec", "HIE_EDGE", "127.0.0.1", &port, file.to_str().unwrap()]);
    let messages = server.join().unwrap();
    assert!(output.status.success(), "storescu refused our C-STORE-RSP");

    let [message] = &messages[..] else { panic!("expected one message, got {messages:?}") };
    let Command::CStoreRq(request) = &message.command else { panic!("expected C-STORE-RQ") };
    assert_eq!(request.affected_sop_class_uid, SECONDARY_CAPTURE);
    assert_eq!(request.affected_sop_instance_uid, "1.2.826.0.1.3680043.10.1535.99.1");
    assert_eq!(request.move_originator_ae_title, None);
    assert!(message.data_fragments >= 3, "data set came in {} fragments", message.data_fragments);
    assert!(message.data.as_ref().unwrap().len() > 10_000);
    assert_reencodes(message, "dcmtk-storescu-c-store-rq");
}

#[test]
fn getscu_takes_our_c_store_sub_operation_and_final_counts() {
    let dir = tempdir("getscu");
    let (listener, port) = listen();
    let instance_uid = "1.2.826.0.1.3680043.10.1535.99.2";
    let mut get_request: Option<(u8, u16, String)> = None;
    let server = serve_one(listener, move |session, message| match &message.command {
        Command::CGetRq(request) => {
            get_request =
                Some((message.presentation_context_id, request.message_id, request.affected_sop_class_uid.clone()));
            let storage_pc = session
                .contexts
                .iter()
                .find(|(_, uid)| uid == SECONDARY_CAPTURE)
                .expect("getscu proposes Secondary Capture with the SCP role")
                .0;
            vec![Reply {
                presentation_context_id: storage_pc,
                command: Command::CStoreRq(CStoreRq {
                    message_id: 7,
                    affected_sop_class_uid: SECONDARY_CAPTURE.to_owned(),
                    affected_sop_instance_uid: instance_uid.to_owned(),
                    priority: Priority::Medium,
                    move_originator_ae_title: None,
                    move_originator_message_id: None,
                    data_set_type: DataSetType::PRESENT,
                }),
                data: Some(implicit_secondary_capture(instance_uid)),
            }]
        }
        Command::CStoreRsp(response) => {
            assert_eq!(response.message_id_being_responded_to, 7);
            assert_eq!(response.status, Status::SUCCESS, "getscu refused our C-STORE-RQ");
            let (pc_id, message_id, sop_class) = get_request.clone().unwrap();
            vec![Reply {
                presentation_context_id: pc_id,
                command: Command::CGetRsp(CGetRsp {
                    message_id_being_responded_to: message_id,
                    affected_sop_class_uid: Some(sop_class),
                    status: Status::SUCCESS,
                    data_set_type: DataSetType::NONE,
                    sub_operations: SubOperations {
                        remaining: None,
                        completed: Some(1),
                        failed: Some(0),
                        warning: Some(0),
                    },
                    detail: success_detail(),
                }),
                data: None,
            }]
        }
        other => panic!("unexpected {other:?}"),
    });
    let output = run(
        "getscu",
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=1.2.3",
            "-od",
            dir.to_str().unwrap(),
            "127.0.0.1",
            &port,
        ],
    );
    let messages = server.join().unwrap();
    assert!(output.status.success(), "getscu failed");
    assert!(dir.join(format!("SC.{instance_uid}")).exists(), "getscu did not store our instance");

    let [get, store_rsp] = &messages[..] else { panic!("expected two messages, got {messages:?}") };
    let Command::CGetRq(request) = &get.command else { panic!("expected C-GET-RQ") };
    assert_eq!(request.affected_sop_class_uid, uids::STUDY_ROOT_GET);
    assert_reencodes(get, "dcmtk-getscu-c-get-rq");
    assert_reencodes(store_rsp, "dcmtk-getscu-c-store-rsp");
}

#[test]
fn movescu_sends_c_move_and_accepts_move_destination_unknown() {
    let (listener, port) = listen();
    let server = serve_one(listener, |_, message| {
        let Command::CMoveRq(request) = &message.command else { panic!("expected C-MOVE-RQ") };
        vec![Reply {
            presentation_context_id: message.presentation_context_id,
            command: Command::CMoveRsp(CMoveRsp {
                message_id_being_responded_to: request.message_id,
                affected_sop_class_uid: Some(request.affected_sop_class_uid.clone()),
                status: Status::MOVE_DESTINATION_UNKNOWN,
                data_set_type: DataSetType::NONE,
                sub_operations: SubOperations::default(),
                detail: StatusDetail {
                    error_comment: Some("unknown destination".to_owned()),
                    ..StatusDetail::default()
                },
            }),
            data: None,
        }]
    });
    let output = run(
        "movescu",
        &[
            "-S",
            "-aem",
            "SOMEWHERE",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=1.2.3",
            "127.0.0.1",
            &port,
        ],
    );
    let messages = server.join().unwrap();
    let stdout_and_err =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    // dcmtk reports a failed move but must have understood our status and comment.
    assert!(stdout_and_err.contains("MoveDestinationUnknown"), "{stdout_and_err}");

    let [message] = &messages[..] else { panic!("expected one message, got {messages:?}") };
    let Command::CMoveRq(request) = &message.command else { panic!("expected C-MOVE-RQ") };
    assert_eq!(request.affected_sop_class_uid, uids::STUDY_ROOT_MOVE);
    assert_eq!(request.move_destination, "SOMEWHERE");
    assert_reencodes(message, "dcmtk-movescu-c-move-rq");
}

// ---- test data ----

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hie-dimse-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a Secondary Capture Part-10 file with dcmtk's dump2dcm (a real encoder, not ours).
fn write_secondary_capture(path: &Path, instance_uid: &str, payload_len: usize) {
    let dump = path.with_extension("txt");
    let comment = "x".repeat(payload_len);
    std::fs::write(
        &dump,
        format!(
            "(0008,0016) UI =SecondaryCaptureImageStorage\n\
             (0008,0018) UI [{instance_uid}]\n\
             (0008,0060) CS [OT]\n\
             (0010,0010) PN [Test^Patient]\n\
             (0010,0020) LO [P1]\n\
             (0020,000d) UI [1.2.3]\n\
             (0020,000e) UI [1.2.3.4]\n\
             (0020,4000) LT [{comment}]\n"
        ),
    )
    .unwrap();
    let output =
        run("dump2dcm", &["+l", "65536", "--write-xfer-little", dump.to_str().unwrap(), path.to_str().unwrap()]);
    // dump2dcm exits 0 even when it rejects its input, so check the file too.
    assert!(output.status.success() && path.exists(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A minimal Secondary Capture data set in Implicit VR Little Endian, written by hand.
fn implicit_secondary_capture(instance_uid: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut element = |group: u16, element: u16, value: &str, pad: u8| {
        let mut bytes = value.as_bytes().to_vec();
        if bytes.len() % 2 == 1 {
            bytes.push(pad);
        }
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    };
    element(0x0008, 0x0016, SECONDARY_CAPTURE, 0);
    element(0x0008, 0x0018, instance_uid, 0);
    element(0x0008, 0x0060, "OT", b' ');
    element(0x0010, 0x0010, "Test^Patient", b' ');
    element(0x0010, 0x0020, "P1", b' ');
    element(0x0020, 0x000D, "1.2.3", 0);
    element(0x0020, 0x000E, "1.2.3.4", 0);
    out
}
