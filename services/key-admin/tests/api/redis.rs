//! The same API on the Redis key store (a real `redis-server`, started per test).

use infergate_testkit::RedisServer;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn keys_round_trip_through_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app(&[("KEY_STORE", "redis"), ("KEY_STORE_REDIS_URL", &url)]).await;
    assert_eq!(app.get("/health", None).await.json()["key_store"], "redis");
    let (key, id) = app.create_key("redis-user", "admin").await;
    assert_eq!(app.get("/v1/keys", Some(&key)).await.status, 200);
    let v = app.admin_get("/v1/keys").await.json();
    assert_eq!(v["total"], 2, "bootstrap admin + one: {v}");
    assert_eq!(
        app.admin_post(&format!("/v1/keys/{id}/revoke"), "")
            .await
            .status,
        200
    );
    assert_eq!(app.get("/v1/keys", Some(&key)).await.status, 401);
    assert_eq!(app.audit(&format!("target={id}")).await.len(), 2);
}
