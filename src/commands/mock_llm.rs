//! `lang-agent mock-llm`: the scripted fake upstream (`mock_llm/`) with the command line's
//! settings.

use std::time::Duration;

use crate::cli::MockLlmArgs;
use crate::mock_llm::{self, MockLlmError, MockOptions};

/// Serves the fake upstream until the process is stopped.
pub async fn run(args: MockLlmArgs) -> Result<(), MockLlmError> {
    mock_llm::run(MockOptions {
        host: args.host,
        port: args.port,
        delay: Duration::from_millis(args.delay_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        api_key: args.api_key,
    })
    .await
}
