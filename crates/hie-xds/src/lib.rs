//! placeholder
pub mod actions;
pub mod error;
pub mod mtom;
pub mod soap;
pub mod vocabulary;
pub mod xml;
