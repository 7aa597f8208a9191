//! The value transformers of an EncryptionConfiguration: aescbc, aesgcm, secretbox and
//! identity, with kube-apiserver's storage format so a store written by one can be read by
//! the other's rules: `k8s:enc:<provider>:v1:<key name>:` then
//! - aescbc: a random 16-byte IV and AES-CBC with PKCS#7 padding;
//! - aesgcm: a random 12-byte nonce and AES-GCM with the store key as associated data;
//! - secretbox: a random 24-byte nonce and XSalsa20-Poly1305.
//!
//! These are RustCrypto's audited implementations; nothing here is hand-rolled crypto.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use rand::RngCore;

/// The prefix every encrypted value starts with.
pub(super) const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// A cipher and its key.
#[derive(Clone)]
enum Cipher {
    AesCbc(Vec<u8>),
    AesGcm(Vec<u8>),
    SecretBox([u8; 32]),
}

/// One named key of one provider: the unit that encrypts a value or recognises (by its
/// prefix) a value it encrypted.
#[derive(Clone)]
pub struct KeyTransformer {
    prefix: Vec<u8>,
    cipher: Cipher,
}

impl std::fmt::Debug for KeyTransformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("KeyTransformer")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}

/// Why a value cannot be encrypted or decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransformError {
    /// The ciphertext is damaged or was written with another key of the same name.
    #[error("unable to decrypt {key} with {prefix}: the data is damaged or the key changed")]
    Decrypt {
        /// The store key.
        key: String,
        /// The provider/key prefix tried.
        prefix: String,
    },
    /// The value is encrypted with a key no provider holds any more.
    #[error(
        "no key of the encryption configuration decrypts {key} (it was written with {prefix}; \
         was that key removed from the EncryptionConfiguration?)"
    )]
    NoMatchingKey {
        /// The store key.
        key: String,
        /// The prefix the value carries.
        prefix: String,
    },
    /// The value is not encrypted and the configuration has no identity provider to read it.
    #[error(
        "{key} is stored unencrypted and the EncryptionConfiguration has no identity provider \
         to read it (add `- identity: {{}}` as the last provider)"
    )]
    NotEncrypted {
        /// The store key.
        key: String,
    },
    /// Encryption failed (a key of the wrong length slipped through; never expected).
    #[error("unable to encrypt {key}: {reason}")]
    Encrypt {
        /// The store key.
        key: String,
        /// What went wrong.
        reason: String,
    },
}

/// Why a key in the configuration is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{provider} key {name:?}: {reason}")]
pub struct KeyError {
    provider: &'static str,
    name: String,
    reason: String,
}

impl KeyTransformer {
    /// An aescbc key (16, 24 or 32 bytes).
    pub fn aescbc(name: &str, secret: Vec<u8>) -> Result<Self, KeyError> {
        check_aes("aescbc", name, &secret)?;
        Ok(Self::new("aescbc", name, Cipher::AesCbc(secret)))
    }

    /// An aesgcm key (16, 24 or 32 bytes).
    pub fn aesgcm(name: &str, secret: Vec<u8>) -> Result<Self, KeyError> {
        check_aes("aesgcm", name, &secret)?;
        Ok(Self::new("aesgcm", name, Cipher::AesGcm(secret)))
    }

    /// A secretbox key (32 bytes).
    pub fn secretbox(name: &str, secret: Vec<u8>) -> Result<Self, KeyError> {
        let key: [u8; 32] = secret.try_into().map_err(|s: Vec<u8>| KeyError {
            provider: "secretbox",
            name: name.to_string(),
            reason: format!("must be 32 bytes, is {}", s.len()),
        })?;
        Ok(Self::new("secretbox", name, Cipher::SecretBox(key)))
    }

    fn new(provider: &str, name: &str, cipher: Cipher) -> Self {
        KeyTransformer {
            prefix: format!("k8s:enc:{provider}:v1:{name}:").into_bytes(),
            cipher,
        }
    }

