//! Issue and verify real tokens with real keys: Ed25519 from `generate_ed25519_pem`, P-256 and
//! RSA from the RustCrypto crates jsonwebtoken already builds, HS256 from a fixed secret.
// Test code: a panic is a failed test. (`.clippy.toml` allows unwrap in #[test] fns; this
// covers the helpers around them.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use infergate_config::{ExternalIssuer, JwtAlgorithm, JwtSettings, Secret};
use infergate_keystore::KeyRecord;
use infergate_policy::Role;
use infergate_tokens::{
    TokenClaims, TokenError, TokenIssuer, TokenVerifier, generate_ed25519_pem, looks_like_jwt,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tempfile::TempDir;

const ISSUER: &str = "infergate";
const AUDIENCE: &str = "infergate-gateway";
const HS_SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";
const EXT_ISSUER: &str = "https://idp.example.test/";
const EXT_AUDIENCE: &str = "infergate-api";

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write fixture");
        path
    }
}

fn base_settings(algorithm: JwtAlgorithm) -> JwtSettings {
    JwtSettings {
        enabled: true,
        algorithm,
        private_key_file: None,
        public_key_file: None,
        secret: None,
        secret_file: None,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        ttl: Duration::from_secs(900),
        leeway: Duration::from_secs(5),
        external_issuers: Vec::new(),
    }
}

/// Ed25519 settings with a fresh key pair; also returns the public PEM (for confusion tests).
fn ed_settings(env: &Env) -> (JwtSettings, String) {
    let (private, public) = generate_ed25519_pem().expect("generate key pair");
    let mut s = base_settings(JwtAlgorithm::EdDSA);
    s.private_key_file = Some(env.write("jwt-private.pem", &private));
    s.public_key_file = Some(env.write("jwt-public.pem", &public));
    (s, public)
}

fn hs_settings() -> JwtSettings {
    let mut s = base_settings(JwtAlgorithm::HS256);
    s.secret = Some(Secret::new(HS_SECRET));
    s
}

fn p256_pems() -> (String, String) {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let private = secret.to_pkcs8_pem(LineEnding::LF).expect("p256 pkcs8");
    let public = secret
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("p256 spki");
    (private.to_string(), public)
}

/// One 2048-bit RSA key for the whole file: generating it is the slowest step here.
fn rsa_pems() -> &'static (String, String) {
    static PAIR: OnceLock<(String, String)> = OnceLock::new();
    PAIR.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("rsa keygen");
        let private = key.to_pkcs8_pem(LineEnding::LF).expect("rsa pkcs8");
        let public = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("rsa spki");
        (private.to_string(), public)
    })
}

fn record() -> KeyRecord {
    let mut r = KeyRecord::new("k7q2m9x1q0ab", "ci runner", Role::User, "cli");
    r.models = Some(vec!["llama3".into(), "mistral".into()]);
    r
}

fn issuer(s: &JwtSettings) -> TokenIssuer {
    TokenIssuer::from_settings(s).expect("issuer from settings")
}

fn verifier(s: &JwtSettings) -> TokenVerifier {
    TokenVerifier::from_settings(s).expect("verifier from settings")
}

