//! The DNS server against a real apiserver: Services and EndpointSlices created, changed and
//! deleted through the API, and real DNS messages over UDP and TCP on 127.0.0.1 asking for
//! them. Forwarding goes to a second server this test starts on 127.0.0.1; nothing leaves the
//! machine.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use wasmkube_apiserver::testing::TestApiserver;
use wasmkube_client::informers::SharedInformerFactory;
use wasmkube_dns::{DnsConfig, DnsServer};

/// How long a change may take to reach the answers.
const CHANGE_DEADLINE: Duration = Duration::from_secs(10);

struct Cluster {
    api: TestApiserver,
    dns: DnsServer,
    _informers: SharedInformerFactory,
}

impl Cluster {
    async fn start() -> Result<Self> {
        Self::start_with(Vec::new(), "cluster.local").await
    }

    async fn start_with(upstreams: Vec<SocketAddr>, domain: &str) -> Result<Self> {
        let api = TestApiserver::start().await?;
        let informers = SharedInformerFactory::new(api.client());
        let mut config = DnsConfig::new("127.0.0.1:0".parse()?, upstreams);
        config.cluster_domain = domain.into();
        config.cluster_dns = Some("10.43.0.10".parse()?);
        let dns = DnsServer::start(config, &informers).await?;
        informers.start();
        tokio::time::timeout(Duration::from_secs(30), dns.wait_synced())
            .await
            .context("the DNS cache did not sync")?;
        Ok(Cluster {
            api,
            dns,
            _informers: informers,
        })
    }

    fn services(&self) -> Api<Service> {
        Api::default_namespaced(self.api.client())
    }

    fn slices(&self) -> Api<EndpointSlice> {
        Api::default_namespaced(self.api.client())
    }

    async fn create_service(&self, spec: serde_json::Value) -> Result<Service> {
        let svc: Service = serde_json::from_value(spec)?;
        Ok(self.services().create(&PostParams::default(), &svc).await?)
    }

    async fn create_slice(&self, spec: serde_json::Value) -> Result<EndpointSlice> {
        let slice: EndpointSlice = serde_json::from_value(spec)?;
        Ok(self.slices().create(&PostParams::default(), &slice).await?)
    }

    async fn ask(&self, name: &str, qtype: RecordType) -> Result<Message> {
        udp(self.dns.local_addr(), &query(name, qtype, true)).await
    }

    /// Asks until the answer's data (sorted) is `want`.
    async fn until(&self, name: &str, qtype: RecordType, want: &[&str]) -> Result<Message> {
        let deadline = tokio::time::Instant::now() + CHANGE_DEADLINE;
        loop {
            let answer = self.ask(name, qtype).await?;
            if data(&answer) == want {
                return Ok(answer);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name} {qtype}: wanted {want:?}, got {answer}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks until the response code is `code`.
    async fn until_code(
        &self,
        name: &str,
        qtype: RecordType,
        code: ResponseCode,
    ) -> Result<Message> {
        let deadline = tokio::time::Instant::now() + CHANGE_DEADLINE;
        loop {
            let answer = self.ask(name, qtype).await?;
            if answer.metadata.response_code == code {
                return Ok(answer);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name} {qtype}: wanted {code}, got {answer}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        message.set_edns(e);
    }
    message
}

async fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Result<Option<Vec<u8>>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(bytes, addr).await?;
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await {
        Ok(n) => {
            buf.truncate(n?);
            Ok(Some(buf))
        }
        Err(_) => Ok(None),
    }
}

async fn udp(addr: SocketAddr, message: &Message) -> Result<Message> {
    let reply = udp_raw(addr, &message.to_vec()?)
        .await?
        .context("no answer over UDP")?;
    let reply = Message::from_vec(&reply)?;
    assert_eq!(reply.metadata.id, message.metadata.id);
    Ok(reply)
}

async fn tcp(addr: SocketAddr, message: &Message) -> Result<Message> {
    let mut stream = TcpStream::connect(addr).await?;
    let bytes = message.to_vec()?;
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await?;
    stream.write_all(&bytes).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf)?)
}

