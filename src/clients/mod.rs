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
