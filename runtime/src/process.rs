//! Running a command program (a preview1 module or a `wasi:cli/run` component) like a
//! process: argv, environment, preopened directories, stdout/stderr into log sinks, an exit
//! code at the end.

use std::sync::Arc;

use wasmtime::Engine;

use crate::host::{Preopen, StoreSettings, WasiSetup};
use crate::limits::{Control, Limits};
use crate::network::GuestNetwork;
use crate::outcome::{Outcome, Phase, classify};
use crate::program::{Code, Program};
use crate::quota::{CpuQuota, Throttled};
use crate::runtime::Shared;
use crate::sink::{LogSink, NullSink, SharedSink};

/// Everything a process start needs besides the program.
pub struct ProcessSpec {
    /// argv, `argv[0]` first (the program name the guest sees).
    pub args: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Directories the guest may open.
    pub preopens: Vec<Preopen>,
    /// Receives the guest's stdout.
    pub stdout: Box<dyn LogSink>,
    /// Receives the guest's stderr (and, after a trap, the runtime's account of it with the
    /// wasm backtrace).
    pub stderr: Box<dyn LogSink>,
    /// Memory and CPU limits.
    pub limits: Limits,
    /// The guest's network: sockets at its pod IP, names through its resolver, every
    /// connection asked of its policy. `None`: no sockets (`wasi:sockets` denied).
    pub network: Option<GuestNetwork>,
}

impl ProcessSpec {
    /// A spec with argv `[argv0]`, no env, no preopens, output discarded and no limits.
    pub fn new(argv0: impl Into<String>) -> Self {
        Self {
            args: vec![argv0.into()],
            env: Vec::new(),
            preopens: Vec::new(),
            stdout: Box::new(NullSink),
            stderr: Box::new(NullSink),
            limits: Limits::default(),
            network: None,
        }
    }
}

impl std::fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSpec")
            .field("args", &self.args)
            .field("env", &self.env)
            .field("preopens", &self.preopens)
            .field("limits", &self.limits)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// Runs the program to its end (or until stopped), within its CPU quota if it has one, and
/// says how it ended.
pub(crate) async fn run(
    shared: Arc<Shared>,
    program: Program,
    spec: ProcessSpec,
    control: Arc<Control>,
    quota: Option<Arc<CpuQuota>>,
) -> Outcome {
    let stdout = SharedSink::new(spec.stdout);
    let stderr = SharedSink::new(spec.stderr);
    let wasi = WasiSetup {
        args: &spec.args,
        env: &spec.env,
        preopens: &spec.preopens,
        stdout: &stdout,
        stderr: &stderr,
        network: spec.network.as_ref(),
    };
    let settings = StoreSettings {
        runtime: &shared.config,
        limits: &spec.limits,
        control: &control,
    };
    // The select ends a guest blocked in a host call (a long sleep, a read) or waiting for
    // its next CPU period; a guest running wasm code is interrupted by the epoch callback
    // and also lands here.
    let outcome = tokio::select! {
        biased;
        () = control.stop_requested() => Outcome::Stopped,
        outcome = Throttled::new(execute(&shared.engine, &program, &settings, &wasi), quota) => outcome,
    };
    stdout.flush();
    stderr.flush();
    tracing::debug!(digest = program.digest(), %outcome, "process ended");
    outcome
}

/// Instantiates and calls the entry point.
async fn execute(
    engine: &Engine,
    program: &Program,
    settings: &StoreSettings<'_>,
    wasi: &WasiSetup<'_>,
) -> Outcome {
    let result = match &program.inner.code {
        Code::Module(pre) => {
            let mut store = match settings.module_store(engine, wasi) {
                Ok(store) => store,
                Err(message) => return Outcome::StartFailed { message },
            };
            let instance = match pre.instantiate_async(&mut store).await {
                Ok(instance) => instance,
                Err(e) => return report(&e, settings.control, Phase::Instantiate, wasi.stderr),
            };
            let start = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                Ok(start) => start,
                Err(e) => return report(&e, settings.control, Phase::Instantiate, wasi.stderr),
            };
            start.call_async(&mut store, ()).await.map(|()| 0)
        }
        Code::Command(pre) => {
            let mut store = match settings.component_store(engine, wasi) {
                Ok(store) => store,
                Err(message) => return Outcome::StartFailed { message },
            };
            let command = match pre.instantiate_async(&mut store).await {
                Ok(command) => command,
                Err(e) => return report(&e, settings.control, Phase::Instantiate, wasi.stderr),
            };
            command
                .wasi_cli_run()
                .call_run(&mut store)
                .await
                .map(|result| if result.is_ok() { 0 } else { 1 })
        }
        Code::Proxy(_) => {
            return Outcome::StartFailed {
                message: "a wasi:http/proxy component is served, not run as a process".into(),
            };
        }
    };
    match result {
        Ok(code) => Outcome::Exited(code),
        Err(e) => report(&e, settings.control, Phase::Run, wasi.stderr),
    }
}

/// Classifies an error and, unless it is an exit or a stop, tells the guest's stderr what
/// happened (with the wasm backtrace when there is one), as `wasmtime run` does on a
/// terminal.
pub(crate) fn report(
    error: &wasmtime::Error,
    control: &Control,
    phase: Phase,
    stderr: &SharedSink,
) -> Outcome {
    let outcome = classify(error, control, phase);
    match outcome {
        Outcome::Exited(_) | Outcome::Stopped => {}
        _ => stderr.write_all(describe(&outcome, error).as_bytes()),
    }
    outcome
}

/// `wasmkube: <outcome>`, then the error with its causes (the wasm backtrace among them),
/// one per line; never the host's Rust backtrace.
fn describe(outcome: &Outcome, error: &wasmtime::Error) -> String {
    let mut text = format!("wasmkube: {outcome}\n{error}\n");
    let mut causes = error.chain().skip(1).peekable();
    if causes.peek().is_some() {
        text.push_str("Caused by:\n");
        for cause in causes {
            text.push_str(&format!("    {cause}\n"));
        }
    }
    text
}
