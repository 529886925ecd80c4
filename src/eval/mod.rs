//! `lang-agent eval`: grading the box against a dataset of questions and expected answers.
//!
//! [`dataset`] reads the JSON Lines file (a bad line is reported by number, the run goes on);
//! [`run`] sends each row through the same turn pipeline `serve` answers with, a few at a
//! time, and grades the route taken, the tools called and (with [`judge`], an LLM judge) the
//! answer; [`report`] writes the run's CSV, appends its summary to `history.csv` and prints
//! the summary table. [`from_log`] makes a dataset from the conversation log, so that later
//! changes are graded against what the box answered before. The command line and the
//! pipeline's construction are `commands/eval.rs`.

pub mod dataset;
pub mod from_log;
pub mod judge;
pub mod report;
pub mod run;
