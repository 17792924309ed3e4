//! PartnerDirectory on certificates that passed the handshake: pinned and subject matches, an
//! unmapped certificate refused by the handler, stable fingerprints.

use std::sync::Arc;

use axum::extract::Extension;
use axum::http::StatusCode;
use axum::routing::get;
use hie_tls::pki::test_pki::LeafSpec;
use hie_tls::{
    HttpsLimits, Partner, PartnerDirectory, PartnerError, PartnerIdentity, PeerIdentity, ReloadableServerConfig,
};

use crate::support::{Pki, Server, curl, init_tracing, with_client};

fn directory(pinned: &hie_tls::pki::test_pki::TestLeaf) -> PartnerDirectory {
    PartnerDirectory::new(vec![
        Partner {
            name: "pinned-partner".into(),
            identity: PartnerIdentity::Pinned { certificate: pinned.certificate.clone() },
            transactions: vec!["RAD-69".into()],
        },
        Partner {
            name: "subject-partner".into(),
            // Another spacing, case and attribute spelling than the certificate's own subject.
            identity: PartnerIdentity::Subject { subject: "cn = subject  gateway, 2.5.4.10=PARTNER HOSPITAL".into() },
            transactions: vec!["ITI-43".into(), "RAD-69".into()],
        },
    ])
    .unwrap()
}

#[test]
fn pinned_and_subject_matches_and_unmapped_certificates() {
    let pki = Pki::new();
    let pinned = pki.ca.issue(&LeafSpec::client("Pinned Gateway"));
    let by_subject = pki.ca.issue(&LeafSpec::client("Subject Gateway"));
    let unmapped = pki.ca.issue(&LeafSpec::client("Unknown Gateway"));
    let directory = directory(&pinned);

    let partner = directory.identify(&pinned.certificate).unwrap();
    assert_eq!(partner.name, "pinned-partner");
    assert!(partner.allows("RAD-69") && !partner.allows("ITI-43"));
    assert_eq!(directory.identify(&by_subject.certificate).unwrap().name, "subject-partner");
    assert!(directory.identify(&unmapped.certificate).is_none());
    // Same subject as the pinned partner's certificate but another key: not that partner.
    let same_subject_other_key = pki.ca.issue(&LeafSpec::client("Pinned Gateway"));
    assert!(directory.identify(&same_subject_other_key.certificate).is_none());
    assert!(directory.identify(&rustls_pki_types::CertificateDer::from(vec![0x30, 0x00])).is_none());
}

#[test]
fn fingerprints_are_stable_and_bad_directories_are_refused() {
    let pki = Pki::new();
    let first = hie_tls::CertificateSummary::from_der(&pki.client.certificate).unwrap();
    let second = hie_tls::CertificateSummary::from_der(&pki.client.certificate.clone()).unwrap();
    assert_eq!(first.fingerprint, second.fingerprint);
    assert_eq!(first.fingerprint, hie_tls::Fingerprint::of(pki.client.certificate.as_ref()));
    assert_ne!(first.fingerprint, first.spki_fingerprint);
    assert_eq!(first.fingerprint.to_string().parse::<hie_tls::Fingerprint>().unwrap(), first.fingerprint);

    let partner = |name: &str, subject: &str| Partner {
        name: name.into(),
        identity: PartnerIdentity::Subject { subject: subject.into() },
        transactions: vec![],
    };
    assert!(matches!(
        PartnerDirectory::new(vec![partner("a", "CN=X,O=Y"), partner("b", "cn=x, o=y")]),
        Err(PartnerError::Duplicate { .. })
    ));
    assert!(matches!(
        PartnerDirectory::new(vec![partner("a", "CN=X"), partner("a", "CN=Z")]),
        Err(PartnerError::DuplicateName { .. })
    ));
    assert!(matches!(PartnerDirectory::new(vec![partner("a", "CN")]), Err(PartnerError::Subject { .. })));
}

#[tokio::test]
async fn a_verified_certificate_that_maps_to_no_partner_is_refused_by_the_handler() {
    init_tracing();
    let pki = Pki::new();
    let (pinned, pinned_certificate, pinned_key) = pki.client_leaf("pinned", &LeafSpec::client("Pinned Gateway"));
    let directory = Arc::new(directory(&pinned));
    let routes = axum::Router::new().route(
        "/partner",
        get(move |Extension(peer): Extension<PeerIdentity>| {
            let directory = Arc::clone(&directory);
            async move {
                match peer.end_entity().and_then(|certificate| directory.identify(certificate)) {
                    Some(partner) => (StatusCode::OK, partner.name.clone()),
                    None => (StatusCode::FORBIDDEN, "unknown partner".to_owned()),
                }
            }
        }),
    );
    let tls = ReloadableServerConfig::load(pki.settings()).unwrap();
    let server = Server::start_with(tls, HttpsLimits::default(), routes).await;
    let url = server.url("/partner");
    for (certificate, key, expected) in [
        (&pinned_certificate, &pinned_key, "pinned-partner 200"),
        (&pki.client_certificate, &pki.client_key, "unknown partner 403"),
    ] {
        let mut args = with_client(certificate, key);
        args.extend(["--write-out".into(), " %{http_code}".into(), url.clone()]);
        let response = curl(&pki.ca_path, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert!(response.ok(), "{}", response.stderr());
        assert_eq!(response.stdout(), expected);
    }
    server.stop().await;
}

#[test]
fn subjects_with_special_characters_render_as_openssl_does_and_match() {
    let pki = Pki::new();
    let (leaf, certificate_path, _) = pki.client_leaf("special", &LeafSpec::client("Imaging, Gateway+1 <B>"));
    let output = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&certificate_path)
        .output()
        .expect("openssl must be installed (apt-get install openssl)");
    let openssl = String::from_utf8(output.stdout).unwrap();
    let summary = hie_tls::CertificateSummary::from_der(&leaf.certificate).unwrap();
    assert_eq!(format!("subject={}", summary.subject), openssl.trim());
    let directory = PartnerDirectory::new(vec![Partner {
        name: "special".into(),
        identity: PartnerIdentity::Subject { subject: summary.subject.clone() },
        transactions: vec![],
    }])
    .unwrap();
    assert_eq!(directory.identify(&leaf.certificate).unwrap().name, "special");
}
