//! Arbitrary bytes as the body of a DashScope Application API call. See `lang_agent::fuzzing::dashscope_request` for the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lang_agent::fuzzing::dashscope_request(data));
