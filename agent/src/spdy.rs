//! SPDY/3.1 framing, the wire format of `kubectl port-forward` (and `exec`/`attach` before
//! WebSockets): what moby/spdystream, which client-go and the kubelet use, speaks.
//!
//! Hand-written because no maintained Rust crate implements SPDY (the protocol was retired
//! in favour of HTTP/2 in 2016; the old crates are abandoned and tied to long-gone hyper
//! versions), while the subset Kubernetes needs is small: eight control frames and DATA.
//!
//! A frame is an 8-byte header and a payload of at most 2^24 - 1 bytes:
//!
//! * control: `1 | version(15) | type(16)`, `flags(8) | length(24)`, then the frame's fields;
//! * data: `0 | stream id(31)`, `flags(8) | length(24)`, then the bytes.
//!
//! SYN_STREAM, SYN_REPLY and HEADERS carry a name/value header block (`u32` count, then
//! `u32`-length-prefixed lowercase names and values, a value's several values separated by
//! NUL) compressed with zlib: one compression context per direction for the whole
//! connection, primed with SPDY/3's dictionary ([`dictionary`]), each block ended with a
//! sync flush. So an [`Encoder`] and a [`Decoder`] live as long as the connection and see
//! every frame of their direction, in order.
//!
//! Bad input is an [`FrameError`], never a panic: lengths are checked before every read, a
//! header block may not inflate past [`MAX_HEADER_BLOCK`], and unknown control frame types
//! are passed over as the spec asks.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

mod dictionary;

/// The SPDY version spoken.
pub(crate) const VERSION: u16 = 3;
/// Largest payload a frame can carry (24-bit length).
pub(crate) const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// Largest inflated header block accepted (the kubelet's headers are a few dozen bytes).
pub(crate) const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Size of every frame header.
const HEADER_LEN: usize = 8;

/// FLAG_FIN on a control or data frame: the sender's half of the stream is closed.
const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS.
const FLAG_CLEAR_SETTINGS: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (SPDY/3 section 2.4.2).
pub(crate) mod rst {
    /// PROTOCOL_ERROR.
    pub(crate) const PROTOCOL_ERROR: u32 = 1;
    /// REFUSED_STREAM.
    pub(crate) const REFUSED_STREAM: u32 = 3;
    /// CANCEL (what a client resets a stream with).
    #[cfg(test)]
    pub(crate) const CANCEL: u32 = 5;
    /// STREAM_IN_USE: a SYN_STREAM for an id already open.
    pub(crate) const STREAM_IN_USE: u32 = 8;
}

/// A name/value header block: lowercase names, each with its values (in order).
pub(crate) type HeaderBlock = Vec<(String, Vec<String>)>;

/// The first value of header `name` in `headers`.
pub(crate) fn header<'a>(headers: &'a HeaderBlock, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, values)| values.first())
        .map(String::as_str)
}

/// One SETTINGS entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE / FLAG_SETTINGS_PERSISTED.
    pub(crate) flags: u8,
    /// The setting's id (24 bits).
    pub(crate) id: u32,
    /// Its value.
    pub(crate) value: u32,
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// SYN_STREAM: opens a stream.
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        slot: u8,
        fin: bool,
        unidirectional: bool,
        headers: HeaderBlock,
    },
    /// SYN_REPLY: accepts a stream the peer opened.
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: HeaderBlock,
    },
    /// RST_STREAM: ends a stream abnormally.
    RstStream { stream_id: u32, status: u32 },
    /// SETTINGS.
    Settings { clear: bool, entries: Vec<Setting> },
    /// PING (echoed by the side that did not send it).
    Ping { id: u32 },
    /// GOAWAY: no new streams after `last_good_stream_id`.
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    /// HEADERS: more headers for a stream.
    Headers {
        stream_id: u32,
        fin: bool,
        headers: HeaderBlock,
    },
    /// WINDOW_UPDATE (flow control; spdystream neither sends nor honours it).
    WindowUpdate { stream_id: u32, delta: u32 },
    /// DATA.
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type this codec does not know (skipped, as the spec asks).
    Unknown { frame_type: u16 },
}