fn err<T: std::fmt::Debug>(r: Result<T, TokenError>) -> TokenError {
    r.expect_err("expected an error")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn header_of(token: &str) -> Value {
    let h = URL_SAFE_NO_PAD
        .decode(&segments(token)[0])
        .expect("header b64");
    serde_json::from_slice(&h).expect("header json")
}

fn payload_of(token: &str) -> Value {
    let p = URL_SAFE_NO_PAD
        .decode(&segments(token)[1])
        .expect("payload b64");
    serde_json::from_slice(&p).expect("payload json")
}

/// The raw 32-byte Ed25519 key at the end of an SPKI PEM, for writing it into a JWKS.
fn ed_public_x(public_pem: &str) -> String {
    let body: String = public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).expect("pem body");
    assert_eq!(der.len(), 44);
    URL_SAFE_NO_PAD.encode(&der[12..])
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn external_claims(role: Option<&str>) -> Value {
    let now = now().timestamp();
    let mut c = json!({
        "sub": "user-42@idp",
        "iss": EXT_ISSUER,
        "aud": EXT_AUDIENCE,
        "exp": now + 300,
    });
    if let Some(r) = role {
        c["role"] = json!(r);
    }
    c
}

struct ExternalEd {
    settings: JwtSettings,
    signing: EncodingKey,
    _env: Env,
}

/// Own Ed25519 keys plus one external issuer whose JWKS holds an Ed25519 key `ext-1` (and two
/// entries that must be skipped: a symmetric key and an encryption key).
fn external_ed(default_role: Option<Role>) -> ExternalEd {
    let env = Env::new();
    let (mut s, _) = ed_settings(&env);
    let (ext_private, ext_public) = generate_ed25519_pem().expect("external key pair");
    let (_, enc_public) = generate_ed25519_pem().expect("encryption key");
    let jwks = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "hmac"},
        {"kty": "OKP", "crv": "Ed25519", "x": ed_public_x(&enc_public), "kid": "enc-1", "use": "enc"},
        {"kty": "OKP", "crv": "Ed25519", "x": ed_public_x(&ext_public), "kid": "ext-1", "use": "sig", "alg": "EdDSA"},
    ]});
    let jwks_file = env.write("idp-jwks.json", &jwks.to_string());
    s.external_issuers.push(ExternalIssuer {
        issuer: EXT_ISSUER.into(),
        audience: EXT_AUDIENCE.into(),
        jwks_file: Some(jwks_file),
        public_key_files: Vec::new(),
        default_role,
    });
    ExternalEd {
        settings: s,
        signing: EncodingKey::from_ed_pem(ext_private.as_bytes()).expect("external signing key"),
        _env: env,
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn ed25519_round_trip() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let at = now();
    let (token, claims) = issuer(&s).issue(&record(), at).expect("issue");

    assert!(looks_like_jwt(&token));
    assert_eq!(header_of(&token)["alg"], "EdDSA");
    assert_eq!(claims.sub, "k7q2m9x1q0ab");
    assert_eq!(claims.role, Role::User);
    assert_eq!(claims.models, Some(vec!["llama3".into(), "mistral".into()]));
    assert_eq!(claims.iat, at.timestamp());
    assert_eq!(claims.nbf, at.timestamp());
    assert_eq!(claims.exp, at.timestamp() + 900, "ttl respected");
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, AUDIENCE);
    let jti = uuid::Uuid::parse_str(&claims.jti).expect("jti is a uuid");
    assert_eq!(jti.get_version_num(), 4);

    let verified = verifier(&s).verify(&token).expect("verify");
    assert!(!verified.external);
    assert_eq!(verified.claims, claims);
}

#[test]
fn exp_never_beyond_key_expiry() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let at = now();
    let mut r = record();
    // 90.7 s left on the key: shorter than the 900 s TTL, and not a whole second.
    let key_expiry = at + TimeDelta::milliseconds(90_700);
    r.expires_at = Some(key_expiry);
    let (token, claims) = issuer(&s).issue(&r, at).expect("issue");
    assert_eq!(claims.exp, key_expiry.timestamp());
    assert!(DateTime::from_timestamp(claims.exp, 0).expect("ts") <= key_expiry);
    assert_eq!(verifier(&s).verify(&token).expect("verify").claims, claims);

    // A key that outlives the TTL does not stretch the token.
    r.expires_at = Some(at + TimeDelta::days(30));
    let (_, claims) = issuer(&s).issue(&r, at).expect("issue");
    assert_eq!(claims.exp - claims.iat, 900);
}

#[test]
fn scheduled_revocation_caps_exp() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let at = now();
    let mut r = record();
    r.revoked_at = Some(at + TimeDelta::seconds(120));
    let (_, claims) = issuer(&s).issue(&r, at).expect("issue during grace period");
    assert_eq!(claims.exp, at.timestamp() + 120);
}

