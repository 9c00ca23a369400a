//! Criterion benchmarks of the dispatcher, each beside a native baseline on
//! the same embedded broker in the same run:
//!
//! - `batch_of_100`: 100 messages published to the embedded broker and
//!   accepted, through the `noop` guest (batch size 100) or through a native
//!   consumer that takes and acknowledges each.
//! - `instantiate`: one instance of the `noop` guest from its `InstancePre`,
//!   with the on-demand and the pooling allocator; the baseline is a handler
//!   call on a warm instance (what instantiating per batch would replace).
//!
//! ```sh
//! cargo bench -p courier-runtime --bench dispatch
//! ```

use std::sync::Arc;
use std::time::Duration;

use courier_broker::{Backend, Message, Pattern, Subscription, SubscriptionSpec};
use courier_runtime::{Config, GuestRuntime, Runtime};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;

const BATCH: usize = 100;

fn runtime(tokio: &tokio::runtime::Runtime, pooling: bool) -> Runtime {
    tokio.block_on(async {
        let config = Config::from_toml(&format!(
            r#"
            [host]
            summary-secs = 0
            pooling = {pooling}
            [guests.noop]
            component = "{}"
            subscribe = ["bench.in"]
            batch-size = {BATCH}
            "#,
            test_programs::NOOP
        ))
        .expect("config");
        let runtime = Runtime::new(config).expect("runtime");
        runtime.start().await.expect("start");
        runtime
    })
}

fn batch(topic: &str) -> Vec<Message> {
    (0..BATCH)
        .map(|_| Message::new(topic, vec![b'x'; 16]))
        .collect()
}

async fn through_guest(guest: &GuestRuntime, backend: &Arc<dyn Backend>, messages: Vec<Message>) {
    let target = guest.stats().accepted + BATCH as u64;
    backend.publish(messages).await.expect("publish");
    while guest.stats().accepted < target {
        tokio::task::yield_now().await;
    }
}

async fn through_native(
    backend: &Arc<dyn Backend>,
    sub: &mut Box<dyn Subscription>,
    messages: Vec<Message>,
) {
    backend.publish(messages).await.expect("publish");
    let mut taken = Vec::with_capacity(BATCH);
    while taken.len() < BATCH {
        let d = match sub.next().now_or_never() {
            Some(d) => d,
            None => sub.next().await,
        };
        taken.push(d.expect("open").expect("delivery"));
    }
    for d in taken {
        std::hint::black_box(&d.message);
        d.acker.ack().await.expect("ack");
    }
}

fn batch_of_100(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt = runtime(&tokio, false);
    let guest = rt.guest("noop").unwrap().clone();
    let backend: Arc<dyn Backend> = Arc::new(rt.clients().embedded().clone());
    let mut sub = tokio
        .block_on(backend.subscribe({
            let mut spec = SubscriptionSpec::broadcast(Pattern::parse("bench.native").unwrap());
            spec.prefetch = 2 * BATCH;
            spec
        }))
        .unwrap();
    let mut group = c.benchmark_group("batch_of_100");
    group.throughput(criterion::Throughput::Elements(BATCH as u64));
    group.bench_function("guest_noop", |b| {
        b.to_async(&tokio)
            .iter(|| through_guest(&guest, &backend, batch("bench.in")))
    });
    group.bench_function("native", |b| {
        b.iter(|| tokio.block_on(through_native(&backend, &mut sub, batch("bench.native"))))
    });
    group.finish();
    tokio.block_on(rt.stop());
}

fn instantiate(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("instantiate");
    for (name, pooling) in [("on_demand", false), ("pooling", true)] {
        let rt = runtime(&tokio, pooling);
        let guest = rt.guest("noop").unwrap().clone();
        group.bench_function(name, |b| {
            b.to_async(&tokio)
                .iter(|| async { drop(guest.new_instance().await.expect("instance")) })
        });
        tokio.block_on(rt.stop());
    }
    // Baseline: one message handled by a warm instance, end to end.
    let rt = runtime(&tokio, false);
    let guest = rt.guest("noop").unwrap().clone();
    let backend: Arc<dyn Backend> = Arc::new(rt.clients().embedded().clone());
    group.bench_function("warm_handler_call_baseline", |b| {
        b.to_async(&tokio).iter(|| async {
            let target = guest.stats().accepted + 1;
            backend
                .publish(vec![Message::new("bench.in", "x")])
                .await
                .expect("publish");
            while guest.stats().accepted < target {
                tokio::task::yield_now().await;
            }
        })
    });
    group.finish();
    tokio.block_on(rt.stop());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = batch_of_100, instantiate
}
criterion_main!(benches);
