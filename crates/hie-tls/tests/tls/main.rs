//! Integration tests of hie-tls over the real wire, against clients nobody here wrote (curl,
//! sslscan, openssl) and rustls as a client.
//!
//! Modules:
//! - `support`: the test PKI on disk, a running `serve_https`, the curl runner.
//! - `curl_mtls`: a valid client gets through with its identity; every negative case is refused
//!   before the router and classified; HTTP/2 and HTTP/1.1 keep-alive.
//! - `scratch`: probes.

mod support;

mod curl_mtls;
mod sslscan;