#[test]
fn hs256_round_trip() {
    let s = hs_settings();
    let (token, claims) = issuer(&s).issue(&record(), now()).expect("issue");
    assert_eq!(header_of(&token)["alg"], "HS256");
    let verified = verifier(&s).verify(&token).expect("verify");
    assert_eq!(verified.claims, claims);

    let mut other = hs_settings();
    other.secret = Some(Secret::new("another-secret-of-at-least-32-bytes!!"));
    assert_eq!(
        err(verifier(&other).verify(&token)),
        TokenError::InvalidSignature
    );
}

#[test]
fn es256_round_trip() {
    let env = Env::new();
    let (private, public) = p256_pems();
    let mut s = base_settings(JwtAlgorithm::ES256);
    s.private_key_file = Some(env.write("es-private.pem", &private));
    s.public_key_file = Some(env.write("es-public.pem", &public));
    let (token, claims) = issuer(&s).issue(&record(), now()).expect("issue");
    assert_eq!(header_of(&token)["alg"], "ES256");
    assert_eq!(verifier(&s).verify(&token).expect("verify").claims, claims);
}

// ---------------------------------------------------------------------------------------------
// Time, issuer, audience, signature

#[test]
fn expired_token_is_refused() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let (token, _) = issuer(&s)
        .issue(&record(), now() - TimeDelta::hours(2))
        .expect("issue");
    assert_eq!(err(verifier(&s).verify(&token)), TokenError::Expired);
    assert_eq!(TokenError::Expired.reason(), "expired");
}

#[test]
fn leeway_applies_at_the_exp_boundary() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let at = now();
    let (token, claims) = issuer(&s).issue(&record(), at).expect("issue");
    let v = verifier(&s);
    let exp = DateTime::from_timestamp(claims.exp, 0).expect("ts");
    // leeway is 5 s: still accepted 4 s after exp, refused from 5 s on.
    v.verify_at(&token, exp + TimeDelta::seconds(4))
        .expect("within leeway");
    assert_eq!(
        err(v.verify_at(&token, exp + TimeDelta::seconds(5))),
        TokenError::Expired
    );
}

#[test]
fn token_not_yet_valid_is_refused() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let (token, _) = issuer(&s)
        .issue(&record(), now() + TimeDelta::hours(1))
        .expect("issue");
    assert_eq!(err(verifier(&s).verify(&token)), TokenError::NotYetValid);
}

#[test]
fn wrong_audience_is_refused() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let (token, _) = issuer(&s).issue(&record(), now()).expect("issue");
    let mut other = s.clone();
    other.audience = "some-other-gateway".into();
    assert_eq!(
        err(verifier(&other).verify(&token)),
        TokenError::InvalidAudience
    );
}

#[test]
fn wrong_issuer_is_refused() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let (token, _) = issuer(&s).issue(&record(), now()).expect("issue");
    let mut other = s.clone();
    other.issuer = "not-infergate".into();
    assert_eq!(
        err(verifier(&other).verify(&token)),
        TokenError::InvalidIssuer
    );
}

#[test]
fn tampered_payload_is_refused() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let (token, _) = issuer(&s).issue(&record(), now()).expect("issue");
    let parts = segments(&token);
    let mut payload = payload_of(&token);
    payload["role"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    assert_eq!(
        err(verifier(&s).verify(&forged)),
        TokenError::InvalidSignature
    );
}

#[test]
fn token_signed_by_another_key_is_refused() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let (other_private, _) = generate_ed25519_pem().expect("generate");
    let mut forger = s.clone();
    forger.private_key_file = Some(env.write("forger.pem", &other_private));
    forger.public_key_file = None;
    let (token, _) = issuer(&forger).issue(&record(), now()).expect("issue");
    assert_eq!(
        err(verifier(&s).verify(&token)),
        TokenError::InvalidSignature
    );
}

// ---------------------------------------------------------------------------------------------
// Algorithm attacks