    /// The prefix values this key wrote start with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Encrypts `plain` stored at `store_key`: prefix, nonce/IV, ciphertext.
    pub fn encrypt(&self, store_key: &str, plain: &[u8]) -> Result<Vec<u8>, TransformError> {
        let failed = |reason: String| TransformError::Encrypt {
            key: store_key.to_string(),
            reason,
        };
        let mut out = self.prefix.clone();
        match &self.cipher {
            Cipher::AesCbc(key) => {
                let mut iv = [0u8; 16];
                rand::rng().fill_bytes(&mut iv);
                out.extend_from_slice(&iv);
                let sealed = match key.len() {
                    16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
                        .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plain)),
                    24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, &iv)
                        .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plain)),
                    _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
                        .map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plain)),
                }
                .map_err(|e| failed(e.to_string()))?;
                out.extend_from_slice(&sealed);
            }
            Cipher::AesGcm(key) => {
                let mut nonce = [0u8; 12];
                rand::rng().fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                let payload = Payload {
                    msg: plain,
                    aad: store_key.as_bytes(),
                };
                let sealed = gcm_encrypt(key, &nonce, payload).map_err(failed)?;
                out.extend_from_slice(&sealed);
            }
            Cipher::SecretBox(key) => {
                let mut nonce = [0u8; 24];
                rand::rng().fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                let sealed = crypto_secretbox::XSalsa20Poly1305::new(key.into())
                    .encrypt(&nonce.into(), plain)
                    .map_err(|e| failed(e.to_string()))?;
                out.extend_from_slice(&sealed);
            }
        }
        Ok(out)
    }

    /// Decrypts `stored` (which starts with this key's prefix) of `store_key`.
    pub fn decrypt(&self, store_key: &str, stored: &[u8]) -> Result<Vec<u8>, TransformError> {
        let failed = || TransformError::Decrypt {
            key: store_key.to_string(),
            prefix: String::from_utf8_lossy(&self.prefix).into_owned(),
        };
        let body = stored.strip_prefix(&self.prefix[..]).ok_or_else(failed)?;
        match &self.cipher {
            Cipher::AesCbc(key) => {
                if body.len() < 32 || body.len() % 16 != 0 {
                    return Err(failed());
                }
                let (iv, sealed) = body.split_at(16);
                match key.len() {
                    16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
                        .ok()
                        .and_then(|c| c.decrypt_padded_vec_mut::<Pkcs7>(sealed).ok()),
                    24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
                        .ok()
                        .and_then(|c| c.decrypt_padded_vec_mut::<Pkcs7>(sealed).ok()),
                    _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
                        .ok()
                        .and_then(|c| c.decrypt_padded_vec_mut::<Pkcs7>(sealed).ok()),
                }
                .ok_or_else(failed)
            }
            Cipher::AesGcm(key) => {
                if body.len() < 12 + 16 {
                    return Err(failed());
                }
                let (nonce, sealed) = body.split_at(12);
                let payload = Payload {
                    msg: sealed,
                    aad: store_key.as_bytes(),
                };
                gcm_decrypt(key, nonce, payload).ok_or_else(failed)
            }
            Cipher::SecretBox(key) => {
                if body.len() < 24 + 16 {
                    return Err(failed());
                }
                let (nonce, sealed) = body.split_at(24);
                let nonce: [u8; 24] = nonce.try_into().map_err(|_| failed())?;
                crypto_secretbox::XSalsa20Poly1305::new(key.into())
                    .decrypt(&nonce.into(), sealed)
                    .map_err(|_| failed())
            }
        }
    }
}

fn check_aes(provider: &'static str, name: &str, secret: &[u8]) -> Result<(), KeyError> {
    if matches!(secret.len(), 16 | 24 | 32) {
        Ok(())
    } else {
        Err(KeyError {
            provider,
            name: name.to_string(),
            reason: format!("must be 16, 24 or 32 bytes, is {}", secret.len()),
        })
    }
}

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

fn gcm_encrypt(key: &[u8], nonce: &[u8; 12], payload: Payload<'_, '_>) -> Result<Vec<u8>, String> {
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(|e| e.to_string())?
            .encrypt(nonce, payload),
        24 => Aes192Gcm::new_from_slice(key)
            .map_err(|e| e.to_string())?
            .encrypt(nonce, payload),
        _ => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(|e| e.to_string())?
            .encrypt(nonce, payload),
    }
    .map_err(|e| e.to_string())
}

fn gcm_decrypt(key: &[u8], nonce: &[u8], payload: Payload<'_, '_>) -> Option<Vec<u8>> {
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce, payload),
        24 => Aes192Gcm::new_from_slice(key).ok()?.decrypt(nonce, payload),
        _ => aes_gcm::Aes256Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce, payload),
    }
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<KeyTransformer> {
        let mut keys = Vec::new();
        for len in [16, 24, 32] {
            keys.push(KeyTransformer::aescbc("k", vec![7; len]).unwrap());
            keys.push(KeyTransformer::aesgcm("k", vec![7; len]).unwrap());
        }
        keys.push(KeyTransformer::secretbox("k", vec![7; 32]).unwrap());
        keys
    }

    #[test]
    fn every_provider_round_trips_and_hides_the_value() {
        let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#;
        for t in all() {
            let sealed = t.encrypt("/registry/core/secrets/ns/s", plain).unwrap();
            assert!(sealed.starts_with(t.prefix()), "{t:?}");
            assert!(
                !sealed.windows(8).any(|w| w == b"aHVudGVy"),
                "{t:?} leaks the value"
            );
            let again = t.encrypt("/registry/core/secrets/ns/s", plain).unwrap();
            assert_ne!(sealed, again, "{t:?}: a fresh nonce every time");
            let opened = t.decrypt("/registry/core/secrets/ns/s", &sealed).unwrap();
            assert_eq!(opened, plain);
        }
    }

    #[test]
    fn tampering_and_the_wrong_key_are_errors_not_garbage() {
        for t in all() {
            let mut sealed = t.encrypt("/k", b"value").unwrap();
            let last = sealed.len() - 1;
            sealed[last] ^= 1;
            assert!(t.decrypt("/k", &sealed).is_err(), "{t:?}");
        }
        let a = KeyTransformer::secretbox("k", vec![1; 32]).unwrap();
        let b = KeyTransformer::secretbox("k", vec![2; 32]).unwrap();
        let sealed = a.encrypt("/k", b"value").unwrap();
        assert!(matches!(
            b.decrypt("/k", &sealed),
            Err(TransformError::Decrypt { .. })
        ));
    }

    #[test]
    fn aesgcm_binds_the_value_to_its_store_key() {
        let t = KeyTransformer::aesgcm("k", vec![3; 32]).unwrap();
        let sealed = t.encrypt("/registry/core/secrets/a/s", b"value").unwrap();
        assert!(t.decrypt("/registry/core/secrets/b/s", &sealed).is_err());
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        let e = KeyTransformer::aescbc("key1", vec![0; 10]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "aescbc key \"key1\": must be 16, 24 or 32 bytes, is 10"
        );
        assert!(KeyTransformer::secretbox("k", vec![0; 16]).is_err());
    }
}
