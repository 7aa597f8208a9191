//! The session against a test client speaking SPDY with the same codec, over an in-memory
//! pipe, forwarding to real sockets on loopback.

use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::net::TcpListener;

use super::*;

/// The client's side of a session.
struct Client {
    io: DuplexStream,
    encoder: Encoder,
    decoder: Decoder,
    buf: BytesMut,
    next_id: u32,
}

impl Client {
    fn start(target: Target) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        tokio::spawn(serve(theirs, target));
        Client {
            io: ours,
            encoder: Encoder::new().unwrap(),
            decoder: Decoder::new(),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.encoder.encode(&frame, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    async fn open(&mut self, kind: &str, port: u16, request: &str) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let headers = vec![
            ("streamtype".to_string(), vec![kind.to_string()]),
            ("port".to_string(), vec![port.to_string()]),
            ("requestid".to_string(), vec![request.to_string()]),
        ];
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        })
        .await;
        id
    }

    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(f);
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.io.read_buf(&mut self.buf))
                    .await
                    .expect("the agent answers within 10 s")
                    .unwrap();
            if read == 0 {
                return None;
            }
        }
    }

    /// Reads frames until `stream` is FINed; returns its bytes and the other frames seen.
    async fn read_until_fin(&mut self, stream: u32) -> (Vec<u8>, Vec<Frame>) {
        let mut data = Vec::new();
        let mut others = Vec::new();
        while let Some(f) = self.next().await {
            match f {
                Frame::Data {
                    stream_id,
                    fin,
                    data: d,
                } if stream_id == stream => {
                    data.extend_from_slice(&d);
                    if fin {
                        return (data, others);
                    }
                }
                other => others.push(other),
            }
        }
        panic!("connection ended before stream {stream} finished; saw {others:?}");
    }
}

fn fin(stream_id: u32) -> Frame {
    Frame::Data {
        stream_id,
        fin: true,
        data: Bytes::new(),
    }
}

/// A one-shot server on loopback: reads until EOF, answers `echo:` + what it read, closes.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                socket.read_to_end(&mut got).await.unwrap();
                let mut answer = b"echo:".to_vec();
                answer.extend_from_slice(&got);
                socket.write_all(&answer).await.unwrap();
            });
        }
    });
    port
}

fn target() -> Target {
    Target {
        pod: "web".into(),
        uid: "uid-1".into(),
        ip: Some("127.0.0.1".parse().unwrap()),
    }
}

