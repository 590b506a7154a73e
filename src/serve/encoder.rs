//! Query texts to embeddings for many concurrent requests: an LRU cache in front, and one thread that runs
//! the text tower on the texts waiting at once (a batch of 32 costs far less than 32 single calls).

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex};

use lru::LruCache;
use tokio::sync::oneshot;

use crate::clip::TextModel;
use crate::pipeline::query::{self, TextQuery};

use super::Metrics;

/// Texts run through the tower together at most. A batch cannot be stopped once it runs, so this bounds how
/// long a new query waits behind texts whose requests have since gone: 32 texts of ~45 tokens take ~0.8 s on
/// two cores with ViT-B/32's tower (64 took ~1.5 s, 16 ~0.4 s); under a load of 32 clients asking new texts, 32
/// keeps within a few percent of the throughput 64 had (`bench-serve`), 16 lost about a tenth of it.
const MAX_BATCH: usize = 32;

type Reply = Result<Arc<TextQuery>, String>;

/// Why a text got no embedding.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EncodeError {
    /// The queue in front of the text tower is full: the server is overloaded, the client may retry.
    #[error("the server is busy: {0} query texts are already waiting for the text tower; try again shortly")]
    Busy(usize),
    #[error("{0}")]
    Failed(String),
}

struct Job {
    text: String,
    reply: oneshot::Sender<Reply>,
}

impl Job {
    /// Whether the request that asked for it has gone (answered 408, its client disconnected).
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The texts waiting for the tower. Bounded, so that a flood is refused at the door instead of queueing
/// minutes of work; jobs of requests that have gone are dropped unencoded, and make room for new ones before
/// a new one is refused.
struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Set when the encoder is dropped: the tower's thread ends once the queue is empty.
    closed: bool,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, job: Job) -> Result<(), EncodeError> {
        let mut q = self.lock();
        if q.jobs.len() >= self.capacity {
            let before = q.jobs.len();
            q.jobs.retain(|j| !j.abandoned());
            self.metrics
                .abandoned_texts
                .add((before - q.jobs.len()) as u64);
        }
        if q.jobs.len() >= self.capacity {
            self.metrics.queue_full.add(1);
            return Err(EncodeError::Busy(self.capacity));
        }
        q.jobs.push_back(job);
        self.ready.notify_one();
        Ok(())
    }

    /// Up to `max` jobs whose requests are still waiting, in arrival order; blocks while there are none.
    /// None once the queue is closed and empty.
    fn next_batch(&self, max: usize) -> Option<Vec<Job>> {
        let mut q = self.lock();
        loop {
            let mut batch = Vec::new();
            while batch.len() < max {
                let Some(job) = q.jobs.pop_front() else { break };
                if job.abandoned() {
                    self.metrics.abandoned_texts.add(1);
                } else {
                    batch.push(job);
                }
            }
            if !batch.is_empty() {
                return Some(batch);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

pub struct QueryEncoder {
    queue: Arc<JobQueue>,
    cache: Arc<Mutex<LruCache<String, Arc<TextQuery>>>>,
    metrics: Arc<Metrics>,
}

/// An embedded query text, and whether it came from the cache.
pub struct Encoded {
    pub query: Arc<TextQuery>,
    pub cached: bool,
}

impl QueryEncoder {
    pub fn start(
        model: TextModel,
        cache_entries: usize,
        max_queued: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = Arc::new(Mutex::new(LruCache::new(
            NonZeroUsize::new(cache_entries.max(1)).expect("at least 1"),
        )));
        let queue = Arc::new(JobQueue {
            state: Mutex::default(),
            ready: Condvar::new(),
            capacity: max_queued.max(1),
            metrics: metrics.clone(),
        });
        let (queue2, cache2, metrics2) = (queue.clone(), cache.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("regionseek-text".into())
            .spawn(move || encode_loop(model, &queue2, cache2, metrics2))
            .expect("spawning the text-tower thread");
        Self {
            queue,
            cache,
            metrics,
        }
    }

    pub fn cached_entries(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Embeds texts (validated by the caller: non-empty, bounded length); each answer separately, so that
    /// one text the tokenizer refuses does not fail the others.
    pub async fn encode(&self, texts: &[String]) -> Vec<Result<Encoded, EncodeError>> {
        let mut answers: Vec<Option<Result<Encoded, EncodeError>>> =
            Vec::with_capacity(texts.len());
        let mut waiting = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for text in texts {
                match cache.get(text) {
                    Some(q) => {
                        self.metrics.cache_hits.add(1);
                        answers.push(Some(Ok(Encoded {
                            query: q.clone(),
                            cached: true,
                        })));
                    }
                    None => {
                        self.metrics.cache_misses.add(1);
                        let (tx, rx) = oneshot::channel();
                        let job = Job {
                            text: text.clone(),
                            reply: tx,
                        };
                        if let Err(e) = self.queue.push(job) {
                            answers.push(Some(Err(e)));
                            continue;
                        }
                        waiting.push((answers.len(), rx));
                        answers.push(None);
                    }
                }
            }
        }
        for (slot, rx) in waiting {
            let answer = match rx.await {
                Ok(Ok(query)) => Ok(Encoded {
                    query,
                    cached: false,
                }),
                Ok(Err(e)) => Err(EncodeError::Failed(e)),
                Err(_) => Err(stopped()),
            };
            answers[slot] = Some(answer);
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(EncodeError::Failed("no answer".into()))))
            .collect()
    }
}

fn stopped() -> EncodeError {
    EncodeError::Failed("the text tower has stopped".into())
}

impl Drop for QueryEncoder {
    fn drop(&mut self) {
        self.queue.close();
    }
}

fn encode_loop(
    model: TextModel,
    queue: &JobQueue,
    cache: Arc<Mutex<LruCache<String, Arc<TextQuery>>>>,
    metrics: Arc<Metrics>,
) {
    // Whatever arrived while the previous batch ran goes in this one.
    while let Some(batch) = queue.next_batch(MAX_BATCH) {
        let mut texts: Vec<String> = batch.iter().map(|j| j.text.clone()).collect();
        texts.sort();
        texts.dedup();
        metrics.encoded_batches.add(1);
        metrics.encoded_texts.add(texts.len() as u64);
        // A panic in the model must not take the thread (and every later query) with it.
        let guarded = |f: &dyn Fn() -> anyhow::Result<Vec<TextQuery>>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the text tower failed (panic)")))
        };
        let results: Vec<Reply> = match guarded(&|| Ok(query::embed_queries(&model, &texts)?)) {
            Ok(qs) => qs.into_iter().map(|q| Ok(Arc::new(q))).collect(),
            // One bad text fails a batch: each alone then, so the others still get their answer.
            Err(_) => texts
                .iter()
                .map(|t| {
                    guarded(&|| Ok(query::embed_queries(&model, std::slice::from_ref(t))?))
                        .map(|mut q| Arc::new(q.remove(0)))
                        .map_err(|e| format!("{e:#}"))
                })
                .collect(),
        };
        {
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            for (t, r) in texts.iter().zip(&results) {
                if let Ok(q) = r {
                    c.put(t.clone(), q.clone());
                }
            }
        }
        for job in batch {
            let i = texts
                .binary_search(&job.text)
                .expect("every text is in the batch");
            let _ = job.reply.send(results[i].clone());
        }
    }
}
