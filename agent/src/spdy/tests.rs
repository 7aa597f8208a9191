use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderBlock {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), vec![v.to_string()]))
        .collect()
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut enc = Encoder::new().unwrap();
    let mut out = BytesMut::new();
    for f in frames {
        enc.encode(f, &mut out).unwrap();
    }
    out
}

fn decode_all(mut buf: BytesMut) -> Result<Vec<Frame>, FrameError> {
    let mut dec = Decoder::new();
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf)? {
        frames.push(f);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(frames)
}

fn every_kind() -> Vec<Frame> {
    vec![
        Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
        },
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: HeaderBlock::new(),
        },
        Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        },
        Frame::SynStream {
            stream_id: 3,
            associated_to: 1,
            priority: 7,
            slot: 2,
            fin: true,
            unidirectional: true,
            headers: vec![(
                "x-multi".into(),
                vec!["a".into(), "b".into(), String::new()],
            )],
        },
        Frame::Headers {
            stream_id: 3,
            fin: true,
            headers: headers(&[("content-type", "text/plain")]),
        },
        Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
        },
        Frame::RstStream {
            stream_id: 3,
            status: rst::CANCEL,
        },
        Frame::Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 1,
                    id: 4,
                    value: 1000,
                },
                Setting {
                    flags: 0,
                    id: 7,
                    value: 65536,
                },
            ],
        },
        Frame::Ping { id: 1 },
        Frame::WindowUpdate {
            stream_id: 5,
            delta: 65536,
        },
        Frame::GoAway {
            last_good_stream_id: 3,
            status: 0,
        },
    ]
}

#[test]
fn every_frame_kind_round_trips_through_one_connection_context() {
    let frames = every_kind();
    assert_eq!(decode_all(encode_all(&frames)).unwrap(), frames);
}

