//! Tools that run inside lang-agent itself, one file each.
//!
//! To add one: write a type implementing [`LocalTool`] in its own file here, and list it in
//! [`LocalTools::builtin`]. Local tools are offered in every graph next to the MCP servers'
//! tools, under the source name `local` (the prefix used only if an MCP server offers a tool of
//! the same name). A local tool must be safe to call with any arguments a model invents: it
//! validates them and answers with an error text rather than panicking.

mod calculator;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value};

pub use calculator::Calculator;

use super::{ToolError, ToolSource, ToolSpec};

/// A tool compiled into lang-agent.
pub trait LocalTool: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// What the model reads to decide when to call the tool.
    fn description(&self) -> &'static str;
    /// JSON Schema of the arguments.
    fn input_schema(&self) -> Value;
    fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'_, Result<String, ToolError>>;
}

/// The local tools, as one tool source.
pub struct LocalTools(Vec<Arc<dyn LocalTool>>);

impl LocalTools {
    /// Every local tool lang-agent ships.
    pub fn builtin() -> LocalTools {
        LocalTools(vec![Arc::new(Calculator)])
    }

    /// The built-in tools whose names `allowed` holds (a profile's `tools`).
    pub fn only(allowed: &[String]) -> LocalTools {
        let mut all = LocalTools::builtin();
        all.0.retain(|t| allowed.iter().any(|a| a == t.name()));
        all
    }

    /// The names of the tools it offers.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|t| t.name().to_string()).collect()
    }
}

impl ToolSource for LocalTools {
    fn name(&self) -> &str {
        "local"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        self.0
            .iter()
            .map(|t| ToolSpec {
                name: t.name().to_string(),
                description: t.description().to_string(),
                input_schema: t.input_schema(),
            })
            .collect()
    }

    fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ToolError>> {
        match self.0.iter().find(|t| t.name() == tool) {
            Some(local) => local.call(arguments),
            None => Box::pin(std::future::ready(Err(ToolError::Unknown(tool.into())))),
        }
    }
}
