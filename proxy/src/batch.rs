//! Reads first, then writes, in each pass of a worker's scheduler.
//!
//! HAProxy's event loop reads every socket that is ready, then processes and writes every
//! answer, so a peer (the client load, an upstream) gets a batch of answers per wake-up. A
//! task per connection does each connection's read and write in turn instead, so the peers
//! are woken once per answer: more context switches for them, more wake-ups for us to pay
//! in `send`. Before a request or a response is written, its task [`requeue`]s: it goes to
//! the back of the worker's run queue, behind every task that is ready now, so this pass's
//! reads happen before its writes.
//!
//! `tokio::task::yield_now` is not the tool: it defers the task until the runtime has
//! polled its I/O driver, an extra `epoll_wait` per pass. Waking oneself and returning
//! `Pending` requeues at once. On a 2-core machine, in front of three upstreams with
//! `wrk -t1 -c64` (eight alternating runs of two running proxies), this took the median
//! from 65k to 69.5k requests per second and p99 from 2.36 to 1.99 ms; the upstreams, which
//! share the cores, spend less CPU per request when their requests come in batches.
//!
//! A worker also gives its core away now and then. Under load it never sleeps: there is
//! always a ready task. The kernel lets a running thread finish its time slice (milliseconds)
//! before a thread woken on the same core gets to run, so an upstream process sharing the
//! core with the worker waits that long with its requests, and under least connections the
//! other upstreams take all the traffic, which keeps the worker busy and the wait going: on
//! two cores with `wrk -t1 -c64`, requests in flight on two of three upstreams came back
//! 2–5 ms late together (`perf sched`: the worker ran 4 ms straight while two upstreams
//! waited on its core). So every [`YIELD_AFTER`] of running, the worker calls
//! `sched_yield` ([`std::thread::yield_now`]): a thread waiting for this core runs now, and
//! with none waiting the call returns at once. That took the least-connections closed-loop
//! p99 from 2.4–3.3 to 1.2–1.5 ms at the same throughput (five alternating runs). Sidecar
//! deployments, where the proxy shares cores with the application, are the same case.
//!
//! The slice counts running without a break: a worker that slept (the runtime's park hooks,
//! [`parking`] and [`unparked`]) starts a new one. It has a cost where the thread waiting
//! for the core is a busy one: it gets the core for a slice of its own. Cold starts at
//! 20k req/s with the harness's generator (a multi-threaded tokio client) on the same two
//! cores had a p99 median of about 8 ms over eight starts, against about 5 ms without the
//! yield (both spread over 3–42 ms).

use std::cell::Cell;
use std::future::poll_fn;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long a worker runs before it offers its core to the threads waiting for it. Shorter
/// costs throughput (100 µs: 5–10 % on the machine above); 1 ms left p99 at 1.3–1.5 ms.
pub const YIELD_AFTER: Duration = Duration::from_micros(500);

/// Requeues between two looks at the clock (a request makes two).
const CHECK_EVERY: u32 = 16;

/// A park of the worker's runtime at least this long was a sleep: the core was free for
/// others meanwhile, so the slice starts again. (Under load the runtime parks every few
/// requests, and the `epoll_wait` returns at once, in a microsecond or two.)
const SLEPT: Duration = Duration::from_micros(50);

/// When a worker next offers its core; pure, the clock is the caller's.
#[derive(Clone, Copy, Default)]
struct Slice {
    requeues: u32,
    /// When the worker last yielded, or woke from a sleep (or was first seen).
    since: Option<Instant>,
    /// When the worker's runtime last went to park, until it is back.
    parked_at: Option<Instant>,
}

impl Slice {
    /// Counts one requeue. True when the worker has run [`YIELD_AFTER`] since it last
    /// yielded; the caller yields, then [`restart`](Self::restart)s the slice.
    fn due(&mut self, now: impl FnOnce() -> Instant) -> bool {
        self.requeues = self.requeues.wrapping_add(1);
        if !self.requeues.is_multiple_of(CHECK_EVERY) {
            return false;
        }
        let now = now();
        match self.since {
            Some(since) => now.saturating_duration_since(since) >= YIELD_AFTER,
            None => {
                self.since = Some(now);
                false
            }
        }
    }

    /// The worker has its core back: the next slice starts now.
    fn restart(&mut self, now: Instant) {
        self.since = Some(now);
    }

    /// The runtime is about to park (wait for I/O or a timer).
    fn park(&mut self, now: Instant) {
        self.parked_at = Some(now);
    }

