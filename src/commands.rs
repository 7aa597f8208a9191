//! The subcommands of the CLI, one file each.

pub(crate) mod agent;
pub(crate) mod cluster;
pub(crate) mod cluster_dns;
pub(crate) mod controllers;
pub(crate) mod image;
pub(crate) mod server;
pub(crate) mod token;
