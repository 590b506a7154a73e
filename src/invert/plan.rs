//! How one photo's inversion is scheduled: which gradient path (the cached Jacobian or the direct chain),
//! where the step loop runs, what memory the Jacobian and the mask chunks may take, and so how many masks
//! each chunk carries. The explainer only counts and times its own operations; the choices are made here.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::clip::ClipModel;
use crate::explain::{GradPath, MeasuredCosts, PathCosts, Relevance};

use super::{
    CostBasis, CountedEstimate, GradChoice, GradEstimate, InversionConfig, InvertError, StepLoop,
};

/// Device memory kept out of an inversion's budget: the CUDA context, cuBLAS's workspace and the forward's
/// transient activations.
const DEVICE_RESERVE_BYTES: u64 = 768 << 20;

/// Tokens per chunk of the Jacobian build: bounds its `[chunk, F, d]` temporary.
pub(super) const JACOBIAN_TOKEN_CHUNK: usize = 16;

/// The schedule of one photo's inversion, decided before its step loop.
pub(super) struct InversionPlan {
    pub path: GradPath,
    /// The step loop runs on the model's device (else on the host).
    pub on_device: bool,
    /// What `grad: Auto` chose by, for the report.
    pub grad_estimate: Option<GradEstimate>,
    pub grad_counted: Option<CountedEstimate>,
    /// What the weights leave of a device budget (None: no budget, the config's byte budgets apply).
    model_budget: Option<u64>,
    chunk_budget_bytes: usize,
    per_mask_bytes: usize,
}

impl InversionPlan {
    /// Plans the inversion of `masks` valid masks of the photo whose relevance is `rel`.
    pub fn new(
        model: &ClipModel,
        rel: &Relevance,
        masks: usize,
        cfg: &InversionConfig,
    ) -> Result<Self, InvertError> {
        // Under a device budget the Jacobian may take up to half of what the weights leave; the chunks get
        // the rest once its real size is known.
        let model_budget = model
            .device_memory_budget
            .map(|total| total.saturating_sub(model.vision_weight_bytes() + DEVICE_RESERVE_BYTES));
        let jacobian_budget = match model_budget {
            Some(available) => (available / 2) as usize,
            None => cfg.jacobian_budget_bytes,
        };
        let on_device = match cfg.step_loop {
            StepLoop::Host => false,
            StepLoop::Device => true,
            StepLoop::Auto => !rel.device().is_cpu(),
        };
        let memory = MaskMemory::of(rel, on_device);
        let mut plan = Self {
            path: GradPath::Direct,
            on_device,
            grad_estimate: None,
            grad_counted: None,
            model_budget,
            chunk_budget_bytes: cfg.chunk_budget_bytes,
            per_mask_bytes: 0,
        };
        plan.path = match cfg.grad {
            GradChoice::Direct => GradPath::Direct,
            GradChoice::Jacobian => GradPath::Jacobian,
            GradChoice::Auto => plan.cheaper_path(
                model,
                rel,
                masks,
                cfg,
                jacobian_budget as f64,
                memory.bytes(GradPath::Direct),
            )?,
        };
        plan.per_mask_bytes = memory.bytes(plan.path);
        Ok(plan)
    }

    /// `grad: Auto`: the path with fewer operations on a CPU, the faster one measured on a GPU (or as
    /// `auto_costs` says), the Jacobian only where it fits its budget.
    fn cheaper_path(
        &mut self,
        model: &ClipModel,
        rel: &Relevance,
        masks: usize,
        cfg: &InversionConfig,
        jacobian_budget: f64,
        direct_bytes_per_mask: usize,
    ) -> Result<GradPath, InvertError> {
        let evaluations = masks * cfg.steps.max(1);
        let counted = rel.costs();
        let e = evaluations as f64;
        self.grad_counted = Some(CountedEstimate {
            direct_gflop: e * counted.direct_per_eval / 1e9,
            jacobian_gflop: (counted.jacobian_build + e * counted.jacobian_per_eval) / 1e9,
        });
        let measure = match cfg.auto_costs {
            CostBasis::Auto => !rel.device().is_cpu(),
            CostBasis::Measured => true,
            CostBasis::Counted => false,
        };
        if !measure || masks == 0 || counted.jacobian_bytes > jacobian_budget {
            return Ok(by_count(&counted, evaluations, jacobian_budget));
        }
        // Measured on no more vectors than a chunk may hold, so the measurement fits where the run does.
        let most_per_chunk = (self
            .model_budget
            .map_or(cfg.chunk_budget_bytes, |a| a as usize)
            / direct_bytes_per_mask)
            .max(1);
        let (measured, measured_now) =
            measured_costs(rel, model.precision, masks.min(most_per_chunk))?;
        let (direct_s, jacobian_s) = measured.estimate(evaluations);
        self.grad_estimate = Some(GradEstimate {
            direct_s,
            jacobian_s,
            measured_now,
        });
        Ok(by_time(
            &measured,
            evaluations,
            counted.jacobian_bytes,
            jacobian_budget,
        ))
    }

