//! Token limits and concurrency caps over real HTTP (docs/ratelimit.md): reservations refused
//! before the upstream is called, streams metered and settled, overruns cut, client hang-ups
//! aborting the upstream, the usage chunk stripped or kept, concurrency caps and shadow mode.

use std::time::Duration;

use futures_util::StreamExt;
use infergate_dev_upstream::UpstreamConfig;
use infergate_testkit::eventually;
use serde_json::{Value, json};

use crate::helpers::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A gateway whose `user` role has the given budgets (YAML under `rate_limit`).
async fn budgeted(roles_user: &str, extra: &str, upstream: UpstreamConfig) -> TestApp {
    let yaml = format!("rate_limit:\n  roles:\n    user: {roles_user}\n{extra}");
    spawn_app_with(
        &[],
        Opts {
            yaml: Some(yaml),
            upstream: Some(upstream),
            ..Default::default()
        },
    )
    .await
}

fn chat(content: &str, extra: Value) -> String {
    let mut body = json!({"model": "echo-1", "messages": [{"role": "user", "content": content}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

fn counter(app: &TestApp, c: &prometheus::IntCounterVec, labels: &[&str]) -> u64 {
    let _ = app;
    c.with_label_values(labels).get()
}

/// Reads an SSE response to its end (or the gateway's end of it) and returns its events' data.
async fn sse_events(
    mut res: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> Vec<String> {
    let mut raw = Vec::new();
    while let Some(chunk) = res.next().await {
        match chunk {
            Ok(c) => raw.extend_from_slice(&c),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&raw)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

async fn stream_chat(app: &TestApp, body: String, headers: &[(&str, &str)]) -> Vec<String> {
    let mut req = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-API-Key", USER_KEY));
    for h in headers {
        req = req.insert_header(*h);
    }
    let res = req.send_body(body).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    sse_events(res).await
}

#[actix_web::test]
async fn a_reservation_that_does_not_fit_is_refused_before_the_upstream_is_called() {
    let app = budgeted("{tokens_per_minute: 1000}", "", UpstreamConfig::default()).await;
    let upstream = app.upstream.as_ref().unwrap();
    let r = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            &chat("hello", json!({"max_tokens": 5000})),
        )
        .await;
    let v = assert_error_shape(&r, 429, "token_limit_exceeded");
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(v["dimension"], "tokens");
    assert!(v["reserved_tokens"].as_u64().unwrap() > 5000, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("lower max_tokens"),
        "{v}"
    );
    assert_eq!(
        upstream.connections_accepted(),
        0,
        "the upstream was never called"
    );

    // A request that fits passes, and says what is left.
    let r = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            &chat("hello", json!({"max_tokens": 10})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let remaining: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 1000 - 10, "{remaining}");
    assert!(r.header("x-ratelimit-limit-requests").is_some());
    assert!(r.header("x-ratelimit-reset-tokens").unwrap().ends_with('s'));
}

#[actix_web::test]
async fn the_unused_reservation_is_given_back_from_the_reported_usage() {
    let app = budgeted("{tokens_per_minute: 100000}", "", UpstreamConfig::default()).await;
    let tokens = &app.state.metrics.tokens;
    let body = chat("one two three", json!({"max_tokens": 500}));
    let first = app
        .post("/v1/chat/completions", Some(USER_KEY), &body)
        .await;
    assert_eq!(first.status, 200);
    let usage = first.json()["usage"].clone();
    let used = usage["total_tokens"].as_u64().unwrap();
    let remaining_1: u64 = first
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let reserved = 100_000 - remaining_1;
    assert!(
        reserved > 500 && used < reserved,
        "reserved {reserved}, used {used}"
    );
    eventually(LIMIT, "the first call settles", || async {
        counter(&app, &tokens.consumed, &["chat_completions", "user"]) == used
    })
    .await;
    assert_eq!(
        counter(&app, &tokens.refunded, &["chat_completions", "user"]),
        reserved - used
    );
    // The same call again: only what the first one used is still counted against the key.
    let second = app
        .post("/v1/chat/completions", Some(USER_KEY), &body)
        .await;
    let remaining_2: u64 = second
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remaining_2, 100_000 - used - reserved);
}

#[actix_web::test]
async fn streams_are_metered_and_the_usage_chunk_the_client_did_not_ask_for_is_removed() {
    let app = budgeted("{tokens_per_minute: 100000}", "", UpstreamConfig::default()).await;
    let tokens = &app.state.metrics.tokens;
    let body = chat(
        "alpha beta gamma",
        json!({"max_tokens": 100, "stream": true}),
    );
    let events = stream_chat(&app, body, &[]).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "the gateway asked for usage, the client did not: {events:?}"
    );
    // "echo: alpha beta gamma" is 4 tokens; the prompt 3 words: settled from the usage chunk.
    eventually(LIMIT, "the stream settles", || async {
        counter(&app, &tokens.consumed, &["chat_completions", "user"]) == 7
    })
    .await;

    // A client that asks for usage keeps its chunk.
    let body = chat(
        "alpha",
        json!({"max_tokens": 100, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let events = stream_chat(&app, body, &[]).await;
    let usage: Vec<&String> = events
        .iter()
        .filter(|e| e.contains("\"usage\":{"))
        .collect();
    assert_eq!(usage.len(), 1, "{events:?}");
}

#[actix_web::test]
async fn a_stream_that_overruns_its_reservation_is_cut_and_the_upstream_aborted() {
    let app = budgeted(
        "{tokens_per_minute: 100000}",
        "",
        UpstreamConfig {
            token_delay: Duration::from_millis(2),
            ..UpstreamConfig::default()
        },
    )
    .await;
    let upstream = app.upstream.as_ref().unwrap();
    let body = chat("x", json!({"max_tokens": 5, "stream": true}));
    // The upstream ignores max_tokens and would produce 200 tokens.
    let events = stream_chat(&app, body, &[("x-dev-output-tokens", "200")]).await;
    let last = events.last().unwrap();
    let err: Value = serde_json::from_str(last).unwrap();
    assert_eq!(err["error"]["code"], "token_limit_exceeded", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let content = events.iter().filter(|e| e.contains("\"content\"")).count();
    assert!(content <= 5, "{content} content chunks passed: {events:?}");
    eventually(LIMIT, "the upstream sees the abort", || async {
        upstream.cancelled_streams() == 1
    })
    .await;
    assert_eq!(app.state.metrics.tokens.streams_cut.get(), 1);
}

#[actix_web::test]
async fn a_client_that_hangs_up_aborts_the_upstream_and_pays_for_what_was_produced() {
    let app = budgeted(
        "{tokens_per_minute: 100000}",
        "",
        UpstreamConfig {
            token_delay: Duration::from_millis(20),
            ..UpstreamConfig::default()
        },
    )
    .await;
    let upstream = app.upstream.as_ref().unwrap();
    let tokens = &app.state.metrics.tokens;
    let body = chat("x", json!({"max_tokens": 2000, "stream": true}));
    let mut res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("x-dev-output-tokens", "1000"))
        .send_body(body)
        .await
        .unwrap();
    let reserved = 100_000
        - res
            .headers()
            .get("x-ratelimit-remaining-tokens")
            .unwrap()
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap();
    // Read a few chunks, then go away.
    for _ in 0..3 {
        res.next().await.unwrap().unwrap();
    }
    drop(res);
    eventually(LIMIT, "the upstream sees the abort", || async {
        upstream.cancelled_streams() == 1
    })
    .await;
    eventually(LIMIT, "the hang-up settles", || async {
        counter(&app, &tokens.consumed, &["chat_completions", "user"]) > 0
    })
    .await;
    let consumed = counter(&app, &tokens.consumed, &["chat_completions", "user"]);
    assert!(consumed < reserved / 2, "charged {consumed} of {reserved}");
}

#[actix_web::test]
async fn the_default_cap_is_set_in_the_forwarded_request() {
    let app = budgeted(
        "{tokens_per_minute: 100000}",
        "  tokens:\n    default_max_output_tokens: 3\n",
        UpstreamConfig::default(),
    )
    .await;
    let r = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            &chat("one two three four five six", json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[actix_web::test]
async fn a_concurrency_cap_refuses_past_the_cap_and_frees_the_slot_at_the_end() {
    let app = budgeted(
        "{max_concurrent: 1}",
        "",
        UpstreamConfig {
            token_delay: Duration::from_millis(50),
            ..UpstreamConfig::default()
        },
    )
    .await;
    let body = chat("a b c d e f g h", json!({"stream": true}));
    let mut first = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-API-Key", USER_KEY))
        .send_body(body.clone())
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let second = app
        .post("/v1/chat/completions", Some(USER_KEY), &body)
        .await;
    let v = assert_error_shape(&second, 429, "concurrency_limit_exceeded");
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!(v["max_concurrent"], 1);
    // Another key is not affected by this one's slots.
    let other = app
        .post(
            "/v1/chat/completions",
            Some(ADMIN_KEY),
            &chat("x", json!({})),
        )
        .await;
    assert_eq!(other.status, 200);
    while let Some(chunk) = first.next().await {
        chunk.unwrap();
    }
    drop(first);
    eventually(LIMIT, "the slot is released", || async {
        app.post(
            "/v1/chat/completions",
            Some(USER_KEY),
            &chat("x", json!({})),
        )
        .await
        .status
            == 200
    })
    .await;
    assert_eq!(
        app.state
            .metrics
            .tokens
            .refusals
            .with_label_values(&["concurrency"])
            .get(),
        1
    );
}

#[actix_web::test]
async fn a_shadow_limit_counts_and_reports_but_never_refuses() {
    let app = budgeted(
        "{tokens_per_minute: 10}",
        "  tokens:\n    per_minute: shadow\n",
        UpstreamConfig::default(),
    )
    .await;
    for _ in 0..2 {
        let r = app
            .post(
                "/v1/chat/completions",
                Some(USER_KEY),
                &chat("hello", json!({"max_tokens": 50})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-shadow"), Some("tokens"));
        assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
    }
    assert_eq!(
        app.state
            .metrics
            .tokens
            .shadow_refusals
            .with_label_values(&["tokens"])
            .get(),
        2
    );
}

#[actix_web::test]
async fn request_counts_still_apply_and_a_refused_body_still_counts() {
    let app = budgeted(
        "{tokens_per_minute: 100000}",
        "  authenticated: 2/minute\n",
        UpstreamConfig::default(),
    )
    .await;
    let bad = app
        .post("/v1/chat/completions", Some(USER_KEY), "{\"model\": 5}")
        .await;
    assert_error_shape(&bad, 422, "validation_error");
    let ok = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            &chat("x", json!({"max_tokens": 5})),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some("0"));
    let third = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            &chat("x", json!({"max_tokens": 5})),
        )
        .await;
    assert_error_shape(&third, 429, "rate_limited");
}

#[actix_web::test]
async fn a_batch_reserves_the_sum_of_its_items() {
    let app = budgeted("{tokens_per_minute: 300}", "", UpstreamConfig::default()).await;
    let batch = json!({"requests": [
        {"prompt": "a", "max_tokens": 100},
        {"prompt": "b", "max_tokens": 100},
        {"prompt": "c", "max_tokens": 100},
    ]});
    let r = app
        .post("/inference/batch", Some(USER_KEY), &batch.to_string())
        .await;
    assert_error_shape(&r, 429, "token_limit_exceeded");
    let one = json!({"requests": [{"prompt": "a", "max_tokens": 100}]});
    let r = app
        .post("/inference/batch", Some(USER_KEY), &one.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[actix_web::test]
async fn each_keys_requests_and_tokens_are_flushed_to_the_key_store() {
    let (app, store) = app_with_store(&[]).await;
    let (key, id) = mint(&store, infergate_policy::Role::User, |r| {
        r.tokens_per_minute = Some(100_000);
    })
    .await;
    let (plain, plain_id) = mint(&store, infergate_policy::Role::User, |_| {}).await;
    let mut used = 0;
    for _ in 0..3 {
        let r = app
            .post(
                "/v1/chat/completions",
                Some(&key),
                &chat("one two", json!({"max_tokens": 50})),
            )
            .await;
        assert_eq!(r.status, 200);
        used += r.json()["usage"]["total_tokens"].as_u64().unwrap();
    }
    assert_eq!(app.get("/v1/models", Some(&plain)).await.status, 200);
    // Refusals count by reason: a reservation too large, a route the role may not call.
    let r = app
        .post(
            "/v1/chat/completions",
            Some(&key),
            &chat("x", json!({"max_tokens": 500_000})),
        )
        .await;
    assert_eq!(r.status, 429);
    let r = app
        .post("/models/load", Some(&key), r#"{"model":"echo-1"}"#)
        .await;
    assert_eq!(r.status, 403);
    // The settlements that count the tokens run as the responses end.
    eventually(LIMIT, "the calls settle", || async {
        app.state.metrics.tokens.settlements.get() == 3
    })
    .await;
    let recorder = app.state.usage.as_ref().expect("a store, so usage is kept");
    assert_eq!(
        store
            .usage(&id, chrono::Utc::now().date_naive(), 30)
            .await
            .unwrap(),
        infergate_keystore::KeyUsage::default(),
        "nothing is written per request"
    );
    recorder.flush(&*store).await;
    let today = chrono::Utc::now().date_naive();
    let usage = store.usage(&id, today, 30).await.unwrap();
    let day = usage.days.last().unwrap().totals;
    assert_eq!(day.refused.token_limited, 1);
    assert_eq!(day.refused.forbidden, 1);
    assert_eq!(
        day.requests, 5,
        "every request the key made, refused or not"
    );
    assert_eq!(day.input_tokens + day.output_tokens, used);
    assert!(usage.last_used_at.is_some());
    // A key without a token budget has its requests counted, not its tokens.
    let usage = store.usage(&plain_id, today, 30).await.unwrap();
    assert_eq!(usage.days.last().unwrap().totals.requests, 1);
    assert_eq!(usage.days.last().unwrap().totals.input_tokens, 0);
}

/// A gateway on a real Redis (its limiter is returned too, for its round-trip count).
async fn on_redis(
    redis: &infergate_testkit::RedisServer,
    roles_user: &str,
    upstream: UpstreamConfig,
) -> (
    TestApp,
    std::sync::Arc<infergate_ratelimit::redis::RedisLimiter>,
) {
    use infergate_ratelimit::redis::{RedisLimiter, RedisLimiterConfig};
    let limiter = std::sync::Arc::new(
        RedisLimiter::connect(
            &redis.url(),
            RedisLimiterConfig {
                prefix: "budgets".into(),
                timeout: Duration::from_secs(2),
                ..RedisLimiterConfig::default()
            },
        )
        .await
        .unwrap(),
    );
    let app = spawn_app_with(
        &[],
        Opts {
            yaml: Some(format!("rate_limit:\n  roles:\n    user: {roles_user}\n")),
            upstream: Some(upstream),
            shared_limiter: Some(limiter.clone()),
            ..Default::default()
        },
    )
    .await;
    (app, limiter)
}

/// With Redis, a token-limited call costs two round trips (admission, settlement); a call of a
/// key without a budget one.
#[actix_web::test]
async fn a_budgeted_call_costs_two_redis_round_trips_and_others_one() {
    let redis = infergate_testkit::RedisServer::start();
    let (app, limiter) = on_redis(
        &redis,
        "{tokens_per_minute: 100000}",
        UpstreamConfig::default(),
    )
    .await;
    let body = chat("x", json!({"max_tokens": 5}));
    // The first call also peeks the IP's failed-auth budget (the key is not cached yet).
    app.post("/v1/chat/completions", Some(USER_KEY), &body)
        .await;
    eventually(LIMIT, "settled", || async {
        app.state.metrics.tokens.settlements.get() == 1
    })
    .await;
    let before = limiter.round_trips();
    let r = app
        .post("/v1/chat/completions", Some(USER_KEY), &body)
        .await;
    assert_eq!(r.status, 200);
    eventually(LIMIT, "settled", || async {
        app.state.metrics.tokens.settlements.get() == 2
    })
    .await;
    assert_eq!(limiter.round_trips() - before, 2, "admission + settlement");
    app.post("/v1/chat/completions", Some(ADMIN_KEY), &body)
        .await;
    let before = limiter.round_trips();
    let r = app
        .post("/v1/chat/completions", Some(ADMIN_KEY), &body)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(limiter.round_trips() - before, 1, "no budget: one decision");
}

/// Redis goes away while a budgeted stream runs: its settlement is retried until Redis is back,
/// not dropped.
#[actix_web::test]
async fn a_settlement_that_cannot_reach_redis_is_retried_not_dropped() {
    let mut redis = infergate_testkit::RedisServer::start();
    let (app, _) = on_redis(
        &redis,
        "{tokens_per_minute: 100000}",
        UpstreamConfig {
            token_delay: Duration::from_millis(20),
            ..UpstreamConfig::default()
        },
    )
    .await;
    let tokens = &app.state.metrics.tokens;
    let mut res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("X-API-Key", USER_KEY))
        .insert_header(("x-dev-output-tokens", "20"))
        .send_body(chat("x", json!({"max_tokens": 100, "stream": true})))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    res.next().await.unwrap().unwrap();
    redis.stop();
    while let Some(chunk) = res.next().await {
        chunk.unwrap();
    }
    drop(res);
    eventually(LIMIT, "the settlement is retried", || async {
        tokens.settlement_retries.get() >= 1
    })
    .await;
    assert_eq!(tokens.settlements.get(), 0);
    redis.restart();
    eventually(
        Duration::from_secs(60),
        "the settlement lands once Redis is back",
        || async { tokens.settlements.get() == 1 },
    )
    .await;
    assert_eq!(tokens.settlements_dropped.get(), 0);
}

#[actix_web::test]
async fn a_routes_own_budget_applies_to_every_key_on_that_route_only() {
    let app = spawn_app_with(
        &[],
        Opts {
            yaml: Some(
                "rate_limit:\n  tokens:\n    routes:\n      /v1/embeddings: {tokens_per_minute: 200}\n"
                    .into(),
            ),
            ..Default::default()
        },
    )
    .await;
    let long = "word ".repeat(60);
    let embed = json!({"model": "echo-1", "input": long}).to_string();
    let r = app.post("/v1/embeddings", Some(USER_KEY), &embed).await;
    let v = assert_error_shape(&r, 429, "token_limit_exceeded");
    assert_eq!(v["limit"], 200);
    let short = json!({"model": "echo-1", "input": "hi"}).to_string();
    let r = app.post("/v1/embeddings", Some(ADMIN_KEY), &short).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("200"));
    // Other routes are not budgeted.
    let r = app
        .post(
            "/v1/chat/completions",
            Some(USER_KEY),
            &chat(&long, json!({})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-tokens"), None);
}
