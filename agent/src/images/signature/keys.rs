//! cosign's key files: an ECDSA P-256 key pair, the private key as cosign writes it
//! (`cosign generate-key-pair`): PKCS#8 DER sealed with nacl/secretbox under a key derived
//! from the passphrase with scrypt, as JSON in a PEM block `ENCRYPTED SIGSTORE PRIVATE KEY`
//! (older cosign: `ENCRYPTED COSIGN PRIVATE KEY`, also read); the public key as a PEM
//! `PUBLIC KEY` (SubjectPublicKeyInfo). Signatures are ECDSA P-256 with SHA-256, ASN.1 DER,
//! as cosign and containers/image (skopeo, podman) make and check them.
//!
//! The elliptic-curve work is ring's (already the workspace's crypto), secretbox is
//! RustCrypto's `crypto_secretbox` (as the apiserver's encryption at rest), scrypt is
//! [`super::scrypt`]; the parameters are those of secure-systems-lab's `encrypted` package
//! that cosign uses (N = 32768, r = 8, p = 1; 32-byte salt, 24-byte nonce).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self as ring_sig, KeyPair as _};
use serde::{Deserialize, Serialize};

/// The PEM type cosign writes its private keys with.
pub const SIGSTORE_PRIVATE_KEY_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The PEM type older cosign releases wrote; still read.
pub const COSIGN_PRIVATE_KEY_PEM: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// The PEM type of public keys.
pub const PUBLIC_KEY_PEM: &str = "PUBLIC KEY";

/// DER of a P-256 SubjectPublicKeyInfo before its 65-byte uncompressed point: SEQUENCE {
/// SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }. DER is canonical, so every such
/// key starts with exactly these bytes.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// An uncompressed P-256 point: 0x04, x, y.
const P256_POINT_LEN: usize = 65;

const SCRYPT_N: u64 = 1 << 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// cosign reads keys made with N = 2^15 or 2^16; other parameters are refused so a key
/// file cannot make the reader spend unbounded memory.
const SCRYPT_ACCEPTED_N: [u64; 2] = [1 << 15, 1 << 16];
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// Why a key cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file is not PEM.
    #[error("not a PEM file: {0}")]
    NotPem(String),
    /// A PEM block of another type.
    #[error("a PEM block of type {found:?} where {expected} was expected")]
    WrongPemType {
        /// What the file holds.
        found: String,
        /// What was wanted.
        expected: &'static str,
    },
    /// A public key that is not ECDSA P-256.
    #[error(
        "not an ECDSA P-256 public key (cosign's default); RSA and Ed25519 keys are not \
         supported"
    )]
    UnsupportedPublicKey,
    /// The sealed private key does not parse.
    #[error("the encrypted private key is malformed: {0}")]
    Malformed(String),
    /// The passphrase does not open the private key (or the file was altered).
    #[error("the passphrase is wrong (or the key file was altered): it does not decrypt the key")]
    WrongPassphrase,
    /// The decrypted key is not an ECDSA P-256 PKCS#8 key ring can use.
    #[error("the private key is not an ECDSA P-256 key: {0}")]
    UnsupportedPrivateKey(String),
    /// Random bytes or a signature could not be made.
    #[error("{0} failed")]
    Crypto(&'static str),
}

/// An ECDSA P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    point: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (what `cosign generate-key-pair` writes to `cosign.pub`).
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        let block = pem::parse(pem).map_err(|e| KeyError::NotPem(e.to_string()))?;
        if block.tag() != PUBLIC_KEY_PEM {
            return Err(KeyError::WrongPemType {
                found: block.tag().to_string(),
                expected: PUBLIC_KEY_PEM,
            });
        }
        PublicKey::from_spki_der(block.contents())
    }

    fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == P256_POINT_LEN && point[0] == 0x04 => Ok(PublicKey {
                point: point.to_vec(),
            }),
            _ => Err(KeyError::UnsupportedPublicKey),
        }
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        der
    }

    /// The PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(PUBLIC_KEY_PEM, self.to_spki_der()))
    }

    /// `sha256:<hex>` of the SubjectPublicKeyInfo DER: names the key in messages.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest as _, Sha256};
        format!("sha256:{:x}", Sha256::digest(self.to_spki_der()))
    }

    /// Whether `signature` (ASN.1 DER ECDSA) signs `message` (hashed with SHA-256).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ring_sig::UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

