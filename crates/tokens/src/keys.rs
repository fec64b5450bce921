//! Key material: PEM and JWKS files read into keys pinned to one algorithm, and fresh Ed25519
//! pairs.
//!
//! Every key is checked when it is loaded (right type, right size, a valid point), so a bad file
//! fails at startup with the setting named instead of failing every request later.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use zeroize::Zeroizing;

use crate::TokenError;

/// Smallest RSA modulus accepted from an external issuer, in bytes (2048 bits): shorter keys
/// are factorable with real but attainable effort.
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// DER prefix of a PKCS#8 (RFC 8410) Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an SPKI (RFC 8410) Ed25519 public key; the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A public key (or HS256 secret) that verifies exactly one algorithm.
pub(crate) struct VerifyKey {
    pub alg: Algorithm,
    /// The JWKS `kid`; `None` for PEM files and for JWKS entries without one.
    pub kid: Option<String>,
    pub key: DecodingKey,
}

pub(crate) fn read_file(path: &Path, setting: &str) -> Result<Vec<u8>, TokenError> {
    std::fs::read(path)
        .map_err(|e| TokenError::Config(format!("{setting}: cannot read {}: {e}", path.display())))
}

/// The label of the first `-----BEGIN …-----` line, to refuse private keys where public ones
/// belong (jsonwebtoken would take an RSA private key as a public one and fail every request).
fn pem_label(pem: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    Some(&rest[..rest.find("-----")?])
}

fn refuse_private(pem: &[u8], where_: &str) -> Result<(), TokenError> {
    match pem_label(pem) {
        Some(label) if label.contains("PRIVATE") => Err(TokenError::Config(format!(
            "{where_} holds a private key; give the public key (PUBLIC KEY PEM) instead"
        ))),
        _ => Ok(()),
    }
}

/// The gateway's own public key: EdDSA or ES256, as `jwt.algorithm` says.
pub(crate) fn own_public_key(
    path: &Path,
    alg: Algorithm,
    setting: &str,
) -> Result<VerifyKey, TokenError> {
    let where_ = format!("{setting} ({})", path.display());
    let pem = read_file(path, setting)?;
    refuse_private(&pem, &where_)?;
    let key = match alg {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => DecodingKey::from_ec_pem(&pem),
    }
    .map_err(|_| {
        TokenError::Config(format!(
            "{where_} is not a {} public key PEM (SPKI, -----BEGIN PUBLIC KEY-----)",
            alg_key_kind(alg)
        ))
    })?;
    check_key(alg, &key).map_err(|why| TokenError::Config(format!("{where_}: {why}")))?;
    Ok(VerifyKey {
        alg,
        kid: None,
        key,
    })
}

/// A public key PEM of an external issuer; its type decides the algorithm (Ed25519 → EdDSA,
/// P-256 → ES256, RSA → RS256).
pub(crate) fn external_pem_key(path: &Path, where_: &str) -> Result<VerifyKey, TokenError> {
    let pem = read_file(path, where_)?;
    let where_ = format!("{where_} ({})", path.display());
    refuse_private(&pem, &where_)?;
    // Each constructor checks the key's OID, so at most one of them accepts a given file.
    let (alg, key) = if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        (Algorithm::EdDSA, k)
    } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, k)
    } else if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, k)
    } else {
        return Err(TokenError::Config(format!(
            "{where_} is not an Ed25519, P-256 or RSA public key PEM"
        )));
    };
    check_key(alg, &key).map_err(|why| TokenError::Config(format!("{where_}: {why}")))?;
    Ok(VerifyKey {
        alg,
        kid: None,
        key,
    })
}

/// The usable signing keys of a JWKS file. Entries that cannot verify RS256, ES256 or EdDSA
/// tokens (encryption keys, symmetric keys, other curves) are skipped with a warning, because
/// identity providers routinely publish such keys next to the ones that matter.
pub(crate) fn jwks_keys(path: &Path, where_: &str) -> Result<Vec<VerifyKey>, TokenError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let bytes = read_file(path, where_)?;
    let doc: Document = serde_json::from_slice(&bytes).map_err(|e| {
        TokenError::Config(format!(
            "{where_} ({}) is not a JWKS document ({{\"keys\": [...]}}; error at line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    let mut keys = Vec::new();
    for (index, value) in doc.keys.into_iter().enumerate() {
        let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        match jwk_key(value) {
            Ok(k) => keys.push(k),
            Err(why) => tracing::warn!(
                file = %path.display(),
                index,
                kid = kid.as_deref().unwrap_or("-"),
                reason = why,
                "skipping JWKS key"
            ),
        }
    }
    Ok(keys)
}

fn jwk_key(value: serde_json::Value) -> Result<VerifyKey, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| "not a JWK".to_owned())?;
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("not a signature key (use is not \"sig\")".into());
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        // A shared secret published next to public keys would let anyone who reads the JWKS
        // mint tokens.
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are never accepted from a JWKS".into());
        }
        _ => return Err("unsupported key type or curve".into()),
    };
    // A key the issuer declares for another algorithm (RS512, PS256, …) is not used for ours:
    // the algorithm a key verifies is pinned, never taken from the token.
    if let Some(declared) = jwk.common.key_algorithm
        && declared != KeyAlgorithm::from(alg)
    {
        return Err(format!(
            "declared alg {declared} is not supported (RS256, ES256, EdDSA)"
        ));
    }
    let key =
        DecodingKey::from_jwk(&jwk).map_err(|_| "key parameters are not base64url".to_owned())?;
    check_key(alg, &key)?;
    Ok(VerifyKey {
        alg,
        kid: jwk.common.key_id,
        key,
    })
}

