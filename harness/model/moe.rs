//! A mixture-of-experts MLP, the layer field of the architectures that have one
//! (Qwen3-MoE, Mixtral, OLMoE in `arch/llama.rs`): a router scores every expert, each
//! token goes to its top k, and the experts' SwiGLU outputs are summed with the router's
//! weights — as transformers' `*TopKRouter` + `*Experts` compute it:
//!
//! - router logits `x · Wᵀ` (`[experts, hidden]`), softmax in f32, the top k by
//!   probability (ties to the lower index), the k weights
//!   renormalised to sum to 1 where the architecture asks (`norm_topk_prob`: Qwen3-MoE's
//!   config, always for Mixtral, never for OLMoE's default; llama.cpp's graphs hard-code
//!   the same per architecture);
//! - each chosen expert's `down(silu(gate(x)) · up(x))`, times its weight, summed.
//!
//! gpt-oss routes the other way round and gates its own way ([`Routing`],
//! [`Activation`]): its router has a bias, takes the top k by logit and softmaxes those
//! k alone (`GptOssTopKRouter`); its experts have biases and a clamped SwiGLU,
//! `(clamp(up, −limit, limit) + 1) · g · σ(α·g)` with `g = min(gate, limit)`
//! (`GptOssExperts._apply_gate`; llama.cpp's `ggml_swiglu_oai` with α 1.702, limit 7).
//!
//! Memory holds every expert, but a step reads only the experts its tokens were routed
//! to: [`Usage`] counts, per layer and per forward call, how many distinct experts were
//! touched, so that a benchmark can say what a decode step streams.

use std::sync::Mutex;

use candle_core::Tensor;

use crate::model::nn::{linear_parts, Group, Linear, Part};
use crate::model::step;

/// How a router turns its logits into a token's k experts and their weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Routing {
    /// Softmax over every expert, the top k by probability, renormalised to sum to 1
    /// where `norm_topk_prob` (Qwen3-MoE, Mixtral, OLMoE).
    SoftmaxThenTopK { norm_topk_prob: bool },
    /// The top k by logit, then a softmax over those k (gpt-oss).
    TopKThenSoftmax,
}

/// How an expert combines its gate and up projections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `silu(gate) · up`.
    Silu,
    /// gpt-oss's: `(clamp(up, −limit, limit) + 1) · g · σ(alpha · g)`, `g = min(gate, limit)`.
    ClampedSwiglu { alpha: f32, limit: f32 },
}

impl Activation {
    /// `gate[i]` replaced by the activation of `gate[i]` and `up[i]`.
    pub fn apply(self, gate: &mut [f32], up: &[f32]) {
        match self {
            Activation::Silu => crate::kernel::silu::silu_mul(gate, up),
            Activation::ClampedSwiglu { alpha, limit } => {
                for (g, &u) in gate.iter_mut().zip(up) {
                    let x = g.min(limit);
                    let u = u.clamp(-limit, limit);
                    *g = (u + 1.0) * (x / (1.0 + (-alpha * x).exp()));
                }
            }
        }
    }

    /// [`Activation::apply`] on tensors of one shape (the candle path).
    pub fn forward(self, gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Silu => crate::kernel::silu::SiluMul::forward(gate, up),
            Activation::ClampedSwiglu { .. } => {
                let shape = gate.shape().clone();
                let mut g = gate.flatten_all()?.to_vec1::<f32>()?;
                let u = up.flatten_all()?.to_vec1::<f32>()?;
                self.apply(&mut g, &u);
                Tensor::from_vec(g, shape, gate.device())
            }
        }
    }
}

/// One expert: a SwiGLU MLP.
#[derive(Debug, Clone)]
pub struct Expert {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Expert {
    pub fn linears(&self) -> [&Linear; 3] {
        [&self.gate, &self.up, &self.down]
    }

