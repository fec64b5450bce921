//! `rediss://` against a real redis-server speaking TLS (testkit's `TlsRedisServer`: certificates
//! made by `openssl` for the run). Built with the crate's `tls` feature only (`make test` runs it).
//!
//! The limiter trusts the platform's root certificates, which `SSL_CERT_FILE` replaces; the
//! connecting half runs in a child process with the variable set.
#![cfg(feature = "tls")]
// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use infergate_ratelimit::redis::{RedisLimiter, RedisLimiterConfig};
use infergate_ratelimit::{BucketKey, LimitCheck, RateLimitError, RateLimiter, RateSpec};
use infergate_testkit::tls_redis::TlsRedisServer;

#[test]
fn rediss_urls_connect_with_the_roots_of_ssl_cert_file() {
    TlsRedisServer::start().run_child("child_connects");
}

/// The child half of `rediss_urls_connect_with_the_roots_of_ssl_cert_file`.
#[test]
#[ignore = "run by rediss_urls_connect_with_the_roots_of_ssl_cert_file in a child process"]
fn child_connects() {
    let Ok(url) = std::env::var("INFERGATE_TLS_REDIS_URL") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = || RedisLimiterConfig {
            prefix: "tls".into(),
            timeout: Duration::from_secs(30),
            ..RedisLimiterConfig::default()
        };
        let limiter = RedisLimiter::connect(&url, cfg()).await.unwrap();
        let check = [LimitCheck::new(
            BucketKey::key(Arc::from("k")),
            RateSpec::new(2, Duration::from_secs(60)).unwrap(),
        )];
        let decision = limiter.check(&check).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.statuses[0].remaining, 1);

        // The certificate names `localhost`, not the address.
        let by_address = url.replace("localhost", "127.0.0.1");
        let refused = RedisLimiter::connect(&by_address, cfg()).await;
        assert!(
            matches!(refused, Err(RateLimitError::Unavailable(_))),
            "{refused:?}"
        );
        // Verification is never skipped.
        match RedisLimiter::connect(&format!("{url}/#insecure"), cfg()).await {
            Err(RateLimitError::Unavailable(msg)) => assert!(msg.contains("#insecure"), "{msg}"),
            other => panic!("{other:?}"),
        }
    });
}
