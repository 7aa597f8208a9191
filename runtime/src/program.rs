//! A loaded wasm program: compiled code already linked against the runtime's host functions
//! (pre-instantiated), ready to be started any number of times.
//!
//! Linking at load time means an unsatisfied import is reported once, as a
//! [`LoadError::Unlinkable`], before anything runs; and each start only has to allocate an
//! instance from the pool.

use std::fmt;
use std::sync::Arc;

use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::Compiled;
use crate::error::LoadError;
use crate::host::{ComponentHost, Linkers, ModuleHost};

/// What kind of program a binary is, which decides how it is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgramKind {
    /// A core module for WASI preview1, started at its `_start` export
    /// ([`Runtime::spawn`](crate::Runtime::spawn)).
    CommandModule,
    /// A component exporting `wasi:cli/run` ([`Runtime::spawn`](crate::Runtime::spawn)).
    CommandComponent,
    /// A component exporting `wasi:http/incoming-handler`
    /// ([`Runtime::http_service`](crate::Runtime::http_service)).
    HttpProxy,
}

impl ProgramKind {
    /// Whether [`Runtime::spawn`](crate::Runtime::spawn) runs it as a process.
    pub fn is_command(self) -> bool {
        matches!(self, Self::CommandModule | Self::CommandComponent)
    }
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CommandModule => "WASI preview1 command module",
            Self::CommandComponent => "wasi:cli/run component",
            Self::HttpProxy => "wasi:http/proxy component",
        })
    }
}

/// Pre-instantiated code of a program.
pub(crate) enum Code {
    Module(wasmtime::InstancePre<ModuleHost>),
    Command(CommandPre<ComponentHost>),
    Proxy(ProxyPre<ComponentHost>),
}

pub(crate) struct ProgramInner {
    pub(crate) digest: String,
    pub(crate) code: Code,
}

/// A loaded program; cheap to clone (clones share the compiled code).
#[derive(Clone)]
pub struct Program {
    pub(crate) inner: Arc<ProgramInner>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("digest", &self.inner.digest)
            .field("kind", &self.kind())
            .finish()
    }
}

impl Program {
    /// How the program is run.
    pub fn kind(&self) -> ProgramKind {
        match self.inner.code {
            Code::Module(_) => ProgramKind::CommandModule,
            Code::Command(_) => ProgramKind::CommandComponent,
            Code::Proxy(_) => ProgramKind::HttpProxy,
        }
    }

    /// `sha256:<hex>` digest of the wasm binary.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Links compiled code against the runtime's host functions and finds its entry point.
    pub(crate) fn link(
        linkers: &Linkers,
        compiled: Compiled,
        digest: String,
    ) -> Result<Self, LoadError> {
        let code = match compiled {
            Compiled::Module(module) => {
                if module.get_export("_start").is_none() {
                    return Err(LoadError::Unsupported(
                        "core module does not export `_start` (not a WASI command)".into(),
                    ));
                }
                let pre = linkers
                    .module
                    .instantiate_pre(&module)
                    .map_err(|e| LoadError::Unlinkable(format!("{e:#}")))?;
                Code::Module(pre)
            }
            Compiled::Component(component) => {
                let pre = linkers
                    .component
                    .instantiate_pre(&component)
                    .map_err(|e| LoadError::Unlinkable(format!("{e:#}")))?;
                if let Ok(proxy) = ProxyPre::new(pre.clone()) {
                    Code::Proxy(proxy)
                } else if let Ok(command) = CommandPre::new(pre) {
                    Code::Command(command)
                } else {
                    return Err(LoadError::Unsupported(
                        "component exports neither `wasi:cli/run` nor `wasi:http/incoming-handler`"
                            .into(),
                    ));
                }
            }
        };
        Ok(Self {
            inner: Arc::new(ProgramInner { digest, code }),
        })
    }
}
