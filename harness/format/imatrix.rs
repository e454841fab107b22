//! An importance matrix, read as llama-quantize reads it (tools/quantize/quantize.cpp's
//! `load_imatrix`): llama-imatrix's GGUF form (`NAME.in_sum2` and `NAME.counts` tensors,
//! each matrix's sums divided by its count, 1 where a matrix was never reached — an
//! expert no token chose) or its legacy `.dat` form (the sums divided by the call
//! count). Keyed by GGUF tensor name; an expert tensor's entry holds one row of
//! importance values per expert, one value an input column. Both engines read it here:
//! the own engine's quantizers take each matrix's values (`ggml_quants.rs`), the
//! llama.cpp engine hands them to `llama_model_quantize`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::error::InputError;

/// Per-tensor importance values.
#[derive(Debug, Clone, PartialEq)]
pub struct Imatrix {
    /// Where it was read from (for records and errors).
    pub path: std::path::PathBuf,
    pub entries: BTreeMap<String, Vec<f32>>,
}

impl Imatrix {
    pub fn read(path: &Path) -> Result<Imatrix> {
        if !path.is_file() {
            crate::bad_input!(
                "importance matrix {} does not exist (--imatrix / engine setting imatrix)",
                path.display()
            );
        }
        let mut head = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path)?;
            let _ = f.read(&mut head)?;
        }
        let entries = if &head == b"GGUF" {
            read_gguf(path)?
        } else {
            let bytes = std::fs::read(path)?;
            parse_legacy(&bytes).ok_or_else(|| {
                InputError::new(format!(
                    "{} is neither a GGUF importance matrix nor llama-imatrix's legacy .dat form",
                    path.display()
                ))
            })?
        };
        if entries.is_empty() {
            crate::bad_input!("importance matrix {} holds no entries", path.display());
        }
        // llama-quantize: "imatrix contains non-finite value".
        for (name, v) in &entries {
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                crate::bad_input!(
                    "importance matrix {}: {name} holds the non-finite value {x}, which llama-quantize refuses",
                    path.display()
                );
            }
        }
        Ok(Imatrix {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The values for columns of `n_per_row` of the tensor `gguf_name`, expert `expert`
    /// of `n_expert` (0 of 1 for a plain matrix), as llama-quantize takes them: `None`
    /// where the file has no entry (the tensor is quantized without one); an error where
    /// the entry's size is not `n_per_row × n_expert` (llama-quantize stops there too,
    /// except for the token table).
    pub fn for_tensor(
        &self,
        gguf_name: &str,
        n_per_row: usize,
        (expert, n_expert): (usize, usize),
    ) -> Result<Option<&[f32]>> {
        let Some(v) = self.entries.get(gguf_name) else {
            return Ok(None);
        };
        if v.len() != n_per_row * n_expert {
            if gguf_name == "token_embd.weight" {
                return Ok(None);
            }
            crate::bad_input!(
                "importance matrix {}: {gguf_name} holds {} values, where the tensor has {} (columns {n_per_row} x experts {n_expert}): an importance matrix of another model?",
                self.path.display(),
                v.len(),
                n_per_row * n_expert
            );
        }
        Ok(Some(&v[expert * n_per_row..(expert + 1) * n_per_row]))
    }
}

fn read_gguf(path: &Path) -> Result<BTreeMap<String, Vec<f32>>> {
    let file = crate::model::source::gguf::GgufFile::open(path)?;
    let mut sums: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut counts: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (name, e) in &file.tensors {
        let kind = if let Some(base) = name.strip_suffix(".in_sum2") {
            Some((base.to_string(), &mut sums))
        } else {
            name.strip_suffix(".counts")
                .map(|base| (base.to_string(), &mut counts))
        };
        if let Some((base, into)) = kind {
            if e.dtype != crate::format::GgmlType::F32 {
                crate::bad_input!(
                    "importance matrix {}: {name} is {}, not f32 as llama-imatrix writes it",
                    path.display(),
                    e.dtype
                );
            }
            let bytes = file.read_bytes(name)?;
            into.insert(
                base,
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            );
        }
    }
    let mut out = BTreeMap::new();
    for (name, s) in sums {
        let Some(c) = counts.get(&name) else {
            crate::bad_input!(
                "importance matrix {}: {name} has sums but no counts",
                path.display()
            );
        };
        if c.is_empty() || s.len() % c.len() != 0 {
            crate::bad_input!(
                "importance matrix {}: {name}'s {} sums do not divide into its {} counts",
                path.display(),
                s.len(),
                c.len()
            );
        }
        let per = s.len() / c.len();
        let values = s
            .chunks(per)
            .zip(c)
            .flat_map(|(row, &count)| {
                // common/imatrix-loader.cpp keeps the counts as lround's integers.
                let count = count.round();
                row.iter()
                    .map(move |&x| if count > 0.0 { x / count } else { 1.0 })
            })
            .collect();
        out.insert(name, values);
    }
    Ok(out)
}

/// llama-imatrix's legacy form: an i32 count of entries, then per entry its name's length
/// and bytes, its call count, its value count and the f32 values (little-endian); a
/// trailing chunk count and dataset name are optional and not needed. `None` for bytes
/// that are not that.
pub fn parse_legacy(bytes: &[u8]) -> Option<BTreeMap<String, Vec<f32>>> {
    let mut at = 0usize;
    let i32_at = |at: &mut usize| -> Option<i32> {
        let b = bytes.get(*at..at.checked_add(4)?)?;
        *at += 4;
        Some(i32::from_le_bytes(b.try_into().ok()?))
    };
    let n = i32_at(&mut at)?;
    if n < 1 {
        return None;
    }
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let len = usize::try_from(i32_at(&mut at)?).ok()?;
        let name = bytes.get(at..at.checked_add(len)?)?.to_vec();
        at += len;
        let ncall = i32_at(&mut at)?;
        let nval = usize::try_from(i32_at(&mut at)?).ok()?;
        let raw = bytes.get(at..at.checked_add(nval.checked_mul(4)?)?)?;
        at += 4 * nval;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .map(|x| if ncall > 0 { x / ncall as f32 } else { x })
            .collect();
        let name = String::from_utf8(name).ok()?;
        if name.contains('\0') {
            return None;
        }
        out.insert(name, values);
    }
    Some(out)
}

