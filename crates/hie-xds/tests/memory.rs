//! Peak memory while refusing oversized input stays bounded (reliability-security S4/S5):
//! a counting global allocator (the `cap` crate, so no unsafe here) measures every byte
//! allocated while one input is handled. One test function, so no other test allocates at the
//! same time in this binary.

use std::alloc::System;

use cap::Cap;
use hie_xds::mtom::{self, MtomLimits};
use hie_xds::xml::{self, Limits};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

const MIB: usize = 1024 * 1024;

/// Bytes allocated while `work` runs (an upper bound of its peak).
fn allocated_by<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATOR.total_allocated();
    let result = work();
    (result, ALLOCATOR.total_allocated() - before)
}

fn attribute_document(size: usize) -> Vec<u8> {
    let mut input = b"<a v=\"".to_vec();
    input.extend(std::iter::repeat_n(b'x', size));
    input.extend_from_slice(b"\"/>");
    input
}

#[test]
fn refusing_large_input_allocates_little() {
    let fifty_mb = attribute_document(50 * MIB);

    let (result, bytes) = allocated_by(|| xml::parse(&fifty_mb, &Limits::SMALL_REQUEST).map(|_| ()));
    assert!(result.is_err());
    println!("figure xml_50mb_under_1mib_cap_allocated_bytes {bytes}");
    assert!(bytes < 64 * 1024, "refusing by size allocated {bytes} bytes");

    let (result, bytes) = allocated_by(|| xml::parse(&fifty_mb, &Limits::DEFAULT.with_max_input(64 * MIB)).map(|_| ()));
    assert!(result.is_err());
    println!("figure xml_50mb_attribute_under_64mib_cap_allocated_bytes {bytes}");
    assert!(bytes < 2 * MIB, "refusing a 50 MB attribute allocated {bytes} bytes");

    let small = MtomLimits { max_body_bytes: MIB, ..MtomLimits::DEFAULT };
    let (result, bytes) =
        allocated_by(|| mtom::read_message("multipart/related; boundary=b", &fifty_mb, &small).map(|_| ()));
    assert!(result.is_err());
    println!("figure mtom_50mb_under_1mib_cap_allocated_bytes {bytes}");
    assert!(bytes < 64 * 1024, "{bytes}");

    let deep = "<a>".repeat(100_000);
    let (result, bytes) = allocated_by(|| xml::parse(deep.as_bytes(), &Limits::DEFAULT).map(|_| ()));
    assert!(result.is_err());
    println!("figure xml_100k_deep_allocated_bytes {bytes}");
    assert!(bytes < 2 * MIB, "{bytes}");

    let declarations: String = (0..100_000).map(|index| format!(" xmlns:p{index}=\"urn:{index}\"")).collect();
    let input = format!("<a{declarations}/>");
    let (result, bytes) = allocated_by(|| xml::parse(input.as_bytes(), &Limits::DEFAULT).map(|_| ()));
    assert!(result.is_err());
    println!("figure xml_100k_xmlns_allocated_bytes {bytes}");
    assert!(bytes < 2 * MIB, "{bytes}");

    // A valid 50 MB attachment: splitting borrows it, so the package costs almost nothing.
    let writer = mtom::MtomWriter::new("b", "root@x", "urn:a").unwrap();
    let payload = vec![0x5Au8; 50 * MIB];
    let attachments = [mtom::Attachment {
        content_id: "d@x".to_owned(),
        content_type: "application/dicom".to_owned(),
        bytes: &payload,
    }];
    let body = writer.chunks(b"<r/>", &attachments).concat();
    let content_type = writer.content_type();
    let (result, bytes) = allocated_by(|| {
        mtom::read_message(&content_type, &body, &MtomLimits::DEFAULT).map(|package| package.attachments.len())
    });
    assert_eq!(result, Ok(1));
    println!("figure mtom_split_50mb_attachment_allocated_bytes {bytes}");
    assert!(bytes < 64 * 1024, "{bytes}");
}
