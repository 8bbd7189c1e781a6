//! The clients of the servers the targets and state backends talk to, beneath both: a state
//! backend reaches its server through here, never through a target.

pub mod amqp;
pub mod error;
pub mod fs;
pub mod group_commit;
pub mod http;
pub mod postgres;
pub mod s3;
pub mod sql;
pub mod sqlite;

/// A setting of a client's block that does not hold, found before any call: its key in the
/// block, what is wrong, and what to write instead. The config file says it at the setting's
/// line; a client knows its settings, not the file.
#[derive(Debug, PartialEq)]
pub struct SettingProblem {
    pub key: &'static str,
    pub message: String,
    pub hint: Option<&'static str>,
}
