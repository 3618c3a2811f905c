//! Group commit: small write transactions a process makes at the same time go to etcd as
//! one request, each as a nested transaction with its own compares and its own outcome.
//!
//! etcd pays for every request whatever it holds: the gRPC call, a raft entry, and — 3.4,
//! for every transaction — a read view that copies its whole buffer of writes not yet
//! committed (`ConcurrentReadTx`: 15 % of etcd's CPU during `hack/bench.sh cluster`'s (b),
//! where most requests were the API server's writes of one object each). Alone, 4,000
//! compare-and-puts of 3 KiB, 64 at a time, cost etcd 208–258 µs of CPU each sent one by
//! one and 50–55 µs in requests of 16.
//!
//! Nothing waits to be grouped: a transaction goes out at once while fewer than
//! [`IN_FLIGHT`] requests are out, and those made meanwhile go together in the next one.
//! One whose caller stopped waiting before it went out is not sent (as a request dropped
//! before it left is not).
//!
//! A request of several transactions must do what they would do one after the other. etcd
//! evaluates every compare of a request before it applies any operation, so a transaction
//! joins a request only if it writes no key another of the request compares, reads or
//! writes, and compares or reads no key another writes; one that cannot join is sent on
//! its own at once, as it would have been without groups (App creates in one namespace
//! all write the namespace's dependency-graph guard key: they go out side by side as
//! before, each beside requests of other writes). Ranges and prefix deletes, and
//! transactions that write nothing, are always sent on their own (see [`joins`]).
//!
//! If etcd refuses a request for what one of its transactions holds (a lease gone, a
//! request too large), nothing of it was applied, and each transaction is sent again on
//! its own, to get its own answer. Any other failure (etcd unreachable, no answer in
//! time) is every transaction's answer: the request may have been applied, so none is
//! sent again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use etcd_client::{KvClient, TxnOp, TxnOpResponse};
use tokio::sync::oneshot;

use crate::etcd::{answer, request, send};
use crate::{Error, Op, Result, Txn, TxnResponse};

/// Requests of grouped transactions out at once. With one, a transaction made while a
/// request is out always waits for it; with more, etcd works on one while it takes the next.
const IN_FLIGHT: usize = 2;

/// The most transactions in one request (etcd's limit on the operations of a branch, 128,
/// counts them too).
const MAX_MEMBERS: usize = 64;

/// The most bytes of keys and values in one request (etcd refuses requests over 1.5 MiB by
/// default, `--max-request-bytes`).
const MAX_BYTES: usize = 512 * 1024;

/// The most compares or operations in a branch of a transaction that joins others; larger
/// ones are requests worth their cost already.
const MAX_OPS: usize = 16;

/// Whether `txn` may be sent with others: a small transaction that writes, with no range
/// or prefix delete (their keys are not known in advance).
pub(crate) fn joins(txn: &Txn) -> bool {
    let ops = || txn.success.iter().chain(&txn.failure);
    txn.compares.len() <= MAX_OPS
        && txn.success.len() <= MAX_OPS
        && txn.failure.len() <= MAX_OPS
        && ops().all(|op| matches!(op, Op::Put { .. } | Op::Delete { .. } | Op::Get { .. }))
        && ops().any(|op| matches!(op, Op::Put { .. } | Op::Delete { .. }))
}

struct Waiting {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnResponse>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Tasks sending requests (each sends one at a time until nothing waits).
    senders: usize,
}

/// The transactions waiting for a request, and the tasks sending them.
#[derive(Default)]
pub(crate) struct Groups {
    queue: Arc<Mutex<Queue>>,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Groups {
    /// Sends `txn` (one [`joins`] admits) on `kv` with whatever else is waiting.
    pub(crate) async fn send(&self, txn: Txn, kv: KvClient) -> Result<TxnResponse> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = lock(&self.queue);
            queue.waiting.push_back(Waiting { txn, reply });
            let start = queue.senders < IN_FLIGHT;
            queue.senders += usize::from(start);
            start
        };
        if start {
            // A task of its own: the caller may stop waiting, the others still get answers.
            tokio::spawn(send_waiting(self.queue.clone(), kv));
        }
        answer.await.unwrap_or_else(|_| Err(Error::Backend("the etcd request of this transaction was dropped".into())))
    }
}

