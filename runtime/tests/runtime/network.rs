//! Guests on the network ([`GuestNetwork`]), with the net-client sample (`samples/net-client`)
//! calling an http-hello served on loopback: names through the guest's resolver, wasi:http and
//! raw wasi:sockets TCP, and a policy that refuses the connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmkube_runtime::{
    AllowAll, ConnectPolicy, GuestNetwork, HttpService, HttpSpec, NameResolver, Outcome, Protocol,
    ResolveError, ResolveFuture, Runtime,
};

use crate::{PATIENCE, captured_spec, outcome_of, test_runtime};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// `svc` is 127.0.0.1; every other name does not exist.
struct OneName;

impl NameResolver for OneName {
    fn resolve(&self, name: &str) -> ResolveFuture {
        let answer = if name == "svc" {
            Ok(vec![LOOPBACK])
        } else {
            Err(ResolveError::NotFound(format!("{name}: NXDOMAIN")))
        };
        Box::pin(std::future::ready(answer))
    }
}

struct DenyEgress;

impl ConnectPolicy for DenyEgress {
    fn allow_egress(&self, _to: SocketAddr, _protocol: Protocol) -> bool {
        false
    }

    fn allow_ingress(&self, _from: SocketAddr, _local_port: u16, _protocol: Protocol) -> bool {
        true
    }
}