    /// Bytes the expert's three matrices hold (what a step that routes to it reads).
    pub fn bytes(&self) -> usize {
        self.linears()
            .iter()
            .flat_map(|l| linear_parts(l))
            .map(|(_, p)| p.bytes())
            .sum()
    }
}

/// What the experts of one layer were asked for since the counters were reset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerUsage {
    /// Forward calls of one token per sequence (decode steps).
    pub steps: u64,
    /// Over those steps: the sum of distinct experts each touched (the union over the
    /// step's sequences).
    pub step_distinct_sum: u64,
    /// The most distinct experts one step touched.
    pub step_distinct_max: usize,
    /// Forward calls of several positions (prompts).
    pub prompts: u64,
    /// The most distinct experts one prompt's pass touched.
    pub prompt_distinct_max: usize,
    /// Every expert any call touched.
    pub touched: Vec<bool>,
}

/// The experts a layer touched, for the records; and, while tracing, every position's
/// top-k set (sorted expert ids, `top_k` a position, one after another).
#[derive(Debug, Default)]
pub struct Usage(Mutex<LayerUsage>, Mutex<Option<Vec<u16>>>);

impl Clone for Usage {
    fn clone(&self) -> Self {
        Usage(Mutex::new(self.snapshot()), Mutex::new(None))
    }
}

impl Usage {
    /// Start (`true`, afresh) or stop keeping every position's top-k set.
    pub fn trace(&self, on: bool) {
        *self.1.lock().expect("trace lock") = on.then(Vec::new);
    }

    /// The sets kept since tracing started (tracing goes on).
    pub fn take_trace(&self) -> Option<Vec<u16>> {
        self.1
            .lock()
            .expect("trace lock")
            .as_mut()
            .map(std::mem::take)
    }

    fn record_routes(&self, routes: &[Route]) {
        if let Some(t) = self.1.lock().expect("trace lock").as_mut() {
            for r in routes {
                let mut set: Vec<u16> = r.iter().map(|&(e, _)| e as u16).collect();
                set.sort_unstable();
                t.extend(set);
            }
        }
    }

    fn record(&self, hit: &[bool], positions: usize) {
        let distinct = hit.iter().filter(|&&h| h).count();
        let mut u = self.0.lock().expect("usage lock");
        if u.touched.len() < hit.len() {
            u.touched.resize(hit.len(), false);
        }
        for (t, &h) in u.touched.iter_mut().zip(hit) {
            *t |= h;
        }
        if positions == 1 {
            u.steps += 1;
            u.step_distinct_sum += distinct as u64;
            u.step_distinct_max = u.step_distinct_max.max(distinct);
        } else {
            u.prompts += 1;
            u.prompt_distinct_max = u.prompt_distinct_max.max(distinct);
        }
    }

    pub fn snapshot(&self) -> LayerUsage {
        self.0.lock().expect("usage lock").clone()
    }

    pub fn reset(&self) {
        *self.0.lock().expect("usage lock") = LayerUsage::default();
    }
}

/// A mixture-of-experts MLP (see the module documentation).
#[derive(Debug, Clone)]
pub struct Moe {
    /// `[experts, hidden]`: stored unquantized, as llama-quantize leaves
    /// `ffn_gate_inp.weight` (llama-quant.cpp: `quantize &= name.find("ffn_gate_inp.weight")
    /// == npos`).
    pub router: Linear,
    pub experts: Vec<Expert>,
    pub top_k: usize,
    pub routing: Routing,
    pub activation: Activation,
    pub usage: Usage,
}

/// One token's route: (expert, weight) for its top k.
pub type Route = Vec<(usize, f32)>;