/// The data of the answer section, sorted.
fn data(message: &Message) -> Vec<String> {
    let mut all: Vec<String> = message.answers.iter().map(|r| r.data.to_string()).collect();
    all.sort();
    all
}

fn cluster_ip(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("a cluster IP")
}

/// NODATA: NOERROR, no answer, the zone's SOA in the authority section with the 5 s TTL.
fn assert_nodata(message: &Message, zone: &str) {
    assert_eq!(
        message.metadata.response_code,
        ResponseCode::NoError,
        "{message}"
    );
    assert!(message.answers.is_empty(), "{message}");
    assert_soa(message, zone);
}

fn assert_soa(message: &Message, zone: &str) {
    let soa = message
        .authorities
        .first()
        .expect("an SOA in the authority section");
    assert_eq!(soa.record_type(), RecordType::SOA, "{message}");
    assert_eq!(soa.name.to_ascii(), zone);
    assert_eq!(soa.ttl, 5);
}

#[tokio::test]
async fn cluster_ip_services_answer_a_srv_ptr_and_follow_changes() -> Result<()> {
    let cluster = Cluster::start().await?;
    // The apiserver's own Service is there from the start.
    let answer = cluster
        .until(
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            &["10.43.0.1"],
        )
        .await?;
    assert!(answer.metadata.authoritative);
    assert_eq!(answer.answers[0].ttl, 5);

    let svc = cluster
        .create_service(json!({
            "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))
        .await?;
    let ip = cluster_ip(&svc);
    cluster
        .until("web.default.svc.cluster.local.", RecordType::A, &[&ip])
        .await?;
    // Names are case-insensitive; the answer echoes the question.
    let mixed = cluster
        .ask("Web.Default.SVC.cluster.local.", RecordType::A)
        .await?;
    assert_eq!(data(&mixed), std::slice::from_ref(&ip));
    assert_eq!(
        mixed.answers[0].name.to_ascii(),
        "Web.Default.SVC.cluster.local."
    );

    let srv = cluster
        .until(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            &["0 100 80 web.default.svc.cluster.local."],
        )
        .await?;
    assert_eq!(srv.additionals.len(), 1, "the target's address: {srv}");
    assert_eq!(srv.additionals[0].data.to_string(), ip);
    // Every port on the Service name; an unknown port name does not exist.
    cluster
        .until(
            "web.default.svc.cluster.local.",
            RecordType::SRV,
            &["0 100 80 web.default.svc.cluster.local."],
        )
        .await?;
    let unknown = cluster
        .ask("_grpc._tcp.web.default.svc.cluster.local.", RecordType::SRV)
        .await?;
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    assert_soa(&unknown, "cluster.local.");

    let octets: Vec<&str> = ip.split('.').rev().collect();
    let reverse = format!("{}.in-addr.arpa.", octets.join("."));
    cluster
        .until(
            &reverse,
            RecordType::PTR,
            &["web.default.svc.cluster.local."],
        )
        .await?;

    // NODATA: the name exists, not with this type.
    assert_nodata(
        &cluster
            .ask("web.default.svc.cluster.local.", RecordType::AAAA)
            .await?,
        "cluster.local.",
    );
    assert_nodata(
        &cluster
            .ask("web.default.svc.cluster.local.", RecordType::TXT)
            .await?,
        "cluster.local.",
    );
    assert_nodata(
        &cluster
            .ask("default.svc.cluster.local.", RecordType::A)
            .await?,
        "cluster.local.",
    );
    // NXDOMAIN: no such Service, namespace or kind of name.
    for name in [
        "nothing.default.svc.cluster.local.",
        "web.elsewhere.svc.cluster.local.",
        "elsewhere.svc.cluster.local.",
        "web.default.cluster.local.",
        "a.b.c.d.e.f.svc.cluster.local.",
    ] {
        let nx = cluster.ask(name, RecordType::A).await?;
        assert_eq!(
            nx.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}: {nx}"
        );
        assert_soa(&nx, "cluster.local.");
    }

    // A new port gets its SRV name; the Service's deletion takes every name away.
    cluster
        .services()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "metrics", "port": 9090, "protocol": "TCP"},
            ]}})),
        )
        .await?;
    cluster
        .until(
            "_metrics._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            &["0 100 9090 web.default.svc.cluster.local."],
        )
        .await?;
    cluster
        .until(
            "web.default.svc.cluster.local.",
            RecordType::SRV,
            &[
                "0 50 80 web.default.svc.cluster.local.",
                "0 50 9090 web.default.svc.cluster.local.",
            ],
        )
        .await?;
    cluster
        .services()
        .delete("web", &DeleteParams::default())
        .await?;
    cluster
        .until_code(
            "web.default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        )
        .await?;
    // Its address is no longer known: the reverse name goes upstream, of which there is none.
    let gone = cluster.ask(&reverse, RecordType::PTR).await?;
    assert_eq!(
        gone.metadata.response_code,
        ResponseCode::ServFail,
        "{gone}"
    );
    Ok(())
}

