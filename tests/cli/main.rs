//! End-to-end tests: the real binary on tenant repos in temp dirs, with the local target.
//! Every scenario that applies ends with a plan that must be empty.

mod apply;
mod bad_input;
mod closed_pipe;
mod config_errors;
mod cut_proxy;
mod delivery;
mod dns;
mod drift;
mod entitlements;
mod export;
mod faulty;
mod first_hour;
mod git;
mod hook_contract;
mod hot_journal;
mod isolation;
mod moto;
mod offboarding;
mod pg;
mod pipeline;
mod pipeline_pg;
mod plan_output;
mod postgres;
mod privacy;
mod purge;
mod rabbitmq;
mod recipes;
mod released;
mod retired;
mod s3;
mod safety;
mod support;
mod trust;
mod validate;
mod watch;
