//! An HTTP/1.1 load generator: a fixed number of workers, each with one keep-alive
//! connection and one request in flight, send `GET`s back to back for a fixed time after a
//! warm-up, and the latency of every request (send to the last byte of the body) goes into a
//! histogram.
//!
//! It is deliberately closed-loop (a new request only when the last one has answered), as
//! `hey`, `wrk` and `oha` are by default, so requests/s at concurrency N is what N clients
//! that wait for each answer get.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;

use super::report::{self, LatencySummary};

/// What to load and for how long.
#[derive(Clone, Debug)]
pub(crate) struct LoadPlan {
    /// The server's address.
    pub(crate) addr: SocketAddr,
    /// The request path.
    pub(crate) path: String,
    /// The Host header, the address when `None` (a name routes through the function ingress).
    pub(crate) host: Option<String>,
    /// Concurrent workers (connections).
    pub(crate) concurrency: usize,
    /// Requests before this long are not counted.
    pub(crate) warmup: Duration,
    /// How long requests are counted after the warm-up.
    pub(crate) duration: Duration,
}

/// The outcome of one load run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LoadResult {
    /// Concurrent workers.
    pub(crate) concurrency: usize,
    /// Counted requests answered with a 2xx status.
    pub(crate) ok: u64,
    /// Counted requests that failed or got another status.
    pub(crate) errors: u64,
    /// The counted time.
    pub(crate) elapsed: Duration,
    /// Latency of the counted successful requests.
    pub(crate) latency: LatencySummary,
}

impl LoadResult {
    /// Successful requests per second of the counted time.
    pub(crate) fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The figures as JSON.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "concurrency": self.concurrency,
            "requests_ok": self.ok,
            "errors": self.errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests_per_s": self.per_second(),
            "latency": self.latency.to_json(),
        })
    }

    /// The figures back from [`LoadResult::to_json`]'s JSON (`wasmkube-bench load --json`).
    pub(crate) fn from_json(value: &serde_json::Value) -> Option<Self> {
        Some(Self {
            concurrency: usize::try_from(value["concurrency"].as_u64()?).ok()?,
            ok: value["requests_ok"].as_u64()?,
            errors: value["errors"].as_u64()?,
            elapsed: Duration::try_from_secs_f64(value["elapsed_s"].as_f64()?).ok()?,
            latency: LatencySummary::from_json(&value["latency"])?,
        })
    }
}

/// `wasmkube-bench load`: the HTTP load generator alone, against one address.
#[derive(clap::Args, Debug)]
pub(crate) struct LoadCommand {
    /// The server's address, IP:PORT.
    addr: SocketAddr,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// The Host header [default: the address], e.g. a function's
    /// `NAME.NAMESPACE.127.0.0.1.sslip.io` at the function ingress.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Concurrent keep-alive connections, one request in flight each.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Seconds of requests not counted at the start.
    #[arg(long, value_name = "SECS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
    warmup: u64,
    /// Seconds counted.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

impl LoadCommand {
    pub(crate) async fn execute(self) -> anyhow::Result<()> {
        let plan = LoadPlan {
            addr: self.addr,
            path: self.path,
            host: self.host,
            concurrency: usize::try_from(self.concurrency).unwrap_or(1),
            warmup: Duration::from_secs(self.warmup),
            duration: Duration::from_secs(self.duration),
        };
        let result = run(&plan, &ProgressBar::hidden()).await?;
        if self.json {
            println!("{}", result.to_json());
        } else {
            println!(
                "{} GET {}: {:.0} requests/s, {} errors, p50 {:.3} ms, p99 {:.3} ms",
                plan.addr,
                plan.path,
                result.per_second(),
                result.errors,
                result.latency.p50_ms,
                result.latency.p99_ms
            );
        }
        Ok(())
    }
}

/// Counts of one worker.
struct WorkerTotals {
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
}

/// Runs the plan; `bar` ticks once per counted request.
pub(crate) async fn run(plan: &LoadPlan, bar: &ProgressBar) -> anyhow::Result<LoadResult> {
    // Connect every worker before the clock starts.
    let mut connections = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        connections.push(connect(plan.addr).await?);
    }
    let counting_from = Instant::now() + plan.warmup;
    let until = counting_from + plan.duration;
    let workers: Vec<_> = connections
        .into_iter()
        .map(|sender| {
            let plan = plan.clone();
            let bar = bar.clone();
            tokio::spawn(async move { worker(sender, &plan, counting_from, until, &bar).await })
        })
        .collect();
    let mut latency = report::latency_histogram();
    let (mut ok, mut errors) = (0, 0);
    for worker in workers {
        let totals = worker.await.context("a load worker panicked")?;
        latency
            .add(&totals.latency)
            .context("merging latency histograms")?;
        ok += totals.ok;
        errors += totals.errors;
    }
    Ok(LoadResult {
        concurrency: plan.concurrency,
        ok,
        errors,
        elapsed: plan.duration,
        latency: LatencySummary::of(&latency),
    })
}

