//! Integration tests of hie-tls over the real wire, against clients nobody here wrote (curl,
//! sslscan, openssl) and rustls as a client.
//!
//! Modules:
//! - `support`: the test PKI on disk, a running `serve_https`, the curl and rustls clients.
//! - `curl_mtls`: a valid client gets through with its identity; every negative case is refused
//!   before the router and classified; HTTP/2 and HTTP/1.1 keep-alive.
//! - `sslscan`: the offered surface (protocols, suites, signatures, renegotiation, compression).
//! - `reload`: CRL and certificate replacement without restart; corrupt files keep the old config.
//! - `client`: the outbound client config against good and bad servers.
//! - `partner`: PartnerDirectory on real certificates, and a handler refusing unmapped partners.
//! - `pki_init`: the development PKI used by curl and checked by openssl.
//! - `serve`: connection cap, handshake timeout, graceful shutdown.

mod support;

mod client;
mod curl_mtls;
mod partner;
mod pki_init;
mod reload;
mod serve;
mod sslscan;
