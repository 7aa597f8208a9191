//! Reading CRI log files back as `kubectl logs` shows them: `tailLines`, `sinceSeconds` /
//! `sinceTime`, `timestamps`, `limitBytes`, and following a live file.

use std::io::{self, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use super::LiveState;

/// The options of a log request (the kubelet's `/containerLogs` query).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogOptions {
    /// Keep streaming while the instance runs.
    pub(crate) follow: bool,
    /// Only the last N lines.
    pub(crate) tail_lines: Option<usize>,
    /// Only lines written at or after this time.
    pub(crate) since: Option<Timestamp>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub(crate) timestamps: bool,
    /// Stop after this many bytes.
    pub(crate) limit_bytes: Option<u64>,
    /// The previous instance's log.
    pub(crate) previous: bool,
}

/// The `key=value` pairs of a URL query, percent- and `+`-decoded, in order.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(key), decode(raw))
    })
}

impl LogOptions {
    /// Parses a query string (`follow=true&tailLines=10&sinceSeconds=5...`). `now` anchors
    /// `sinceSeconds`. Errors name the bad parameter.
    pub(crate) fn from_query(query: &str, now: Timestamp) -> Result<LogOptions, String> {
        let mut opts = LogOptions::default();
        for (key, value) in query_pairs(query) {
            let key = key.as_str();
            let boolean = |v: &str| matches!(v, "" | "true" | "1" | "True" | "TRUE");
            let int = |v: &str| {
                v.parse::<i64>()
                    .map_err(|_| format!("invalid {key}: {v:?} is not an integer"))
            };
            match key {
                "follow" => opts.follow = boolean(&value),
                "previous" => opts.previous = boolean(&value),
                "timestamps" => opts.timestamps = boolean(&value),
                "tailLines" => {
                    let n = int(&value)?;
                    if n >= 0 {
                        opts.tail_lines = Some(usize::try_from(n).unwrap_or(usize::MAX));
                    }
                }
                "limitBytes" => {
                    let n = int(&value)?;
                    if n < 1 {
                        return Err("limitBytes must be greater than zero".into());
                    }
                    opts.limit_bytes = u64::try_from(n).ok();
                }
                "sinceSeconds" => {
                    let n = int(&value)?;
                    if n < 1 {
                        return Err("sinceSeconds must be greater than zero".into());
                    }
                    let span = jiff::SignedDuration::from_secs(n);
                    opts.since = Some(now.checked_sub(span).unwrap_or(Timestamp::MIN));
                }
                "sinceTime" => {
                    let t = value
                        .parse::<Timestamp>()
                        .map_err(|e| format!("invalid sinceTime {value:?}: {e}"))?;
                    opts.since = Some(t);
                }
                _ => {}
            }
        }
        Ok(opts)
    }
}

/// One CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// The timestamp as written.
    pub(crate) timestamp: &'a str,
    /// `stdout` or `stderr`.
    pub(crate) stream: &'a str,
    /// Whether the record ends a line (`F`) rather than being a piece of one (`P`).
    pub(crate) full: bool,
    /// The text.
    pub(crate) content: &'a [u8],
}

/// Parses one record (without its newline); `None` for a malformed line.
pub(crate) fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    let full = match tag {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some(Record {
        timestamp,
        stream,
        full,
        content,
    })
}

