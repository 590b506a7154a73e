//! Query texts to embeddings for many concurrent requests: an LRU cache in front, and one thread that runs
//! the text tower on every text waiting at once (a batch of 32 costs far less than 32 single calls).

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Mutex};

use lru::LruCache;
use tokio::sync::oneshot;

use crate::clip::TextModel;
use crate::pipeline::query::{self, TextQuery};

use super::Metrics;

/// Texts run through the tower together at most.
const MAX_BATCH: usize = 64;

type Reply = Result<Arc<TextQuery>, String>;

struct Job {
    text: String,
    reply: oneshot::Sender<Reply>,
}

pub struct QueryEncoder {
    jobs: mpsc::Sender<Job>,
    cache: Arc<Mutex<LruCache<String, Arc<TextQuery>>>>,
    metrics: Arc<Metrics>,
}

/// An embedded query text, and whether it came from the cache.
pub struct Encoded {
    pub query: Arc<TextQuery>,
    pub cached: bool,
}

impl QueryEncoder {
    pub fn start(model: TextModel, cache_entries: usize, metrics: Arc<Metrics>) -> Self {
        let cache = Arc::new(Mutex::new(LruCache::new(
            NonZeroUsize::new(cache_entries.max(1)).expect("at least 1"),
        )));
        let (jobs, rx) = mpsc::channel::<Job>();
        let (cache2, metrics2) = (cache.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("regionseek-text".into())
            .spawn(move || encode_loop(model, rx, cache2, metrics2))
            .expect("spawning the text-tower thread");
        Self {
            jobs,
            cache,
            metrics,
        }
    }

    pub fn cached_entries(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Embeds texts (validated by the caller: non-empty, bounded length); each answer separately, so that
    /// one text the tokenizer refuses does not fail the others.
    pub async fn encode(&self, texts: &[String]) -> Vec<Result<Encoded, String>> {
        let mut answers: Vec<Option<Result<Encoded, String>>> = Vec::with_capacity(texts.len());
        let mut waiting = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for text in texts {
                match cache.get(text) {
                    Some(q) => {
                        self.metrics.cache_hits.fetch_add(1, Relaxed);
                        answers.push(Some(Ok(Encoded {
                            query: q.clone(),
                            cached: true,
                        })));
                    }
                    None => {
                        self.metrics.cache_misses.fetch_add(1, Relaxed);
                        let (tx, rx) = oneshot::channel();
                        let job = Job {
                            text: text.clone(),
                            reply: tx,
                        };
                        if self.jobs.send(job).is_err() {
                            answers.push(Some(Err("the text tower has stopped".into())));
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
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the text tower has stopped".into()),
            };
            answers[slot] = Some(answer);
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("no answer".into())))
            .collect()
    }
}

fn encode_loop(
    model: TextModel,
    jobs: mpsc::Receiver<Job>,
    cache: Arc<Mutex<LruCache<String, Arc<TextQuery>>>>,
    metrics: Arc<Metrics>,
) {
    while let Ok(first) = jobs.recv() {
        // Whatever arrived while the previous batch ran goes in this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut texts: Vec<String> = batch.iter().map(|j| j.text.clone()).collect();
        texts.sort();
        texts.dedup();
        metrics.encoded_batches.fetch_add(1, Relaxed);
        metrics.encoded_texts.fetch_add(texts.len() as u64, Relaxed);
        // A panic in the model must not take the thread (and every later query) with it.
        let guarded = |f: &dyn Fn() -> anyhow::Result<Vec<TextQuery>>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the text tower failed (panic)")))
        };
        let results: Vec<Reply> = match guarded(&|| query::embed_queries(&model, &texts)) {
            Ok(qs) => qs.into_iter().map(|q| Ok(Arc::new(q))).collect(),
            // One bad text fails a batch: each alone then, so the others still get their answer.
            Err(_) => texts
                .iter()
                .map(|t| {
                    guarded(&|| query::embed_queries(&model, std::slice::from_ref(t)))
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