/// An ECDSA P-256 private key.
pub struct PrivateKey {
    pkcs8: Vec<u8>,
    pair: ring_sig::EcdsaKeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.public_key().fingerprint())
    }
}

/// The JSON inside the PEM block (secure-systems-lab `encrypted`'s format).
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::BASE64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Crypto("reading random bytes"))?;
    Ok(bytes)
}

fn derive_key(passphrase: &[u8], salt: &[u8], n: u64) -> Result<[u8; 32], KeyError> {
    let mut key = [0u8; 32];
    super::scrypt::scrypt(passphrase, salt, n, SCRYPT_R, SCRYPT_P, &mut key)
        .map_err(|e| KeyError::Malformed(e.to_string()))?;
    Ok(key)
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Result<PrivateKey, KeyError> {
        let rng = SystemRandom::new();
        let document =
            ring_sig::EcdsaKeyPair::generate_pkcs8(&ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .map_err(|_| KeyError::Crypto("generating a key"))?;
        PrivateKey::from_pkcs8(document.as_ref().to_vec())
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<PrivateKey, KeyError> {
        let pair = ring_sig::EcdsaKeyPair::from_pkcs8(
            &ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| KeyError::UnsupportedPrivateKey(e.to_string()))?;
        Ok(PrivateKey { pkcs8, pair })
    }

    /// Reads cosign's encrypted private key file with `passphrase`.
    pub fn from_encrypted_pem(pem: &[u8], passphrase: &[u8]) -> Result<PrivateKey, KeyError> {
        let block = pem::parse(pem).map_err(|e| KeyError::NotPem(e.to_string()))?;
        if block.tag() != SIGSTORE_PRIVATE_KEY_PEM && block.tag() != COSIGN_PRIVATE_KEY_PEM {
            return Err(KeyError::WrongPemType {
                found: block.tag().to_string(),
                expected: SIGSTORE_PRIVATE_KEY_PEM,
            });
        }
        let sealed: Sealed = serde_json::from_slice(block.contents())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        if sealed.kdf.name != "scrypt" {
            return Err(KeyError::Malformed(format!(
                "key derivation {:?} (only scrypt)",
                sealed.kdf.name
            )));
        }
        let ScryptParams { n, r, p } = sealed.kdf.params;
        if !SCRYPT_ACCEPTED_N.contains(&n) || r != SCRYPT_R || p != SCRYPT_P {
            return Err(KeyError::Malformed(format!(
                "scrypt parameters N={n} r={r} p={p} (cosign's are N=32768 or 65536, r=8, p=1)"
            )));
        }
        if sealed.cipher.name != "nacl/secretbox" {
            return Err(KeyError::Malformed(format!(
                "cipher {:?} (only nacl/secretbox)",
                sealed.cipher.name
            )));
        }
        let nonce: [u8; NONCE_LEN] = sealed
            .cipher
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Malformed("the nonce is not 24 bytes".into()))?;
        let key = derive_key(passphrase, &sealed.kdf.salt, n)?;
        let pkcs8 = open(&key, &nonce, &sealed.ciphertext)?;
        PrivateKey::from_pkcs8(pkcs8)
    }

    /// The key encrypted with `passphrase`, as cosign writes it (`cosign.key`).
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<String, KeyError> {
        let salt: [u8; SALT_LEN] = random()?;
        let nonce: [u8; NONCE_LEN] = random()?;
        let key = derive_key(passphrase, &salt, SCRYPT_N)?;
        let sealed = Sealed {
            kdf: Kdf {
                name: "scrypt".into(),
                params: ScryptParams {
                    n: SCRYPT_N,
                    r: SCRYPT_R,
                    p: SCRYPT_P,
                },
                salt: salt.to_vec(),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: nonce.to_vec(),
            },
            ciphertext: seal(&key, &nonce, &self.pkcs8)?,
        };
        let json =
            serde_json::to_vec(&sealed).map_err(|_| KeyError::Crypto("encoding the sealed key"))?;
        Ok(pem::encode(&pem::Pem::new(SIGSTORE_PRIVATE_KEY_PEM, json)))
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `message` (ECDSA P-256, SHA-256, ASN.1 DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Crypto("signing"))
    }
}

fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], plain: &[u8]) -> Result<Vec<u8>, KeyError> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.into());
    cipher
        .encrypt(nonce.into(), plain)
        .map_err(|_| KeyError::Crypto("sealing the key"))
}

