//! `krane log`: the log of a stack, written out and played back.
//!
//! - `file`: the exported format (JSON Lines of `krane.v1.LogEntry`, version 1), read and
//!   written.
//! - `export`: `krane log export` (ExportLog into a file).
//! - `outcome`: what a recording asks to re-issue and what it observed in the end, and how a
//!   stack's gateways differ from that (pure, unit-tested).
//! - `replay`: `krane log replay` (the calls, the settling, the comparison).

pub mod export;
mod file;
mod outcome;
pub mod replay;
