//! `wasmkube-bench dns`: the cluster DNS under load, next to dnsmasq.
//!
//! The bench starts `wasmkube server` with its cluster DNS on a free loopback port, creates a
//! ClusterIP Service and waits until its name resolves. The peer is Debian's dnsmasq on
//! another loopback port, answering the same name from a `--host-record` (what a host's
//! caching resolver does for a name it knows). Both are measured the same two ways, in one
//! run:
//! - **load**: `--workers` closed-loop UDP clients (one query in flight each, a new query id
//!   per query) send `A <service>.<ns>.svc.cluster.local` for `--duration` seconds after a
//!   warm-up; queries/s and latency (send to answer) of the answered ones;
//! - **dig loop**: `dig +short` run `--digs` times one after the other, as a shell loop
//!   would; per-invocation time (mostly dig's own start-up, which is why it is a separate row).
//!
//! Nothing leaves 127.0.0.1: the server's upstream for other names is a closed loopback port
//! and dnsmasq reads no resolv.conf.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::report::{LatencySummary, latency_histogram, record};
use super::table::{LatencyRow, RunHeader, latency_table, ratio};
use super::target::{Target, free_loopback_port};

/// The Service whose name is queried.
const SERVICE: &str = "dns-bench";
/// The name queried.
const NAME: &str = "dns-bench.default.svc.cluster.local.";
/// How long one query may wait for its answer before it counts as lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Benchmark the cluster DNS: queries/s and latency for a Service name, next to dnsmasq.
#[derive(clap::Args, Debug)]
pub(crate) struct DnsCommand {
    /// Concurrent UDP clients, one query in flight each.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    workers: u64,
    /// Seconds of counted load per server (after a 1 s warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    duration: u64,
    /// `dig` invocations per server in the dig-loop rows (0: no dig rows).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    digs: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// A load run's figures.
struct LoadFigures {
    answered: u64,
    lost: u64,
    elapsed: Duration,
    latency: LatencySummary,
}

impl LoadFigures {
    fn per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "answered": self.answered,
            "lost": self.lost,
            "seconds": self.elapsed.as_secs_f64(),
            "queries_per_second": self.per_second(),
            "latency": self.latency.to_json(),
        })
    }
}

/// dnsmasq on 127.0.0.1:`port`, answering [`NAME`] with `ip`; killed when dropped.
struct Dnsmasq(std::process::Child);

impl Dnsmasq {
    fn start(port: u16, ip: Ipv4Addr) -> anyhow::Result<Dnsmasq> {
        let child = std::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--interface=lo",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
                &format!("--port={port}"),
                &format!("--host-record={},{ip}", NAME.trim_end_matches('.')),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting dnsmasq, the peer of the dns bench (install it: apt-get install \
                 dnsmasq-base)",
            )?;
        Ok(Dnsmasq(child))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One query for [`NAME`] with id `id`, encoded.
fn query(id: u16) -> anyhow::Result<Vec<u8>> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(NAME)?, RecordType::A));
    Ok(message.to_vec()?)
}

/// Whether `answer` answers query `id` with NOERROR and at least one record.
fn answers(answer: &[u8], id: u16) -> bool {
    Message::from_vec(answer).is_ok_and(|m| {
        m.metadata.id == id
            && m.metadata.response_code == ResponseCode::NoError
            && !m.answers.is_empty()
    })
}

/// Sends one query to `server` and waits for its answer.
async fn ask(socket: &tokio::net::UdpSocket, id: u16) -> anyhow::Result<bool> {
    socket.send(&query(id)?).await?;
    let mut buf = [0u8; 1500];
    loop {
        let n = tokio::time::timeout(QUERY_TIMEOUT, socket.recv(&mut buf))
            .await
            .context("no answer")??;
        // A late answer to an earlier, timed-out query is skipped.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Ok(answers(&buf[..n], id));
        }
    }
}

/// Waits until `server` answers [`NAME`].
async fn wait_answering(server: SocketAddr, what: &str) -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(server).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut id = 1u16;
    loop {
        if ask(&socket, id).await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} at {server} did not answer {NAME} within 60 s");
        }
        id = id.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `workers` closed-loop clients against `server` for `duration` after a 1 s warm-up.
async fn load(server: SocketAddr, workers: u64, duration: Duration) -> anyhow::Result<LoadFigures> {
    let counting_from = Instant::now() + Duration::from_secs(1);
    let until = counting_from + duration;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(server).await?;
        tasks.push(tokio::spawn(async move {
            let mut histogram = latency_histogram();
            let (mut answered, mut lost) = (0u64, 0u64);
            // Ids differ between workers so that no two queries in flight share one.
            let mut id = u16::try_from(w * 1_000 % 60_000).unwrap_or(0);
            loop {
                let start = Instant::now();
                if start >= until {
                    break;
                }
                id = id.wrapping_add(1);
                let ok = ask(&socket, id).await.unwrap_or(false);
                if start >= counting_from {
                    if ok {
                        record(&mut histogram, start.elapsed());
                        answered += 1;
                    } else {
                        lost += 1;
                    }
                }
            }
            (histogram, answered, lost)
        }));
    }
    let mut histogram = latency_histogram();
    let (mut answered, mut lost) = (0, 0);
    for task in tasks {
        let (h, a, l) = task.await.context("a DNS load worker panicked")?;
        histogram.add(&h).context("merging histograms")?;
        answered += a;
        lost += l;
    }
    Ok(LoadFigures {
        answered,
        lost,
        elapsed: duration,
        latency: LatencySummary::of(&histogram),
    })
}

