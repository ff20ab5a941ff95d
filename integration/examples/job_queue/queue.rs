//! A job queue over NATS whose jobs carry the context of the request that
//! queued them: the producer writes the registered variables into the
//! message's headers; each worker runs each job in a fresh context read
//! from them.
//!
//! async-nats has a header map of its own: two small adapters make it a
//! carrier (`Injector`/`Extractor`) for `Propagator::inject`/`extract`.
//! The one invariant: a job is always handled — a message with missing,
//! malformed or oversized headers gets a warning saying what was lost, and
//! runs with what could be read.

use std::borrow::Cow;
use std::future::Future;

use async_nats::{Client, HeaderMap, Message, Subscriber};
use contextvars::Context;
use contextvars::future::FutureExt;
use contextvars::propagation::{Extractor, Injector, Propagator};
use futures::StreamExt;

/// The subject jobs are published on.
pub const SUBJECT: &str = "jobs";
/// The queue group workers share: each job goes to one of them.
pub const WORKERS: &str = "workers";

/// A received message's headers, read as a carrier.
pub struct NatsHeaders<'a>(pub &'a HeaderMap);

impl Extractor for NatsHeaders<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        let mut values = self.0.get_all(name);
        let first = values.next()?;
        let rest: Vec<&str> = values.map(|v| v.as_str()).collect();
        if rest.is_empty() {
            return Some(Cow::Borrowed(first.as_str().as_bytes()));
        }
        let all = std::iter::once(first.as_str())
            .chain(rest)
            .collect::<Vec<_>>();
        Some(Cow::Owned(all.join(",").into_bytes()))
    }
}

/// An outgoing message's headers, written as a carrier.
pub struct NatsHeadersMut<'a>(pub &'a mut HeaderMap);

impl Extractor for NatsHeadersMut<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        NatsHeaders(self.0)
            .get(name)
            .map(|v| Cow::Owned(v.into_owned()))
    }
}

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, name: &str, value: String) {
        self.0.insert(name, value.as_str());
    }

    fn remove(&mut self, name: &str) {
        // async-nats's map has no `remove`: rebuilt without `name`.
        let mut kept = HeaderMap::new();
        for (key, values) in self.0.iter() {
            if key.as_ref() as &str != name {
                for value in values {
                    kept.append(key.clone(), value.clone());
                }
            }
        }
        *self.0 = kept;
    }
}

/// Publishes `job` with the current values in its headers.
pub async fn enqueue(
    client: &Client,
    propagator: &Propagator,
    job: String,
) -> Result<(), async_nats::PublishError> {
    let mut headers = HeaderMap::new();
    propagator.inject(&mut NatsHeadersMut(&mut headers));
    client
        .publish_with_headers(SUBJECT, headers, job.into())
        .await
}

/// The fresh context a received job runs in. A message that carries none
/// of the propagator's headers runs in an empty one, with a warning; bad
/// or oversized values are dropped by `extract`, each with its warning.
pub fn job_context(propagator: &Propagator, message: &Message) -> Context {
    let carried = message.headers.as_ref().filter(|headers| {
        propagator
            .fields()
            .iter()
            .any(|field| headers.get(field.as_str()).is_some())
    });
    match carried {
        Some(headers) => propagator.extract(&NatsHeaders(headers)),
        None => {
            tracing::warn!(
                subject = %message.subject,
                "job message carries none of the context headers {:?}: handled without the producer's context",
                propagator.fields()
            );
            Context::new()
        }
    }
}

/// Handles every job `subscriber` receives, one at a time, each inside its
/// own context from its message; returns when the subscription ends.
pub async fn work<F, Fut>(mut subscriber: Subscriber, propagator: Propagator, mut handle: F)
where
    F: FnMut(Message) -> Fut,
    Fut: Future<Output = ()>,
{
    while let Some(message) = subscriber.next().await {
        let ctx = job_context(&propagator, &message);
        handle(message).in_context(ctx).await;
    }
}
