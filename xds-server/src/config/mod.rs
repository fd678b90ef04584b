//! The gateway file format: YAML with positions, `${VAR}` expansion, directory merge,
//! validation reporting every problem as FILE:LINE:COL, conversion into `crate::model`.
