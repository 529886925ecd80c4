//! `calculator`: arithmetic for the model, which must never do sums in its head.
//!
//! Expressions are evaluated by `evalexpr`, an expression language with no access to files,
//! processes or the network (its regex and random features are not enabled): a model-written
//! expression can compute, never act. Spoken-style operators (`×`, `÷`, `^`) are accepted.
//! Numbers are evaluated as floats when the expression divides, so `7 / 2` is 3.5 as a person
//! expects, not evalexpr's integer 3; whole results are shown without a decimal point.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::LocalTool;
use crate::tools::ToolError;

/// Longest expression accepted: a spoken calculation is short, and a bound keeps evaluation
/// cheap whatever the model writes.
const MAX_EXPRESSION_CHARS: usize = 500;

pub struct Calculator;

impl LocalTool for Calculator {
    fn name(&self) -> &'static str {
        "calculator"
    }

    fn description(&self) -> &'static str {
        "Evaluate an arithmetic expression exactly, e.g. \"37 * 49\", \"(12.5 + 3) / 4\", \
         \"2 ^ 10\", \"math::sqrt(2)\", \"17 % 5\". Use it for every calculation."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "The expression to evaluate."}},
            "required": ["expression"],
        })
    }

    fn call(&self, arguments: Map<String, Value>) -> BoxFuture<'_, Result<String, ToolError>> {
        let result = match arguments.get("expression").and_then(Value::as_str) {
            Some(expression) => evaluate(expression),
            None => Err(ToolError::BadArguments(
                "give the expression as a string in \"expression\"".into(),
            )),
        };
        std::future::ready(result).boxed()
    }
}

/// The value of `expression`, as text.
pub fn evaluate(expression: &str) -> Result<String, ToolError> {
    if expression.chars().count() > MAX_EXPRESSION_CHARS {
        return Err(ToolError::BadArguments(format!(
            "the expression is longer than {MAX_EXPRESSION_CHARS} characters"
        )));
    }
    let normalized = expression.replace('×', "*").replace('÷', "/");
    let source = if normalized.contains('/') {
        floats_everywhere(&normalized)
    } else {
        normalized
    };
    let value = evalexpr::eval(&source)
        .map_err(|e| ToolError::Failed(format!("cannot evaluate {expression:?}: {e}")))?;
    Ok(match value {
        evalexpr::Value::Float(f) => format_float(f),
        other => other.to_string(),
    })
}

/// Rewrites integer literals as float literals (`7` → `7.0`), leaving identifiers such as
/// `math::log2` and numbers that already have a point or exponent alone.
fn floats_everywhere(expression: &str) -> String {
    let chars: Vec<char> = expression.chars().collect();
    let mut out = String::with_capacity(expression.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_number = c.is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || matches!(chars[i - 1], '_' | '.')));
        if !starts_number {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        out.extend(&chars[start..i]);
        let continues = i < chars.len() && matches!(chars[i], '.' | 'e' | 'E');
        if !continues {
            out.push_str(".0");
        }
    }
    out
}

fn format_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        // Twelve significant digits: more than a voice answer needs, without 0.1+0.2 noise.
        let text = format!("{:.12}", f);
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        if f.is_finite() && trimmed != "0" && trimmed != "-0" {
            trimmed.to_string()
        } else {
            f.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_what_a_person_expects() {
        assert_eq!(evaluate("37 * 49").unwrap(), "1813");
        assert_eq!(evaluate("7 / 2").unwrap(), "3.5");
        assert_eq!(evaluate("12 ÷ 4 × 3").unwrap(), "9");
        assert_eq!(evaluate("(12.5 + 3) / 4").unwrap(), "3.875");
        assert_eq!(evaluate("0.1 + 0.2").unwrap(), "0.3");
        assert_eq!(evaluate("17 % 5").unwrap(), "2");
        assert_eq!(evaluate("2 ^ 10").unwrap(), "1024");
        assert_eq!(evaluate("math::sqrt(16) / 2").unwrap(), "2");
        assert_eq!(evaluate("1e3 / 4").unwrap(), "250");
    }

    #[test]
    fn refuses_what_is_not_arithmetic_with_a_reason() {
        for bad in ["1 / 0 +", "open(\"/etc/passwd\")", "x + 1"] {
            let error = evaluate(bad).unwrap_err();
            assert!(matches!(error, ToolError::Failed(_)), "{bad}: {error:?}");
        }
        assert!(matches!(
            evaluate(&"1+".repeat(400)),
            Err(ToolError::BadArguments(_))
        ));
        // Overflow is an error, not a wrapped number.
        assert!(evaluate("9223372036854775807 * 2").is_err());
    }

    #[test]
    fn leaves_identifiers_and_float_literals_alone() {
        assert_eq!(
            floats_everywhere("math::log2(8) / 3.5e1 + x1"),
            "math::log2(8.0) / 3.5e1 + x1"
        );
    }
}