/// Counts a sending task out when it ends, whichever way.
struct Sender {
    queue: Arc<Mutex<Queue>>,
    counted: bool,
}

impl Drop for Sender {
    /// Only for a task stopped before it was done (its runtime shut down): when no sender
    /// is left, what waits is answered with an error rather than never (the next
    /// transaction would start a sender, but none may come).
    fn drop(&mut self) {
        if self.counted {
            let mut queue = lock(&self.queue);
            queue.senders -= 1;
            if queue.senders == 0 {
                queue.waiting.clear();
            }
        }
    }
}

/// Sends requests until nothing waits.
async fn send_waiting(queue: Arc<Mutex<Queue>>, mut kv: KvClient) {
    let mut sender = Sender { queue, counted: true };
    loop {
        let group = {
            let mut queue = lock(&sender.queue);
            let (group, alone) = next_group(&mut queue.waiting);
            for Waiting { txn, reply } in alone {
                let mut kv = kv.clone();
                tokio::spawn(async move { reply.send(send(&mut kv, &txn).await) });
            }
            if group.is_empty() {
                // Counted out under the lock a transaction is queued under: each one is
                // either taken by a sender or starts one.
                queue.senders -= 1;
                drop(queue);
                sender.counted = false;
                return;
            }
            group
        };
        send_group(&mut kv, group).await;
    }
}

/// Where a waiting transaction goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Goes {
    InTheGroup,
    Alone,
    Later,
    Nowhere,
}

/// Takes the next request's transactions from `waiting`, in order, and those passed over
/// because they touch a key of the request in a way it cannot hold: those go on their own
/// at once, as they would have without groups (transactions made at the same time have no
/// order to keep).
fn next_group(waiting: &mut VecDeque<Waiting>) -> (Vec<Waiting>, Vec<Waiting>) {
    let mut goes = Vec::with_capacity(waiting.len());
    {
        let mut written: HashSet<&str> = HashSet::new();
        let mut read: HashSet<&str> = HashSet::new();
        let (mut count, mut bytes) = (0, 0);
        for member in waiting.iter() {
            if member.reply.is_closed() {
                // Its caller stopped waiting before it went out: it is not sent, as a
                // request dropped before it left is not.
                goes.push(Goes::Nowhere);
                continue;
            }
            let txn = &member.txn;
            let (writes, reads) = keys(txn);
            let size = size(txn);
            let clash = writes.iter().any(|k| written.contains(k) || read.contains(k))
                || reads.iter().any(|k| written.contains(k));
            if count > 0 && clash {
                goes.push(Goes::Alone);
                continue;
            }
            if count == MAX_MEMBERS || (count > 0 && bytes + size > MAX_BYTES) {
                break;
            }
            written.extend(writes);
            read.extend(reads);
            count += 1;
            bytes += size;
            goes.push(Goes::InTheGroup);
        }
    }
    let (mut group, mut alone) = (Vec::new(), Vec::new());
    let all = std::mem::take(waiting);
    for (member, goes) in all.into_iter().zip(goes.into_iter().chain(std::iter::repeat(Goes::Later))) {
        match goes {
            Goes::InTheGroup => group.push(member),
            Goes::Alone => alone.push(member),
            Goes::Later => waiting.push_back(member),
            Goes::Nowhere => {}
        }
    }
    (group, alone)
}

/// The keys `txn` writes and those it compares or reads.
fn keys(txn: &Txn) -> (Vec<&str>, Vec<&str>) {
    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    reads.extend(txn.compares.iter().map(|c| c.key.as_str()));
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            Op::Put { key, .. } | Op::Delete { key } => writes.push(key.as_str()),
            Op::Get { key } => reads.push(key.as_str()),
            Op::DeletePrefix { prefix } | Op::Range { prefix, .. } => writes.push(prefix.as_str()),
        }
    }
    (writes, reads)
}