fn open(key: &[u8; 32], nonce: &[u8; NONCE_LEN], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.into());
    cipher
        .decrypt(nonce.into(), sealed)
        .map_err(|_| KeyError::WrongPassphrase)
}

/// Base64 of a signature, as the `dev.cosignproject.cosign/signature` annotation holds it.
pub fn encode_signature(signature: &[u8]) -> String {
    BASE64.encode(signature)
}

/// The signature bytes of an annotation (standard base64; line breaks ignored).
pub fn decode_signature(text: &str) -> Option<Vec<u8>> {
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(clean).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_survives_its_encrypted_pem_and_signs_what_its_public_key_verifies() {
        let key = PrivateKey::generate().unwrap();
        let pem = key.to_encrypted_pem(b"correct horse").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let read = PrivateKey::from_encrypted_pem(pem.as_bytes(), b"correct horse").unwrap();
        assert_eq!(read.public_key(), key.public_key());
        let public = PublicKey::from_pem(key.public_key().to_pem().as_bytes()).unwrap();
        let signature = read.sign(b"payload").unwrap();
        assert!(public.verifies(b"payload", &signature));
        assert!(!public.verifies(b"payload!", &signature));
        let other = PrivateKey::generate().unwrap().public_key();
        assert!(!other.verifies(b"payload", &signature));
    }

    #[test]
    fn a_wrong_passphrase_or_an_altered_file_does_not_open_the_key() {
        let key = PrivateKey::generate().unwrap();
        let pem = key.to_encrypted_pem(b"one").unwrap();
        assert!(matches!(
            PrivateKey::from_encrypted_pem(pem.as_bytes(), b"two"),
            Err(KeyError::WrongPassphrase)
        ));
        let block = pem::parse(&pem).unwrap();
        let mut sealed: serde_json::Value = serde_json::from_slice(block.contents()).unwrap();
        sealed["kdf"]["params"]["N"] = serde_json::json!(1u64 << 30);
        let bomb = pem::encode(&pem::Pem::new(
            SIGSTORE_PRIVATE_KEY_PEM,
            serde_json::to_vec(&sealed).unwrap(),
        ));
        let error = PrivateKey::from_encrypted_pem(bomb.as_bytes(), b"one").unwrap_err();
        assert!(error.to_string().contains("scrypt parameters"), "{error}");
    }

    #[test]
    fn only_p256_public_keys_in_pem_are_read() {
        assert!(matches!(
            PublicKey::from_pem(b"not pem"),
            Err(KeyError::NotPem(_))
        ));
        let private = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        assert!(matches!(
            PublicKey::from_pem(private.as_bytes()),
            Err(KeyError::WrongPemType { .. })
        ));
        // An Ed25519 SubjectPublicKeyInfo.
        let mut ed = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        ed.extend([7u8; 32]);
        let ed = pem::encode(&pem::Pem::new("PUBLIC KEY", ed));
        assert!(matches!(
            PublicKey::from_pem(ed.as_bytes()),
            Err(KeyError::UnsupportedPublicKey)
        ));
    }
}
