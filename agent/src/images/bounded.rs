//! Bounds on what an import may unpack: a gzip stream (an archive, a layer) may expand to at
//! most [`ImportLimits::max_uncompressed_bytes`], and past
//! [`ImportLimits::ratio_grace_bytes`] at most [`ImportLimits::max_gzip_ratio`] times what it
//! has read; one tar entry may hold at most [`ImportLimits::max_entry_bytes`]. A gzip bomb (a
//! few kilobytes that expand to gigabytes of zeros) is refused as soon as it passes a bound,
//! with an error that says which, instead of filling the node's disk or memory.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ImageError;

/// How much an import may unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Bytes one decompressed stream (an archive, a layer) may expand to.
    pub max_uncompressed_bytes: u64,
    /// Bytes one tar entry (a blob of a layout archive, a file of a layer) may hold.
    pub max_entry_bytes: u64,
    /// Most bytes of output per byte of gzip input, once the output passes
    /// [`ImportLimits::ratio_grace_bytes`] (real layers compress a few times; zeros compress
    /// about a thousand times).
    pub max_gzip_ratio: u64,
    /// Output allowed before the ratio applies, so small, very compressible files pass.
    pub ratio_grace_bytes: u64,
}

impl Default for ImportLimits {
    /// 4 GiB per stream, 1 GiB per entry, 100:1 past the first 64 MiB.
    fn default() -> Self {
        Self {
            max_uncompressed_bytes: 4 << 30,
            max_entry_bytes: 1 << 30,
            max_gzip_ratio: 100,
            ratio_grace_bytes: 64 << 20,
        }
    }
}

/// Why a stream was refused; carried inside an `io::Error` out of the readers (tar's among
/// them) and turned into [`ImageError::TooLarge`] by [`refused_or`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(String);

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A gzip decoder whose output is bounded by [`ImportLimits`].
pub(crate) struct BoundedGzip<R> {
    decoder: flate2::read::MultiGzDecoder<Counting<R>>,
    compressed: Arc<AtomicU64>,
    produced: u64,
    limits: ImportLimits,
    what: String,
}

impl<R: Read> BoundedGzip<R> {
    /// Decompresses `inner` (gzip), described as `what` in errors.
    pub(crate) fn new(inner: R, limits: ImportLimits, what: impl Into<String>) -> Self {
        let compressed = Arc::new(AtomicU64::new(0));
        Self {
            decoder: flate2::read::MultiGzDecoder::new(Counting {
                inner,
                count: compressed.clone(),
            }),
            compressed,
            produced: 0,
            limits,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for BoundedGzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.produced += n as u64;
        let limits = &self.limits;
        if self.produced > limits.max_uncompressed_bytes {
            return Err(io::Error::other(Refused(format!(
                "{} expands to more than {} bytes uncompressed (the import limit)",
                self.what, limits.max_uncompressed_bytes
            ))));
        }
        let compressed = self.compressed.load(Ordering::Relaxed).max(1);
        if self.produced > limits.ratio_grace_bytes
            && self.produced > compressed.saturating_mul(limits.max_gzip_ratio)
        {
            return Err(io::Error::other(Refused(format!(
                "{} expands more than {}:1 ({} bytes from {compressed} bytes of gzip): \
                 refused as a decompression bomb",
                self.what, limits.max_gzip_ratio, self.produced
            ))));
        }
        Ok(n)
    }
}

/// Checks a tar entry's declared size against [`ImportLimits::max_entry_bytes`].
pub(crate) fn check_entry_size(
    limits: &ImportLimits,
    what: &str,
    size: u64,
) -> Result<(), ImageError> {
    if size > limits.max_entry_bytes {
        return Err(ImageError::TooLarge {
            reason: format!(
                "{what} is {size} bytes, more than the {} bytes an entry may hold",
                limits.max_entry_bytes
            ),
        });
    }
    Ok(())
}

/// The [`ImageError::TooLarge`] inside `error` when a bound refused the stream, else
/// `otherwise(error)`.
pub(crate) fn refused_or(
    error: io::Error,
    otherwise: impl FnOnce(io::Error) -> ImageError,
) -> ImageError {
    match error.get_ref().and_then(|e| e.downcast_ref::<Refused>()) {
        Some(refused) => ImageError::TooLarge {
            reason: refused.0.clone(),
        },
        None => otherwise(error),
    }
}

/// `error` itself, or the [`ImageError::TooLarge`] it carries when it is an I/O error of a
/// bounded stream (as [`ImageStore::ingest_blob`](super::ImageStore::ingest_blob) reports a
/// failed read).
pub(crate) fn surface_refusal(error: ImageError) -> ImageError {
    match error {
        ImageError::Io {
            action,
            path,
            source,
        } => refused_or(source, |source| ImageError::Io {
            action,
            path,
            source,
        }),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip")
    }

    /// Bytes that do not compress (xorshift).
    fn noise(n: usize) -> Vec<u8> {
        let mut state: u32 = 0x9e37_79b9;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    fn small_limits() -> ImportLimits {
        ImportLimits {
            max_uncompressed_bytes: 1 << 20,
            max_entry_bytes: 1 << 20,
            max_gzip_ratio: 100,
            ratio_grace_bytes: 64 << 10,
        }
    }

    fn read_all(bytes: &[u8], limits: ImportLimits) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::new();
        BoundedGzip::new(bytes, limits, "the layer")
            .read_to_end(&mut out)
            .map_err(|e| refused_or(e, |e| panic!("not refused: {e}")))?;
        Ok(out)
    }

    #[test]
    fn ordinary_data_within_the_bounds_decompresses() {
        let data = noise(200_000);
        assert_eq!(read_all(&gzip(&data), small_limits()).expect("read"), data);
    }

    #[test]
    fn zeros_past_the_ratio_are_refused_as_a_bomb() {
        let bomb = gzip(&vec![0u8; 512 << 10]);
        let limits = ImportLimits {
            max_uncompressed_bytes: 1 << 30,
            ..small_limits()
        };
        let error = read_all(&bomb, limits).expect_err("a bomb");
        let message = error.to_string();
        assert!(message.contains("decompression bomb"), "{message}");
        assert!(message.contains("100:1"), "{message}");
    }

    #[test]
    fn output_past_the_size_limit_is_refused() {
        let data = noise(2 << 20);
        let error = read_all(&gzip(&data), small_limits()).expect_err("too large");
        assert!(
            error.to_string().contains("more than 1048576 bytes"),
            "{error}"
        );
    }

    #[test]
    fn an_entry_over_the_limit_is_refused_by_its_declared_size() {
        let limits = small_limits();
        assert!(check_entry_size(&limits, "blobs/sha256/x", 10).is_ok());
        let error = check_entry_size(&limits, "blobs/sha256/x", 2 << 20).expect_err("big");
        assert!(error.to_string().contains("blobs/sha256/x"), "{error}");
    }
}