/// About how many bytes `txn` adds to a request.
fn size(txn: &Txn) -> usize {
    let op = |op: &Op| match op {
        Op::Put { key, value, .. } => key.len() + value.len() + 16,
        Op::Delete { key } | Op::Get { key } => key.len() + 8,
        Op::DeletePrefix { prefix } | Op::Range { prefix, .. } => 2 * prefix.len() + 8,
    };
    let compare = |c: &crate::Compare| {
        c.key.len()
            + 16
            + match &c.target {
                crate::CompareTarget::Value(v) => v.len(),
                _ => 8,
            }
    };
    txn.compares.iter().map(compare).sum::<usize>() + txn.success.iter().chain(&txn.failure).map(op).sum::<usize>()
}

/// Sends `group` as one request (one transaction: as itself) and answers each.
async fn send_group(kv: &mut KvClient, group: Vec<Waiting>) {
    if group.len() == 1 {
        let Waiting { txn, reply } = group.into_iter().next().expect("one transaction");
        let _ = reply.send(send(kv, &txn).await);
        return;
    }
    let nested: Vec<TxnOp> = group.iter().map(|member| TxnOp::txn(request(&member.txn))).collect();
    match kv.txn(etcd_client::Txn::new().and_then(nested)).await {
        Ok(response) => {
            let revision = response.header().map_or(0, |h| h.revision());
            let mut answers = response.op_responses().into_iter();
            for Waiting { txn, reply } in group {
                let answered = match answers.next() {
                    Some(TxnOpResponse::Txn(own)) => Ok(answer(&txn, own.succeeded(), own.op_responses(), revision)),
                    other => Err(Error::Backend(format!("etcd answered a nested transaction with {other:?}"))),
                };
                let _ = reply.send(answered);
            }
        }
        Err(e) if refused_for_a_member(&e) => {
            tracing::debug!(transactions = group.len(), error = %e, "etcd refused a group; sending each alone");
            for Waiting { txn, reply } in group {
                let _ = reply.send(send(kv, &txn).await);
            }
        }
        Err(e) => {
            let message = format!("etcd txn: {e}");
            for Waiting { reply, .. } in group {
                let _ = reply.send(Err(Error::Backend(message.clone())));
            }
        }
    }
}