#[test]
fn alg_none_is_refused() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let (_, claims) = issuer(&s).issue(&record(), now()).expect("issue");
    let payload = serde_json::to_value(&claims).expect("claims json");
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&payload)
        );
        assert!(looks_like_jwt(&token), "routed to JWT handling");
        assert_eq!(
            err(verifier(&s).verify(&token)),
            TokenError::DisallowedAlgorithm("none".into()),
            "{alg}"
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused_by_an_eddsa_verifier() {
    let env = Env::new();
    let (s, public_pem) = ed_settings(&env);
    let (_, claims) = issuer(&s).issue(&record(), now()).expect("issue");
    let mut payload = serde_json::to_value(&claims).expect("claims json");
    payload["role"] = json!("admin");
    let token = sign(
        Algorithm::HS256,
        None,
        &payload,
        &EncodingKey::from_secret(public_pem.as_bytes()),
    );
    assert_eq!(
        err(verifier(&s).verify(&token)),
        TokenError::DisallowedAlgorithm("HS256".into())
    );
}

#[test]
fn hs256_signed_with_the_public_key_is_refused_by_an_rs256_issuer() {
    let env = Env::new();
    let (mut s, _) = ed_settings(&env);
    let (_, rsa_public) = rsa_pems();
    s.external_issuers.push(ExternalIssuer {
        issuer: EXT_ISSUER.into(),
        audience: EXT_AUDIENCE.into(),
        jwks_file: None,
        public_key_files: vec![env.write("idp-rsa.pem", rsa_public)],
        default_role: None,
    });
    let token = sign(
        Algorithm::HS256,
        None,
        &external_claims(Some("admin")),
        &EncodingKey::from_secret(rsa_public.as_bytes()),
    );
    assert_eq!(
        err(verifier(&s).verify(&token)),
        TokenError::DisallowedAlgorithm("HS256".into())
    );
}

#[test]
fn another_algorithm_than_the_pinned_one_is_refused() {
    // An HS256 verifier must not accept an EdDSA token even though the claims are fine.
    let env = Env::new();
    let (ed, _) = ed_settings(&env);
    let (token, _) = issuer(&ed).issue(&record(), now()).expect("issue");
    assert_eq!(
        err(verifier(&hs_settings()).verify(&token)),
        TokenError::DisallowedAlgorithm("EdDSA".into())
    );
}

// ---------------------------------------------------------------------------------------------
// Issuing

#[test]
fn expired_or_revoked_keys_get_no_token() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);
    let iss = issuer(&s);
    let at = now();

    let mut expired = record();
    expired.expires_at = Some(at - TimeDelta::seconds(1));
    assert_eq!(err(iss.issue(&expired, at)), TokenError::KeyExpired);

    let mut revoked = record();
    revoked.revoked_at = Some(at - TimeDelta::minutes(5));
    assert_eq!(err(iss.issue(&revoked, at)), TokenError::KeyExpired);

    // Expiring later within the current second would give exp == iat: a token never usable.
    let at = DateTime::from_timestamp(1_900_000_000, 200_000_000).expect("ts");
    let mut ending = record();
    ending.expires_at = Some(at + TimeDelta::milliseconds(500));
    assert_eq!(err(iss.issue(&ending, at)), TokenError::KeyExpired);
    ending.expires_at = Some(at + TimeDelta::milliseconds(800));
    let (_, claims) = iss.issue(&ending, at).expect("one second left");
    assert_eq!(claims.exp, claims.iat + 1);
}

// ---------------------------------------------------------------------------------------------
// External issuers

#[test]
fn external_jwks_token_with_known_kid_verifies() {
    let ext = external_ed(None);
    let v = verifier(&ext.settings);
    let token = sign(
        Algorithm::EdDSA,
        Some("ext-1"),
        &external_claims(Some("readonly")),
        &ext.signing,
    );
    let verified = v.verify(&token).expect("verify external");
    assert!(verified.external);
    let c = verified.claims;
    assert_eq!(c.sub, "user-42@idp");
    assert_eq!(c.role, Role::Readonly);
    assert_eq!(c.iss, EXT_ISSUER);
    assert_eq!(c.aud, EXT_AUDIENCE);
    assert_eq!(c.jti, "", "external tokens without jti get an empty one");
    assert_eq!(c.models, None);
    assert_eq!(c.nbf, c.iat);

    // Without a kid every signature key of the issuer is tried.
    let no_kid = sign(
        Algorithm::EdDSA,
        None,
        &external_claims(Some("user")),
        &ext.signing,
    );
    assert_eq!(v.verify(&no_kid).expect("no kid").claims.role, Role::User);
}

