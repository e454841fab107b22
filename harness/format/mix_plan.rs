//! llama-quantize's choice of a type for every tensor of a model at one of its file types
//! (llama-quant.cpp's `llama_tensor_get_type`: which tensors it quantizes at all, the
//! mix's rules by tensor kind, layer and model shape, and the fallback for rows a type's
//! blocks do not fit), ported for every file type but the floats: Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, the k-quant mixes (Q2_K, Q2_K_S, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K), the
//! i-quant mixes (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M, IQ3_XXS, IQ3_XS, IQ3_S,
//! IQ3_M, IQ4_NL, IQ4_XS), TQ1_0, TQ2_0, Q1_0, Q2_0 and MXFP4_MOE; with and without an
//! importance matrix (rules that differ by `has_imatrix`), without llama-quantize's
//! overrides (`--pure`, `--tensor-type` ...).
//! tests/mix_plan.rs holds it to the types of files llama-quantize made.

use anyhow::Result;

use super::GgmlType;

/// What the plan needs of the model: llama-quant.cpp reads these from the loaded model.
#[derive(Debug, Clone)]
pub struct PlanModel {
    /// GGUF's `general.architecture` (falcon has rules of its own).
    pub arch: String,
    pub n_layer: usize,
    /// 0 or 1 for a dense model.
    pub n_expert: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Whether the quantizer has an importance matrix (llama-quantize's `has_imatrix`:
    /// the IQ4 mixes keep their first ffn_down matrices at Q5_K only without one).
    pub has_imatrix: bool,
}

/// One tensor as the file lists it: its name and ggml dimensions (`ne[0]` the row
/// length).
#[derive(Debug, Clone)]
pub struct PlanTensor {
    pub name: String,
    pub ne: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        return Category::Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return Category::TokenEmbd;
    }
    for (pat, c) in [
        ("attn_qkv.weight", Category::AttnQkv),
        ("attn_kv_b.weight", Category::AttnKvB),
        ("attn_v.weight", Category::AttnV),
        ("attn_k.weight", Category::AttnK),
        ("attn_q.weight", Category::AttnQ),
        ("attn_output.weight", Category::AttnOutput),
        ("ffn_up", Category::FfnUp),
        ("ffn_gate", Category::FfnGate),
        ("ffn_down", Category::FfnDown),
    ] {
        if name.contains(pat) {
            return c;
        }
    }
    Category::Other
}

/// `tensor_allows_quantization` for the architectures quantbench reads.
fn allows_quantization(t: &PlanTensor) -> bool {
    let n = &t.name;
    // ggml_n_dims: the dimensions up to the last one above 1.
    let n_dims = t.ne.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    n_dims >= 2
        && n.ends_with("weight")
        && !n.contains("_norm.weight")
        && !n.contains("ffn_gate_inp.weight")
        && n != "position_embd.weight"
        && n != "token_types.weight"
}

/// Whether the file type is one planned here.
pub fn plannable(ftype: u32) -> bool {
    default_type(ftype).is_some()
}

/// The file type's base type (`llama_ftype_get_default_type`), for the file types
/// planned here.
fn default_type(ftype: u32) -> Option<GgmlType> {
    Some(match ftype {
        2 => GgmlType::Q4_0,
        3 => GgmlType::Q4_1,
        7 => GgmlType::Q8_0,
        8 => GgmlType::Q5_0,
        9 => GgmlType::Q5_1,
        10 | 21 => GgmlType::Q2K,
        11..=13 => GgmlType::Q3K,
        14 | 15 => GgmlType::Q4K,
        16 | 17 => GgmlType::Q5K,
        18 => GgmlType::Q6K,
        25 => GgmlType::Iq4Nl,
        30 => GgmlType::Iq4Xs,
        19 => GgmlType::Iq2Xxs,
        20 | 28 => GgmlType::Iq2Xs,
        29 => GgmlType::Iq2S,
        23 => GgmlType::Iq3Xxs,
        22 | 26 | 27 => GgmlType::Iq3S,
        24 => GgmlType::Iq1S,
        31 => GgmlType::Iq1M,
        36 => GgmlType::Tq1_0,
        37 => GgmlType::Tq2_0,
        40 => GgmlType::Q1_0,
        41 => GgmlType::Q2_0,
        38 => GgmlType::Mxfp4,
        _ => return None,
    })
}

