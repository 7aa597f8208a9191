//! scrypt (RFC 7914), the key derivation of cosign's private key files.
//!
//! Written here on ring's PBKDF2-HMAC-SHA256 rather than taken from the `scrypt` crate: that
//! crate's `hmac` turns on a feature of `digest` 0.10, which every crate of the workspace
//! that uses `sha2` 0.10 (cranelift and wasmtime among them) would then be rebuilt for. The
//! mixing function is Salsa20/8 with BlockMix and ROMix exactly as the RFC gives them; the
//! tests check the RFC's vectors and one made by Python's `hashlib.scrypt` (OpenSSL) with
//! cosign's parameters.

use std::num::NonZeroU32;

/// Why the parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scrypt parameters N={n} r={r} p={p} are not usable")]
pub(super) struct BadParams {
    n: u64,
    r: u32,
    p: u32,
}

/// The largest N accepted (cosign's high setting, 64 MiB of memory at r = 8).
const MAX_N: u64 = 1 << 16;
/// The largest r and p accepted.
const MAX_R: u32 = 32;
const MAX_P: u32 = 16;

/// `scrypt(passphrase, salt, N, r, p)` into `out`.
pub(super) fn scrypt(
    passphrase: &[u8],
    salt: &[u8],
    n: u64,
    r: u32,
    p: u32,
    out: &mut [u8],
) -> Result<(), BadParams> {
    if n < 2 || !n.is_power_of_two() || n > MAX_N || r == 0 || r > MAX_R || p == 0 || p > MAX_P {
        return Err(BadParams { n, r, p });
    }
    let (n, r, p) = (n as usize, r as usize, p as usize);
    let block_bytes = 128 * r;
    let mut b = vec![0u8; p * block_bytes];
    pbkdf2(passphrase, salt, &mut b);
    for chunk in b.chunks_mut(block_bytes) {
        let mut x: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        ro_mix(&mut x, n, r);
        for (bytes, word) in chunk.chunks_mut(4).zip(&x) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
    }
    pbkdf2(passphrase, &b, out);
    Ok(())
}

fn pbkdf2(secret: &[u8], salt: &[u8], out: &mut [u8]) {
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::MIN,
        salt,
        secret,
        out,
    );
}

/// scryptROMix on `x` (32 * r words).
fn ro_mix(x: &mut [u32], n: usize, r: usize) {
    let words = 32 * r;
    let mut v = vec![0u32; n * words];
    let mut scratch = vec![0u32; words];
    for i in 0..n {
        v[i * words..(i + 1) * words].copy_from_slice(x);
        block_mix(x, &mut scratch, r);
    }
    for _ in 0..n {
        // Integerify: the first word of the last 64-byte block, modulo N (a power of two
        // no larger than 2^16, so one word suffices).
        let j = x[(2 * r - 1) * 16] as usize & (n - 1);
        for (a, b) in x.iter_mut().zip(&v[j * words..(j + 1) * words]) {
            *a ^= b;
        }
        block_mix(x, &mut scratch, r);
    }
}

/// scryptBlockMix: `b` (2r blocks of 16 words) in place; `y` is scratch of the same size.
fn block_mix(b: &mut [u32], y: &mut [u32], r: usize) {
    let mut x = [0u32; 16];
    x.copy_from_slice(&b[(2 * r - 1) * 16..]);
    for i in 0..2 * r {
        for (a, w) in x.iter_mut().zip(&b[i * 16..(i + 1) * 16]) {
            *a ^= w;
        }
        salsa20_8(&mut x);
        // Even blocks go to the first half, odd ones to the second.
        let at = (i / 2 + (i % 2) * r) * 16;
        y[at..at + 16].copy_from_slice(&x);
    }
    b.copy_from_slice(y);
}

/// The Salsa20/8 core.
fn salsa20_8(b: &mut [u32; 16]) {
    let mut x = *b;
    let mut quarter = |a: usize, b: usize, c: usize, d: usize| {
        x[b] ^= x[a].wrapping_add(x[d]).rotate_left(7);
        x[c] ^= x[b].wrapping_add(x[a]).rotate_left(9);
        x[d] ^= x[c].wrapping_add(x[b]).rotate_left(13);
        x[a] ^= x[d].wrapping_add(x[c]).rotate_left(18);
    };
    for _ in 0..4 {
        // Columns.
        quarter(0, 4, 8, 12);
        quarter(5, 9, 13, 1);
        quarter(10, 14, 2, 6);
        quarter(15, 3, 7, 11);
        // Rows.
        quarter(0, 1, 2, 3);
        quarter(5, 6, 7, 4);
        quarter(10, 11, 8, 9);
        quarter(15, 12, 13, 14);
    }
    for (out, mixed) in b.iter_mut().zip(x) {
        *out = out.wrapping_add(mixed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_rfc_7914_vectors_and_cosigns_parameters_give_the_known_keys() {
        let mut out = [0u8; 64];
        scrypt(b"", b"", 16, 1, 1, &mut out).unwrap();
        assert_eq!(
            hex(&out),
            "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442\
             fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"
        );
        scrypt(b"password", b"NaCl", 1024, 8, 16, &mut out).unwrap();
        assert_eq!(
            hex(&out),
            "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162\
             2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
        );
        // Python: hashlib.scrypt(b'correct horse', salt=bytes(range(32)), n=32768, r=8,
        // p=1, maxmem=2**27, dklen=32)
        let salt: Vec<u8> = (0..32).collect();
        let mut key = [0u8; 32];
        scrypt(b"correct horse", &salt, 32768, 8, 1, &mut key).unwrap();
        assert_eq!(
            hex(&key),
            "1f7e3f8177f2ebba25fc61bc2851630b64978195d094bf365e6b5cea7fd2505e"
        );
    }

    #[test]
    fn parameters_that_would_cost_unbounded_memory_are_refused() {
        let mut out = [0u8; 32];
        for (n, r, p) in [
            (1 << 20, 8, 1),
            (3, 8, 1),
            (0, 8, 1),
            (1024, 0, 1),
            (1024, 8, 0),
        ] {
            assert!(scrypt(b"", b"", n, r, p, &mut out).is_err(), "{n} {r} {p}");
        }
    }
}