#[test]
fn external_jwks_token_with_unknown_kid_is_refused() {
    let ext = external_ed(None);
    let v = verifier(&ext.settings);
    let token = sign(
        Algorithm::EdDSA,
        Some("ext-2"),
        &external_claims(Some("user")),
        &ext.signing,
    );
    assert_eq!(err(v.verify(&token)), TokenError::UnknownKey);

    // The encryption key was skipped, so naming it finds nothing either.
    let enc = sign(
        Algorithm::EdDSA,
        Some("enc-1"),
        &external_claims(Some("user")),
        &ext.signing,
    );
    assert_eq!(err(v.verify(&enc)), TokenError::UnknownKey);
}

#[test]
fn external_token_signed_by_another_key_is_refused() {
    let ext = external_ed(None);
    let (other, _) = generate_ed25519_pem().expect("generate");
    let token = sign(
        Algorithm::EdDSA,
        Some("ext-1"),
        &external_claims(Some("admin")),
        &EncodingKey::from_ed_pem(other.as_bytes()).expect("key"),
    );
    assert_eq!(
        err(verifier(&ext.settings).verify(&token)),
        TokenError::InvalidSignature
    );
}

#[test]
fn external_token_without_role_gets_the_default_role() {
    let ext = external_ed(Some(Role::Readonly));
    let token = sign(
        Algorithm::EdDSA,
        Some("ext-1"),
        &external_claims(None),
        &ext.signing,
    );
    let verified = verifier(&ext.settings).verify(&token).expect("verify");
    assert_eq!(verified.claims.role, Role::Readonly);
}

#[test]
fn external_token_without_role_and_no_default_is_refused() {
    let ext = external_ed(None);
    let token = sign(
        Algorithm::EdDSA,
        Some("ext-1"),
        &external_claims(None),
        &ext.signing,
    );
    assert_eq!(
        err(verifier(&ext.settings).verify(&token)),
        TokenError::MissingRole
    );
}

#[test]
fn external_token_with_unknown_role_is_refused() {
    let ext = external_ed(Some(Role::Readonly));
    let token = sign(
        Algorithm::EdDSA,
        Some("ext-1"),
        &external_claims(Some("superuser")),
        &ext.signing,
    );
    assert!(matches!(
        err(verifier(&ext.settings).verify(&token)),
        TokenError::Malformed(_)
    ));
}

#[test]
fn external_claims_are_checked_with_the_external_keys_only() {
    // A token claiming the external issuer must be checked with that issuer's keys only.
    let ext = external_ed(None);
    let own_signed = {
        let path = ext.settings.private_key_file.clone().expect("own key");
        let pem = std::fs::read(path).expect("read own key");
        sign(
            Algorithm::EdDSA,
            Some("ext-1"),
            &external_claims(Some("admin")),
            &EncodingKey::from_ed_pem(&pem).expect("own key"),
        )
    };
    assert_eq!(
        err(verifier(&ext.settings).verify(&own_signed)),
        TokenError::InvalidSignature
    );
}

#[test]
fn external_rs256_pem_issuer_with_audience_array() {
    let env = Env::new();
    let (mut s, _) = ed_settings(&env);
    let (rsa_private, rsa_public) = rsa_pems();
    s.external_issuers.push(ExternalIssuer {
        issuer: EXT_ISSUER.into(),
        audience: EXT_AUDIENCE.into(),
        jwks_file: None,
        public_key_files: vec![env.write("idp-rsa.pem", rsa_public)],
        default_role: Some(Role::User),
    });
    let key = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).expect("rsa key");
    let v = verifier(&s);

    let mut claims = external_claims(None);
    claims["aud"] = json!(["account", EXT_AUDIENCE]);
    claims["jti"] = json!("idp-jti-1");
    claims["models"] = json!(["llama3"]);
    let verified = v
        .verify(&sign(Algorithm::RS256, Some("rotating-kid"), &claims, &key))
        .expect("verify RS256");
    assert!(verified.external);
    assert_eq!(verified.claims.aud, EXT_AUDIENCE);
    assert_eq!(verified.claims.jti, "idp-jti-1");
    assert_eq!(verified.claims.models, Some(vec!["llama3".into()]));

    claims["aud"] = json!(["account", "infergate-api-extra"]);
    assert_eq!(
        err(v.verify(&sign(Algorithm::RS256, None, &claims, &key))),
        TokenError::InvalidAudience,
        "array must contain the audience exactly"
    );

    // RS512 with the same key is not the pinned RS256.
    claims["aud"] = json!(EXT_AUDIENCE);
    assert_eq!(
        err(v.verify(&sign(Algorithm::RS512, None, &claims, &key))),
        TokenError::DisallowedAlgorithm("RS512".into())
    );
}