/// Whether etcd refused a request, before applying any of it, for what it holds: a lease
/// not found (gRPC NotFound), a key written twice, too many operations or too many bytes
/// (InvalidArgument).
fn refused_for_a_member(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status)
        if matches!(status.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compare;

    /// A transaction whose caller waits (for as long as the test runs: its receiver is
    /// leaked).
    fn waiting(txn: Txn) -> Waiting {
        let (reply, answer) = oneshot::channel();
        std::mem::forget(answer);
        Waiting { txn, reply }
    }

    fn cas(key: &str) -> Txn {
        Txn::new().when([Compare::mod_revision(key, 7)]).and_then([Op::put(key, &b"v"[..])])
    }

    fn first_keys(waiting: &[Waiting]) -> Vec<&str> {
        waiting.iter().map(|w| w.txn.compares[0].key.as_str()).collect()
    }

    /// How many transactions the next request takes, and how many go alone.
    fn taken(queue: &mut VecDeque<Waiting>) -> (usize, usize) {
        let (group, alone) = next_group(queue);
        (group.len(), alone.len())
    }

    #[test]
    fn only_small_writes_join() {
        assert!(joins(&cas("/a")));
        assert!(joins(&Txn::new().and_then([Op::put("/a", &b"v"[..])])));
        assert!(joins(&Txn::new().when([Compare::absent("/a")]).and_then([Op::delete("/a")]).or_else([Op::get("/a")])));
        assert!(!joins(&Txn::new().and_then([Op::get("/a")])), "a read alone");
        assert!(!joins(&Txn::new().and_then([Op::put("/a", &b"v"[..]), Op::range("/b/", 0)])));
        assert!(!joins(&Txn::new().and_then([Op::delete_prefix("/b/")])));
        let many = Txn::new().and_then((0..=MAX_OPS).map(|i| Op::put(format!("/m/{i}"), &b"v"[..])));
        assert!(!joins(&many));
    }

    #[test]
    fn a_group_holds_no_key_two_of_its_transactions_touch_unless_both_only_read_it() {
        // Distinct keys: all together.
        let mut queue: VecDeque<_> = ["/a", "/b", "/c"].into_iter().map(|k| waiting(cas(k))).collect();
        assert_eq!(taken(&mut queue), (3, 0));
        assert!(queue.is_empty());
        // The same key written twice: the second goes alone, the rest together.
        let mut queue: VecDeque<_> = ["/a", "/b", "/a", "/c"].into_iter().map(|k| waiting(cas(k))).collect();
        let (group, alone) = next_group(&mut queue);
        assert_eq!((first_keys(&group), first_keys(&alone)), (vec!["/a", "/b", "/c"], vec!["/a"]));
        assert!(queue.is_empty());
        // One compares a key another writes, either way round.
        let fenced =
            |key: &str| Txn::new().when([Compare::create_revision("/leader", 3)]).and_then([Op::put(key, &b"v"[..])]);
        let takeover = || Txn::new().and_then([Op::put("/leader", &b"x"[..])]);
        let mut queue: VecDeque<_> = [fenced("/a"), takeover(), fenced("/b")].into_iter().map(waiting).collect();
        assert_eq!(taken(&mut queue), (2, 1));
        let mut queue: VecDeque<_> = [takeover(), fenced("/a"), fenced("/b")].into_iter().map(waiting).collect();
        assert_eq!(taken(&mut queue), (1, 2));
        // Two that only compare the same key (a leader's fence) go together.
        let mut queue: VecDeque<_> = [fenced("/a"), fenced("/b")].into_iter().map(waiting).collect();
        assert_eq!(taken(&mut queue), (2, 0));
        // A read of a key another writes.
        let read = Txn::new().and_then([Op::put("/c", &b"v"[..]), Op::get("/a")]);
        let mut queue: VecDeque<_> = [cas("/a"), read].into_iter().map(waiting).collect();
        assert_eq!(taken(&mut queue), (1, 1));
    }

    #[test]
    fn the_last_sender_stopped_before_it_was_done_answers_what_waits() {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let (reply, mut answer) = oneshot::channel();
        {
            let mut queue = lock(&queue);
            queue.waiting.push_back(Waiting { txn: cas("/a"), reply });
            queue.senders = 2;
        }
        drop(Sender { queue: queue.clone(), counted: true });
        assert!(answer.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Empty), "another sender is left");
        drop(Sender { queue: queue.clone(), counted: true });
        assert!(
            answer.try_recv().is_err_and(|e| e == oneshot::error::TryRecvError::Closed),
            "no sender left: answered"
        );
        assert_eq!(lock(&queue).senders, 0);
    }

    #[test]
    fn a_transaction_whose_caller_stopped_waiting_is_not_sent() {
        let (reply, answer) = oneshot::channel();
        drop(answer);
        let mut queue: VecDeque<_> = [waiting(cas("/a")), Waiting { txn: cas("/b"), reply }, waiting(cas("/c"))].into();
        let (group, alone) = next_group(&mut queue);
        assert_eq!((first_keys(&group), alone.len(), queue.len()), (vec!["/a", "/c"], 0, 0));
    }

    #[test]
    fn a_group_stays_under_the_request_limits() {
        let mut queue: VecDeque<_> = (0..MAX_MEMBERS + 5).map(|i| waiting(cas(&format!("/k/{i}")))).collect();
        assert_eq!((taken(&mut queue), taken(&mut queue)), ((MAX_MEMBERS, 0), (5, 0)));
        let big = |i: usize| Txn::new().and_then([Op::put(format!("/big/{i}"), vec![b'x'; MAX_BYTES / 3])]);
        let mut queue: VecDeque<_> = (0..5).map(|i| waiting(big(i))).collect();
        assert_eq!((taken(&mut queue), taken(&mut queue), taken(&mut queue)), ((2, 0), (2, 0), (1, 0)));
        // One larger than the limit still goes, alone.
        let mut queue: VecDeque<_> = [Txn::new().and_then([Op::put("/huge", vec![b'x'; MAX_BYTES + 1])]), cas("/a")]
            .into_iter()
            .map(waiting)
            .collect();
        assert_eq!((taken(&mut queue), taken(&mut queue)), ((1, 0), (1, 0)));
    }
}