/// Renders the complete records in `data` as the user sees them, applying `tail_lines`
/// (when `apply_tail`), `since` and `timestamps`. Only `\n`-terminated lines are read.
pub(crate) fn render(data: &[u8], opts: &LogOptions, apply_tail: bool) -> Vec<u8> {
    let mut records: Vec<Record<'_>> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_record)
        .filter(|r| match opts.since {
            Some(since) => r.timestamp.parse::<Timestamp>().is_ok_and(|t| t >= since),
            None => true,
        })
        .collect();
    if apply_tail && let Some(n) = opts.tail_lines {
        // Count whole lines: a line is its P records plus the F that ends it.
        let mut lines = 0;
        let mut start = records.len();
        for (i, r) in records.iter().enumerate().rev() {
            if r.full {
                if lines == n {
                    break;
                }
                lines += 1;
            }
            start = i;
        }
        if n == 0 {
            start = records.len();
        }
        records.drain(..start);
    }
    let mut out = Vec::new();
    for r in records {
        if opts.timestamps {
            out.extend_from_slice(r.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(r.content);
        if r.full {
            out.push(b'\n');
        }
    }
    out
}

/// The length of `data` up to and including its last newline.
fn complete_len(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

struct FollowState {
    path: PathBuf,
    offset: u64,
    opts: LogOptions,
    sent: u64,
    live: Option<watch::Receiver<LiveState>>,
    first: bool,
    done: bool,
}

/// Reads `path` from `offset` and, when following a live file, keeps yielding new lines until
/// the instance ends; `sent` bytes count against `limit_bytes`.
pub(super) fn follow_stream(
    path: PathBuf,
    offset: u64,
    opts: LogOptions,
    sent: u64,
    live: Option<watch::Receiver<LiveState>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let live = live.filter(|_| opts.follow);
    let state = FollowState {
        path,
        offset,
        opts,
        sent,
        live,
        first: true,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let open = st.live.as_ref().is_some_and(|l| l.borrow().open);
            let data = match read_from(&st.path, &mut st.offset).await {
                Ok(d) => d,
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            let complete = complete_len(&data);
            // A closed log has no more newlines coming: take the tail as well.
            let take = if open { complete } else { data.len() };
            st.offset += take as u64;
            let mut chunk = render(&data[..take], &st.opts, st.first);
            st.first = false;
            if let Some(limit) = st.opts.limit_bytes {
                let room = limit.saturating_sub(st.sent);
                chunk.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                if st.sent + chunk.len() as u64 >= limit {
                    st.done = true;
                }
            }
            if !chunk.is_empty() {
                st.sent += chunk.len() as u64;
                return Some((Ok(Bytes::from(chunk)), st));
            }
            if !open {
                return None;
            }
            let live = st.live.as_mut()?;
            if live.changed().await.is_err() {
                // The writer is gone: read what is left, then stop.
                st.live = None;
            }
        }
    })
}

/// Reads `path` from `offset` to its end; a file shorter than `offset` was rotated, so
/// reading starts over.
async fn read_from(path: &PathBuf, offset: &mut u64) -> io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    if len < *offset {
        *offset = 0;
    }
    file.seek(SeekFrom::Start(*offset)).await?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).await?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-01-01T00:00:00.000000000Z stdout F one\n\
        2024-01-01T00:00:01.000000000Z stderr F two\n\
        2024-01-01T00:00:02.000000000Z stdout P thr\n\
        2024-01-01T00:00:02.000000000Z stdout F ee\n\
        2024-01-01T00:00:03.000000000Z stdout F four\n";

    fn text(opts: &LogOptions) -> String {
        String::from_utf8(render(LOG.as_bytes(), opts, true)).unwrap()
    }

    #[test]
    fn renders_lines_joining_partial_records() {
        assert_eq!(text(&LogOptions::default()), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn tail_counts_whole_lines() {
        let opts = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(text(&opts), "three\nfour\n");
        let zero = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(text(&zero), "");
    }

    #[test]
    fn since_and_timestamps_filter_and_prefix() {
        let opts = LogOptions {
            since: Some("2024-01-01T00:00:01Z".parse().unwrap()),
            timestamps: true,
            ..Default::default()
        };
        let out = text(&opts);
        assert!(
            out.starts_with("2024-01-01T00:00:01.000000000Z two\n"),
            "{out}"
        );
        assert!(!out.contains("one"));
    }

    #[test]
    fn query_parsing_reads_kubelet_parameters() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let opts = LogOptions::from_query(
            "follow=true&tailLines=5&sinceSeconds=60&timestamps=true&limitBytes=10&previous=false",
            now,
        )
        .unwrap();
        assert!(opts.follow && opts.timestamps && !opts.previous);
        assert_eq!(opts.tail_lines, Some(5));
        assert_eq!(opts.limit_bytes, Some(10));
        assert_eq!(opts.since, Some("2024-01-01T00:00:00Z".parse().unwrap()));
        assert!(LogOptions::from_query("tailLines=x", now).is_err());
        assert!(LogOptions::from_query("limitBytes=0", now).is_err());
        let t = LogOptions::from_query("sinceTime=2024-01-01T00%3A00%3A02Z", now).unwrap();
        assert_eq!(t.since, Some("2024-01-01T00:00:02Z".parse().unwrap()));
    }

    #[tokio::test]
    async fn follow_streams_new_lines_until_the_log_closes() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let reg = super::super::LogRegistry::new();
        let log = super::super::ContainerLog::create(&reg, dir.path(), "u", "c", 0).unwrap();
        let mut out = log.stream(super::super::Stream::Stdout);
        out.write(b"first\n");
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut stream = Box::pin(super::super::follow(&reg, log.path(), 0, opts, 0));
        assert_eq!(stream.next().await.unwrap().unwrap(), "first\n");
        out.write(b"second\n");
        assert_eq!(stream.next().await.unwrap().unwrap(), "second\n");
        log.close();
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn limit_bytes_ends_the_stream() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let opts = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        let chunks: Vec<_> = follow_stream(path, 0, opts, 0, None).collect().await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].as_ref().unwrap(), "one\ntw");
    }
}
