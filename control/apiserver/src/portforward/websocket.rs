//! The server end of a WebSocket that tunnels a byte stream (RFC 6455), as kube-apiserver's
//! tunnelling handler serves `SPDY/3.1+portforward.k8s.io`: every binary message from the
//! client is bytes for the agent, every read from the agent goes back as one binary
//! message.
//!
//! Hand-written rather than taken from tungstenite: a relay needs only the server side of
//! the framing (masked client frames in, unmasked frames out, binary and continuation
//! messages, ping/pong, close), about what a dependency's glue would take, and the
//! workspace has no WebSocket crate whose build everyone would pay for.
//! Everything else is refused as RFC 6455 says: text messages close with 1003, unmasked or
//! oversized frames with 1002/1009; bad input is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest frame payload accepted from a client (a SPDY frame is at most 16 MiB + 8).
pub const MAX_FRAME: usize = (1 << 24) + 1024;
/// The GUID RFC 6455 appends to the key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Bytes read from the agent per message.
const CHUNK: usize = 32 * 1024;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Close codes.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Why a tunnel ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke RFC 6455 (closed with the code).
    #[error("websocket protocol error ({code}): {message}")]
    Protocol {
        /// The close code sent.
        code: u16,
        /// What was wrong.
        message: String,
    },
}

/// One frame from the client, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFrame {
    /// FIN bit.
    pub(crate) fin: bool,
    /// The opcode.
    pub(crate) opcode: u8,
    /// The unmasked payload.
    pub(crate) payload: Bytes,
}

fn protocol(code: u16, message: impl Into<String>) -> TunnelError {
    TunnelError::Protocol {
        code,
        message: message.into(),
    }
}

/// Takes one client frame off the front of `buf` (`None`: not all there yet).
pub(crate) fn parse_client_frame(buf: &mut BytesMut) -> Result<Option<ClientFrame>, TunnelError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(protocol(CLOSE_PROTOCOL_ERROR, "reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if b1 & 0x80 == 0 {
        return Err(protocol(CLOSE_PROTOCOL_ERROR, "client frame is not masked"));
    }
    let (len, header) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(len), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= 0x8 && (!fin || len > 125) {
        return Err(protocol(
            CLOSE_PROTOCOL_ERROR,
            "control frame fragmented or over 125 bytes",
        ));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| protocol(CLOSE_TOO_BIG, format!("frame of {len} bytes")))?;
    let total = header + 4 + len;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mask = [
        buf[header],
        buf[header + 1],
        buf[header + 2],
        buf[header + 3],
    ];
    buf.advance(header + 4);
    let mut payload = buf.split_to(len);
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Some(ClientFrame {
        fin,
        opcode,
        payload: payload.freeze(),
    }))
}

/// Appends an unmasked server frame.
pub(crate) fn put_server_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.extend_from_slice(payload);
}

/// What the writer sends the client.
#[derive(Debug)]
enum Outgoing {
    Binary(Bytes),
    Pong(Bytes),
    Close(u16),
}

/// Relays between a client's upgraded WebSocket connection and the agent's byte stream
/// until either side ends.
pub async fn tunnel<C, A>(client: C, agent: A) -> Result<(), TunnelError>
where
    C: AsyncRead + AsyncWrite + Send + Unpin,
    A: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut client_r, client_w) = tokio::io::split(client);
    let (mut agent_r, mut agent_w) = tokio::io::split(agent);
    let (tx, rx) = mpsc::channel::<Outgoing>(64);
    let to_client = tx.clone();
    let from_client = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut in_message = false;
        loop {
            let frame = loop {
                match parse_client_frame(&mut buf) {
                    Ok(Some(frame)) => break frame,
                    Ok(None) => {}
                    Err(e) => {
                        if let TunnelError::Protocol { code, .. } = &e {
                            let _ = to_client.send(Outgoing::Close(*code)).await;
                        }
                        return Err(e);
                    }
                }
                if client_r.read_buf(&mut buf).await? == 0 {
                    // Gone without a close frame.
                    let _ = agent_w.shutdown().await;
                    return Ok(());
                }
            };
            match frame.opcode {
                OP_BINARY | OP_CONTINUATION => {
                    if (frame.opcode == OP_CONTINUATION) != in_message {
                        let _ = to_client.send(Outgoing::Close(CLOSE_PROTOCOL_ERROR)).await;
                        return Err(protocol(CLOSE_PROTOCOL_ERROR, "unexpected continuation"));
                    }
                    in_message = !frame.fin;
                    agent_w.write_all(&frame.payload).await?;
                }
                OP_TEXT => {
                    let _ = to_client
                        .send(Outgoing::Close(CLOSE_UNSUPPORTED_DATA))
                        .await;
                    return Err(protocol(
                        CLOSE_UNSUPPORTED_DATA,
                        "text message on a binary tunnel",
                    ));
                }
                OP_PING => {
                    let _ = to_client.send(Outgoing::Pong(frame.payload)).await;
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let code = if frame.payload.len() >= 2 {
                        u16::from_be_bytes([frame.payload[0], frame.payload[1]])
                    } else {
                        CLOSE_NORMAL
                    };
                    let _ = to_client.send(Outgoing::Close(code)).await;
                    let _ = agent_w.shutdown().await;
                    return Ok(());
                }
                other => {
                    let _ = to_client.send(Outgoing::Close(CLOSE_PROTOCOL_ERROR)).await;
                    return Err(protocol(
                        CLOSE_PROTOCOL_ERROR,
                        format!("unknown opcode {other:#x}"),
                    ));
                }
            }
        }
    };
    let from_agent = async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            match agent_r.read_buf(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send(Outgoing::Close(CLOSE_NORMAL)).await;
                    return Ok(());
                }
                Ok(_) => {
                    if tx
                        .send(Outgoing::Binary(buf.split().freeze()))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let _ = tx.send(Outgoing::Close(CLOSE_NORMAL)).await;
                    return Err(TunnelError::Io(e));
                }
            }
        }
    };
    let relay = async {
        tokio::select! {
            r = from_client => r,
            r = from_agent => r,
        }
    };
    let (result, ()) = tokio::join!(relay, write_to_client(client_w, rx));
    result
}

