//! quantbench's bitsandbytes and PyTorch formats against the libraries themselves: the
//! same bytes from the same weights, the same dequantized values, and the same products
//! within the rounding of a different summation order. The reference is
//! tests/fixtures/bnb/formats.safetensors, made by scripts/make_bnb_reference.py with
//! bitsandbytes 0.50.2 and torch 2.15 on the CPU (see reference.json for the versions).

use std::collections::HashMap;

use quantbench::format::bnb4::{dynamic_map_as_used, Scales};
use quantbench::format::{Bnb4, Code4, DynamicInt8, LlmInt8, StoredMatrix};
use safetensors::{Dtype, SafeTensors};

const FIXTURE: &str = "tests/fixtures/bnb/formats.safetensors";
const NAMES: [&str; 3] = ["normal", "smol", "ties"];

struct Fixture {
    bytes: Vec<u8>,
}

enum Values {
    F32(Vec<f32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
}

impl Fixture {
    fn open() -> Fixture {
        Fixture {
            bytes: std::fs::read(FIXTURE).expect("the bitsandbytes fixture"),
        }
    }

    fn get(&self, name: &str) -> (Values, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("{name} in {FIXTURE}"));
        let data = t.data();
        let v = match t.dtype() {
            Dtype::F32 => Values::F32(
                data.chunks(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::U8 => Values::U8(data.to_vec()),
            Dtype::I8 => Values::I8(data.iter().map(|&b| b as i8).collect()),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        (v, t.shape().to_vec())
    }

    fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        match self.get(name) {
            (Values::F32(v), s) => (v, s),
            _ => panic!("{name} is not f32"),
        }
    }

    fn u8(&self, name: &str) -> Vec<u8> {
        match self.get(name) {
            (Values::U8(v), _) => v,
            _ => panic!("{name} is not u8"),
        }
    }

    fn i8(&self, name: &str) -> Vec<i8> {
        match self.get(name) {
            (Values::I8(v), _) => v,
            _ => panic!("{name} is not i8"),
        }
    }
}

/// Bit-for-bit equality of f32 vectors (so -0.0 and 0.0 differ), with the first
/// difference named.
fn same_bits(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    if let Some(i) = (0..ours.len()).find(|&i| ours[i].to_bits() != theirs[i].to_bits()) {
        let differ = (0..ours.len())
            .filter(|&i| ours[i].to_bits() != theirs[i].to_bits())
            .count();
        panic!(
            "{what}: {differ} of {} differ, first at {i}: ours {} vs theirs {}",
            ours.len(),
            ours[i],
            theirs[i]
        );
    }
}

fn same_bytes<T: PartialEq + std::fmt::Debug>(ours: &[T], theirs: &[T], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
        let differ = (0..ours.len()).filter(|&i| ours[i] != theirs[i]).count();
        panic!(
            "{what}: {differ} of {} differ, first at {i}: ours {:?} vs theirs {:?}",
            ours.len(),
            ours[i],
            theirs[i]
        );
    }
}

/// Products computed in another order agree within this bound: each of the `k` terms
/// (and the running sum) rounds at most once per addition, so the difference is at most
/// about k·ε·Σ|xᵢwᵢ|; the bound takes 2k·ε·Σ|xᵢwᵢ| plus a floor for the bias add.
fn check_products(
    w: &dyn StoredMatrix,
    x: &[f32],
    bias: &[f32],
    theirs: &[f32],
    slack: f64,
    what: &str,
) {
    let (n, k) = w.shape();
    let m = x.len() / k;
    let mut ours = vec![0f32; m * n];
    w.matmul(x, m, Some(bias), &mut ours);
    let mut wd = vec![0f32; n * k];
    w.dequantize_rows(0, &mut wd);
    let mut worst = 0f64;
    for t in 0..m {
        for r in 0..n {
            let mag: f64 = (0..k)
                .map(|c| (x[t * k + c] as f64 * wd[r * k + c] as f64).abs())
                .sum::<f64>()
                + bias[r].abs() as f64;
            let bound = 2.0 * k as f64 * f32::EPSILON as f64 * mag + slack * mag + 1e-6;
            let d = (ours[t * n + r] as f64 - theirs[t * n + r] as f64).abs();
            worst = worst.max(d / bound);
            assert!(
                d <= bound,
                "{what} [{t},{r}]: ours {} vs theirs {} (|Δ| {d:e} > bound {bound:e})",
                ours[t * n + r],
                theirs[t * n + r]
            );
        }
    }
    eprintln!("{what}: worst |Δ| / bound = {worst:.3}");
}

#[test]
fn four_bit_formats_are_byte_identical_to_bitsandbytes() {
    let fx = Fixture::open();
    for name in NAMES {
        let (w, shape) = fx.f32(&format!("w.{name}"));
        let (rows, cols) = (shape[0], shape[1]);
        let (x, _) = fx.f32(&format!("x.{name}"));
        let (bias, _) = fx.f32(&format!("bias.{name}"));
        for (code, double) in [
            (Code4::Nf4, false),
            (Code4::Fp4, false),
            (Code4::Nf4, true),
            (Code4::Fp4, true),
        ] {
            let key = format!("{}{}", code.name(), if double { "_dq" } else { "" });
            let at = |part: &str| format!("{key}.{name}.{part}");
            let q = Bnb4::quantize(&w, rows, cols, code, double);
            assert_eq!(q.format(), key);
            same_bytes(&q.packed, &fx.u8(&at("packed")), &at("packed"));
            match &q.scales {
                Scales::F32(a) => same_bits(a, &fx.f32(&at("absmax")).0, &at("absmax")),
                Scales::Double {
                    q: qa,
                    absmax2,
                    offset,
                } => {
                    same_bits(&[*offset], &fx.f32(&at("offset")).0, &at("offset"));
                    same_bytes(qa, &fx.u8(&at("qabsmax")), &at("qabsmax"));
                    same_bits(absmax2, &fx.f32(&at("absmax2")).0, &at("absmax2"));
                    same_bits(dynamic_map_as_used(), &fx.f32(&at("code2")).0, &at("code2"));
                }
            }
            let mut deq = vec![0f32; rows * cols];
            q.dequantize_rows(0, &mut deq);
            same_bits(&deq, &fx.f32(&at("dequant")).0, &at("dequant"));
            // a slice of rows dequantizes to the same values as the whole
            let mut part = vec![0f32; 3 * cols];
            q.dequantize_rows(5, &mut part);
            same_bits(&part, &deq[5 * cols..8 * cols], &at("rows 5..8"));
            // the exact bytes, by part
            let n = rows * cols;
            let expect = if double {
                n / 2 + n.div_ceil(64) + 4 * n.div_ceil(64).div_ceil(256) + 4
            } else {
                n / 2 + 4 * n.div_ceil(64)
            };
            assert_eq!(q.bytes(), expect, "{key}.{name} bytes");
            assert_eq!(q.transformers_bytes(), n / 2);
            check_products(&q, &x, &bias, &fx.f32(&at("y")).0, 0.0, &at("y"));
        }
    }
}

#[test]
fn llm_int8_is_byte_identical_to_bitsandbytes() {
    let fx = Fixture::open();
    for name in NAMES {
        let (w, shape) = fx.f32(&format!("w.{name}"));
        let (rows, cols) = (shape[0], shape[1]);
        let (x, _) = fx.f32(&format!("x.{name}"));
        let (bias, _) = fx.f32(&format!("bias.{name}"));
        let q = LlmInt8::quantize(&w, rows, cols);
        same_bytes(&q.cb, &fx.i8(&format!("llm_int8.{name}.cb")), "cb");
        same_bits(&q.scb, &fx.f32(&format!("llm_int8.{name}.scb")).0, "scb");
        assert_eq!(q.bytes(), rows * cols + 4 * rows);
        assert_eq!(q.transformers_bytes(), rows * cols);
        // The activations carry outliers (7.5 in token 1, -9.0 in token 3, 6.0 exactly in
        // token 4): the outlier columns go through f32 as bitsandbytes routes them. The
        // int8 part is computed in the same f32 steps after an exact sum.
        check_products(
            &q,
            &x,
            &bias,
            &fx.f32(&format!("llm_int8.{name}.y")).0,
            0.0,
            &format!("llm_int8.{name}.y"),
        );
        // one token alone (decode): its outlier's column only
        check_products(
            &q,
            &x[cols..2 * cols],
            &bias,
            &fx.f32(&format!("llm_int8.{name}.y_row1")).0,
            0.0,
            &format!("llm_int8.{name}.y_row1"),
        );
    }
}

#[test]
fn dynamic_int8_is_byte_identical_to_pytorch() {
    let fx = Fixture::open();
    for name in NAMES {
        let (w, shape) = fx.f32(&format!("w.{name}"));
        let (rows, cols) = (shape[0], shape[1]);
        let (x, _) = fx.f32(&format!("x.{name}"));
        let (bias, _) = fx.f32(&format!("bias.{name}"));
        for (key, pc) in [("dyn", false), ("dynpc", true)] {
            let q = DynamicInt8::quantize(&w, rows, cols, pc);
            same_bytes(
                &q.q,
                &fx.i8(&format!("{key}.{name}.qweight")),
                &format!("{key}.{name}.qweight"),
            );
            let scales = if pc { "scales" } else { "scale" };
            same_bits(
                &q.scales,
                &fx.f32(&format!("{key}.{name}.{scales}")).0,
                &format!("{key}.{name}.{scales}"),
            );
            check_products(
                &q,
                &x,
                &bias,
                &fx.f32(&format!("{key}.{name}.y")).0,
                0.0,
                &format!("{key}.{name}.y"),
            );
            check_products(
                &q,
                &x[cols..2 * cols],
                &bias,
                &fx.f32(&format!("{key}.{name}.y_row1")).0,
                0.0,
                &format!("{key}.{name}.y_row1"),
            );
        }
    }
}

#[test]
fn the_fixture_holds_what_the_script_says() {
    let fx = Fixture::open();
    let st = SafeTensors::deserialize(&fx.bytes).unwrap();
    let names: HashMap<String, ()> = st
        .names()
        .into_iter()
        .map(|n| (n.to_string(), ()))
        .collect();
    for name in NAMES {
        for k in ["w", "x", "bias"] {
            assert!(names.contains_key(&format!("{k}.{name}")), "{k}.{name}");
        }
    }
    // "ties" holds rows of 32: bitsandbytes' blocks of 64 straddle two rows there.
    assert_eq!(fx.f32("w.ties").1, vec![24, 32]);
}

/// Under policy `all`, bitsandbytes' and PyTorch's formats still quantize the linear
/// layers only (as the libraries do): the embeddings stay in the rest dtype and the record
/// says so. `rest = auto` keeps the rest f16 beside bitsandbytes' formats and f16, f32
/// beside the others.
#[test]
fn library_formats_leave_the_embeddings_alone_and_say_so() {
    use candle_core::Device;
    use quantbench::model;
    use quantbench::precision::{Policy, Precision, Quantization, RestDtype};
    let src = model::resolve(&"synthetic:tiny".parse().unwrap()).unwrap();
    for p in [Precision::Nf4, Precision::LlmInt8, Precision::DynamicInt8] {
        let q = Quantization::new(p)
            .with_policy(Policy::All)
            .with_rest(RestDtype::Auto);
        let expect_rest = if p == Precision::DynamicInt8 {
            RestDtype::F32
        } else {
            RestDtype::F16
        };
        assert_eq!(q.rest, expect_rest, "{p}: auto");
        let m = model::load(&src, q, &Device::Cpu).unwrap();
        let fp = &m.footprint;
        let rest = if expect_rest == RestDtype::F16 { 2 } else { 4 };
        assert_eq!(
            fp.embeddings.bytes,
            fp.embeddings.parameters * rest,
            "{p}: embeddings in the rest dtype"
        );
        assert!(
            fp.fallbacks
                .iter()
                .any(|n| n.contains("replaces linear layers only")),
            "{p}: {:?}",
            fp.fallbacks
        );
        // the parts add up to the linear matrices' bytes
        let parts: usize = fp.by_part.iter().map(|b| b.bytes).sum();
        assert_eq!(parts, fp.linear.bytes, "{p}: parts");
    }
    assert_eq!(
        Quantization::new(Precision::F16)
            .with_rest(RestDtype::Auto)
            .rest,
        RestDtype::F16
    );
    assert_eq!(
        Quantization::new(Precision::Q4_0)
            .with_rest(RestDtype::Auto)
            .rest,
        RestDtype::F32
    );
}

/// Double quantization's offset is `absmax.mean()`: quantbench sums as PyTorch's CPU
/// kernel does on one thread (AVX2 build), checked here on a vector of GPT-2 c_fc's
/// length (36,864 blocks, long enough for every level of PyTorch's cascade). On two
/// threads PyTorch splits a reduction this long and can land an ulp away (the fixture
/// holds both results; they differ for this vector), so bitsandbytes' own offset for such
/// a matrix depends on the machine's thread count.
#[test]
fn the_offset_is_summed_as_pytorch_sums_on_one_thread() {
    use quantbench::format::bnb4::torch_sum_f32;
    let fx = Fixture::open();
    let (v, _) = fx.f32("sum.large");
    let ours = torch_sum_f32(&v) / v.len() as f32;
    let one = fx.f32("sum.large.mean_threads1").0[0];
    let two = fx.f32("sum.large.mean_threads2").0[0];
    assert_eq!(
        ours.to_bits(),
        one.to_bits(),
        "ours {ours} vs torch (1 thread) {one}"
    );
    assert_ne!(
        one.to_bits(),
        two.to_bits(),
        "the fixture shows the thread dependence"
    );
}