/// `dig +short` against `server`, `n` times one after the other; per-invocation latency.
async fn dig_loop(server: SocketAddr, n: u64) -> anyhow::Result<LatencySummary> {
    let mut histogram = latency_histogram();
    for _ in 0..n {
        let start = Instant::now();
        let out = tokio::process::Command::new("dig")
            .args([
                &format!("@{}", server.ip()),
                "-p",
                &server.port().to_string(),
                "+short",
                "+tries=1",
                "+time=1",
                NAME,
                "A",
            ])
            .stdin(Stdio::null())
            .output()
            .await
            .context("running dig (install it: apt-get install dnsutils)")?;
        let elapsed = start.elapsed();
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "dig @{server} {NAME} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        record(&mut histogram, elapsed);
    }
    Ok(LatencySummary::of(&histogram))
}

impl DnsCommand {
    pub(crate) async fn execute(self, wasmkube: &Path) -> anyhow::Result<()> {
        let dns_port = free_loopback_port()?;
        let closed_upstream = free_loopback_port()?;
        let server_args = vec![
            format!("--cluster-dns-listen=127.0.0.1:{dns_port}"),
            format!("--cluster-dns-upstream=127.0.0.1:{closed_upstream}"),
            "--disable-agent".to_owned(),
        ];
        let target = Target::start_server_with(wasmkube, None, &server_args).await?;
        let result = self.measure(&target, dns_port, &server_args).await;
        target.shutdown().await;
        result
    }

    async fn measure(
        &self,
        target: &Target,
        dns_port: u16,
        server_args: &[String],
    ) -> anyhow::Result<()> {
        let client = target.new_client()?;
        let services: Api<Service> = Api::namespaced(client, "default");
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": SERVICE},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }))?;
        let created = services
            .create(&PostParams::default(), &service)
            .await
            .context("creating the benchmark's Service")?;
        let cluster_ip: Ipv4Addr = created
            .spec
            .and_then(|s| s.cluster_ip)
            .context("the Service got no cluster IP")?
            .parse()?;
        let ours = SocketAddr::from((Ipv4Addr::LOCALHOST, dns_port));
        wait_answering(ours, "the cluster DNS").await?;
        let peer_port = free_loopback_port()?;
        let _dnsmasq = Dnsmasq::start(peer_port, cluster_ip)?;
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, peer_port));
        wait_answering(peer, "dnsmasq").await?;

        let header = {
            let mut h = RunHeader::now("dns", server_args);
            h.peer = Some(format!(
                "dnsmasq ({}) on 127.0.0.1, the name as a --host-record",
                dnsmasq_version().unwrap_or_else(|| "version unknown".into())
            ));
            h
        };
        let duration = Duration::from_secs(self.duration);
        eprintln!(
            "measuring the cluster DNS ({} workers, {} s)...",
            self.workers, self.duration
        );
        let our_load = load(ours, self.workers, duration).await?;
        eprintln!(
            "measuring dnsmasq ({} workers, {} s)...",
            self.workers, self.duration
        );
        let peer_load = load(peer, self.workers, duration).await?;
        let (our_digs, peer_digs) = if self.digs > 0 {
            eprintln!("dig loops ({} each)...", self.digs);
            (
                Some(dig_loop(ours, self.digs).await?),
                Some(dig_loop(peer, self.digs).await?),
            )
        } else {
            (None, None)
        };
        let qps_ratio = ratio(our_load.per_second(), peer_load.per_second());
        if self.json {
            println!(
                "{}",
                json!({
                    "run": header.to_json(),
                    "workers": self.workers,
                    "cluster_dns": our_load.to_json(),
                    "dnsmasq": peer_load.to_json(),
                    "queries_per_second_ratio": qps_ratio,
                    "dig_loop": {
                        "cluster_dns": our_digs.map(LatencySummary::to_json),
                        "dnsmasq": peer_digs.map(LatencySummary::to_json),
                    },
                })
            );
            return Ok(());
        }
        let mut out = String::new();
        header.write(&mut out);
        out.push_str(&format!(
            "\nA {NAME} over UDP, {} closed-loop clients, {} s counted each:\n",
            self.workers, self.duration
        ));
        for (what, figures) in [("cluster DNS", &our_load), ("dnsmasq", &peer_load)] {
            out.push_str(&format!(
                "  {what:<12} {:>9.0} queries/s ({} lost)\n",
                figures.per_second(),
                figures.lost
            ));
        }
        if let Some(r) = qps_ratio {
            out.push_str(&format!("  cluster DNS / dnsmasq: {r:.2}x queries/s\n"));
        }
        let mut rows = vec![
            LatencyRow::measured("cluster DNS query", our_load.latency),
            LatencyRow::measured("dnsmasq query", peer_load.latency),
        ];
        if let (Some(ours), Some(peer)) = (our_digs, peer_digs) {
            rows.push(LatencyRow::measured("dig loop, cluster DNS", ours));
            rows.push(LatencyRow::measured("dig loop, dnsmasq", peer));
        }
        out.push('\n');
        latency_table(&mut out, &rows);
        print!("{out}");
        Ok(())
    }
}

/// `dnsmasq --version`'s first line, shortened.
fn dnsmasq_version() -> Option<String> {
    let out = std::process::Command::new("dnsmasq")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    Some(line.split("  ").next().unwrap_or(line).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_round_trips_and_an_empty_answer_does_not_count() {
        let bytes = query(7).unwrap();
        let message = Message::from_vec(&bytes).unwrap();
        assert_eq!(message.metadata.id, 7);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.queries[0].name().to_ascii(), NAME);
        // The query itself has no answers: not an answer.
        assert!(!answers(&bytes, 7));
        assert!(!answers(b"\x00", 7));
    }
}