fn alg_key_kind(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "Ed25519",
        Algorithm::ES256 => "P-256",
        Algorithm::RS256 => "RSA",
        _ => "supported",
    }
}

/// Checks that `key` can verify `alg`. The sizes are checked before any use because the
/// rust_crypto Ed25519 verifier slices the key to 32 bytes and would panic on a shorter one.
fn check_key(alg: Algorithm, key: &DecodingKey) -> Result<(), String> {
    match alg {
        Algorithm::EdDSA => {
            if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
                return Err("not an Ed25519 key (32 bytes)".into());
            }
        }
        Algorithm::ES256 => {
            let b = key.try_get_as_bytes().map_err(|_| "not an EC key")?;
            let p256 = (b.len() == 65 && b[0] == 0x04) || (b.len() == 33 && matches!(b[0], 2 | 3));
            if !p256 {
                return Err("not a P-256 key (only ES256 is supported for EC keys)".into());
            }
        }
        Algorithm::RS256 => {
            let jwk = Jwk::from_decoding_key(key, Some(Algorithm::RS256))
                .map_err(|_| "not a valid RSA public key")?;
            let AlgorithmParameters::RSA(p) = jwk.algorithm else {
                return Err("not an RSA key".into());
            };
            let n = URL_SAFE_NO_PAD
                .decode(p.n)
                .map_err(|_| "RSA modulus is not base64url")?;
            let bytes = n.iter().skip_while(|b| **b == 0).count();
            if bytes < MIN_RSA_MODULUS_BYTES {
                return Err(format!(
                    "RSA key of {} bits is too short (at least 2048)",
                    bytes * 8
                ));
            }
        }
        _ => return Err("unsupported algorithm".into()),
    }
    // Building a verifier decodes the point (EdDSA, ES256) and fails for one not on the curve.
    // The dummy signature only makes `verify` answer false; an error means the key is unusable.
    jsonwebtoken::crypto::verify("AAAA", b"probe", key, alg)
        .map(|_| ())
        .map_err(|_| format!("not a valid {} public key", alg_key_kind(alg)))
}

/// Signing key of the issuer, with the setting named in every error.
pub(crate) fn signing_key_from_pem(
    path: &Path,
    alg: Algorithm,
    setting: &str,
) -> Result<EncodingKey, TokenError> {
    let pem = Zeroizing::new(read_file(path, setting)?);
    let where_ = format!("{setting} ({})", path.display());
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_ec_pem(&pem),
    }
    .map_err(|_| {
        TokenError::Config(format!(
            "{where_} is not a {} private key PEM (PKCS#8, -----BEGIN PRIVATE KEY-----)",
            alg_key_kind(alg)
        ))
    })?;
    Ok(key)
}

/// See [`crate::generate_ed25519_pem`].
pub(crate) fn generate_ed25519_pem() -> Result<(String, String), TokenError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|e| TokenError::Internal(format!("the OS random generator failed: {e}")))?;
    let mut private_der = Zeroizing::new(Vec::with_capacity(48));
    private_der.extend_from_slice(&ED25519_PKCS8_PREFIX);
    private_der.extend_from_slice(seed.as_slice());

    // The public key is derived by jsonwebtoken's own Ed25519 backend, so no second copy of
    // the curve code (or a clashing rand_core) enters the build.
    let signing = EncodingKey::from_ed_der(&private_der);
    let jwk = Jwk::from_encoding_key(&signing, Algorithm::EdDSA)
        .map_err(|e| TokenError::Internal(format!("cannot derive the Ed25519 public key: {e}")))?;
    let AlgorithmParameters::OctetKeyPair(params) = jwk.algorithm else {
        return Err(TokenError::Internal(
            "Ed25519 public key derivation gave no OKP key".into(),
        ));
    };
    let public = URL_SAFE_NO_PAD
        .decode(params.x)
        .ok()
        .filter(|p| p.len() == 32)
        .ok_or_else(|| TokenError::Internal("Ed25519 public key is not 32 bytes".into()))?;
    let mut public_der = Vec::with_capacity(44);
    public_der.extend_from_slice(&ED25519_SPKI_PREFIX);
    public_der.extend_from_slice(&public);

    Ok((
        pem_encode("PRIVATE KEY", &private_der),
        pem_encode("PUBLIC KEY", &public_der),
    ))
}

/// RFC 7468 textual encoding: base64 in 64-column lines between BEGIN/END labels.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = format!("-----BEGIN {label}-----\n");
    // base64 output is ASCII, so any byte offset is a character boundary.
    for start in (0..b64.len()).step_by(64) {
        out.push_str(&b64[start..b64.len().min(start + 64)]);
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