#[tokio::test]
async fn headless_services_answer_their_ready_endpoints() -> Result<()> {
    let cluster = Cluster::start().await?;
    cluster
        .create_service(json!({
            "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
        }))
        .await?;
    // No endpoints yet: the name does not resolve (as CoreDNS answers).
    cluster
        .until_code(
            "db.default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        )
        .await?;
    cluster
        .create_slice(json!({
            "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.11"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.12"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.13"], "conditions": {"ready": false}},
            ],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        }))
        .await?;
    cluster
        .until(
            "db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.11", "10.42.0.12"],
        )
        .await?;
    cluster
        .until(
            "db-0.db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.11"],
        )
        .await?;
    cluster
        .until(
            "10-42-0-12.db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.12"],
        )
        .await?;
    let srv = cluster
        .until(
            "_pg._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
            &[
                "0 50 5432 10-42-0-12.db.default.svc.cluster.local.",
                "0 50 5432 db-0.db.default.svc.cluster.local.",
            ],
        )
        .await?;
    let mut glue: Vec<String> = srv
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    glue.sort();
    assert_eq!(
        glue,
        [
            "10-42-0-12.db.default.svc.cluster.local. 10.42.0.12",
            "db-0.db.default.svc.cluster.local. 10.42.0.11",
        ]
    );
    cluster
        .until(
            "11.0.42.10.in-addr.arpa.",
            RecordType::PTR,
            &["db-0.db.default.svc.cluster.local."],
        )
        .await?;
    // The not-ready endpoint has no name.
    let not_ready = cluster
        .ask("10-42-0-13.db.default.svc.cluster.local.", RecordType::A)
        .await?;
    assert_eq!(not_ready.metadata.response_code, ResponseCode::NXDomain);

    // An endpoint turning unready leaves the answers; the slice's deletion empties them.
    cluster
        .slices()
        .patch(
            "db-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.42.0.11"], "hostname": "db-0", "conditions": {"ready": false}},
                {"addresses": ["10.42.0.12"], "conditions": {"ready": true}},
            ]})),
        )
        .await?;
    cluster
        .until(
            "db.default.svc.cluster.local.",
            RecordType::A,
            &["10.42.0.12"],
        )
        .await?;
    cluster
        .slices()
        .delete("db-1", &DeleteParams::default())
        .await?;
    cluster
        .until_code(
            "db.default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn external_names_pods_and_the_zone_apex() -> Result<()> {
    let cluster = Cluster::start().await?;
    cluster
        .create_service(json!({
            "metadata": {"name": "api-alias"},
            "spec": {"type": "ExternalName", "externalName": "kubernetes.default.svc.cluster.local"},
        }))
        .await?;
    // A CNAME, followed inside the zone.
    let answer = cluster
        .until(
            "api-alias.default.svc.cluster.local.",
            RecordType::A,
            &["10.43.0.1", "kubernetes.default.svc.cluster.local."],
        )
        .await?;
    assert_eq!(
        answer.answers[0].record_type(),
        RecordType::CNAME,
        "{answer}"
    );
    let cname = cluster
        .ask("api-alias.default.svc.cluster.local.", RecordType::CNAME)
        .await?;
    assert_eq!(data(&cname), ["kubernetes.default.svc.cluster.local."]);

    // Pods by address, not checked against pods ("pods insecure").
    let pod = cluster
        .ask("10-42-1-7.default.pod.cluster.local.", RecordType::A)
        .await?;
    assert_eq!(data(&pod), ["10.42.1.7"]);
    assert_nodata(
        &cluster
            .ask("10-42-1-7.default.pod.cluster.local.", RecordType::AAAA)
            .await?,
        "cluster.local.",
    );
    let not_an_address = cluster
        .ask("web.default.pod.cluster.local.", RecordType::A)
        .await?;
    assert_eq!(
        not_an_address.metadata.response_code,
        ResponseCode::NXDomain
    );

    // The apex: SOA, NS with its address, the schema version.
    let soa = cluster.ask("cluster.local.", RecordType::SOA).await?;
    assert_eq!(soa.answers.len(), 1, "{soa}");
    assert!(
        soa.answers[0]
            .data
            .to_string()
            .starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "),
        "{soa}"
    );
    let ns = cluster.ask("cluster.local.", RecordType::NS).await?;
    assert_eq!(data(&ns), ["ns.dns.cluster.local."]);
    assert_eq!(ns.additionals[0].data.to_string(), "10.43.0.10");
    let version = cluster
        .ask("dns-version.cluster.local.", RecordType::TXT)
        .await?;
    assert_eq!(data(&version), ["1.1.0"]);
    assert_nodata(
        &cluster.ask("cluster.local.", RecordType::A).await?,
        "cluster.local.",
    );
    assert_nodata(
        &cluster.ask("svc.cluster.local.", RecordType::A).await?,
        "cluster.local.",
    );
    Ok(())
}

