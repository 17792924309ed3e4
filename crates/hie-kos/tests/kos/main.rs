//! hie-kos tests, one binary: manifests for the fixture studies checked by the real validators
//! (dciodvfy, dsrdump) and against the fixtures' own KOS, one test per checklist item of
//! landscape-and-requirements.md 3.1, and unreadable input.

mod bad_input;
mod checklist;
mod fixtures;
mod support;