#[test]
fn frames_fed_a_byte_at_a_time_decode_the_same() {
    let frames = every_kind();
    let all = encode_all(&frames);
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for byte in all.iter() {
        buf.put_u8(*byte);
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
}

#[test]
fn header_names_are_lowercased_and_repeated_names_merge() {
    let frame = Frame::SynReply {
        stream_id: 9,
        fin: false,
        headers: vec![
            ("X-Stream-Protocol-Version".into(), vec!["a".into()]),
            ("port".into(), vec!["8080".into()]),
        ],
    };
    let got = decode_all(encode_all(&[frame])).unwrap();
    let Frame::SynReply { headers, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(header(headers, "x-stream-protocol-version"), Some("a"));
    assert_eq!(header(headers, "port"), Some("8080"));
    assert_eq!(header(headers, "missing"), None);
}

#[test]
fn the_compressed_stream_announces_spdy3s_dictionary() {
    // zlib header (CMF, FLG with FDICT) then the dictionary's Adler-32, as Go's
    // zlib.NewWriterLevelDict writes it.
    let out = encode_all(&[Frame::SynReply {
        stream_id: 1,
        fin: false,
        headers: HeaderBlock::new(),
    }]);
    let block = &out[12..];
    assert_eq!(block[0] & 0x0f, 8, "deflate");
    assert_ne!(block[1] & 0x20, 0, "FDICT set");
    assert_eq!(&block[2..6], &0xe3c6_a7c2u32.to_be_bytes());
}

/// A random frame: every kind, random ids, flags, header blocks and payloads.
fn random_frame(rng: &mut StdRng) -> Frame {
    let id = |rng: &mut StdRng| rng.random_range(1..=0x7fff_ffffu32);
    let text = |rng: &mut StdRng, max: usize| -> String {
        let len = rng.random_range(0..max);
        (0..len)
            .map(|_| char::from(rng.random_range(b' '..=b'~')))
            .collect()
    };
    let block = |rng: &mut StdRng| -> HeaderBlock {
        let mut block = HeaderBlock::new();
        for i in 0..rng.random_range(0..6) {
            let name = format!("h{i}-{}", text(rng, 12).to_ascii_lowercase());
            let values = (0..rng.random_range(1..3))
                .map(|_| text(rng, 40).replace('\0', ""))
                .collect();
            block.push((name, values));
        }
        block
    };
    match rng.random_range(0..10) {
        0 => Frame::SynStream {
            stream_id: id(rng),
            associated_to: rng.random_range(0..=0x7fff_ffff),
            priority: rng.random_range(0..8),
            slot: rng.random(),
            fin: rng.random(),
            unidirectional: rng.random(),
            headers: block(rng),
        },
        1 => Frame::SynReply {
            stream_id: id(rng),
            fin: rng.random(),
            headers: block(rng),
        },
        2 => Frame::Headers {
            stream_id: id(rng),
            fin: rng.random(),
            headers: block(rng),
        },
        3 => Frame::RstStream {
            stream_id: id(rng),
            status: rng.random(),
        },
        4 => Frame::Settings {
            clear: rng.random(),
            entries: (0..rng.random_range(0..4))
                .map(|_| Setting {
                    flags: rng.random(),
                    id: rng.random_range(0..=0x00ff_ffff),
                    value: rng.random(),
                })
                .collect(),
        },
        5 => Frame::Ping { id: rng.random() },
        6 => Frame::GoAway {
            last_good_stream_id: rng.random_range(0..=0x7fff_ffff),
            status: rng.random(),
        },
        7 => Frame::WindowUpdate {
            stream_id: rng.random_range(0..=0x7fff_ffff),
            delta: rng.random_range(0..=0x7fff_ffff),
        },
        _ => {
            let len = rng.random_range(0..4096);
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            Frame::Data {
                stream_id: rng.random_range(0..=0x7fff_ffff),
                fin: rng.random(),
                data: Bytes::from(data),
            }
        }
    }
}

#[test]
fn thousands_of_random_frames_round_trip_in_random_chunks() {
    let mut rng = StdRng::seed_from_u64(0x5bd1_e995);
    for _ in 0..20 {
        let frames: Vec<Frame> = (0..200).map(|_| random_frame(&mut rng)).collect();
        let all = encode_all(&frames).freeze();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        while at < all.len() {
            let n = rng.random_range(1..=2048).min(all.len() - at);
            buf.extend_from_slice(&all[at..at + n]);
            at += n;
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }
}

fn control(frame_type: u16, flags: u8, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    put_control(&mut out, frame_type, flags, payload.len()).unwrap();
    out.extend_from_slice(payload);
    out
}

#[test]
fn malformed_control_frames_are_errors() {
    let cases: Vec<(BytesMut, FrameError)> = vec![
        (
            control(TYPE_RST_STREAM, 0, &[0, 0, 0, 1]),
            FrameError::Length {
                frame: "RST_STREAM",
                len: 4,
            },
        ),
        (
            control(TYPE_RST_STREAM, 0, &[0, 0, 0, 0, 0, 0, 0, 1]),
            FrameError::ZeroStream("RST_STREAM"),
        ),
        (
            control(TYPE_PING, 0, &[0, 0, 1]),
            FrameError::Length {
                frame: "PING",
                len: 3,
            },
        ),
        (
            control(TYPE_GOAWAY, 0, &[0; 4]),
            FrameError::Length {
                frame: "GOAWAY",
                len: 4,
            },
        ),
        (
            control(TYPE_WINDOW_UPDATE, 0, &[0; 9]),
            FrameError::Length {
                frame: "WINDOW_UPDATE",
                len: 9,
            },
        ),
        (
            // Claims 3 entries, carries 1.
            control(TYPE_SETTINGS, 0, &[0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1]),
            FrameError::Length {
                frame: "SETTINGS",
                len: 12,
            },
        ),
        (
            // A count whose byte size overflows.
            control(TYPE_SETTINGS, 0, &[0xff, 0xff, 0xff, 0xff]),
            FrameError::Length {
                frame: "SETTINGS",
                len: 4,
            },
        ),
        (
            control(TYPE_SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0]),
            FrameError::Length {
                frame: "SYN_STREAM",
                len: 6,
            },
        ),
        (
            control(TYPE_SYN_REPLY, 0, &[0, 0, 0, 0]),
            FrameError::ZeroStream("SYN_REPLY"),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode_all(bytes), Err(want));
    }
    // Another SPDY version.
    let mut v2 = control(TYPE_PING, 0, &[0, 0, 0, 1]);
    v2[1] = 2;
    assert_eq!(decode_all(v2), Err(FrameError::Version(2)));
}

#[test]
fn unknown_control_frame_types_are_passed_over() {
    let mut buf = control(0x0a, 0, b"credential");
    buf.extend_from_slice(&encode_all(&[Frame::Ping { id: 7 }]));
    assert_eq!(
        decode_all(buf).unwrap(),
        vec![Frame::Unknown { frame_type: 0x0a }, Frame::Ping { id: 7 }]
    );
}

#[test]
fn bad_header_blocks_are_errors() {
    // Not zlib at all.
    let mut syn = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    syn.extend_from_slice(b"definitely not deflate");
    assert!(matches!(
        decode_all(control(TYPE_SYN_STREAM, 0, &syn)),
        Err(FrameError::Compression(_))
    ));

    // A valid compressed block whose content lies about its pair count.
    let lie = |raw: &[u8]| {
        let mut enc = Compress::new(Compression::default(), true);
        enc.set_dictionary(dictionary::bytes()).unwrap();
        let mut out = Vec::with_capacity(raw.len() + 128);
        enc.compress_vec(raw, &mut out, FlushCompress::Sync)
            .unwrap();
        let mut payload = vec![0, 0, 0, 1];
        payload.extend_from_slice(&out);
        decode_all(control(TYPE_SYN_REPLY, 0, &payload))
    };
    assert!(matches!(
        lie(&[0xff, 0xff, 0xff, 0xff]),
        Err(FrameError::HeaderBlock(_))
    ));
    // A name longer than the block.
    assert!(matches!(
        lie(&[0, 0, 0, 1, 0, 0, 0, 100, b'a', 0, 0, 0, 0]),
        Err(FrameError::HeaderBlock(_))
    ));
    // Trailing bytes.
    assert!(matches!(
        lie(&[0, 0, 0, 0, 1]),
        Err(FrameError::HeaderBlock(_))
    ));
    // Not UTF-8.
    assert!(matches!(
        lie(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0]),
        Err(FrameError::HeaderBlock(_))
    ));
    // A block that inflates past the limit (a compression bomb).
    let mut bomb = vec![0u8; MAX_HEADER_BLOCK * 2];
    bomb[..4].copy_from_slice(&[0, 0, 0, 0]);
    assert!(matches!(lie(&bomb), Err(FrameError::HeaderBlock(_))));
}

#[test]
fn random_garbage_is_an_error_or_a_frame_never_a_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..3000 {
        let len = rng.random_range(0..256);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if round % 2 == 0 && bytes.len() >= 8 {
            // Mostly-valid control headers reach deeper into the parser.
            bytes[0] = 0x80;
            bytes[1] = 3;
            bytes[2] = 0;
            bytes[3] = rng.random_range(1..=10);
            let plen = bytes.len() - 8;
            bytes[4] = 0;
            bytes[5] = 0;
            bytes[6] = (plen >> 8) as u8;
            bytes[7] = plen as u8;
        }
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
    // And mutations of valid streams.
    let valid = encode_all(&every_kind());
    for _ in 0..3000 {
        let mut bytes = valid.to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = dec.decode(&mut buf) {}
    }
}

#[test]
fn oversized_frames_are_refused_when_encoding() {
    let mut enc = Encoder::new().unwrap();
    let mut out = BytesMut::new();
    let big = Frame::Data {
        stream_id: 1,
        fin: false,
        data: Bytes::from(vec![0u8; MAX_PAYLOAD + 1]),
    };
    assert_eq!(
        enc.encode(&big, &mut out),
        Err(FrameError::TooLarge(MAX_PAYLOAD + 1))
    );
}