impl Moe {
    /// The route of one row of router logits (see [`Routing`]); ties go to the lower
    /// index.
    pub fn route(&self, logits: &[f32]) -> Route {
        let softmax = |v: &[f32]| -> Vec<f32> {
            let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = v.iter().map(|&l| (l - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|e| e / sum).collect()
        };
        let top = |v: &[f32]| -> Vec<usize> {
            let mut order: Vec<usize> = (0..v.len()).collect();
            order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
            order.truncate(self.top_k);
            order
        };
        match self.routing {
            Routing::SoftmaxThenTopK { norm_topk_prob } => {
                let probs = softmax(logits);
                let mut route: Route = top(&probs).into_iter().map(|e| (e, probs[e])).collect();
                if norm_topk_prob {
                    let s: f32 = route.iter().map(|(_, w)| w).sum();
                    for (_, w) in &mut route {
                        *w /= s;
                    }
                }
                route
            }
            Routing::TopKThenSoftmax => {
                let chosen = top(logits);
                let picked: Vec<f32> = chosen.iter().map(|&e| logits[e]).collect();
                chosen.into_iter().zip(softmax(&picked)).collect()
            }
        }
    }

    fn record(&self, routes: &[Route], positions: usize) {
        self.usage.record_routes(routes);
        let mut hit = vec![false; self.experts.len()];
        for r in routes {
            for &(e, _) in r {
                hit[e] = true;
            }
        }
        self.usage.record(&hit, positions);
    }

    /// The block on `xs` `[b, len, hidden]` (the candle path).
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, len, hidden) = xs.dims3()?;
        let flat = xs.reshape((b * len, hidden))?.contiguous()?;
        let logits: Vec<Vec<f32>> = self.router.forward(&flat)?.to_vec2()?;
        let routes: Vec<Route> = logits.iter().map(|l| self.route(l)).collect();
        self.record(&routes, len);
        let mut out = vec![0f32; b * len * hidden];
        // Expert by expert over the tokens routed to it, in expert order (transformers'
        // loop over the experts hit).
        for (e, expert) in self.experts.iter().enumerate() {
            let mine: Vec<(u32, f32)> = routes
                .iter()
                .enumerate()
                .filter_map(|(t, r)| r.iter().find(|(x, _)| *x == e).map(|&(_, w)| (t as u32, w)))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let idx = Tensor::from_vec(
                mine.iter().map(|(t, _)| *t).collect::<Vec<u32>>(),
                mine.len(),
                xs.device(),
            )?;
            let x = flat.index_select(&idx, 0)?;
            let h = self
                .activation
                .forward(&expert.gate.forward(&x)?, &expert.up.forward(&x)?)?;
            let y: Vec<Vec<f32>> = expert.down.forward(&h)?.to_vec2()?;
            for ((t, w), row) in mine.iter().zip(y) {
                let dst = &mut out[*t as usize * hidden..(*t as usize + 1) * hidden];
                for (d, v) in dst.iter_mut().zip(row) {
                    *d += w * v;
                }
            }
        }
        Tensor::from_vec(out, (b, len, hidden), xs.device())
    }

    /// Whether every product has a CPU kernel (the decode step's condition).
    pub fn has_slice_products(&self) -> bool {
        self.router.slice_product().is_some()
            && self
                .experts
                .iter()
                .all(|e| e.linears().iter().all(|l| l.slice_product().is_some()))
    }

    /// The block on `b` rows of `h` (`b × hidden`) into `out`, for the decode step;
    /// `buf` holds the step's scratch rows.
    pub fn forward_rows(
        &self,
        h: &[f32],
        b: usize,
        out: &mut [f32],
        buf: &mut RowBuffers,
    ) -> candle_core::Result<()> {
        let hidden = h.len() / b;
        let n = self.experts.len();
        buf.logits.resize(b * n, 0.0);
        step::product(&self.router)?.apply(h, b, &mut buf.logits, &mut buf.products)?;
        let routes: Vec<Route> = buf.logits.chunks_exact(n).map(|l| self.route(l)).collect();
        self.record(&routes, 1);
        out.iter_mut().for_each(|v| *v = 0.0);
        let inter = self.experts[0].gate.weight.shape().0;
        buf.gate.resize(inter, 0.0);
        buf.up.resize(inter, 0.0);
        buf.down.resize(hidden, 0.0);
        for (row, route) in routes.iter().enumerate() {
            let x = &h[row * hidden..(row + 1) * hidden];
            for &(e, w) in route {
                let ex = &self.experts[e];
                step::product(&ex.gate)?.apply(x, 1, &mut buf.gate, &mut buf.products)?;
                step::product(&ex.up)?.apply(x, 1, &mut buf.up, &mut buf.products)?;
                self.activation.apply(&mut buf.gate, &buf.up);
                step::product(&ex.down)?.apply(&buf.gate, 1, &mut buf.down, &mut buf.products)?;
                for (o, v) in out[row * hidden..(row + 1) * hidden]
                    .iter_mut()
                    .zip(&buf.down)
                {
                    *o += w * v;
                }
            }
        }
        Ok(())
    }

    /// Every stored tensor, the router with the linear layers (it is a product).
    pub fn parts(&self) -> Vec<(Group, Part<'_>)> {
        let mut parts: Vec<(Group, Part<'_>)> = linear_parts(&self.router).collect();
        for e in &self.experts {
            for l in e.linears() {
                parts.extend(linear_parts(l));
            }
        }
        parts
    }

    /// Bytes every step reads whatever the route: the router.
    pub fn router_bytes(&self) -> usize {
        linear_parts(&self.router).map(|(_, p)| p.bytes()).sum()
    }

    /// Bytes one expert holds (the experts of a layer are alike).
    pub fn expert_bytes(&self) -> usize {
        self.experts.first().map_or(0, Expert::bytes)
    }
}