/// Sends queued frames to the client; stops after a close frame.
async fn write_to_client<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Outgoing>) {
    let mut out = BytesMut::with_capacity(CHUNK + 16);
    while let Some(msg) = rx.recv().await {
        let closing = matches!(msg, Outgoing::Close(_));
        match msg {
            Outgoing::Binary(b) => put_server_frame(&mut out, OP_BINARY, &b),
            Outgoing::Pong(b) => put_server_frame(&mut out, OP_PONG, &b),
            Outgoing::Close(code) => put_server_frame(&mut out, OP_CLOSE, &code.to_be_bytes()),
        }
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
            return;
        }
        out.clear();
        if closing {
            break;
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_frames_of_every_length_form_parse_in_pieces() {
        for len in [0usize, 5, 125, 126, 1000, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let bytes = client_frame(true, OP_BINARY, &payload);
            let mut buf = BytesMut::new();
            let mut got = None;
            for chunk in bytes.chunks(777) {
                buf.extend_from_slice(chunk);
                if let Some(f) = parse_client_frame(&mut buf).unwrap() {
                    got = Some(f);
                }
            }
            let f = got.expect("a frame");
            assert_eq!((f.fin, f.opcode, f.payload.len()), (true, OP_BINARY, len));
            assert_eq!(f.payload.as_ref(), &payload[..]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_client_frames_are_errors() {
        let code = |bytes: &[u8]| match parse_client_frame(&mut BytesMut::from(bytes)) {
            Err(TunnelError::Protocol { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        // Unmasked.
        assert_eq!(code(&[0x82, 0x01, 0x00]), CLOSE_PROTOCOL_ERROR);
        // Reserved bits.
        assert_eq!(code(&[0xc2, 0x80, 0, 0, 0, 0]), CLOSE_PROTOCOL_ERROR);
        // A fragmented ping.
        assert_eq!(
            code(&client_frame(false, OP_PING, b"x")),
            CLOSE_PROTOCOL_ERROR
        );
        // A frame claiming 2^63 bytes.
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(code(&huge), CLOSE_TOO_BIG);
    }

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        for (len, header) in [(10usize, 2usize), (300, 4), (70_000, 10)] {
            let mut out = BytesMut::new();
            put_server_frame(&mut out, OP_BINARY, &vec![1u8; len]);
            assert_eq!(out.len(), header + len);
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1] & 0x80, 0, "server frames are not masked");
        }
    }

    /// Reads one unmasked server frame.
    async fn server_frame<R: AsyncRead + Unpin>(r: &mut R) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        r.read_exact(&mut head).await.unwrap();
        let len = match head[1] & 0x7f {
            126 => usize::from(r.read_u16().await.unwrap()),
            127 => r.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0f, payload)
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_pings_are_answered_and_close_is_echoed() {
        let (mut client, server_side) = tokio::io::duplex(1 << 16);
        let (mut agent, agent_side) = tokio::io::duplex(1 << 16);
        let relay = tokio::spawn(tunnel(server_side, agent_side));
        // A message in two fragments reaches the agent as one byte stream.
        client
            .write_all(&client_frame(false, OP_BINARY, b"hel"))
            .await
            .unwrap();
        client
            .write_all(&client_frame(true, OP_CONTINUATION, b"lo"))
            .await
            .unwrap();
        let mut got = [0u8; 5];
        agent.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // The agent's bytes come back as a binary message.
        agent.write_all(b"world").await.unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (OP_BINARY, b"world".to_vec())
        );
        client
            .write_all(&client_frame(true, OP_PING, b"p"))
            .await
            .unwrap();
        assert_eq!(server_frame(&mut client).await, (OP_PONG, b"p".to_vec()));
        client
            .write_all(&client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (OP_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        // The agent sees the end of the stream.
        let mut rest = Vec::new();
        agent.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        relay.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_agent_closing_closes_the_websocket_and_text_is_refused() {
        let (mut client, server_side) = tokio::io::duplex(1 << 16);
        let (agent, agent_side) = tokio::io::duplex(1 << 16);
        let relay = tokio::spawn(tunnel(server_side, agent_side));
        drop(agent);
        assert_eq!(
            server_frame(&mut client).await,
            (OP_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
        relay.await.unwrap().unwrap();

        let (mut client, server_side) = tokio::io::duplex(1 << 16);
        let (_agent, agent_side) = tokio::io::duplex(1 << 16);
        let relay = tokio::spawn(tunnel(server_side, agent_side));
        client
            .write_all(&client_frame(true, OP_TEXT, b"hi"))
            .await
            .unwrap();
        assert_eq!(
            server_frame(&mut client).await,
            (OP_CLOSE, 1003u16.to_be_bytes().to_vec())
        );
        assert!(matches!(
            relay.await.unwrap(),
            Err(TunnelError::Protocol { code: 1003, .. })
        ));
    }
}