const Q2_K: u32 = 10;
const IQ2_XXS: u32 = 19;
const IQ2_XS: u32 = 20;
const IQ3_XS: u32 = 22;
const IQ3_XXS: u32 = 23;
const IQ1_S: u32 = 24;
const IQ3_S: u32 = 26;
const IQ3_M: u32 = 27;
const IQ2_S: u32 = 28;
const IQ2_M: u32 = 29;
const IQ1_M: u32 = 31;
const Q2_K_S: u32 = 21;
const Q3_K_M: u32 = 12;
const Q3_K_L: u32 = 13;
const Q4_K_S: u32 = 14;
const Q4_K_M: u32 = 15;
const Q5_K_M: u32 = 17;
const IQ4_NL: u32 = 25;
const IQ4_XS: u32 = 30;
const MXFP4_MOE: u32 = 38;

fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    i_layer < n_layers / 8
        || i_layer >= 7 * n_layers / 8
        || (i_layer as i64 - (n_layers / 8) as i64).rem_euclid(3) == 2
}

/// Counters llama-quantize keeps while it walks the tensors in file order.
struct State {
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
    tied: bool,
}

/// The layer of a per-layer tensor: by count for a dense model, by name for a mixture of
/// experts (llama-quant.cpp's `layer_info`).
fn layer_of(model: &PlanModel, counter: usize, name: &str) -> Result<(usize, usize)> {
    if model.n_expert > 1 {
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|&l| l < model.n_layer);
        match layer {
            Some(l) => Ok((l, model.n_layer)),
            None => anyhow::bail!("failed to determine the layer of tensor {name}"),
        }
    } else {
        Ok((counter, model.n_layer))
    }
}

/// `llama_tensor_get_type_impl` for the file types planned here, branch for branch in
/// its order.
fn mix_type(
    st: &mut State,
    model: &PlanModel,
    t: &PlanTensor,
    ftype: u32,
    cat: Category,
    mut ty: GgmlType,
) -> Result<GgmlType> {
    let falcon = model.arch == "falcon";
    if cat == Category::Output || (st.tied && cat == Category::TokenEmbd) {
        let (qk, _) = ty.block().unwrap_or((1, 0));
        if ftype == MXFP4_MOE || falcon || !t.ne[0].is_multiple_of(qk) {
            ty = GgmlType::Q8_0;
        } else if matches!(
            ftype,
            IQ2_XXS | IQ2_XS | IQ3_XXS | IQ1_S | IQ2_S | IQ2_M | IQ1_M
        ) {
            ty = GgmlType::Q5K;
        } else if ty != GgmlType::Q8_0 {
            ty = GgmlType::Q6K;
        }
    } else if ftype == MXFP4_MOE {
        ty = if t.ne.get(2).copied().unwrap_or(1) > 1 {
            GgmlType::Mxfp4
        } else {
            GgmlType::Q8_0
        };
    } else if cat == Category::TokenEmbd {
        ty = match ftype {
            IQ2_XXS | IQ2_XS | IQ1_S | IQ1_M => GgmlType::Q2K,
            IQ2_S | IQ2_M | IQ3_XXS => GgmlType::Iq3S,
            36 | 37 | 41 => GgmlType::Q4K,
            _ => ty,
        };
    } else if matches!(ftype, IQ2_XXS | IQ2_XS | IQ1_S | IQ2_S | IQ2_M | IQ1_M) {
        ty = iq2_family_type(st, model, ftype, cat, ty);
    } else if matches!(cat, Category::AttnV | Category::AttnQkv | Category::AttnKvB) {
        ty = attn_v_type(st, model, ftype, ty);
        st.i_attention_wv += 1;
    } else if cat == Category::AttnK {
        if model.n_expert == 8 {
            ty = GgmlType::Q8_0;
        } else if ftype == IQ3_XS {
            ty = GgmlType::Iq3Xxs;
        } else if ftype == IQ3_XXS {
            ty = GgmlType::Iq2S;
        }
    } else if cat == Category::AttnQ {
        if ftype == IQ3_XS {
            ty = GgmlType::Iq3Xxs;
        } else if ftype == IQ3_XXS {
            ty = GgmlType::Iq2S;
        }
    } else if cat == Category::FfnDown {
        let (i, n) = layer_of(model, st.i_ffn_down, &t.name)?;
        ty = ffn_down_type(model, ftype, (i, n), ty);
        st.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        ty = attn_output_type(model, ftype, ty);
    } else if matches!(cat, Category::FfnGate | Category::FfnUp) {
        let counter = if cat == Category::FfnGate {
            &mut st.i_ffn_gate
        } else {
            &mut st.i_ffn_up
        };
        let (i, n) = layer_of(model, *counter, &t.name)?;
        if ftype == IQ3_XS && i >= n / 8 && i < 7 * n / 8 {
            ty = GgmlType::Iq3Xxs;
        }
        *counter += 1;
    }
    Ok(ty)
}

