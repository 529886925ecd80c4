//! Arbitrary text as an `mcp_config.json`. See `lang_agent::fuzzing::mcp_config` for the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lang_agent::fuzzing::mcp_config(data));
