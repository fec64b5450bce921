//! The store's change feed: a dedicated pub/sub connection, resubscribed with backoff when lost,
//! turning each message into a [`KeyChange`] (and a lost stretch into [`KeyChange::All`]).

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSub;
use redis::{Client, RedisError};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::Redaction;
use crate::KeyChange;

/// Backoff between attempts to resubscribe the change feed.
const FEED_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const FEED_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How often the feed pings its connection: a connection can die without being closed (a
/// paused or partitioned server), and only a request notices.
const FEED_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Opens a dedicated pub/sub connection subscribed to `channel`, within `timeout`.
pub(super) async fn subscribe(
    client: &Client,
    channel: &str,
    timeout: Duration,
) -> Result<PubSub, String> {
    let attempt = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, RedisError>(pubsub)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// The change-feed task's state.
pub(super) struct Feed {
    pub(super) client: Client,
    pub(super) channel: String,
    pub(super) tx: broadcast::Sender<KeyChange>,
    /// The current call timeout; closed when the store is dropped.
    pub(super) control: watch::Receiver<Duration>,
    pub(super) redaction: Redaction,
}

/// Why the feed stopped listening on a connection.
enum Interrupted {
    /// The store is gone.
    Stop,
    /// The connection is gone or unhealthy: resubscribe.
    Lost(String),
}

impl Feed {
    /// Listens until the store is dropped, resubscribing whenever the connection is lost.
    pub(super) async fn run(mut self, first: PubSub) {
        let mut pubsub = first;
        loop {
            match self.listen(pubsub).await {
                Interrupted::Stop => return,
                Interrupted::Lost(why) => tracing::warn!(
                    channel = %self.channel,
                    reason = %self.redaction.scrub(&why),
                    "key change feed lost its redis subscription; resubscribing"
                ),
            }
            match self.resubscribe().await {
                Some(p) => pubsub = p,
                None => return,
            }
            tracing::info!(channel = %self.channel, "key change feed resubscribed");
            // Changes published while unsubscribed are lost: every cache must start afresh.
            // No receivers is fine: nobody caches anything yet.
            let _ = self.tx.send(KeyChange::All);
        }
    }

    /// Forwards messages until the connection is lost or the store dropped.
    async fn listen(&mut self, pubsub: PubSub) -> Interrupted {
        let (mut sink, mut stream) = pubsub.split();
        let mut health =
            tokio::time::interval_at(Instant::now() + FEED_HEALTH_INTERVAL, FEED_HEALTH_INTERVAL);
        loop {
            tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return Interrupted::Stop;
                    }
                }
                message = stream.next() => match message {
                    Some(message) => match message.get_payload::<String>() {
                        Ok(id) => {
                            let _ = self.tx.send(KeyChange::Key(id));
                        }
                        // Not one of ours (someone else published on the channel): dropping
                        // everything is the safe reading of a message we cannot parse.
                        Err(_) => {
                            let _ = self.tx.send(KeyChange::All);
                        }
                    },
                    None => return Interrupted::Lost("the connection closed".into()),
                },
                _ = health.tick() => {
                    let timeout = *self.control.borrow();
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Interrupted::Lost(format!("health ping failed: {e}")),
                        Err(_) => {
                            return Interrupted::Lost(format!(
                                "health ping unanswered after {timeout:?}"
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Retries with backoff until subscribed again (`None` if the store is dropped meanwhile).
    async fn resubscribe(&mut self) -> Option<PubSub> {
        let mut backoff = FEED_BACKOFF_MIN;
        loop {
            tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    continue;
                }
                () = tokio::time::sleep(backoff) => {}
            }
            let timeout = *self.control.borrow();
            tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                result = subscribe(&self.client, &self.channel, timeout) => match result {
                    Ok(pubsub) => return Some(pubsub),
                    Err(e) => tracing::debug!(
                        channel = %self.channel,
                        reason = %self.redaction.scrub(&e),
                        retry_in = ?backoff,
                        "key change feed cannot resubscribe yet"
                    ),
                },
            }
            backoff = (backoff * 2).min(FEED_BACKOFF_MAX);
        }
    }
}