/// The decode step's scratch for a [`Moe`] block, kept between steps.
#[derive(Default)]
pub struct RowBuffers {
    logits: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
    products: crate::kernel::Scratch,
}

/// What a model's experts were asked for, layer by layer (the layers without experts
/// left out), and the bytes behind it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpertUsage {
    /// (layer index, experts in the layer, top k, its usage).
    pub layers: Vec<(usize, usize, usize, LayerUsage)>,
    /// Bytes of one expert, per layer (same order).
    pub expert_bytes: Vec<usize>,
}

/// Per layer: the fraction of positions whose top-k set (`k` ids a position) in
/// `theirs` equals `ours`; `None` where the traces do not cover the same positions.
pub fn top_k_agreement(
    ours: &[(usize, Vec<u16>)],
    theirs: &[(usize, Vec<u16>)],
) -> Option<Vec<f64>> {
    if ours.len() != theirs.len() {
        return None;
    }
    ours.iter()
        .zip(theirs)
        .map(|((k, a), (k2, b))| {
            if k != k2 || a.len() != b.len() || *k == 0 || a.is_empty() {
                return None;
            }
            let positions = a.len() / k;
            let same = a
                .chunks_exact(*k)
                .zip(b.chunks_exact(*k))
                .filter(|(x, y)| x == y)
                .count();
            Some(same as f64 / positions as f64)
        })
        .collect()
}

impl ExpertUsage {
    /// The weight bytes a decode step read on average, given `least` (what a step reads
    /// with `top_k` experts a layer: [`crate::model::CausalLm::streamed_bytes_per_step`]):
    /// the experts' share replaced by what the steps touched. `None` before any step.
    pub fn mean_step_bytes(&self, least: usize) -> Option<f64> {
        let routed: usize = self
            .layers
            .iter()
            .zip(&self.expert_bytes)
            .map(|((_, _, k, _), b)| k * b)
            .sum();
        Some(least.saturating_sub(routed) as f64 + self.mean_step_expert_bytes()?)
    }

    /// Over the layers: the mean distinct experts a step touched, and the mean distinct
    /// experts all the calls touched.
    pub fn means(&self) -> (Option<f64>, f64) {
        let n = self.layers.len().max(1) as f64;
        let steps = self
            .layers
            .iter()
            .map(|(_, _, _, u)| (u.steps > 0).then(|| u.step_distinct_sum as f64 / u.steps as f64))
            .sum::<Option<f64>>()
            .map(|s| s / n);
        let touched = self
            .layers
            .iter()
            .map(|(_, _, _, u)| u.touched.iter().filter(|&&t| t).count() as f64)
            .sum::<f64>()
            / n;
        (steps, touched)
    }

