//! Arbitrary bytes as an upstream's streamed answer. See `lang_agent::fuzzing::upstream_sse`
//! for the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lang_agent::fuzzing::upstream_sse(data));