/// The IQ2 / IQ1 file types' rules (attn_v, attn_k of 8 experts, the first ffn_down
/// matrices by count, attn_output).
fn iq2_family_type(
    st: &mut State,
    model: &PlanModel,
    ftype: u32,
    cat: Category,
    mut ty: GgmlType,
) -> GgmlType {
    let n_gqa = model.n_head / model.n_head_kv.max(1);
    let iq2_s_or_m = matches!(ftype, IQ2_S | IQ2_M);
    let more = if iq2_s_or_m {
        GgmlType::Iq3S
    } else {
        GgmlType::Q2K
    };
    if matches!(cat, Category::AttnV | Category::AttnQkv | Category::AttnKvB) {
        ty = if n_gqa >= 4 || model.n_expert >= 4 {
            GgmlType::Q4K
        } else {
            more
        };
        st.i_attention_wv += 1;
    } else if model.n_expert == 8 && cat == Category::AttnK {
        ty = GgmlType::Q4K;
    } else if cat == Category::FfnDown {
        // By count, not by layer: n_ffn_down is the model's layer count.
        if st.i_ffn_down < model.n_layer / 8 {
            ty = more;
        }
        st.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        if model.n_expert == 8 {
            ty = GgmlType::Q5K;
        } else if matches!(ftype, IQ1_S | IQ1_M) {
            ty = GgmlType::Iq2Xxs;
        } else if iq2_s_or_m {
            ty = GgmlType::Iq3S;
        }
    }
    ty
}

