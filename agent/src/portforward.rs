//! `kubectl port-forward`'s node end: the kubelet's `/portForward/{namespace}/{pod}`.
//!
//! The apiserver relays the client's upgraded connection here unchanged (see
//! `docs/architecture.md`, "Port forwarding"). The request is an HTTP/1.1 upgrade to
//! SPDY/3.1 (`Connection: Upgrade`, `Upgrade: SPDY/3.1`) with the subprotocol
//! `X-Stream-Protocol-Version: portforward.k8s.io`; after the 101 the connection is a SPDY
//! session ([`crate::spdy`]) in which the client opens streams:
//!
//! * each forwarded connection is two streams carrying the same `requestid` and `port`
//!   headers: `streamtype: error` first (the client half-closes it at once), then
//!   `streamtype: data`;
//! * every SYN_STREAM is answered with a SYN_REPLY at once (client-go waits for it), with FIN
//!   set when its headers are invalid (spdystream's way of refusing a stream);
//! * once both streams of a request are there the agent dials the pod's IP and port and
//!   copies bytes: DATA on the data stream to the socket, the socket to DATA frames; the
//!   client's FIN half-closes the socket; the pod's end of the socket FINs the data stream;
//! * a dial that fails writes the kubelet's message (`error forwarding port 81 to pod
//!   web-0, uid ...: dial tcp 127.1.2.3:81: connect: connection refused`) on the error
//!   stream; in every case the error stream is FINed last, which is what `kubectl` waits for
//!   before it forgets the connection. A RST_STREAM of the data stream ends the socket.
//! * PINGs the client starts (odd ids) are echoed; GOAWAY stops new streams; SETTINGS,
//!   WINDOW_UPDATE and HEADERS are ignored. Like spdystream the agent does no SPDY flow
//!   control: spdystream sends no WINDOW_UPDATE, so honouring windows would stall every
//!   stream at 64 KiB. Backpressure is TCP's: a stream whose socket is slow stops the
//!   session's reader, as in spdystream.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::spdy::{self, Decoder, Encoder, Frame, HeaderBlock};

/// The port-forward subprotocol (`X-Stream-Protocol-Version`).
pub(crate) const PROTOCOL: &str = "portforward.k8s.io";
/// The upgrade token of SPDY/3.1.
pub(crate) const SPDY_31: &str = "SPDY/3.1";

/// How long dialling the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a pod's socket per DATA frame.
const CHUNK: usize = 32 * 1024;
/// DATA frames buffered per stream before the session's reader waits.
const STREAM_BUFFER: usize = 16;
/// Frames queued for the writer.
const WRITE_QUEUE: usize = 256;

/// The pod a session forwards to.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// The pod's name (for messages).
    pub(crate) pod: String,
    /// Its UID (for messages).
    pub(crate) uid: String,
    /// Its IP, once it has one.
    pub(crate) ip: Option<IpAddr>,
}

/// Why an upgrade request is refused before the 101: the status and the message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 400 or 403.
    pub(crate) status: http::StatusCode,
    /// Plain text, as the kubelet writes it.
    pub(crate) message: String,
    /// The protocols the agent accepts, when negotiation failed.
    pub(crate) accepted: Option<&'static str>,
}

/// Checks an upgrade request as the kubelet does (`httpstream.Handshake`, then the SPDY
/// upgrader): the subprotocol, then the upgrade headers. Returns the protocol to answer.
pub(crate) fn check_upgrade(headers: &http::HeaderMap) -> Result<Option<&'static str>, Refusal> {
    let offered: Vec<String> = headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let protocol = if offered.is_empty() {
        // A client from before subprotocols: served as the one protocol there was.
        None
    } else if offered.iter().any(|p| p == PROTOCOL) {
        Some(PROTOCOL)
    } else {
        return Err(Refusal {
            status: http::StatusCode::FORBIDDEN,
            message: format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [\"{PROTOCOL}\"]"
            ),
            accepted: Some(PROTOCOL),
        });
    };
    let has = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(http::header::CONNECTION, "upgrade") || !has(http::header::UPGRADE, SPDY_31) {
        return Err(Refusal {
            status: http::StatusCode::BAD_REQUEST,
            message: "unable to upgrade: missing upgrade headers in request (want Connection: Upgrade and Upgrade: SPDY/3.1)".into(),
            accepted: None,
        });
    }
    Ok(protocol)
}

/// One stream the client opened.
struct Stream {
    /// Incoming DATA, until the client's FIN (then `None`).
    incoming: Option<mpsc::Sender<Bytes>>,
    /// The receiving end, until the pair starts forwarding.
    pending: Option<mpsc::Receiver<Bytes>>,
    /// Set when the client resets the stream.
    reset: watch::Sender<bool>,
    request_id: String,
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    data: Option<u32>,
    error: Option<u32>,
    port: u16,
}