#[test]
fn own_tokens_may_not_use_the_audience_array_form() {
    let s = hs_settings();
    let (_, claims) = issuer(&s).issue(&record(), now()).expect("issue");
    let mut payload = serde_json::to_value(&claims).expect("json");
    payload["aud"] = json!([AUDIENCE, "elsewhere"]);
    let token = sign(
        Algorithm::HS256,
        None,
        &payload,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    );
    assert_eq!(
        err(verifier(&s).verify(&token)),
        TokenError::InvalidAudience
    );
}

#[test]
fn own_token_missing_exp_or_jti_is_malformed() {
    let s = hs_settings();
    let (_, claims) = issuer(&s).issue(&record(), now()).expect("issue");
    let key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let v = verifier(&s);
    for field in ["exp", "jti", "sub"] {
        let mut payload = serde_json::to_value(&claims).expect("json");
        payload.as_object_mut().expect("object").remove(field);
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, &payload, &key).expect("encode");
        assert!(
            matches!(err(v.verify(&token)), TokenError::Malformed(ref m) if m.contains(field)),
            "{field}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Shape

#[test]
fn looks_like_jwt_positives_and_negatives() {
    let s = hs_settings();
    let (token, _) = issuer(&s).issue(&record(), now()).expect("issue");
    assert!(looks_like_jwt(&token));
    assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));

    for not_jwt in [
        "igk_4f7k2m9x1q0a_Vb3k2M9x1Q0aVb3k2M9x1Q0aVb3k2M9x1Q0aVb3k2M9_Ab12Cd",
        "",
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0",
        "eyJhbGciOiJIUzI1NiJ9..c2ln",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln.extra",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln+/=",
        "abc.def.ghi",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.eyJzd WIiOiJ4In0.c2ln",
    ] {
        assert!(!looks_like_jwt(not_jwt), "{not_jwt:?}");
    }
}

#[test]
fn garbage_and_oversized_tokens_are_malformed() {
    let s = hs_settings();
    let v = verifier(&s);
    for bad in [
        "not a token",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.%%%.c2ln",
        "bm90IGpzb24.eyJzdWIiOiJ4In0.c2ln",
    ] {
        assert!(
            matches!(err(v.verify(bad)), TokenError::Malformed(_)),
            "{bad}"
        );
    }
    let huge = format!(
        "{}.{}.sig",
        b64(&json!({"alg": "HS256"})),
        "A".repeat(10_000)
    );
    assert!(matches!(err(v.verify(&huge)), TokenError::Malformed(_)));
}

// ---------------------------------------------------------------------------------------------
// Settings

fn config_err<T: std::fmt::Debug>(r: Result<T, TokenError>) -> String {
    match r {
        Err(TokenError::Config(m)) => m,
        other => panic!("expected Config error, got {other:?}"),
    }
}

#[test]
fn mismatched_key_pair_is_a_config_error() {
    let env = Env::new();
    let (mut s, _) = ed_settings(&env);
    let (_, other_public) = generate_ed25519_pem().expect("generate");
    s.public_key_file = Some(env.write("other-public.pem", &other_public));
    let m = config_err(TokenIssuer::from_settings(&s));
    assert!(m.contains("not a key pair"), "{m}");
}

