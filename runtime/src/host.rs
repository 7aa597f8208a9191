//! The host side of a guest's store: the per-store data types, the WASI contexts built
//! from a caller's spec, and the linkers (built once per runtime) that give guests their
//! imports.
//!
//! - Core modules get WASI preview1 (`wasi_snapshot_preview1`), from `wasmtime_wasi::p1`.
//! - Components get all of WASIp2 (`wasi:cli`, `wasi:filesystem`, `wasi:sockets`, ...) plus
//!   `wasi:http`, so one linker serves `wasi:cli/run` commands and `wasi:http/proxy`
//!   handlers alike (a handler may read its preopens and env, as with `wasmtime serve -Scli`).

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::RuntimeConfig;
use crate::error::RuntimeError;
use crate::limits::{Control, GuestLimiter, Limits, install_epoch_callback};
use crate::network::GuestNetwork;
use crate::sink::SharedSink;

/// A directory of the host made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// Directory on the host (must exist).
    pub host: std::path::PathBuf,
    /// Path under which the guest sees it (for example `/data`).
    pub guest: String,
    /// Whether the guest may only read (files and directory).
    pub read_only: bool,
}

/// What every store's WASI context is built from.
pub(crate) struct WasiSetup<'a> {
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) preopens: &'a [Preopen],
    pub(crate) stdout: &'a SharedSink,
    pub(crate) stderr: &'a SharedSink,
    /// The guest's network; `None`: no sockets.
    pub(crate) network: Option<&'a GuestNetwork>,
}

impl WasiSetup<'_> {
    /// A WASI context builder with args, env, stdio and preopens; fails if a preopened
    /// directory cannot be opened.
    fn builder(&self) -> Result<WasiCtxBuilder, String> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(self.args)
            .envs(self.env)
            .stdout(self.stdout.clone())
            .stderr(self.stderr.clone());
        if let Some(network) = self.network {
            builder
                .allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true)
                .socket_addr_check(crate::network::socket_check(network));
        }
        for preopen in self.preopens {
            let perms = if preopen.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&preopen.host, &preopen.guest, perms)
                .map_err(|e| {
                    format!(
                        "cannot preopen {} as {}: {e:#}",
                        preopen.host.display(),
                        preopen.guest
                    )
                })?;
        }
        Ok(builder)
    }
}

/// Store data of a core (preview1) module.
pub(crate) struct ModuleHost {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
}

/// Store data of a component (command or HTTP handler).
pub(crate) struct ComponentHost {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing: crate::outgoing::OutgoingHttp,
    pub(crate) table: ResourceTable,
    limiter: GuestLimiter,
    /// The guest's network (`crate::sockets` reads it); `None`: no sockets.
    pub(crate) network: Option<GuestNetwork>,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

/// The linkers, built once per runtime.
pub(crate) struct Linkers {
    pub(crate) module: wasmtime::Linker<ModuleHost>,
    pub(crate) component: wasmtime::component::Linker<ComponentHost>,
}

impl Linkers {
    /// Builds both linkers with all host functions.
    pub(crate) fn new(engine: &Engine) -> Result<Self, RuntimeError> {
        let link_error = |e: wasmtime::Error| RuntimeError::Linker(format!("{e:#}"));
        let mut module = wasmtime::Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module, |host: &mut ModuleHost| &mut host.wasi)
            .map_err(link_error)?;
        let mut component = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component).map_err(link_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component)
            .map_err(link_error)?;
        crate::sockets::add_to_linker(&mut component).map_err(link_error)?;
        Ok(Self { module, component })
    }
}

/// Per-guest settings every new store applies.
pub(crate) struct StoreSettings<'a> {
    pub(crate) runtime: &'a RuntimeConfig,
    pub(crate) limits: &'a Limits,
    pub(crate) control: &'a Arc<Control>,
}

impl StoreSettings<'_> {
    /// Memory the guest may have: its own limit, capped by the runtime's.
    fn memory_limit(&self) -> u64 {
        let cap = self.runtime.max_memory_per_instance;
        self.limits.memory_bytes.map_or(cap, |m| m.min(cap))
    }

    fn limiter(&self) -> GuestLimiter {
        GuestLimiter::new(self.control.clone(), self.memory_limit())
    }

    fn finish<T: 'static>(&self, store: &mut Store<T>) {
        install_epoch_callback(store, self.control, self.limits, self.runtime.epoch_tick);
    }

    /// A store for a core module.
    pub(crate) fn module_store(
        &self,
        engine: &Engine,
        wasi: &WasiSetup<'_>,
    ) -> Result<Store<ModuleHost>, String> {
        let host = ModuleHost {
            wasi: wasi.builder()?.build_p1(),
            limiter: self.limiter(),
        };
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.limiter);
        self.finish(&mut store);
        Ok(store)
    }

    /// A store for a component.
    pub(crate) fn component_store(
        &self,
        engine: &Engine,
        wasi: &WasiSetup<'_>,
    ) -> Result<Store<ComponentHost>, String> {
        let host = ComponentHost {
            wasi: wasi.builder()?.build(),
            http: WasiHttpCtx::new(),
            outgoing: crate::outgoing::OutgoingHttp {
                tls: self.runtime.outgoing_tls_roots.client_config()?,
                network: wasi.network.cloned(),
            },
            table: ResourceTable::new(),
            limiter: self.limiter(),
            network: wasi.network.cloned(),
        };
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.limiter);
        self.finish(&mut store);
        Ok(store)
    }
}