#[tokio::test]
async fn a_request_is_forwarded_and_both_streams_end() {
    let port = echo_server().await;
    let mut client = Client::start(target());
    let error = client.open("error", port, "0").await;
    client.send(fin(error)).await;
    let data = client.open("data", port, "0").await;
    client
        .send(Frame::Data {
            stream_id: data,
            fin: false,
            data: Bytes::from_static(b"hello"),
        })
        .await;
    client.send(fin(data)).await;
    let (body, others) = client.read_until_fin(data).await;
    assert_eq!(body, b"echo:hello");
    let replies: Vec<u32> = others
        .iter()
        .filter_map(|f| match f {
            Frame::SynReply {
                stream_id,
                fin: false,
                ..
            } => Some(*stream_id),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [error, data]);
    // The error stream ends empty: nothing went wrong.
    let (message, _) = client.read_until_fin(error).await;
    assert_eq!(message, b"");
}

#[tokio::test]
async fn concurrent_requests_share_one_session() {
    let port = echo_server().await;
    let mut client = Client::start(target());
    let mut ids = Vec::new();
    for r in 0..5 {
        let error = client.open("error", port, &r.to_string()).await;
        let data = client.open("data", port, &r.to_string()).await;
        ids.push((error, data));
    }
    for (r, (_, data)) in ids.iter().enumerate() {
        client
            .send(Frame::Data {
                stream_id: *data,
                fin: true,
                data: Bytes::from(format!("request {r}")),
            })
            .await;
    }
    let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut finished = 0;
    while finished < 10 {
        match client.next().await.unwrap() {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                bodies
                    .entry(stream_id)
                    .or_default()
                    .extend_from_slice(&data);
                if fin {
                    finished += 1;
                }
            }
            Frame::SynReply { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for (r, (error, data)) in ids.iter().enumerate() {
        assert_eq!(bodies[data], format!("echo:request {r}").as_bytes());
        assert!(bodies.get(error).is_none_or(Vec::is_empty));
    }
}

#[tokio::test]
async fn a_closed_port_is_reported_on_the_error_stream() {
    // A port nobody listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut client = Client::start(target());
    let error = client.open("error", port, "7").await;
    let data = client.open("data", port, "7").await;
    let (message, _) = client.read_until_fin(error).await;
    assert_eq!(
        String::from_utf8(message).unwrap(),
        format!(
            "error forwarding port {port} to pod web, uid uid-1: dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
    let (body, _) = client.read_until_fin(data).await;
    assert_eq!(body, b"");
}

#[tokio::test]
async fn invalid_streams_are_refused_with_a_fin_reply_and_pings_are_echoed() {
    let mut client = Client::start(target());
    let id = client.open("bogus", 80, "1").await;
    assert_eq!(
        client.next().await,
        Some(Frame::SynReply {
            stream_id: id,
            fin: true,
            headers: HeaderBlock::new()
        })
    );
    let id = client.open("data", 0, "1").await;
    assert!(matches!(
        client.next().await,
        Some(Frame::SynReply { stream_id, fin: true, .. }) if stream_id == id
    ));
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.next().await, Some(Frame::Ping { id: 1 }));
    // A stream id going backwards is a protocol error.
    client
        .send(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: HeaderBlock::new(),
        })
        .await;
    assert_eq!(
        client.next().await,
        Some(Frame::RstStream {
            stream_id: 1,
            status: spdy::rst::PROTOCOL_ERROR
        })
    );
}

#[tokio::test]
async fn garbage_ends_the_session_with_a_goaway() {
    let mut client = Client::start(target());
    client
        .io
        .write_all(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(matches!(
        client.next().await,
        Some(Frame::GoAway { status: 1, .. })
    ));
    assert_eq!(client.next().await, None);
}

#[tokio::test]
async fn a_reset_data_stream_closes_the_pod_socket_and_ends_the_error_stream() {
    // A server that holds its connection open until the peer closes it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, mut closed_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"hi").await.unwrap();
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
        closed_tx.send(()).await.unwrap();
    });
    let mut client = Client::start(target());
    let error = client.open("error", port, "0").await;
    let data = client.open("data", port, "0").await;
    loop {
        if let Some(Frame::Data {
            stream_id, data: d, ..
        }) = client.next().await
            && stream_id == data
            && d.as_ref() == b"hi"
        {
            break;
        }
    }
    client
        .send(Frame::RstStream {
            stream_id: data,
            status: spdy::rst::CANCEL,
        })
        .await;
    let (message, _) = client.read_until_fin(error).await;
    assert_eq!(message, b"");
    tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("the pod's socket is closed");
}

#[test]
fn upgrade_requests_are_checked_as_the_kubelet_checks_them() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut h = http::HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    };
    let good = [
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "portforward.k8s.io"),
    ];
    assert_eq!(check_upgrade(&headers(&good)), Ok(Some(PROTOCOL)));
    assert_eq!(check_upgrade(&headers(&good[..2])), Ok(None));
    let refused = check_upgrade(&headers(&[
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        ("x-stream-protocol-version", "v4.channel.k8s.io"),
    ]))
    .unwrap_err();
    assert_eq!(refused.status, http::StatusCode::FORBIDDEN);
    assert!(refused.message.contains("unable to negotiate protocol"));
    let missing = check_upgrade(&headers(&[("x-stream-protocol-version", PROTOCOL)])).unwrap_err();
    assert_eq!(missing.status, http::StatusCode::BAD_REQUEST);
}
