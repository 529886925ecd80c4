//! `lang-agent mock-llm`: the scripted fake upstream (`mock_llm/`) with the command line's
//! settings.

use std::time::Duration;

use crate::cli::{MockLlmArgs, MockRoute};
use crate::mock_llm::{self, Defaults, MockLlmError, MockOptions};

/// Serves the fake upstream until the process is stopped.
pub async fn run(args: MockLlmArgs) -> Result<(), MockLlmError> {
    if args.help {
        print!("{}", MockLlmArgs::help());
        return Ok(());
    }
    mock_llm::run(MockOptions {
        host: args.host,
        port: args.port,
        delay: Duration::from_millis(args.delay_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        api_key: args.api_key,
        thinking_delay: Duration::from_millis(args.thinking_delay_ms),
        defaults: Defaults {
            route_tool: args.route == MockRoute::Tool,
            tool_call: args
                .tool_call
                .map(|call| match call.trim().split_once(' ') {
                    Some((tool, arguments)) => (tool.to_string(), arguments.trim().to_string()),
                    None => (call.trim().to_string(), "{}".to_string()),
                }),
            tokens: args.tokens,
            demo: false,
        },
    })
    .await
}
