//! The nftables proxier: keeps the `ip wasmkube` table equal to what the Services and
//! EndpointSlices say, one nft transaction per sync (see [`ruleset`] for how a sync is
//! planned and [`rules`] for the rules).

pub(crate) mod nft;
pub(crate) mod rules;
pub(crate) mod ruleset;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use nft::{Nft, NftError};
use ruleset::{Fragment, Ruleset, TableObjects, Transaction};

use super::ServiceState;
use super::model::{self, ServiceKey};

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// A full sync (every chain rewritten) rather than an incremental one.
    pub full: bool,
    /// The nft commands of the transaction (0: nothing changed, nft not run).
    pub commands: usize,
    /// The chains of the table after the sync.
    pub chains: usize,
    /// How long `nft` took (listing the table in a full sync, and applying the
    /// transaction): the rest of a sync's time is planning.
    pub nft: Duration,
}

/// The proxier's state: the table as last applied.
#[derive(Debug)]
pub(crate) struct NftProxier {
    nft: Nft,
    node: String,
    /// The desired table; equal to the kernel's after a successful sync.
    ruleset: Ruleset,
    /// The fragments (Service port ids) of each Service.
    ports: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// `false` until a full sync succeeded, and after a failed sync.
    in_sync: bool,
}

impl NftProxier {
    /// A proxier for node `node`, whose NodePorts answer on `node_ips`.
    pub(crate) fn new(nft: Nft, node: &str, node_ips: &[Ipv4Addr]) -> NftProxier {
        NftProxier {
            nft,
            node: node.to_string(),
            ruleset: Ruleset::new(rules::fixed(node_ips)),
            ports: BTreeMap::new(),
            in_sync: false,
        }
    }

    /// The fragments `state` says Service `key` has now (none once it is gone).
    fn fragments(
        &self,
        key: &ServiceKey,
        state: Option<&ServiceState>,
    ) -> BTreeMap<String, Fragment> {
        let mut out = BTreeMap::new();
        let Some(state) = state else {
            return out;
        };
        let slices: Vec<_> = state.slices.values().map(|s| &**s).collect();
        let Some(service) = &state.service else {
            return out;
        };
        for port in model::service_ports(service) {
            debug_assert_eq!(&port.service, key);
            let all = model::endpoints(&port, &slices, &self.node);
            out.insert(
                port.id(),
                rules::service_port(&port, &model::categorize(&all)),
            );
        }
        out
    }

    /// Brings the table up to date with the `changed` Services (their state now; `None`:
    /// gone). `full` rewrites the whole table (the first sync, the periodic resync); a sync
    /// after a failed one is full too.
    pub(crate) async fn sync(
        &mut self,
        changed: &BTreeMap<ServiceKey, Option<ServiceState>>,
        full: bool,
    ) -> Result<SyncStats, NftError> {
        let mut tx = Transaction::default();
        for (key, state) in changed {
            let new = self.fragments(key, state.as_ref());
            let old_ids = self.ports.remove(key).unwrap_or_default();
            for id in &old_ids {
                if !new.contains_key(id) {
                    self.ruleset.replace(id, None, &mut tx);
                }
            }
            if !new.is_empty() {
                self.ports
                    .insert(key.clone(), new.keys().cloned().collect());
            }
            for (id, fragment) in new {
                self.ruleset.replace(&id, Some(fragment), &mut tx);
            }
        }
        self.ruleset.settle(&mut tx);
        let full = full || !self.in_sync;
        let chains = self.ruleset.chains();
        let mut nft = Duration::ZERO;
        if full {
            let listing = Instant::now();
            let listed = self.nft.list_table().await;
            nft += listing.elapsed();
            let existing = match listed {
                Ok(listing) => listing
                    .map(|l| TableObjects::from_listing(&l))
                    .unwrap_or_default(),
                Err(e) => {
                    self.in_sync = false;
                    return Err(e);
                }
            };
            tx = Transaction::full(&self.ruleset, &existing);
        }
        let commands = tx.len();
        if tx.is_empty() {
            return Ok(SyncStats {
                full,
                commands,
                chains,
                nft,
            });
        }
        let document = tx.into_json();
        let applying = Instant::now();
        let applied = self.nft.apply(&document).await;
        nft += applying.elapsed();
        match applied {
            Ok(()) => {
                self.in_sync = true;
                Ok(SyncStats {
                    full,
                    commands,
                    chains,
                    nft,
                })
            }
            Err(e) => {
                self.in_sync = false;
                Err(e)
            }
        }
    }

    /// The desired table.
    #[cfg(test)]
    pub(crate) fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }
}