/// attn_v (and attn_qkv, attn_kv_b): the general rules.
fn attn_v_type(st: &State, model: &PlanModel, ftype: u32, mut ty: GgmlType) -> GgmlType {
    let n_gqa = model.n_head / model.n_head_kv.max(1);
    let (i, n) = (st.i_attention_wv, st.n_attention_wv);
    if ftype == Q2_K {
        ty = if n_gqa >= 4 {
            GgmlType::Q4K
        } else {
            GgmlType::Q3K
        };
    } else if ftype == Q2_K_S && n_gqa >= 4 {
        ty = GgmlType::Q4K;
    } else if ftype == IQ3_XXS {
        ty = if n_gqa >= 4 {
            GgmlType::Q4K
        } else if !model.has_imatrix {
            GgmlType::Iq3S
        } else {
            GgmlType::Iq3Xxs
        };
    } else if (matches!(ftype, IQ3_XS | IQ3_S) && n_gqa >= 4) || ftype == IQ3_M {
        ty = GgmlType::Q4K;
    } else if ftype == Q3_K_M {
        ty = if i < 2 { GgmlType::Q5K } else { GgmlType::Q4K };
    } else if ftype == Q3_K_L || (matches!(ftype, IQ4_NL | IQ4_XS) && n_gqa >= 4) {
        ty = GgmlType::Q5K;
    } else if (ftype == Q4_K_M || ftype == Q5_K_M) && use_more_bits(i, n) {
        ty = GgmlType::Q6K;
    } else if ftype == Q4_K_S && i < 4 {
        ty = GgmlType::Q5K;
    }
    // LLM_TYPE_70B: 80 layers with grouped keys and values (Llama 2/3 70B).
    let seventy_b = model.arch == "llama" && model.n_layer == 80 && n_gqa > 1;
    if seventy_b && matches!(ty, GgmlType::Q3K | GgmlType::Q4K) {
        ty = GgmlType::Q5K;
    }
    if model.n_expert == 8 {
        ty = GgmlType::Q8_0;
    }
    ty
}

/// ffn_down of layer `i` of `n`: the general rules.
fn ffn_down_type(
    model: &PlanModel,
    ftype: u32,
    (i, n): (usize, usize),
    mut ty: GgmlType,
) -> GgmlType {
    let falcon = model.arch == "falcon";
    if ftype == Q2_K {
        ty = GgmlType::Q3K;
    } else if ftype == Q2_K_S {
        if i < n / 8 {
            ty = GgmlType::Q4K;
        }
    } else if ftype == IQ3_XXS && !model.has_imatrix {
        ty = if i < n / 8 {
            GgmlType::Q4K
        } else {
            GgmlType::Q3K
        };
    } else if ftype == Q3_K_M {
        ty = if i < n / 16 {
            GgmlType::Q5K
        } else if !falcon || use_more_bits(i, n) {
            GgmlType::Q4K
        } else {
            GgmlType::Q3K
        };
    } else if ftype == IQ3_M && (i < n / 8 || (model.n_expert == 8 && use_more_bits(i, n))) {
        ty = GgmlType::Q4K;
    } else if ftype == Q3_K_L {
        ty = if falcon { GgmlType::Q4K } else { GgmlType::Q5K };
    } else if ftype == Q4_K_M {
        if falcon {
            ty = if i < n / 16 {
                GgmlType::Q6K
            } else if use_more_bits(i, n) {
                GgmlType::Q5K
            } else {
                GgmlType::Q4K
            };
        } else if use_more_bits(i, n) {
            ty = GgmlType::Q6K;
        }
    } else if i < n / 8 && matches!(ftype, IQ4_NL | IQ4_XS) && !model.has_imatrix {
        ty = GgmlType::Q5K;
    } else if ftype == Q5_K_M && use_more_bits(i, n) {
        ty = GgmlType::Q6K;
    } else if ftype == Q4_K_S && !falcon && i < n / 8 {
        ty = GgmlType::Q5K;
    } else if matches!(ftype, 2 | 8) && model.has_imatrix && i < n / 8 {
        // Q4_0 / Q5_0 with an importance matrix: the first ffn_down at Q4_1 / Q5_1.
        ty = if ftype == 2 {
            GgmlType::Q4_1
        } else {
            GgmlType::Q5_1
        };
    }
    ty
}

