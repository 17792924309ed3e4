//! The retrieval endpoint over the real wire, in process: the router served by
//! `hie_tls::serve_https`, called by curl (and zeep) with client certificates. One binary, one
//! module per concern.

// Authorization matrix (reliability-security S9), ITI-43, and the answers' schema validity.
mod matrix;
// Refused TLS clients and the listener's protocol surface (S1, S2).
mod tls;
// Malformed, hostile and oversized requests (S4, S5).
mod bad_input;
// Streaming: PACS failures after the status, cancellation, DIMSE data sets, HTTP/2.
mod streaming;
mod support;