/// Opens one keep-alive HTTP/1.1 connection (TCP_NODELAY, as load generators set).
async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr} failed"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// One worker: a request at a time until `until`; counts those sent from `counting_from`.
async fn worker(
    mut sender: http1::SendRequest<Empty<Bytes>>,
    plan: &LoadPlan,
    counting_from: Instant,
    until: Instant,
    bar: &ProgressBar,
) -> WorkerTotals {
    let mut totals = WorkerTotals {
        latency: report::latency_histogram(),
        ok: 0,
        errors: 0,
    };
    let host = plan.host.clone().unwrap_or_else(|| plan.addr.to_string());
    loop {
        let start = Instant::now();
        if start >= until {
            break;
        }
        let counted = start >= counting_from;
        let outcome = request(&mut sender, &plan.path, &host).await;
        let elapsed = start.elapsed();
        match outcome {
            Ok(true) if counted => {
                report::record(&mut totals.latency, elapsed);
                totals.ok += 1;
                bar.inc(1);
            }
            Ok(_) => totals.errors += u64::from(counted),
            Err(_) => {
                totals.errors += u64::from(counted);
                // The connection is broken: open a new one (after a pause, so a server that
                // is down is not hammered).
                tokio::time::sleep(Duration::from_millis(10)).await;
                match connect(plan.addr).await {
                    Ok(new) => sender = new,
                    Err(_) => continue,
                }
            }
        }
    }
    totals
}

/// One GET; `Ok(true)` for a 2xx answer whose body arrived in full.
async fn request(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
    host: &str,
) -> anyhow::Result<bool> {
    sender.ready().await?;
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let success = response.status().is_success();
    response.into_body().collect().await?;
    Ok(success)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::service::service_fn;

    use super::*;

    /// A loopback HTTP/1.1 server answering 200 "hi", or 500 for `/fail`.
    async fn serve() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service =
                        service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                            let status = if req.uri().path() == "/fail" {
                                500
                            } else {
                                200
                            };
                            let mut response = http::Response::new(Full::new(Bytes::from("hi")));
                            *response.status_mut() =
                                http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, Infallible>(response)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    fn plan(addr: SocketAddr, path: &str) -> LoadPlan {
        LoadPlan {
            addr,
            path: path.to_owned(),
            host: None,
            concurrency: 2,
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(150),
        }
    }

    #[tokio::test]
    async fn successful_answers_are_counted_with_their_latency() {
        let addr = serve().await;
        let result = run(&plan(addr, "/"), &ProgressBar::hidden())
            .await
            .expect("runs");
        assert_eq!(result.concurrency, 2);
        assert_eq!(result.errors, 0);
        assert!(result.ok > 0);
        assert_eq!(result.latency.count, result.ok);
        assert!(result.per_second() > 0.0);
        assert_eq!(result.to_json()["requests_ok"], result.ok);
    }

    #[tokio::test]
    async fn error_statuses_are_errors_not_successes() {
        let addr = serve().await;
        let result = run(&plan(addr, "/fail"), &ProgressBar::hidden())
            .await
            .expect("runs");
        assert_eq!(result.ok, 0);
        assert!(result.errors > 0);
    }

    #[tokio::test]
    async fn an_address_nobody_listens_on_is_an_error() {
        let port = super::super::target::free_loopback_port().expect("port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(run(&plan(addr, "/"), &ProgressBar::hidden()).await.is_err());
    }
}
