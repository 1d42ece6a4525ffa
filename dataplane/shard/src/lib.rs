//! # tachyon-shard — layer 5: what connects the shards of one process
//!
//! Every ordered pair of shards has a bounded single-producer/single-consumer ring (a crossbeam
//! `ArrayQueue` used by exactly one producer and one consumer). A shard moves its engine's
//! outgoing mail into the rings and drains its incoming rings into its engine once per loop
//! iteration. No locks; a full ring keeps the overflow in the producer's own queue (order kept,
//! nothing dropped) and retries next iteration.
//!
//! ```text
//!   shard 0 ──ring[0→1]──▶ shard 1        a sleeping shard "parks": it sets its flag, checks
//!      ▲                      │           its rings once more, then blocks; a producer that
//!      └──────ring[1→0]───────┘           finds the flag set wakes it (one syscall per batch).
//! ```
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use tachyon_engine::admin::{AdminAnswer, AdminQuery};
use tachyon_engine::{Engine, Mail, ShardId};

/// A request of the control plane to one shard, and where its answer goes.
pub struct AdminJob {
    pub query: Arc<AdminQuery>,
    pub reply: std::sync::mpsc::Sender<(ShardId, AdminAnswer)>,
}

/// Admin requests a shard may have waiting (the control thread sends a few at a time).
const ADMIN_INBOX: usize = 64;
/// Admin requests a shard answers per loop pass.
const ADMIN_BUDGET: usize = 8;

/// Wakes a shard that is blocked waiting for I/O (an eventfd write in the kernel driver).
/// Implementations must be cheap to call from any thread and must not block.
pub trait Waker: Send + Sync {
    fn wake(&self);
}

/// The rings and wakeup flags of all shards of one process.
pub struct Mesh {
    shard_count: usize,
    rings: Vec<ArrayQueue<Mail>>,
    /// One cache line per flag: each shard writes its own on every loop iteration.
    parked: Vec<CachePadded<AtomicBool>>,
    wakers: Vec<Arc<dyn Waker>>,
    /// Per shard, requests from the dataplane's control thread (not a shard: rare, and
    /// never on the fast path).
    admin: Vec<ArrayQueue<AdminJob>>,
}

impl Mesh {
    /// `wakers[i]` wakes shard `i`. `ring_capacity` bounds each ring (messages).
    pub fn new(wakers: Vec<Arc<dyn Waker>>, ring_capacity: usize) -> Arc<Mesh> {
        let n = wakers.len();
        Arc::new(Mesh {
            shard_count: n,
            rings: (0..n * n)
                .map(|_| ArrayQueue::new(ring_capacity.max(1)))
                .collect(),
            parked: (0..n)
                .map(|_| CachePadded::new(AtomicBool::new(false)))
                .collect(),
            wakers,
            admin: (0..n).map(|_| ArrayQueue::new(ADMIN_INBOX)).collect(),
        })
    }

    /// Hands `job` to `shard` and wakes it. Gives the job back if its inbox is full.
    pub fn submit_admin(&self, shard: ShardId, job: AdminJob) -> Result<(), AdminJob> {
        self.admin[shard].push(job)?;
        self.wakers[shard].wake();
        Ok(())
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    fn ring(&self, from: ShardId, to: ShardId) -> &ArrayQueue<Mail> {
        &self.rings[from * self.shard_count + to]
    }

    /// Marks `shard` as about to block. Returns false if mail is already waiting, in which
    /// case the shard must not block (and is not parked).
    pub fn park(&self, shard: ShardId) -> bool {
        self.parked[shard].store(true, Ordering::SeqCst);
        let empty = (0..self.shard_count).all(|from| self.ring(from, shard).is_empty())
            && self.admin[shard].is_empty();
        if !empty {
            self.parked[shard].store(false, Ordering::SeqCst);
        }
        empty
    }

    pub fn unpark(&self, shard: ShardId) {
        self.parked[shard].store(false, Ordering::SeqCst);
    }

    /// Wakes `shard` if it is parked.
    pub fn wake(&self, shard: ShardId) {
        // A plain load first: a busy shard is not parked, and a load does not take the
        // cache line exclusively as a swap would.
        if self.parked[shard].load(Ordering::SeqCst)
            && self.parked[shard].swap(false, Ordering::SeqCst)
        {
            self.wakers[shard].wake();
        }
    }

    /// Wakes every shard unconditionally (shutdown).
    pub fn wake_all(&self) {
        for w in &self.wakers {
            w.wake();
        }
    }
}

/// One shard's end of the mesh.
pub struct Port {
    shard: ShardId,
    mesh: Arc<Mesh>,
    /// Mail that did not fit into a full ring, per destination, in order.
    overflow: Vec<VecDeque<Mail>>,
    /// The ring `drain` starts with; it rotates so that a busy ring cannot starve the others.
    next_from: usize,
}

impl Port {
    pub fn new(shard: ShardId, mesh: Arc<Mesh>) -> Port {
        let n = mesh.shard_count;
        Port {
            shard,
            mesh,
            overflow: (0..n).map(|_| VecDeque::new()).collect(),
            next_from: 0,
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Mail that is still waiting for room in a ring.
    pub fn has_overflow(&self) -> bool {
        self.overflow.iter().any(|q| !q.is_empty())
    }

    /// Messages waiting for room in the rings, over all destinations.
    pub fn overflow_len(&self) -> usize {
        self.overflow.iter().map(|q| q.len()).sum()
    }

    /// Moves the engine's outgoing mail into the rings and wakes each destination once.
    pub fn flush(&mut self, engine: &mut Engine) {
        let mut touched = 0u64;
        for to in 0..self.mesh.shard_count {
            let ring = self.mesh.ring(self.shard, to);
            while let Some(m) = self.overflow[to].pop_front() {
                if let Err(m) = ring.push(m) {
                    self.overflow[to].push_front(m);
                    break;
                }
                touched |= 1 << to;
            }
        }
        while let Some((to, m)) = engine.poll_mail() {
            if !self.overflow[to].is_empty() {
                self.overflow[to].push_back(m);
                continue;
            }
            match self.mesh.ring(self.shard, to).push(m) {
                Ok(()) => touched |= 1 << to,
                Err(m) => self.overflow[to].push_back(m),
            }
        }
        for to in 0..self.mesh.shard_count {
            if touched & (1 << to) != 0 {
                self.mesh.wake(to);
            }
        }
    }

    /// Answers waiting admin requests (every loop pass, congested or not).
    pub fn serve_admin(&mut self, engine: &mut Engine, now: u64) {
        for _ in 0..ADMIN_BUDGET {
            let Some(job) = self.mesh.admin[self.shard].pop() else {
                break;
            };
            let answer = engine.handle_admin(now, &job.query);
            // The requester may have given up waiting; nothing to do then.
            let _ = job.reply.send((self.shard, answer));
        }
    }

    /// Feeds up to `budget` incoming messages to the engine. Returns how many it took.
    pub fn drain(&mut self, engine: &mut Engine, now: u64, budget: usize) -> usize {
        let mut taken = 0;
        let n = self.mesh.shard_count;
        let start = self.next_from;
        self.next_from = (start + 1) % n;
        for from in (0..n).map(|i| (start + i) % n) {
            let ring = self.mesh.ring(from, self.shard);
            while taken < budget {
                let Some(m) = ring.pop() else { break };
                engine.handle_mail(now, m);
                taken += 1;
            }
        }
        taken
    }

    /// True when incoming rings hold mail.
    pub fn inbox_pending(&self) -> bool {
        (0..self.mesh.shard_count).any(|from| !self.mesh.ring(from, self.shard).is_empty())
    }
}