/// What llama-imatrix collects of one weight tensor: per input column (per expert), the
/// sum of the squared activations, and how many activation rows were summed.
#[derive(Debug, Clone, Default)]
struct Stats {
    values: Vec<f32>,
    counts: Vec<i64>,
}

/// The statistics of llama-imatrix's `collect_imatrix`, gathered from the own engine's
/// products ([`RecordingMatrix`]): a plain matrix's inputs when a product takes 16 rows
/// or more (llama-imatrix skips smaller batches) and the tensor is a block's (`blk.`) or,
/// when asked, the output; an expert's inputs whatever their count, summed into its own
/// slice and counted for it.
#[derive(Debug, Default)]
pub struct Collector {
    stats: std::sync::Mutex<BTreeMap<String, Stats>>,
    pub process_output: bool,
}

impl Collector {
    pub fn new(process_output: bool) -> Self {
        Collector {
            stats: Default::default(),
            process_output,
        }
    }

    /// Whether products with the tensor are collected at all.
    pub fn wants(&self, gguf_name: &str) -> bool {
        gguf_name.starts_with("blk.") || (self.process_output && gguf_name == "output.weight")
    }

    /// `m` activation rows of `k` (`x`) entering a product with `gguf_name` (expert
    /// `expert` of `n_expert`; 0 of 1 for a plain matrix).
    pub fn record(
        &self,
        gguf_name: &str,
        (expert, n_expert): (usize, usize),
        x: &[f32],
        m: usize,
        k: usize,
    ) {
        if !self.wants(gguf_name) || (n_expert == 1 && m < 16) {
            return;
        }
        let mut stats = self.stats.lock().expect("no panics while held");
        let e = stats.entry(gguf_name.to_string()).or_default();
        if e.values.is_empty() {
            e.values = vec![0.0; k * n_expert];
            e.counts = vec![0; n_expert];
        }
        let acc = &mut e.values[expert * k..(expert + 1) * k];
        for row in x.chunks_exact(k).take(m) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v * v;
            }
        }
        e.counts[expert] += m as i64;
    }

    /// The first tensor whose sums are not all finite (llama-imatrix stops there: "non-finite
    /// values detected"), if any.
    pub fn non_finite(&self) -> Option<String> {
        let stats = self.stats.lock().expect("no panics while held");
        stats
            .iter()
            .find(|(_, st)| st.values.iter().any(|v| !v.is_finite()))
            .map(|(n, _)| n.clone())
    }

    /// Tensors collected so far.
    pub fn len(&self) -> usize {
        self.stats.lock().expect("no panics while held").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The statistics as llama-imatrix's GGUF file holds them: `general.type` imatrix,
    /// `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`, and per tensor (in
    /// name order) `NAME.in_sum2` (`[ne0, n_mat]` f32) and `NAME.counts` (`[1, n_mat]`).
    #[allow(clippy::type_complexity)]
    pub fn gguf(
        &self,
        datasets: &[String],
        chunks: usize,
        chunk_size: usize,
    ) -> (
        Vec<(String, crate::model::write::gguf::Meta)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
    ) {
        use crate::model::write::gguf::Meta;
        let meta = vec![
            ("general.type".to_string(), Meta::Str("imatrix".into())),
            (
                "imatrix.datasets".to_string(),
                Meta::Strs(datasets.to_vec()),
            ),
            ("imatrix.chunk_count".to_string(), Meta::U32(chunks as u32)),
            (
                "imatrix.chunk_size".to_string(),
                Meta::U32(chunk_size as u32),
            ),
        ];
        let stats = self.stats.lock().expect("no panics while held");
        let mut tensors = Vec::new();
        for (name, st) in stats.iter() {
            let nmat = st.counts.len();
            // ggml writes a tensor's dimensions without its trailing ones.
            let (sums, counts) = if nmat == 1 {
                (vec![st.values.len()], vec![1])
            } else {
                (vec![nmat, st.values.len() / nmat], vec![nmat, 1])
            };
            tensors.push((format!("{name}.in_sum2"), sums, st.values.clone()));
            tensors.push((
                format!("{name}.counts"),
                counts,
                st.counts.iter().map(|&c| c as f32).collect(),
            ));
        }
        (meta, tensors)
    }
}

