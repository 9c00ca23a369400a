//! One instance of a guest: its store and limits, and a `handler` call under
//! its deadline, with what can go wrong in it told apart.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_wasi_messaging::WasiMessagingCtx;
use courier_wasi_messaging::bindings::MessagingPre;
use courier_wasi_messaging::error::describe;
use courier_wasi_messaging::handler::{Handler, MessageRef};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use crate::config::GuestConfig;
use crate::engine::ticks;
use crate::state::{GuestLog, GuestState};

/// Extra time a handler blocked in a host call gets beyond its deadline
/// before it is abandoned (wasm code itself is stopped by the epoch).
const HOST_CALL_GRACE: Duration = Duration::from_millis(500);

/// The deliveries of the `handler` call an instance is running now, by
/// delivery number. A `complete-message` or `abandon-message` whose message
/// carries no delivery id is matched by content among these only: never
/// among another call's deliveries.
#[derive(Debug, Default)]
pub struct CallScope(Mutex<Vec<u64>>);

impl CallScope {
    fn set(&self, numbers: &[u64]) {
        let mut current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        current.clear();
        current.extend_from_slice(numbers);
    }

    /// The delivery numbers of the running call (empty between calls).
    pub fn current(&self) -> Vec<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Why a `handler` call did not return `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerFailure {
    /// The guest returned `err`.
    Returned(String),
    /// The guest trapped (a panic, `unreachable`, memory past its limit ...).
    Trap(String),
    /// The call ran past `handler-timeout-ms`.
    Deadline {
        /// The deadline.
        after: Duration,
        /// Whether the guest was blocked in a host call, rather than running
        /// its own code, when the deadline passed.
        in_host_call: bool,
    },
    /// No instance could be made to run the call.
    Instantiation(String),
}

impl HandlerFailure {
    /// Whether the instance must be thrown away (its state is unknown).
    pub fn discards_instance(&self) -> bool {
        !matches!(self, Self::Returned(_))
    }
}

impl fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Returned(e) => write!(f, "handler returned error: {e}"),
            Self::Trap(e) => write!(f, "guest trapped: {e}"),
            Self::Deadline {
                after,
                in_host_call: false,
            } => write!(f, "handler ran past its deadline of {after:?}"),
            Self::Deadline {
                after,
                in_host_call: true,
            } => write!(
                f,
                "handler ran past its deadline of {after:?} (blocked in a host call)"
            ),
            Self::Instantiation(e) => write!(f, "instantiation failed: {e}"),
        }
    }
}

/// One instance of a guest and its store.
pub struct Instance {
    store: Store<GuestState>,
    handler: Handler,
    scope: Arc<CallScope>,
    /// Epoch ticks left before the running call (or the instantiation) is
    /// interrupted.
    ticks_left: Arc<AtomicU64>,
}

impl Instance {
    /// Instantiates the guest with the limits, environment and output of
    /// `config`; `messaging` is what its imports act on, and `scope` the
    /// call scope its consumer matches content in.
    pub async fn new(
        engine: &Engine,
        pre: &MessagingPre<GuestState>,
        name: &Arc<str>,
        config: &GuestConfig,
        messaging: WasiMessagingCtx,
        scope: Arc<CallScope>,
    ) -> anyhow::Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(GuestLog::new(name.clone(), "stdout"))
            .stderr(GuestLog::new(name.clone(), "stderr"));
        // Python and JavaScript components import wasi:sockets (their
        // interpreters link it); a guest talks to the world only through
        // wasi:messaging. These are wasmtime-wasi's defaults today, kept
        // explicit so that a change of defaults cannot open them, and no
        // directory is preopened.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        if config.inherit_env {
            wasi.inherit_env();
        }
        for (k, v) in &config.env {
            wasi.env(k, v);
        }
        let limit = usize::try_from(config.memory_limit_mib << 20).unwrap_or(usize::MAX);
        let state = GuestState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            messaging,
            limits: StoreLimitsBuilder::new()
                .memory_size(limit)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        // Wasm code yields to the executor at every epoch tick, so that a
        // guest busy in a loop holds a runtime thread for one tick at a time,
        // not for its whole deadline (which would stall the other tasks of
        // that thread: broker connections, other guests); it is interrupted
        // once its ticks are spent.
        let ticks_left = Arc::new(AtomicU64::new(ticks(config.handler_timeout())));
        let left = ticks_left.clone();
        store.epoch_deadline_callback(move |_| {
            let before = left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .unwrap_or(0);
            Ok(if before <= 1 {
                UpdateDeadline::Interrupt
            } else {
                // tokio's own yield lets the runtime poll its timers and
                // sockets before the guest runs on.
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            })
        });
        store.set_epoch_deadline(1);
        let instance = pre.instance_pre().instantiate_async(&mut store).await?;
        let handler = Handler::new(&mut store, &instance)?;
        Ok(Self {
            store,
            handler,
            scope,
            ticks_left,
        })
    }

    /// Calls `handler` with `messages` (whose delivery numbers are
    /// `numbers`) under `deadline`.
    pub async fn call(
        &mut self,
        messages: &[MessageRef<'_>],
        numbers: &[u64],
        deadline: Duration,
    ) -> Result<(), HandlerFailure> {
        self.ticks_left.store(ticks(deadline), Ordering::Relaxed);
        self.store.set_epoch_deadline(1);
        self.scope.set(numbers);
        let call = self.handler.call(&mut self.store, messages);
        let result = tokio::time::timeout(deadline + HOST_CALL_GRACE, call).await;
        self.scope.set(&[]);
        match result {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(HandlerFailure::Returned(describe(&e))),
            Ok(Err(trap)) if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(HandlerFailure::Deadline {
                    after: deadline,
                    in_host_call: false,
                })
            }
            Ok(Err(trap)) => {
                tracing::debug!("trap: {trap:?}");
                Err(HandlerFailure::Trap(match trap.downcast_ref::<Trap>() {
                    Some(code) => code.to_string(),
                    None => trap.root_cause().to_string(),
                }))
            }
            Err(_) => Err(HandlerFailure::Deadline {
                after: deadline,
                in_host_call: true,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_before_and_only_err_keeps_the_instance() {
        let ms = Duration::from_millis(500);
        let cases = [
            (
                HandlerFailure::Returned("other:bad".into()),
                "handler returned error: other:bad",
                false,
            ),
            (
                HandlerFailure::Trap("unreachable".into()),
                "guest trapped: unreachable",
                true,
            ),
            (
                HandlerFailure::Deadline {
                    after: ms,
                    in_host_call: false,
                },
                "handler ran past its deadline of 500ms",
                true,
            ),
            (
                HandlerFailure::Deadline {
                    after: ms,
                    in_host_call: true,
                },
                "handler ran past its deadline of 500ms (blocked in a host call)",
                true,
            ),
        ];
        for (failure, text, discards) in cases {
            assert_eq!(failure.to_string(), text);
            assert_eq!(failure.discards_instance(), discards, "{text}");
        }
    }
}
