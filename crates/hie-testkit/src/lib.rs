//! hie-testkit placeholder.