/// A matrix whose products are recorded into a [`Collector`] before they are computed by
/// the matrix itself: what `quantbench imatrix` loads every block matrix as.
#[derive(Debug)]
pub struct RecordingMatrix {
    pub inner: crate::model::nn::Matrix,
    pub gguf_name: String,
    pub expert: (usize, usize),
    pub collector: std::sync::Arc<Collector>,
}

impl super::StoredMatrix for RecordingMatrix {
    fn format(&self) -> &'static str {
        "recorded"
    }
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }
    fn parts(&self) -> Vec<super::Part> {
        vec![super::Part {
            name: "weights",
            bytes: self.inner.bytes(),
        }]
    }
    fn transformers_bytes(&self) -> usize {
        self.inner.bytes()
    }
    fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let (_, k) = self.inner.shape();
        let rows = out.len() / k;
        let ids: Vec<u32> = (start..start + rows).map(|r| r as u32).collect();
        let ids =
            candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu).expect("row ids");
        let v = self
            .inner
            .rows(&ids)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .expect("rows of a matrix on the CPU");
        out.copy_from_slice(&v);
    }
    fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        let (n, k) = self.inner.shape();
        self.collector.record(&self.gguf_name, self.expert, x, m, k);
        let xs = candle_core::Tensor::from_slice(x, (m, k), &candle_core::Device::Cpu)
            .expect("activations");
        let out = self
            .inner
            .forward(&xs)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .expect("a product on the CPU");
        for (t, row) in y.chunks_exact_mut(n).enumerate() {
            for (j, o) in row.iter_mut().enumerate() {
                *o = out[t * n + j] + bias.map_or(0.0, |b| b[j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn legacy(entries: &[(&str, i32, &[f32])]) -> Vec<u8> {
        let mut b = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn the_legacy_form_is_read_as_llama_quantize_reads_it() {
        let m = parse_legacy(&legacy(&[
            ("blk.0.attn_q.weight", 4, &[4.0, 8.0]),
            ("output.weight", 0, &[3.0]),
        ]))
        .unwrap();
        assert_eq!(
            m["blk.0.attn_q.weight"],
            vec![1.0, 2.0],
            "sums over the calls"
        );
        assert_eq!(m["output.weight"], vec![3.0], "no calls: as stored");
        let mut cut = legacy(&[("a", 1, &[1.0, 2.0])]);
        cut.pop();
        assert!(parse_legacy(&cut).is_none(), "a truncated file is refused");
        assert!(parse_legacy(&0i32.to_le_bytes()).is_none(), "no entries");
        assert!(
            parse_legacy(&legacy(&[("a\0b", 1, &[1.0])])).is_none(),
            "a NUL in a name"
        );
    }

    #[test]
    fn a_tensor_takes_its_experts_slice_and_a_wrong_size_is_refused() {
        let mut entries = BTreeMap::new();
        entries.insert(
            "blk.0.ffn_up_exps.weight".to_string(),
            vec![1.0, 2.0, 3.0, 4.0],
        );
        entries.insert("token_embd.weight".to_string(), vec![1.0]);
        let m = Imatrix {
            path: "x.gguf".into(),
            entries,
        };
        assert_eq!(
            m.for_tensor("blk.0.ffn_up_exps.weight", 2, (1, 2)).unwrap(),
            Some(&[3.0, 4.0][..])
        );
        assert_eq!(
            m.for_tensor("blk.0.attn_q.weight", 2, (0, 1)).unwrap(),
            None
        );
        assert_eq!(m.for_tensor("token_embd.weight", 2, (0, 1)).unwrap(), None);
        let e = m
            .for_tensor("blk.0.ffn_up_exps.weight", 3, (0, 1))
            .unwrap_err();
        assert!(format!("{e}").contains("another model"), "{e}");
    }

    proptest! {
        /// Any bytes: an importance matrix or a refusal, never a panic or a huge
        /// allocation (lengths are checked against what the bytes hold).
        #[test]
        fn the_legacy_reader_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_legacy(&bytes);
        }

        #[test]
        fn the_legacy_reader_survives_corrupted_files(flip in 0usize..64, to in any::<u8>()) {
            let mut b = legacy(&[("blk.0.ffn_up.weight", 3, &[1.0, 2.0, 3.0]), ("x", 1, &[5.0])]);
            let at = flip % b.len();
            b[at] = to;
            let _ = parse_legacy(&b);
        }
    }
}
