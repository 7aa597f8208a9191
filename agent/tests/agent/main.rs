//! End-to-end tests of the agent: a real apiserver (in-process, on a temporary data
//! directory), the real agent and wasm guests, observed through the Kubernetes API like a
//! user would. Every wait is a poll with a deadline.

mod env;
mod guests;
mod harness;
mod hostile;
mod http;
mod https;
mod logs;
mod node;
mod outage;
mod pods;
mod restart;
