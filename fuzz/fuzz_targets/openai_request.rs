//! Arbitrary bytes as the body of an OpenAI chat completion. See `lang_agent::fuzzing::openai_request` for the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lang_agent::fuzzing::openai_request(data));
