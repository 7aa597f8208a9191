//! `run`: runs a wasm file with wasmkube-runtime the way `wasmtime run` / `wasmtime serve`
//! do, for side-by-side benchmarks and for trying guests by hand.
//!
//! ```text
//! cargo run --release -p wasmkube-runtime --example run -- [OPTIONS] FILE.wasm [ARGS...]
//!
//!   --env K=V          add an environment variable (repeatable)
//!   --dir HOST::GUEST  preopen a directory (GUEST defaults to HOST; append :ro for read-only)
//!   --memory BYTES     memory limit
//!   --cpu-ms MS        CPU time limit
//!   --timeout-ms MS    stop the guest after this long
//!   --cache DIR        compiled-code cache (default: $TMPDIR/wasmkube-run-cache)
//!   --serve ADDR       serve a wasi:http/proxy component on ADDR (like `wasmtime serve`)
//!   --timing           print load and run times to stderr
//! ```
//!
//! A `.wat` file is assembled first. The guest's stdout and stderr go to this process's; the exit code is the guest's
//! (`Outcome::exit_code`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use wasmkube_runtime::{
    HttpSpec, Limits, LogSink, Outcome, Preopen, ProcessSpec, ProgramKind, Runtime, RuntimeConfig,
};

/// Writes guest output straight to this process's stdout or stderr.
struct Stdio(bool);

impl LogSink for Stdio {
    fn write(&mut self, bytes: &[u8]) {
        let _ = if self.0 {
            std::io::stderr().write_all(bytes)
        } else {
            std::io::stdout().write_all(bytes)
        };
    }

    fn flush(&mut self) {
        let _ = std::io::stdout().flush();
    }
}

#[derive(Default)]
struct Options {
    file: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    limits: Limits,
    timeout: Option<Duration>,
    cache: Option<PathBuf>,
    serve: Option<String>,
    timing: bool,
}

fn parse() -> anyhow::Result<Options> {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    let number = |value: Option<String>, flag: &str| -> anyhow::Result<u64> {
        value
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--env" => {
                let pair = args.next().context("--env needs K=V")?;
                let (k, v) = pair.split_once('=').context("--env needs K=V")?;
                options.env.push((k.to_owned(), v.to_owned()));
            }
            "--dir" => {
                let spec = args.next().context("--dir needs HOST[::GUEST][:ro]")?;
                let (spec, read_only) = match spec.strip_suffix(":ro") {
                    Some(rest) => (rest.to_owned(), true),
                    None => (spec, false),
                };
                let (host, guest) = match spec.split_once("::") {
                    Some((host, guest)) => (host.to_owned(), guest.to_owned()),
                    None => (spec.clone(), spec),
                };
                options.preopens.push(Preopen {
                    host: host.into(),
                    guest,
                    read_only,
                });
            }
            "--memory" => options.limits.memory_bytes = Some(number(args.next(), "--memory")?),
            "--cpu-ms" => options.limits.cpu_millis = Some(number(args.next(), "--cpu-ms")?),
            "--timeout-ms" => {
                options.timeout = Some(Duration::from_millis(number(args.next(), "--timeout-ms")?));
            }
            "--cache" => options.cache = Some(args.next().context("--cache needs DIR")?.into()),
            "--serve" => options.serve = Some(args.next().context("--serve needs ADDR")?),
            "--timing" => options.timing = true,
            flag if flag.starts_with("--") => bail!("unknown option {flag}"),
            file => {
                options.file = file.into();
                options.args = std::iter::once(file.to_owned())
                    .chain(args.by_ref())
                    .collect();
            }
        }
    }
    if options.file.as_os_str().is_empty() {
        bail!("usage: run [OPTIONS] FILE.wasm [ARGS...]");
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let options = parse()?;
    let cache = options
        .cache
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("wasmkube-run-cache"));
    let started = Instant::now();
    let runtime = Runtime::new(RuntimeConfig::new(cache))?;
    let created = started.elapsed();
    let program = if options.file.extension().is_some_and(|e| e == "wat") {
        let wasm = wat::parse_file(&options.file)?;
        runtime.load(&wasm, "").await?
    } else {
        runtime.load_file(&options.file, "").await?
    };
    let loaded = started.elapsed();
    if options.timing {
        eprintln!(
            "runtime: {created:?}, load: {:?} ({:?})",
            loaded - created,
            runtime.cache_stats()
        );
    }

    if program.kind() == ProgramKind::HttpProxy {
        let addr = options.serve.as_deref().unwrap_or("127.0.0.1:8080");
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("Serving HTTP on http://{}/", listener.local_addr()?);
        let service = runtime.http_service(
            &program,
            HttpSpec {
                env: options.env,
                preopens: options.preopens,
                stdout: Box::new(Stdio(false)),
                stderr: Box::new(Stdio(true)),
                limits: options.limits,
                ..HttpSpec::default()
            },
        );
        service
            .serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        return Ok(ExitCode::SUCCESS);
    }

    let spec = ProcessSpec {
        args: options.args,
        env: options.env,
        preopens: options.preopens,
        stdout: Box::new(Stdio(false)),
        stderr: Box::new(Stdio(true)),
        limits: options.limits,
        network: None,
    };
    let (stopper, task) = runtime.spawn(&program, spec);
    if let Some(timeout) = options.timeout {
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            stopper.stop();
        });
    }
    let outcome = task.await?;
    if options.timing {
        eprintln!("run: {:?}, outcome: {outcome}", started.elapsed() - loaded);
    }
    if !matches!(outcome, Outcome::Exited(_)) {
        eprintln!("run: {outcome}");
    }
    Ok(ExitCode::from(
        u8::try_from(outcome.exit_code()).unwrap_or(255),
    ))
}