/// Serves one upgraded connection until the client goes or the connection breaks.
pub(crate) async fn serve<IO>(io: IO, target: Target)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(io);
    let (out, out_rx) = mpsc::channel::<Frame>(WRITE_QUEUE);
    let writer_task = tokio::spawn(write_frames(writer, out_rx));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u32, u32)>();
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut streams: HashMap<u32, Stream> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut last_stream = 0u32;
    let mut going_away = false;
    'session: loop {
        // Every whole frame buffered first, then more bytes (or a finished forward).
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(pod = %target.pod, error = %e, "port-forward: bad SPDY frame; closing");
                    let _ = out
                        .send(Frame::GoAway {
                            last_good_stream_id: last_stream,
                            status: 1,
                        })
                        .await;
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    fin,
                    headers,
                    ..
                } => {
                    if going_away {
                        let _ = out
                            .send(Frame::RstStream {
                                stream_id,
                                status: spdy::rst::REFUSED_STREAM,
                            })
                            .await;
                        continue;
                    }
                    if stream_id % 2 == 0 || stream_id <= last_stream {
                        let status = if streams.contains_key(&stream_id) {
                            spdy::rst::STREAM_IN_USE
                        } else {
                            spdy::rst::PROTOCOL_ERROR
                        };
                        let _ = out.send(Frame::RstStream { stream_id, status }).await;
                        continue;
                    }
                    last_stream = stream_id;
                    let accepted = accept_stream(&headers, stream_id);
                    let _ = out
                        .send(Frame::SynReply {
                            stream_id,
                            fin: accepted.is_err(),
                            headers: HeaderBlock::new(),
                        })
                        .await;
                    let (kind, port, request_id) = match accepted {
                        Ok(a) => a,
                        Err(why) => {
                            tracing::debug!(pod = %target.pod, stream_id, %why, "port-forward: stream refused");
                            continue;
                        }
                    };
                    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
                    let (reset, _) = watch::channel(false);
                    streams.insert(
                        stream_id,
                        Stream {
                            incoming: (!fin).then_some(tx),
                            pending: Some(rx),
                            reset,
                            request_id: request_id.clone(),
                        },
                    );
                    let pair = pairs.entry(request_id.clone()).or_default();
                    pair.port = port;
                    let slot = match kind {
                        Kind::Data => &mut pair.data,
                        Kind::Error => &mut pair.error,
                    };
                    if slot.is_some() {
                        // A second stream of one kind for a request: refuse the newcomer.
                        let _ = out
                            .send(Frame::RstStream {
                                stream_id,
                                status: spdy::rst::PROTOCOL_ERROR,
                            })
                            .await;
                        streams.remove(&stream_id);
                        continue;
                    }
                    *slot = Some(stream_id);
                    if let (Some(data), Some(error)) = (pair.data, pair.error) {
                        let port = pair.port;
                        let incoming = streams
                            .get_mut(&data)
                            .and_then(|s| s.pending.take())
                            .unwrap_or_else(|| mpsc::channel(1).1);
                        let reset = streams
                            .get(&data)
                            .map(|s| s.reset.subscribe())
                            .unwrap_or_else(|| watch::channel(true).1);
                        tokio::spawn(forward(
                            target.clone(),
                            port,
                            (data, error),
                            incoming,
                            reset,
                            out.clone(),
                            done_tx.clone(),
                        ));
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    let Some(stream) = streams.get_mut(&stream_id) else {
                        continue;
                    };
                    if !data.is_empty()
                        && let Some(tx) = &stream.incoming
                        && tx.send(data).await.is_err()
                    {
                        stream.incoming = None;
                    }
                    if fin {
                        stream.incoming = None;
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if let Some(stream) = streams.get_mut(&stream_id) {
                        stream.incoming = None;
                        let _ = stream.reset.send(true);
                    }
                }
                Frame::Ping { id } => {
                    // Odd ids are the client's: echo them. Even ones would answer ours.
                    if id % 2 == 1 {
                        let _ = out.send(Frame::Ping { id }).await;
                    }
                }
                Frame::GoAway { .. } => going_away = true,
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break 'session,
                Ok(_) => {}
            },
            Some((data, error)) = done_rx.recv() => {
                for id in [data, error] {
                    if let Some(stream) = streams.remove(&id) {
                        pairs.remove(&stream.request_id);
                    }
                }
            }
        }
    }
    // The connection is gone: every forward ends with it.
    for stream in streams.values() {
        let _ = stream.reset.send(true);
    }
    drop(streams);
    drop(out);
    let _ = writer_task.await;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Data,
    Error,
}