/// Why bytes are not a valid frame (the connection cannot go on after any of these: the
/// header compression context may be out of step).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    /// A control frame's payload is too short or too long for its type.
    #[error("{frame} frame with a payload of {len} bytes")]
    Length {
        /// The frame type.
        frame: &'static str,
        /// The payload length.
        len: usize,
    },
    /// Stream id 0 where a stream is required.
    #[error("{0} frame for stream 0")]
    ZeroStream(&'static str),
    /// The compressed header block does not inflate.
    #[error("header block: {0}")]
    Compression(String),
    /// The inflated header block is not a valid name/value block.
    #[error("header block: {0}")]
    HeaderBlock(String),
    /// A frame to encode is larger than a frame can be.
    #[error("frame payload of {0} bytes is over the 16 MiB SPDY limit")]
    TooLarge(usize),
}

/// Decodes frames of one direction of a connection.
pub(crate) struct Decoder {
    inflate: Decompress,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder at the start of a connection.
    pub(crate) fn new() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }

    /// Takes one frame off the front of `buf`, or `None` if `buf` does not hold a whole
    /// frame yet (nothing is consumed then).
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                fin,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let frame_type = (first & 0xffff) as u16;
        self.control(frame_type, flags, payload).map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let len = p.len();
        let fin = flags & FLAG_FIN != 0;
        let need = |frame: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(FrameError::Length { frame, len })
            }
        };
        let stream = |frame: &'static str, id: u32| {
            if id == 0 {
                Err(FrameError::ZeroStream(frame))
            } else {
                Ok(id)
            }
        };
        Ok(match frame_type {
            TYPE_SYN_STREAM => {
                need("SYN_STREAM", len >= 10)?;
                let stream_id = stream("SYN_STREAM", p.get_u32() & 0x7fff_ffff)?;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                let headers = self.header_block(&p)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let name = if frame_type == TYPE_SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                need(name, len >= 4)?;
                let stream_id = stream(name, p.get_u32() & 0x7fff_ffff)?;
                let headers = self.header_block(&p)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need("RST_STREAM", len == 8)?;
                let stream_id = stream("RST_STREAM", p.get_u32() & 0x7fff_ffff)?;
                Frame::RstStream {
                    stream_id,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need("SETTINGS", len >= 4)?;
                let count = p.get_u32() as usize;
                need("SETTINGS", count.checked_mul(8) == Some(len - 4))?;
                let entries = (0..count)
                    .map(|_| {
                        let word = p.get_u32();
                        Setting {
                            flags: (word >> 24) as u8,
                            id: word & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    entries,
                }
            }
            TYPE_PING => {
                need("PING", len == 4)?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                need("GOAWAY", len == 8)?;
                Frame::GoAway {
                    last_good_stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need("WINDOW_UPDATE", len == 8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        })
    }

    /// Inflates and parses one header block.
    fn header_block(&mut self, compressed: &[u8]) -> Result<HeaderBlock, FrameError> {
        let raw = self.inflate(compressed)?;
        parse_header_block(&raw)
    }

    /// Inflates `input` (one sync-flushed piece of the connection's zlib stream).
    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len().saturating_mul(4).max(64));
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::HeaderBlock(format!(
                        "inflates past {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                out.reserve(out.len().max(64));
            }
            let (in_before, out_before) = (self.inflate.total_in(), out.len());
            let result =
                self.inflate
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            let read = usize::try_from(self.inflate.total_in() - in_before).unwrap_or(usize::MAX);
            consumed = consumed.saturating_add(read).min(input.len());
            let progressed = read > 0 || out.len() > out_before;
            match result {
                Ok(Status::StreamEnd) => {
                    return Err(FrameError::Compression(
                        "the peer ended its header compression stream".into(),
                    ));
                }
                Ok(_) => {
                    let room_left = out.len() < out.capacity();
                    if consumed == input.len() && room_left {
                        return Ok(out);
                    }
                    if !progressed && room_left {
                        return Err(FrameError::Compression("truncated header block".into()));
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary::bytes())
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
        }
    }
}

/// Parses an inflated name/value header block.
fn parse_header_block(mut raw: &[u8]) -> Result<HeaderBlock, FrameError> {
    let bad = |what: &str| FrameError::HeaderBlock(what.to_string());
    let take_u32 = |raw: &mut &[u8]| -> Result<usize, FrameError> {
        if raw.len() < 4 {
            return Err(bad("truncated length"));
        }
        let v = raw.get_u32();
        usize::try_from(v).map_err(|_| bad("length out of range"))
    };
    let take_str = |raw: &mut &[u8], what: &str| -> Result<String, FrameError> {
        let len = take_u32(raw)?;
        if raw.len() < len {
            return Err(bad(&format!("truncated {what}")));
        }
        let (s, rest) = raw.split_at(len);
        *raw = rest;
        String::from_utf8(s.to_vec()).map_err(|_| bad(&format!("{what} is not UTF-8")))
    };
    let count = take_u32(&mut raw)?;
    // Every pair takes at least 8 bytes: a count past that is a lie, not an allocation.
    if count > raw.len() / 8 {
        return Err(bad(&format!("{count} pairs in {} bytes", raw.len())));
    }
    let mut block = HeaderBlock::with_capacity(count);
    for _ in 0..count {
        let name = take_str(&mut raw, "name")?;
        if name.is_empty() {
            return Err(bad("empty header name"));
        }
        let value = take_str(&mut raw, "value")?;
        let name = name.to_ascii_lowercase();
        let values: Vec<String> = value.split('\0').map(str::to_string).collect();
        match block.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => existing.extend(values),
            None => block.push((name, values)),
        }
    }
    if !raw.is_empty() {
        return Err(bad("trailing bytes after the last pair"));
    }
    Ok(block)
}

/// Encodes frames of one direction of a connection.
pub(crate) struct Encoder {
    deflate: Compress,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder at the start of a connection.
    pub(crate) fn new() -> Result<Self, FrameError> {
        let mut deflate = Compress::new(Compression::best(), true);
        deflate
            .set_dictionary(dictionary::bytes())
            .map_err(|e| FrameError::Compression(e.to_string()))?;
        Ok(Encoder { deflate })
    }

    /// Appends `frame` to `out`.
    pub(crate) fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let flags = if *fin { FLAG_FIN } else { 0 };
                put_header(out, stream_id & 0x7fff_ffff, flags, data.len())?;
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.deflate_block(headers)?;
                let mut flags = if *fin { FLAG_FIN } else { 0 };
                if *unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                put_control(out, TYPE_SYN_STREAM, flags, 10 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(*slot);
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let frame_type = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let block = self.deflate_block(headers)?;
                put_control(
                    out,
                    frame_type,
                    if *fin { FLAG_FIN } else { 0 },
                    4 + block.len(),
                )?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                put_control(out, TYPE_RST_STREAM, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { clear, entries } => {
                let len = entries
                    .len()
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(4))
                    .ok_or(FrameError::TooLarge(usize::MAX))?;
                let flags = if *clear { FLAG_CLEAR_SETTINGS } else { 0 };
                put_control(out, TYPE_SETTINGS, flags, len)?;
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_u32(u32::from(e.flags) << 24 | (e.id & 0x00ff_ffff));
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                put_control(out, TYPE_PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control(out, TYPE_GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control(out, TYPE_WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Unknown { frame_type } => put_control(out, *frame_type, 0, 0)?,
        }
        Ok(())
    }

    /// Serializes and compresses a header block (one sync flush of the connection's
    /// stream).
    fn deflate_block(&mut self, headers: &HeaderBlock) -> Result<Vec<u8>, FrameError> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (name, values) in headers {
            let value = values.join("\0");
            let name = name.to_ascii_lowercase();
            if name.len() > MAX_PAYLOAD || value.len() > MAX_PAYLOAD {
                return Err(FrameError::TooLarge(name.len().max(value.len())));
            }
            raw.put_u32(name.len() as u32);
            raw.extend_from_slice(name.as_bytes());
            raw.put_u32(value.len() as u32);
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.len().max(64));
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            consumed += usize::try_from(self.deflate.total_in() - before).unwrap_or(0);
            // Done once all input is in and the flush left room in the buffer (a full
            // buffer may hide more pending output).
            if consumed >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn put_header(out: &mut BytesMut, first: u32, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    out.reserve(HEADER_LEN + len);
    out.put_u32(first);
    out.put_u32(u32::from(flags) << 24 | len as u32);
    Ok(())
}

fn put_control(
    out: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    len: usize,
) -> Result<(), FrameError> {
    put_header(
        out,
        0x8000_0000 | u32::from(VERSION) << 16 | u32::from(frame_type),
        flags,
        len,
    )
}

#[cfg(test)]
mod tests;