/// attn_output: the general rules.
fn attn_output_type(model: &PlanModel, ftype: u32, mut ty: GgmlType) -> GgmlType {
    if model.arch != "falcon" {
        if model.n_expert == 8 {
            if matches!(
                ftype,
                Q2_K | IQ3_XS
                    | IQ3_XXS
                    | 11
                    | Q3_K_M
                    | IQ4_NL
                    | Q4_K_S
                    | Q4_K_M
                    | IQ3_S
                    | IQ3_M
                    | IQ4_XS
            ) {
                ty = GgmlType::Q5K;
            }
        } else {
            ty = match ftype {
                Q2_K => GgmlType::Q3K,
                IQ3_XXS => GgmlType::Iq3S,
                Q3_K_M | IQ3_M => GgmlType::Q4K,
                Q3_K_L => GgmlType::Q5K,
                _ => ty,
            };
        }
    } else if ftype == Q3_K_L {
        ty = GgmlType::Q4K;
    }
    ty
}

/// `tensor_type_fallback`: a type whose blocks do not divide the rows falls back (q4_k
/// to q5_0, q6_k to q8_0 ...), and to F16 where that does not fit either.
fn fallback(t: &PlanTensor, ty: GgmlType) -> Result<GgmlType> {
    let ncols = t.ne[0];
    let (qk, _) = ty.block().unwrap_or((1, 0));
    if ncols.is_multiple_of(qk) {
        return Ok(ty);
    }
    let back = match ty {
        GgmlType::Iq1S
        | GgmlType::Iq1M
        | GgmlType::Iq2Xxs
        | GgmlType::Iq2Xs
        | GgmlType::Iq2S
        | GgmlType::Iq3Xxs
        | GgmlType::Iq3S
        | GgmlType::Iq4Xs => GgmlType::Iq4Nl,
        GgmlType::Q2_0 | GgmlType::Q2K | GgmlType::Q3K | GgmlType::Tq1_0 | GgmlType::Tq2_0 => {
            GgmlType::Q4_0
        }
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other if qk <= 32 => other,
        other => anyhow::bail!("no tensor type fallback is defined for type {other}"),
    };
    let (qk, _) = back.block().unwrap_or((1, 0));
    Ok(if ncols.is_multiple_of(qk) {
        back
    } else {
        GgmlType::F16
    })
}

/// llama-quantize's `tensor_requires_imatrix`: whether it refuses to quantize tensor
/// `name` to `ty` at `ftype` without importance values for it (the IQ3_XXS, IQ2 and IQ1
/// types anywhere but the token table and the output; Q2_K in a Q2_K_S file).
pub fn requires_imatrix(ftype: u32, name: &str, ty: GgmlType) -> bool {
    if matches!(category(name), Category::TokenEmbd | Category::Output) {
        return false;
    }
    match ty {
        GgmlType::Iq3Xxs
        | GgmlType::Iq2Xxs
        | GgmlType::Iq2Xs
        | GgmlType::Iq2S
        | GgmlType::Iq1M
        | GgmlType::Iq1S => true,
        GgmlType::Q2K => ftype == Q2_K_S,
        _ => false,
    }
}

/// Each tensor's type at `ftype` (llama.h's `llama_ftype` number), in the file's order;
/// `None` for a tensor llama-quantize keeps as it is (norms, biases, routers, vectors).
/// An error for a file type not planned here.
pub fn plan(
    ftype: u32,
    model: &PlanModel,
    tensors: &[PlanTensor],
) -> Result<Vec<Option<GgmlType>>> {
    let Some(base) = default_type(ftype) else {
        anyhow::bail!("llama-quantize's file type {ftype} is not one quantbench plans");
    };
    let cats: Vec<Category> = tensors.iter().map(|t| category(&t.name)).collect();
    let mut st = State {
        n_attention_wv: cats
            .iter()
            .filter(|c| matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB))
            .count(),
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        tied: !cats.contains(&Category::Output),
    };
    tensors
        .iter()
        .zip(cats)
        .map(|(t, cat)| {
            if !allows_quantization(t) {
                return Ok(None);
            }
            let ty = mix_type(&mut st, model, t, ftype, cat, base)?;
            Ok(Some(fallback(t, ty)?))
        })
        .collect()
}
