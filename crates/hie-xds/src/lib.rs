//! Sans-IO XDS codec (work in progress).
pub mod xml;