/// A stream's kind, port and request id, or why it is refused (the kubelet's checks).
fn accept_stream(headers: &HeaderBlock, stream_id: u32) -> Result<(Kind, u16, String), String> {
    let port = spdy::header(headers, "port")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "\"port\" header is required".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    let kind = match spdy::header(headers, "streamtype") {
        Some("data") => Kind::Data,
        Some("error") => Kind::Error,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("\"streamType\" header is required".into()),
    };
    // Clients before request ids: the kubelet's best effort, pairing consecutive streams.
    let request_id = match spdy::header(headers, "requestid").filter(|r| !r.is_empty()) {
        Some(id) => id.to_string(),
        None => match kind {
            Kind::Error => stream_id.to_string(),
            Kind::Data => stream_id.saturating_sub(2).to_string(),
        },
    };
    Ok((kind, port, request_id))
}

/// Writes queued frames, flushing whenever the queue runs dry.
async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut frames: mpsc::Receiver<Frame>) {
    let Ok(mut encoder) = Encoder::new() else {
        return;
    };
    let mut out = BytesMut::with_capacity(CHUNK + 64);
    while let Some(frame) = frames.recv().await {
        let mut next = Some(frame);
        while let Some(frame) = next {
            if let Err(e) = encoder.encode(&frame, &mut out) {
                tracing::warn!(error = %e, "port-forward: cannot encode a frame");
                return;
            }
            next = if out.len() < 4 * CHUNK {
                frames.try_recv().ok()
            } else {
                None
            };
        }
        if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
            return;
        }
        out.clear();
    }
    let _ = writer.shutdown().await;
}

/// Forwards one request: dials the pod, copies both ways, then closes the streams.
async fn forward(
    target: Target,
    port: u16,
    (data_id, error_id): (u32, u32),
    mut incoming: mpsc::Receiver<Bytes>,
    mut reset: watch::Receiver<bool>,
    out: mpsc::Sender<Frame>,
    done: mpsc::UnboundedSender<(u32, u32)>,
) {
    let fin = |stream_id| Frame::Data {
        stream_id,
        fin: true,
        data: Bytes::new(),
    };
    match dial(&target, port).await {
        Err(why) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {why}",
                target.pod, target.uid
            );
            tracing::info!(pod = %target.pod, port, error = %why, "port-forward: dial failed");
            let _ = out
                .send(Frame::Data {
                    stream_id: error_id,
                    fin: false,
                    data: Bytes::from(message),
                })
                .await;
            let _ = out.send(fin(error_id)).await;
            let _ = out.send(fin(data_id)).await;
        }
        Ok(tcp) => {
            let (mut from_pod, mut to_pod) = tcp.into_split();
            let up = async {
                while let Some(chunk) = incoming.recv().await {
                    if to_pod.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                // The client's FIN: half-close towards the pod.
                let _ = to_pod.shutdown().await;
                // Keep the write half (and so the socket) until the other way is done.
                std::future::pending::<()>().await;
            };
            let down = async {
                let mut chunk = BytesMut::with_capacity(CHUNK);
                loop {
                    chunk.reserve(CHUNK);
                    match from_pod.read_buf(&mut chunk).await {
                        Ok(0) | Err(_) => return true,
                        Ok(_) => {
                            let data = chunk.split().freeze();
                            let frame = Frame::Data {
                                stream_id: data_id,
                                fin: false,
                                data,
                            };
                            if out.send(frame).await.is_err() {
                                return false;
                            }
                        }
                    }
                }
            };
            let was_reset = async {
                let _ = reset.wait_for(|r| *r).await;
            };
            tokio::select! {
                () = up => {}
                finished = down => {
                    if finished {
                        let _ = out.send(fin(data_id)).await;
                    }
                }
                () = was_reset => {}
            }
            let _ = out.send(fin(error_id)).await;
        }
    }
    let _ = done.send((data_id, error_id));
}

/// Connects to the pod's port, with the message the kubelet would give when it cannot.
async fn dial(target: &Target, port: u16) -> Result<TcpStream, String> {
    let ip = target
        .ip
        .ok_or_else(|| "the pod has no IP address yet".to_string())?;
    let addr = SocketAddr::new(ip, port);
    match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", io_reason(&e))),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Go's wording of a connect error (`connection refused`, not Rust's `Connection refused
/// (os error 111)`).
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::HostUnreachable => "no route to host".into(),
        std::io::ErrorKind::NetworkUnreachable => "network is unreachable".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