    /// The runtime is back from parking: if that was a sleep, the slice starts again. A
    /// worker that sleeps now and then is not hogging its core, and giving the core away
    /// right after waking (to a busy load generator, say, for a whole time slice of its
    /// own) would only delay the requests that woke it: it more than doubled the p99 of
    /// cold starts at 20k req/s.
    fn unpark(&mut self, now: Instant) {
        if let Some(parked_at) = self.parked_at.take() {
            if now.saturating_duration_since(parked_at) >= SLEPT {
                self.restart(now);
            }
        }
    }
}

thread_local! {
    /// This worker thread's slice (each worker is a thread of its own).
    static SLICE: Cell<Slice> = Cell::new(Slice::default());
}

/// Runs `f` on this thread's slice.
fn with_slice<R>(f: impl FnOnce(&mut Slice) -> R) -> R {
    SLICE.with(|cell| {
        let mut slice = cell.get();
        let r = f(&mut slice);
        cell.set(slice);
        r
    })
}

/// Yields this thread's core when its slice is over (see the module's notes).
fn offer_core() {
    with_slice(|slice| {
        if slice.due(Instant::now) {
            std::thread::yield_now();
            slice.restart(Instant::now());
        }
    });
}

/// For the worker runtime's `on_thread_park` hook.
pub fn parking() {
    with_slice(|slice| slice.park(Instant::now()));
}

/// For the worker runtime's `on_thread_unpark` hook.
pub fn unparked() {
    with_slice(|slice| slice.unpark(Instant::now()));
}

/// Lets every task that is ready now run before this one goes on (and, once per
/// [`YIELD_AFTER`], every thread waiting for this core).
pub async fn requeue() {
    offer_core();
    let mut requeued = false;
    poll_fn(|cx| {
        if requeued {
            return Poll::Ready(());
        }
        requeued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn a_slice_is_due_after_yield_after_of_running_checked_every_few_requeues() {
        let start = Instant::now();
        let mut slice = Slice::default();
        let mut reads = 0;
        let mut at = |t: Duration| {
            reads += 1;
            start + t
        };
        // The first look at the clock starts the slice.
        for _ in 0..CHECK_EVERY {
            assert!(!slice.due(|| at(Duration::ZERO)));
        }
        // Not due before YIELD_AFTER, whatever the count.
        for _ in 0..CHECK_EVERY {
            assert!(!slice.due(|| at(YIELD_AFTER / 2)));
        }
        // Due at YIELD_AFTER, but only on a requeue that looks at the clock.
        for _ in 1..CHECK_EVERY {
            assert!(!slice.due(|| at(YIELD_AFTER)));
        }
        assert!(slice.due(|| at(YIELD_AFTER)));
        assert_eq!(
            reads, 3,
            "the clock is read once every {CHECK_EVERY} requeues"
        );
        // After the yield, a new slice from when the core came back.
        slice.restart(start + YIELD_AFTER * 3);
        for _ in 0..CHECK_EVERY {
            assert!(!slice.due(|| start + YIELD_AFTER * 3 + YIELD_AFTER / 2));
        }
        for _ in 0..CHECK_EVERY - 1 {
            slice.due(|| start);
        }
        assert!(slice.due(|| start + YIELD_AFTER * 4));
    }

    #[test]
    fn a_sleep_starts_the_slice_again_and_a_park_that_returns_at_once_does_not() {
        let start = Instant::now();
        let mut slice = Slice::default();
        slice.restart(start);
        let run_to = |slice: &mut Slice, at: Instant| {
            (0..CHECK_EVERY).fold(false, |due, _| slice.due(|| at) || due)
        };
        // A park that returns at once (events were ready): still the same slice.
        slice.park(start + YIELD_AFTER / 2);
        slice.unpark(start + YIELD_AFTER / 2 + SLEPT / 10);
        assert!(run_to(&mut slice, start + YIELD_AFTER));
        // A sleep: the slice runs from the wake-up.
        slice.restart(start + YIELD_AFTER);
        slice.park(start + YIELD_AFTER * 2);
        let woke = start + YIELD_AFTER * 2 + SLEPT;
        slice.unpark(woke);
        assert!(!run_to(&mut slice, woke + YIELD_AFTER / 2));
        assert!(run_to(&mut slice, woke + YIELD_AFTER));
        // An unpark without a park changes nothing.
        slice.unpark(woke + YIELD_AFTER * 10);
        assert!(run_to(&mut slice, woke + YIELD_AFTER));
    }

    #[tokio::test]
    async fn tasks_ready_now_run_before_a_requeued_one_resumes() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let push = |log: &Arc<Mutex<Vec<&'static str>>>, s| log.lock().unwrap().push(s);
        let (a, b) = (log.clone(), log.clone());
        let first = tokio::spawn(async move {
            push(&a, "a reads");
            requeue().await;
            push(&a, "a writes");
        });
        let second = tokio::spawn(async move {
            push(&b, "b reads");
        });
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["a reads", "b reads", "a writes"]);
    }
}