    /// The expert bytes a decode step read on average: per layer, the mean distinct
    /// experts a step touched times one expert's bytes.
    pub fn mean_step_expert_bytes(&self) -> Option<f64> {
        let mut total = 0.0;
        for ((_, _, _, u), &bytes) in self.layers.iter().zip(&self.expert_bytes) {
            if u.steps == 0 {
                return None;
            }
            total += u.step_distinct_sum as f64 / u.steps as f64 * bytes as f64;
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nn::Matrix;

    use candle_core::Device;

    fn moe(norm: bool) -> Moe {
        let dev = Device::Cpu;
        let lin = |out: usize, inp: usize, seed: f32| {
            let v: Vec<f32> = (0..out * inp)
                .map(|i| ((i as f32 + seed) * 0.37).sin() * 0.3)
                .collect();
            Linear::new(
                Matrix::Dense(Tensor::from_vec(v, (out, inp), &dev).unwrap()),
                None,
            )
            .unwrap()
        };
        Moe {
            router: lin(4, 8, 0.0),
            experts: (0..4)
                .map(|e| Expert {
                    gate: lin(6, 8, 1.0 + e as f32),
                    up: lin(6, 8, 2.0 + e as f32),
                    down: lin(8, 6, 3.0 + e as f32),
                })
                .collect(),
            top_k: 2,
            routing: Routing::SoftmaxThenTopK {
                norm_topk_prob: norm,
            },
            activation: Activation::Silu,
            usage: Usage::default(),
        }
    }

    #[test]
    fn routes_take_the_top_k_and_renormalise_where_asked() {
        let logits = [0.1f32, 2.0, -1.0, 1.0];
        let r = moe(false).route(&logits);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 3]);
        let sum: f32 = r.iter().map(|x| x.1).sum();
        assert!(sum < 1.0);
        let r = moe(true).route(&logits);
        let sum: f32 = r.iter().map(|x| x.1).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        // Ties go to the lower index.
        let r = moe(true).route(&[1.0, 1.0, 1.0, 0.0]);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 1]);
    }

    /// gpt-oss's router: the top k by logit, softmaxed over those k alone (so they sum
    /// to 1, the others' logits play no part); its gate: clamped, then `(up + 1) · g ·
    /// σ(α g)`, as transformers' `GptOssExperts._apply_gate` computes.
    #[test]
    fn top_k_then_softmax_and_the_clamped_swiglu_are_gpt_osss() {
        let mut m = moe(false);
        m.routing = Routing::TopKThenSoftmax;
        let r = m.route(&[0.1, 2.0, -1.0, 1.0]);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 3]);
        let e = (1.0f32).exp();
        assert!((r[0].1 - e / (e + 1.0)).abs() < 1e-6, "{r:?}");
        assert!((r[1].1 - 1.0 / (e + 1.0)).abs() < 1e-6, "{r:?}");
        // Another logit for an unchosen expert leaves the weights as they are.
        assert_eq!(m.route(&[-5.0, 2.0, -1.0, 1.0]), r);
        let act = Activation::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        };
        let mut gate = [0.5f32, 9.0, -3.0];
        act.apply(&mut gate, &[0.25, -8.0, 10.0]);
        let want = |g: f32, u: f32| {
            let g = g.min(7.0);
            (u.clamp(-7.0, 7.0) + 1.0) * g / (1.0 + (-1.702 * g).exp())
        };
        for (got, (g, u)) in gate.iter().zip([(0.5, 0.25), (9.0, -8.0), (-3.0, 10.0)]) {
            let w = want(g, u);
            assert!((got - w).abs() <= 1e-6 * w.abs().max(1.0), "{got} {w}");
        }
        // (-8 clamps to -7: (−7 + 1) · 7 · σ(11.9) ≈ −42.)
        assert!((gate[1] + 42.0).abs() < 1e-3, "{}", gate[1]);
    }

    /// The decode step's rows equal the candle path's block, and both count usage.
    #[test]
    fn rows_equal_the_candle_path_and_usage_is_counted() {
        let m = moe(true);
        let x: Vec<f32> = (0..3 * 8).map(|i| (i as f32 * 0.71).cos()).collect();
        let want = m
            .forward(&Tensor::from_vec(x.clone(), (3, 1, 8), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let u = m.usage.snapshot();
        assert_eq!((u.steps, u.prompts), (1, 0));
        if !m.has_slice_products() {
            return;
        }
        let mut out = vec![0f32; 3 * 8];
        m.forward_rows(&x, 3, &mut out, &mut RowBuffers::default())
            .unwrap();
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
        let u = m.usage.snapshot();
        assert_eq!(u.steps, 2);
        assert!(u.step_distinct_max >= 2 && u.step_distinct_max <= 4);
    }
}
