//! quantbench's quantizers make ggml's bytes: every ggml type quantbench quantizes (and
//! IQ4_NL, whose quantizer is ready for llama-quantize's mixes),
//! against ggml's own `ggml_quantize_chunk` (what llama-quantize calls, from the
//! libggml-base the peers script builds) on rows drawn to reach each branch — weights-like
//! normals, outliers, all-positive rows, all-zero and tiny blocks, uniform values, mostly
//! zero rows (`python3 scripts/make_reference.py --only quantizers`,
//! tests/fixtures/quantizers/reference.safetensors). Without an importance matrix; the
//! fixture also holds ggml's bytes with one (`TYPE+imatrix/...`), which quantbench's
//! quantizers do not take yet.

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use std::collections::HashMap;
use std::path::Path;

/// The types quantbench quantizes.
const OURS: [&str; 12] = [
    "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl",
    "mxfp4",
];

fn reference() -> HashMap<String, candle_core::Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quantizers/reference.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Every (fixture name, quantbench's bytes) case `cases` makes for a type on each input
/// (its name, values, row length and importance values) against the fixture's bytes of
/// that name: the number compared and a line per case that differs.
fn compare_on_inputs(
    r: &HashMap<String, candle_core::Tensor>,
    types: &[quantbench::format::GgmlType],
    cases: impl Fn(quantbench::format::GgmlType, &str, &[f32], usize, &[f32]) -> Vec<(String, Vec<u8>)>,
) -> (usize, Vec<String>) {
    let mut inputs: Vec<&String> = r.keys().filter(|k| k.starts_with("input/")).collect();
    inputs.sort();
    let (mut checked, mut failures) = (0, Vec::new());
    for &ty in types {
        for key in &inputs {
            let dist = key.trim_start_matches("input/");
            let x = &r[*key];
            let cols = x.dims()[1];
            let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let w = r[&format!("imatrix/{dist}")].to_vec1::<f32>().unwrap();
            for (name, got) in cases(ty, dist, &v, cols, &w) {
                let want = r[&name].to_vec1::<u8>().unwrap();
                checked += 1;
                if got != want {
                    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                    failures.push(format!("{name}: {differ} of {} bytes differ", want.len()));
                }
            }
        }
    }
    (checked, failures)
}

fn ours(name: &str, x: &candle_core::Tensor) -> Vec<u8> {
    if name == "iq4_nl" {
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![0u8; v.len() / 32 * 18];
        quantbench::format::mxfp4::quantize_iq4_nl(&v, &mut out);
        return out;
    }
    if name == "mxfp4" {
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut out = vec![0u8; v.len() / 32 * 17];
        quantbench::format::mxfp4::quantize_row(&v, &mut out);
        return out;
    }
    let dtype = match name {
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q8_0" => GgmlDType::Q8_0,
        "q2_k" => GgmlDType::Q2K,
        "q3_k" => GgmlDType::Q3K,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        other => panic!("no quantizer for {other}"),
    };
    let q = quantbench::model::source::weights::quantize_rows(x, dtype).unwrap();
    q.data().unwrap().into_owned()
}

#[test]
fn every_quantizer_makes_ggmls_bytes_without_an_importance_matrix() {
    let r = reference();
    let mut inputs: Vec<&String> = r.keys().filter(|k| k.starts_with("input/")).collect();
    inputs.sort();
    let types = OURS;
    let mut failures = Vec::new();
    for ty in &types {
        for key in &inputs {
            let dist = key.trim_start_matches("input/");
            let want = r[&format!("{ty}/{dist}")].to_vec1::<u8>().unwrap();
            let got = ours(ty, &r[*key]);
            if got != want {
                let blocks_differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                failures.push(format!(
                    "{ty} on {dist}: {blocks_differ} of {} bytes differ",
                    want.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every type quantbench reads by dequantization (format/ggml_blocks.rs) gives back
/// ggml's own `to_float` of blocks ggml's quantizer made, to the bit (the fixture keeps
/// ggml's values for three inputs, blocks made with the importance matrix, which four of
/// the types require).
#[test]
fn every_read_type_dequantizes_as_ggml_does_to_the_bit() {
    use quantbench::format::GgmlType;
    let r = reference();
    let mut keys: Vec<&String> = r.keys().filter(|k| k.starts_with("dequant/")).collect();
    keys.sort();
    let mut types = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for key in keys {
        let mut it = key.split('/').skip(1);
        let (ty, dist) = (it.next().unwrap(), it.next().unwrap());
        let gt = GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.lower() == ty)
            .unwrap();
        types.insert(ty);
        let bytes = r[&format!("{ty}+imatrix/{dist}")].to_vec1::<u8>().unwrap();
        let want = r[key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut got = vec![0f32; want.len()];
        quantbench::format::ggml_blocks::dequantize(gt, &bytes, &mut got);
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        if differ > 0 {
            failures.push(format!(
                "{ty} on {dist}: {differ} of {} values differ",
                want.len()
            ));
        }
    }
    assert_eq!(types.len(), 13, "{types:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// With an importance matrix, every quantizer that takes one makes ggml's bytes:
/// `quantize_<type>` with `quant_weights` (the `_impl` quantizers: `make_qkx3_quants`,
/// `make_qp_quants`, weighted `make_qx_quants`, the IQ4 searches), against the fixture's
/// `TYPE+imatrix/...` (ggml_quantize_chunk with the same weights); and IQ4_XS without one.
#[test]
fn every_quantizer_makes_ggmls_bytes_with_an_importance_matrix() {
    use quantbench::format::{ggml_quants, GgmlType};
    let types: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|t| ggml_quants::takes_importance(*t))
        .collect();
    let (checked, failures) = compare_on_inputs(&reference(), &types, |ty, dist, v, cols, w| {
        let mut cases = vec![(
            format!("{}+imatrix/{dist}", ty.lower()),
            ggml_quants::quantize_weighted(ty, v, cols, w),
        )];
        if ty == GgmlType::Iq4Xs {
            cases.push((format!("iq4_xs/{dist}"), ggml_quants::quantize_iq4_xs(v)));
        }
        cases
    });
    assert_eq!(checked, 11 * 6 + 6, "every type on every input");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The simple types' quantizers (format/ggml_blocks.rs: TQ1_0, TQ2_0, NVFP4, Q1_0, Q2_0)
/// make ggml's bytes, with and without an importance matrix (each ignores one, as ggml's
/// do).
#[test]
fn the_simple_types_quantizers_make_ggmls_bytes() {
    use quantbench::format::{ggml_blocks, GgmlType};
    let r = reference();
    let mut inputs: Vec<&String> = r.keys().filter(|k| k.starts_with("input/")).collect();
    inputs.sort();
    let mut failures = Vec::new();
    for ty in [
        GgmlType::Tq1_0,
        GgmlType::Tq2_0,
        GgmlType::Nvfp4,
        GgmlType::Q1_0,
        GgmlType::Q2_0,
    ] {
        for key in &inputs {
            let dist = key.trim_start_matches("input/");
            let v = r[*key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = ggml_blocks::quantize(ty, &v).unwrap();
            for suffix in ["", "+imatrix"] {
                let name = format!("{}{suffix}/{dist}", ty.lower());
                let want = r[&name].to_vec1::<u8>().unwrap();
                if got != want {
                    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                    failures.push(format!("{name}: {differ} of {} bytes differ", want.len()));
                }
            }
        }
    }
    assert!(ggml_blocks::quantize(GgmlType::Iq3S, &[0.0; 256]).is_none());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The grid i-quants' quantizers (format/ggml_iquants.rs: IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS,
/// IQ2_S, IQ1_S, IQ1_M) make ggml's bytes on every input, with the importance matrix and,
/// for the four whose ggml quantizer runs without one, without it.
#[test]
fn the_grid_i_quants_quantizers_make_ggmls_bytes() {
    use quantbench::format::{ggml_iquants, GgmlType};
    let r = reference();
    let types: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|t| ggml_iquants::handles(*t))
        .collect();
    let (checked, failures) = compare_on_inputs(&r, &types, |ty, dist, v, cols, w| {
        let mut cases = vec![(
            format!("{}+imatrix/{dist}", ty.lower()),
            ggml_iquants::quantize(ty, v, cols, Some(w)),
        )];
        let name = format!("{}/{dist}", ty.lower());
        if !ggml_iquants::requires_importance(ty) && r.contains_key(&name) {
            cases.push((name, ggml_iquants::quantize(ty, v, cols, None)));
        }
        cases
    });
    assert_eq!(checked, 7 * 6 + 3 * 6, "every type on every input");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