#[test]
fn wrong_key_types_are_config_errors_naming_the_setting() {
    let env = Env::new();
    let (_, p256_public) = p256_pems();
    let (ed_private, _) = generate_ed25519_pem().expect("generate");

    // An EC public key where Ed25519 is configured.
    let mut s = base_settings(JwtAlgorithm::EdDSA);
    s.public_key_file = Some(env.write("ec-public.pem", &p256_public));
    let m = config_err(TokenVerifier::from_settings(&s));
    assert!(m.contains("jwt.public_key_file"), "{m}");

    // A private key where a public one belongs; the message must not echo the key.
    s.public_key_file = Some(env.write("ed-private.pem", &ed_private));
    let m = config_err(TokenVerifier::from_settings(&s));
    assert!(m.contains("private key"), "{m}");
    assert!(!m.contains("MC4CAQ"), "{m}");

    // An Ed25519 private key where ES256 is configured.
    let mut es = base_settings(JwtAlgorithm::ES256);
    es.private_key_file = Some(env.write("ed-for-es.pem", &ed_private));
    let m = config_err(TokenIssuer::from_settings(&es));
    assert!(m.contains("jwt.private_key_file"), "{m}");
}

#[test]
fn external_issuer_config_errors() {
    let env = Env::new();
    let (s, _) = ed_settings(&env);

    // A JWKS with only unusable keys.
    let mut bad = s.clone();
    bad.external_issuers.push(ExternalIssuer {
        issuer: EXT_ISSUER.into(),
        audience: EXT_AUDIENCE.into(),
        jwks_file: Some(env.write(
            "hmac-only.json",
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#,
        )),
        public_key_files: Vec::new(),
        default_role: None,
    });
    let m = config_err(TokenVerifier::from_settings(&bad));
    assert!(m.contains("jwt.external_issuers[0]"), "{m}");

    // Not JSON at all.
    bad.external_issuers[0].jwks_file = Some(env.write("broken.json", "{keys: nope"));
    let m = config_err(TokenVerifier::from_settings(&bad));
    assert!(m.contains("jwks_file") && m.contains("broken.json"), "{m}");

    // The same issuer name as our own tokens.
    let mut clash = s.clone();
    clash.external_issuers.push(ExternalIssuer {
        issuer: ISSUER.into(),
        audience: EXT_AUDIENCE.into(),
        jwks_file: None,
        public_key_files: vec![s.public_key_file.clone().expect("own public key")],
        default_role: None,
    });
    let m = config_err(TokenVerifier::from_settings(&clash));
    assert!(m.contains("already configured"), "{m}");

    // A missing PEM file is named with its setting.
    let mut missing = s.clone();
    missing.external_issuers.push(ExternalIssuer {
        issuer: EXT_ISSUER.into(),
        audience: EXT_AUDIENCE.into(),
        jwks_file: None,
        public_key_files: vec![Path::new("/nonexistent/idp.pem").to_path_buf()],
        default_role: None,
    });
    let m = config_err(TokenVerifier::from_settings(&missing));
    assert!(
        m.contains("public_key_files[0]") && m.contains("/nonexistent/idp.pem"),
        "{m}"
    );
}

#[test]
fn short_rsa_keys_from_a_jwks_are_skipped() {
    use rsa::traits::PublicKeyParts;
    let env = Env::new();
    let (mut s, _) = ed_settings(&env);
    let small = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).expect("rsa keygen");
    let jwks = json!({"keys": [{
        "kty": "RSA", "kid": "weak", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(small.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(small.e().to_bytes_be()),
    }]});
    s.external_issuers.push(ExternalIssuer {
        issuer: EXT_ISSUER.into(),
        audience: EXT_AUDIENCE.into(),
        jwks_file: Some(env.write("weak.json", &jwks.to_string())),
        public_key_files: Vec::new(),
        default_role: None,
    });
    let m = config_err(TokenVerifier::from_settings(&s));
    assert!(m.contains("no usable"), "{m}");
}

#[test]
fn verified_claims_serialize_like_issued_ones() {
    let s = hs_settings();
    let mut r = record();
    r.models = None;
    let (token, claims) = issuer(&s).issue(&r, now()).expect("issue");
    let payload = payload_of(&token);
    assert!(
        payload.get("models").is_none(),
        "no models claim when unrestricted"
    );
    let back: TokenClaims = serde_json::from_value(payload).expect("claims");
    assert_eq!(back, claims);
}