    /// Masks per chunk of the step loop, once the Jacobian (if any) is built and its size known.
    pub fn masks_per_chunk(&self, jacobian_bytes: usize) -> usize {
        let budget = match self.model_budget {
            Some(available) => available.saturating_sub(jacobian_bytes as u64) as usize,
            None => self.chunk_budget_bytes,
        };
        (budget / self.per_mask_bytes.max(1)).max(1)
    }
}

/// Bytes one mask holds during a step, by path.
struct MaskMemory {
    products: usize,
    maps: usize,
    tokens: usize,
    mlp_width: usize,
    width: usize,
}

impl MaskMemory {
    fn of(rel: &Relevance, on_device: bool) -> Self {
        let n = rel.tokens;
        let size = rel.grid * rel.patch;
        let s2 = size * size;
        // Per mask and step: the ReLU products and their positive masks dominate unless fused (then U and
        // its gradient stand in); the device loop adds about eight S×S maps (fused: only the folded mask and
        // the kernel's [S, g] scratch).
        let products = if rel.fused_maps() {
            2 * n * rel.width
        } else {
            3 * rel.heads * n * n
        };
        let maps = match (on_device, rel.fused_maps()) {
            (false, _) => 0,
            (true, false) => 4 * 8 * s2,
            (true, true) => 4 * (s2 + size * rel.grid),
        };
        Self {
            products,
            maps,
            tokens: n,
            mlp_width: rel.mlp_width(),
            width: rel.width,
        }
    }

    /// The direct chain adds its `[N, F]` intermediates, the Jacobian path one more copy of U.
    fn bytes(&self, path: GradPath) -> usize {
        let chain = match path {
            GradPath::Direct => 2 * self.tokens * self.mlp_width,
            GradPath::Jacobian => self.tokens * self.width,
        };
        4 * (self.products + chain) + self.maps
    }
}

/// The path with fewer multiply-accumulates for `evaluations` token-vector evaluations (masks × steps), the
/// Jacobian only if it fits in `memory_budget` bytes. Counting assumes both paths run at one rate per MAC,
/// as on a CPU; a GPU's rates differ, and [`by_time`] decides there.
pub fn by_count(costs: &PathCosts, evaluations: usize, memory_budget: f64) -> GradPath {
    let e = evaluations as f64;
    let direct = e * costs.direct_per_eval;
    let jac = costs.jacobian_build + e * costs.jacobian_per_eval;
    if jac < direct && costs.jacobian_bytes <= memory_budget {
        GradPath::Jacobian
    } else {
        GradPath::Direct
    }
}

/// The faster path for `evaluations` by measured seconds, the Jacobian only if its `jacobian_bytes` fit in
/// `memory_budget`.
pub fn by_time(
    costs: &MeasuredCosts,
    evaluations: usize,
    jacobian_bytes: f64,
    memory_budget: f64,
) -> GradPath {
    let (direct, jacobian) = costs.estimate(evaluations);
    if jacobian < direct && jacobian_bytes <= memory_budget {
        GradPath::Jacobian
    } else {
        GradPath::Direct
    }
}

/// Measured path costs are worth reusing across photos of one shape: they depend on the device, the
/// model's sizes, the precision (the Jacobian's dtype, TF32 products) and how many token vectors each
/// evaluation carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CostKey {
    device: String,
    tokens: usize,
    width: usize,
    mlp_width: usize,
    embed_dim: usize,
    precision: crate::device::Precision,
    masks: usize,
}

/// The costs measured on this photo's device for its shape, measuring them the first time a shape is seen
/// in this process; `true` when measured now. Mask counts are bucketed down to powers of two up to 32,
/// beyond which a GPU's per-vector cost no longer falls much.
fn measured_costs(
    rel: &Relevance,
    precision: crate::device::Precision,
    masks: usize,
) -> Result<(MeasuredCosts, bool), InvertError> {
    static MEASURED: OnceLock<Mutex<HashMap<CostKey, MeasuredCosts>>> = OnceLock::new();
    let bucket = 1 << masks.clamp(1, 32).ilog2();
    let key = CostKey {
        device: format!("{:?}", rel.device().location()),
        tokens: rel.tokens,
        width: rel.width,
        mlp_width: rel.mlp_width(),
        embed_dim: rel.embed_dim,
        precision,
        masks: bucket,
    };
    let cache = MEASURED.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok((*c, false));
    }
    // Measured outside the lock: two threads meeting a new shape at once both measure, which costs a
    // little time and nothing else.
    let measured = rel.measure_costs(bucket, JACOBIAN_TOKEN_CHUNK)?;
    tracing::debug!(?key, ?measured, "gradient path costs measured");
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, measured);
    Ok((measured, true))
}