fn sample(name: &str) -> Option<std::path::PathBuf> {
    wasmkube_samples::built(&format!("the {name} network test"), name)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// http-hello served on 127.0.0.1 (a free port); its address.
async fn serve_http_hello(runtime: &Runtime) -> Option<(SocketAddr, HttpService)> {
    let program = runtime
        .load_file(&sample("http-hello.wasm")?, "")
        .await
        .unwrap_or_else(|e| panic!("http-hello does not load: {e}"));
    let service = runtime.http_service(&program, HttpSpec::default());
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let server = service.clone();
    tokio::spawn(async move { server.serve(listener, std::future::pending()).await });
    Some((address, service))
}

/// Runs net-client with `network` and `args` (after argv[0]); its outcome and stdout.
async fn net_client(
    runtime: &Runtime,
    network: Option<GuestNetwork>,
    args: &[&str],
) -> Option<(Outcome, String)> {
    let program = runtime
        .load_file(&sample("net-client.wasm")?, "")
        .await
        .unwrap_or_else(|e| panic!("net-client does not load: {e}"));
    let argv: Vec<&str> = std::iter::once("net-client")
        .chain(args.iter().copied())
        .collect();
    let (mut spec, out) = captured_spec(&argv);
    spec.network = network;
    let (_stopper, task) = runtime.spawn(&program, spec);
    let outcome = outcome_of(task).await;
    let text = format!("{}{}", out.stdout.text(), out.stderr.text());
    Some((outcome, text))
}

fn network(policy: Arc<dyn ConnectPolicy>) -> GuestNetwork {
    GuestNetwork::new(LOOPBACK)
        .with_resolver(Arc::new(OneName))
        .with_policy(policy)
}

#[tokio::test]
async fn net_client_calls_a_service_by_name_over_wasi_http_and_raw_tcp() {
    let (runtime, _dir) = test_runtime();
    let Some((address, service)) = serve_http_hello(&runtime).await else {
        return;
    };
    let port = address.port().to_string();
    let Some((outcome, text)) = tokio::time::timeout(
        PATIENCE,
        net_client(
            &runtime,
            Some(network(Arc::new(AllowAll))),
            &["svc", &port, "/by-name"],
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("net-client still running after {PATIENCE:?}")) else {
        return;
    };
    assert_eq!(outcome, Outcome::Exited(0), "{text}");
    assert!(
        text.contains(&format!(
            "net-client: http GET http://svc:{port}/by-name -> 200\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("net-client: http body hello from wasm"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "net-client: tcp GET http://svc:{port}/by-name ({address}) -> HTTP/1."
        )),
        "{text}"
    );
    assert!(
        text.contains("net-client: tcp body hello from wasm"),
        "{text}"
    );
    assert_eq!(service.stats().responses, 2, "one request each way");
}

#[tokio::test]
async fn net_client_says_clearly_when_a_name_does_not_resolve() {
    let (runtime, _dir) = test_runtime();
    let Some((outcome, text)) = net_client(
        &runtime,
        Some(network(Arc::new(AllowAll))),
        &["no-such-service", "80", "/"],
    )
    .await
    else {
        return;
    };
    assert_eq!(outcome, Outcome::Exited(1), "{text}");
    assert!(
        text.contains("net-client: http GET http://no-such-service/ failed: DNS error NXDOMAIN"),
        "{text}"
    );
    assert!(
        text.contains("net-client: cannot resolve no-such-service: name-unresolvable"),
        "{text}"
    );
}

#[tokio::test]
async fn a_denying_policy_refuses_the_guests_connections() {
    let (runtime, _dir) = test_runtime();
    let Some((address, service)) = serve_http_hello(&runtime).await else {
        return;
    };
    let port = address.port().to_string();
    let Some((outcome, text)) = net_client(
        &runtime,
        Some(network(Arc::new(DenyEgress))),
        &["svc", &port, "/"],
    )
    .await
    else {
        return;
    };
    assert_eq!(outcome, Outcome::Exited(1), "{text}");
    assert!(text.contains("failed: destination IP prohibited"), "{text}");
    assert!(
        text.contains(&format!(
            "net-client: tcp connect to svc ({address}): access-denied"
        )),
        "{text}"
    );
    assert_eq!(service.stats().requests, 0, "nothing reached the server");
}

#[tokio::test]
async fn a_guest_without_a_network_has_no_sockets() {
    let (runtime, _dir) = test_runtime();
    let Some((outcome, text)) = net_client(&runtime, None, &["127.0.0.1", "9", "/"]).await else {
        return;
    };
    assert_eq!(outcome, Outcome::Exited(1), "{text}");
    // ip-name-lookup is denied (as wasmtime-wasi denies it by default), literals included.
    assert!(
        text.contains("net-client: cannot resolve 127.0.0.1: permanent-resolver-failure"),
        "{text}"
    );
}

/// Lets in connections from one address only.
struct OnlyFrom(IpAddr);

impl ConnectPolicy for OnlyFrom {
    fn allow_egress(&self, _to: SocketAddr, _protocol: Protocol) -> bool {
        true
    }

    fn allow_ingress(&self, from: SocketAddr, _local_port: u16, _protocol: Protocol) -> bool {
        from.ip() == self.0
    }
}

/// Connects from `source` to `to` and reads until the guest closes ("" when refused).
async fn read_from(source: [u8; 4], to: SocketAddr) -> String {
    use tokio::io::AsyncReadExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = socket.connect(to).await.unwrap_or_else(|e| panic!("{e}"));
    let mut text = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut text))
        .await
        .unwrap_or_else(|_| panic!("connection still open after {PATIENCE:?}"));
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn a_guests_listener_is_at_its_pod_ip_and_accepts_only_what_the_policy_allows() {
    let (runtime, _dir) = test_runtime();
    let Some(path) = sample("net-client.wasm") else {
        return;
    };
    let program = runtime
        .load_file(&path, "")
        .await
        .unwrap_or_else(|e| panic!("net-client does not load: {e}"));
    let pod_ip = IpAddr::from([127, 0, 0, 5]);
    let port = std::net::TcpListener::bind((pod_ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let (mut spec, out) = captured_spec(&["net-client", "--serve", &port.to_string()]);
    spec.network = Some(
        GuestNetwork::new(pod_ip).with_policy(Arc::new(OnlyFrom(IpAddr::from([127, 0, 0, 7])))),
    );
    let (_stopper, task) = runtime.spawn(&program, spec);
    let listening = format!("net-client: listening on {pod_ip}:{port}\n");
    crate::eventually("the guest to listen", || {
        out.stdout.text().contains(&listening)
    })
    .await;
    // The wildcard bind became the pod IP: nothing listens on another loopback address.
    assert!(
        tokio::net::TcpStream::connect((IpAddr::from([127, 0, 0, 1]), port))
            .await
            .is_err(),
        "listening beyond the pod IP"
    );
    let to = SocketAddr::new(pod_ip, port);
    assert_eq!(
        read_from([127, 0, 0, 8], to).await,
        "",
        "a refused peer gets nothing"
    );
    assert_eq!(
        read_from([127, 0, 0, 7], to).await,
        "hello from net-client\n"
    );
    assert_eq!(
        outcome_of(task).await,
        Outcome::Exited(0),
        "{}",
        out.stdout.text()
    );
    assert!(
        out.stdout
            .text()
            .contains("net-client: accepted a connection from 127.0.0.7:"),
        "{}",
        out.stdout.text()
    );
}