#[tokio::test]
async fn other_names_are_forwarded_over_the_clients_protocol() -> Result<()> {
    // The upstream: a second server with a zone of its own, on loopback.
    let upstream = Cluster::start_with(Vec::new(), "upstream.test").await?;
    let cluster = Cluster::start_with(vec![upstream.dns.local_addr()], "cluster.local").await?;
    let name = "kubernetes.default.svc.upstream.test.";
    let answer = cluster.ask(name, RecordType::A).await?;
    assert_eq!(data(&answer), ["10.43.0.1"], "{answer}");
    assert!(answer.metadata.recursion_available);
    let over_tcp = tcp(cluster.dns.local_addr(), &query(name, RecordType::A, false)).await?;
    assert_eq!(data(&over_tcp), ["10.43.0.1"], "{over_tcp}");
    // The upstream's NXDOMAIN, with its SOA, is relayed.
    let nx = cluster
        .ask("missing.default.svc.upstream.test.", RecordType::A)
        .await?;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{nx}");
    assert_soa(&nx, "upstream.test.");
    // An ExternalName pointing outside the zone: the CNAME and the target's upstream answer.
    cluster
        .create_service(json!({
            "metadata": {"name": "outside"},
            "spec": {"type": "ExternalName", "externalName": name},
        }))
        .await?;
    cluster
        .until(
            "outside.default.svc.cluster.local.",
            RecordType::A,
            &["10.43.0.1", name],
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn udp_answers_are_truncated_and_tcp_carries_them_whole() -> Result<()> {
    let cluster = Cluster::start().await?;
    cluster
        .create_service(json!({
            "metadata": {"name": "many"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]},
        }))
        .await?;
    let endpoints: Vec<serde_json::Value> = (1..=100)
        .map(|i| json!({"addresses": [format!("10.42.1.{i}")], "conditions": {"ready": true}}))
        .collect();
    cluster
        .create_slice(json!({
            "metadata": {"name": "many-1", "labels": {"kubernetes.io/service-name": "many"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }))
        .await?;
    let name = "many.default.svc.cluster.local.";
    let deadline = tokio::time::Instant::now() + CHANGE_DEADLINE;
    let whole = loop {
        let whole = tcp(cluster.dns.local_addr(), &query(name, RecordType::A, false)).await?;
        if whole.answers.len() == 100 {
            break whole;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("100 addresses over TCP: {whole}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!whole.metadata.truncation);
    // Without EDNS a UDP answer has at most 512 bytes; with it, the client's payload size.
    let message = query(name, RecordType::A, false);
    let raw = udp_raw(cluster.dns.local_addr(), &message.to_vec()?)
        .await?
        .context("no answer")?;
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    let cut = Message::from_vec(&raw)?;
    assert!(cut.metadata.truncation, "{cut}");
    assert!(cut.answers.len() < 100);
    let with_edns = udp(cluster.dns.local_addr(), &query(name, RecordType::A, true)).await?;
    assert!(with_edns.answers.len() > cut.answers.len(), "{with_edns}");
    Ok(())
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_server_keeps_serving() -> Result<()> {
    let cluster = Cluster::start().await?;
    let addr = cluster.dns.local_addr();
    // Shorter than a header: nothing to answer to.
    assert_eq!(udp_raw(addr, &[1, 2, 3]).await?, None);
    // A header announcing a question that is not there: FORMERR.
    let garbage = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0xff,
    ];
    let reply = Message::from_vec(&udp_raw(addr, &garbage).await?.context("no FORMERR")?)?;
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // A name over 255 bytes (five labels of 63): FORMERR.
    let mut long = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        long.push(63);
        long.extend(std::iter::repeat_n(b'a', 63));
    }
    long.extend([0, 0, 1, 0, 1]);
    let reply = Message::from_vec(&udp_raw(addr, &long).await?.context("no FORMERR")?)?;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // A label over 63 bytes: FORMERR.
    let mut label = vec![0xab, 0xce, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 64];
    label.extend(std::iter::repeat_n(b'a', 64));
    label.extend([0, 0, 1, 0, 1]);
    let reply = Message::from_vec(&udp_raw(addr, &label).await?.context("no FORMERR")?)?;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Two questions: FORMERR.
    let mut two = query(
        "kubernetes.default.svc.cluster.local.",
        RecordType::A,
        false,
    );
    two.add_query(Query::query(
        Name::from_ascii("cluster.local.")?,
        RecordType::SOA,
    ));
    assert_eq!(
        udp(addr, &two).await?.metadata.response_code,
        ResponseCode::FormErr
    );
    // Class CHAOS: REFUSED, not forwarded.
    let mut chaos = query("version.bind.", RecordType::TXT, false);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        udp(addr, &chaos).await?.metadata.response_code,
        ResponseCode::Refused
    );
    // Not a query: NOTIMP.
    let mut notify = query("cluster.local.", RecordType::SOA, false);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        udp(addr, &notify).await?.metadata.response_code,
        ResponseCode::NotImp
    );
    // EDNS version 1: BADVERS.
    let mut future = query("cluster.local.", RecordType::SOA, false);
    let mut edns = Edns::new();
    edns.set_version(1);
    future.set_edns(edns);
    let badvers = udp(addr, &future).await?.metadata.response_code;
    assert_eq!(
        u16::from(badvers),
        u16::from(ResponseCode::BADVERS),
        "{badvers}"
    );
    // Garbage over TCP closes that connection only.
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(&[0, 3, 1, 2, 3]).await?;
    drop(stream);
    // Still serving, over both protocols.
    let name = "kubernetes.default.svc.cluster.local.";
    assert_eq!(
        data(&cluster.ask(name, RecordType::A).await?),
        ["10.43.0.1"]
    );
    assert_eq!(
        data(&tcp(addr, &query(name, RecordType::A, false)).await?),
        ["10.43.0.1"]
    );
    Ok(())
}
