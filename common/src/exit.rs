//! Process exit codes shared by every vrata binary.

/// The configuration is invalid (sysexits.h `EX_USAGE`; SPEC §1: "exits 64").
pub const INVALID_CONFIG: i32 = 64;
