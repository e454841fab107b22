//! Precisions, their aliases, the quantization policy, and bits-per-weight arithmetic.
//!
//! This is the only place that knows the list of precisions: adding one is a change
//! here (plus a kernel in candle, if it needs one).

use std::fmt;
use std::str::FromStr;

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// How the weight matrices of a model are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q6K,
    Q5_1,
    Q5_0,
    Q5K,
    Q4_1,
    Q4_0,
    Q4K,
    Q3K,
    Q2K,
    /// bitsandbytes NF4: blocks of 64, one f32 absmax each (transformers'
    /// `bnb_4bit_quant_type="nf4"`).
    Nf4,
    /// NF4 with double quantization (`bnb_4bit_use_double_quant=True`, QLoRA's storage).
    Nf4Dq,
    /// bitsandbytes FP4 (e2m1): transformers' default 4-bit type.
    Fp4,
    /// FP4 with double quantization.
    Fp4Dq,
    /// bitsandbytes LLM.int8 (`load_in_8bit=True`): row-wise int8 weights, per-token int8
    /// activations, outlier columns above 6.0 in f32.
    LlmInt8,
    /// PyTorch `quantize_dynamic` qint8: one weight scale per matrix, activations
    /// quantized per call (fbgemm, reduce_range).
    DynamicInt8,
    /// The same with one weight scale per output row (`per_channel_dynamic_qconfig`).
    DynamicInt8Pc,
    /// Every tensor as the source file stores it (a GGUF file's own mix of types, such as
    /// a Q4_K_M file's q4_k / q6_k); not one of [`Precision::ALL`], which quantbench makes.
    Native,
}

/// What a precision is made of: a plain float dtype, a ggml block format, or whatever
/// the source file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Float(DType),
    Blocks(GgmlDType),
    AsStored,
    /// One of quantbench's own formats (harness/format/).
    Custom(Custom),
}

/// The formats in harness/format/.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Custom {
    Bnb4 {
        code: crate::format::Code4,
        double: bool,
    },
    LlmInt8,
    DynamicInt8 {
        per_channel: bool,
    },
}

/// Which family a precision belongs to, for reports and charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Float,
    Ggml,
    Bitsandbytes,
    PyTorch,
    File,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Float => "float",
            Family::Ggml => "ggml",
            Family::Bitsandbytes => "bitsandbytes",
            Family::PyTorch => "pytorch",
            Family::File => "file",
        }
    }
}

impl Precision {
    /// Every precision, from the most bits to the fewest.
    pub const ALL: [Precision; 20] = [
        Precision::F32,
        Precision::F16,
        Precision::Bf16,
        Precision::Q8_0,
        Precision::LlmInt8,
        Precision::DynamicInt8Pc,
        Precision::DynamicInt8,
        Precision::Q6K,
        Precision::Q5_1,
        Precision::Q5_0,
        Precision::Q5K,
        Precision::Q4_1,
        Precision::Nf4,
        Precision::Fp4,
        Precision::Q4_0,
        Precision::Q4K,
        Precision::Nf4Dq,
        Precision::Fp4Dq,
        Precision::Q3K,
        Precision::Q2K,
    ];

    /// The canonical name, as written in scenarios and results.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
            Precision::Q8_0 => "q8_0",
            Precision::Q6K => "q6_k",
            Precision::Q5_1 => "q5_1",
            Precision::Q5_0 => "q5_0",
            Precision::Q5K => "q5_k",
            Precision::Q4_1 => "q4_1",
            Precision::Q4_0 => "q4_0",
            Precision::Q4K => "q4_k",
            Precision::Q3K => "q3_k",
            Precision::Q2K => "q2_k",
            Precision::Nf4 => "nf4",
            Precision::Nf4Dq => "nf4_dq",
            Precision::Fp4 => "fp4",
            Precision::Fp4Dq => "fp4_dq",
            Precision::LlmInt8 => "llm_int8",
            Precision::DynamicInt8 => "dynamic_int8",
            Precision::DynamicInt8Pc => "dynamic_int8_pc",
            Precision::Native => "native",
        }
    }

    /// The family of formats it belongs to.
    pub fn family(self) -> Family {
        match self.storage() {
            Storage::Float(_) => Family::Float,
            Storage::Blocks(_) => Family::Ggml,
            Storage::AsStored => Family::File,
            Storage::Custom(Custom::DynamicInt8 { .. }) => Family::PyTorch,
            Storage::Custom(_) => Family::Bitsandbytes,
        }
    }

    /// Whether an embedding table (and a tied LM head) can be stored in this precision.
    /// bitsandbytes and PyTorch's dynamic quantization replace linear layers only.
    pub fn holds_embeddings(self) -> bool {
        !matches!(self.storage(), Storage::Custom(_))
    }

    /// The dtype the unquantized rest takes when a scenario does not say: f16 for f16
    /// (a `model.half()` is f16 throughout) and for bitsandbytes' formats (transformers
    /// loads such a model in f16 unless told otherwise), f32 for the rest.
    pub fn default_rest(self) -> RestDtype {
        match (self, self.family()) {
            (Precision::F16, _) | (_, Family::Bitsandbytes) => RestDtype::F16,
            _ => RestDtype::F32,
        }
    }

    /// Exact bytes of an `[out, row_len]` matrix stored at this precision (after
    /// quantbench's fallbacks for rows that do not divide into blocks).
    pub fn matrix_bytes(self, out: usize, row_len: usize) -> usize {
        let n = out * row_len;
        match self.storage() {
            Storage::Custom(Custom::Bnb4 { double, .. }) => {
                let blocks = n.div_ceil(64);
                n.div_ceil(2)
                    + if double {
                        blocks + 4 * blocks.div_ceil(256) + 4
                    } else {
                        4 * blocks
                    }
            }
            Storage::Custom(Custom::LlmInt8) => n + 4 * out,
            Storage::Custom(Custom::DynamicInt8 { per_channel }) => {
                n + 4 * out + if per_channel { 4 * out } else { 4 }
            }
            _ => self.for_row_len(row_len).bytes_for(n),
        }
    }

    /// Other names accepted for this precision.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Precision::F32 => &["fp32", "float32"],
            Precision::F16 => &["fp16", "float16", "half"],
            Precision::Bf16 => &["bfloat16"],
            Precision::Q8_0 => &["int8", "q8"],
            Precision::Q4_0 => &["int4", "q4"],
            Precision::Q6K => &["q6k"],
            Precision::Q5K => &["q5k"],
            Precision::Q4K => &["q4k"],
            Precision::Q3K => &["q3k"],
            Precision::Q2K => &["q2k"],
            Precision::Native => &["file", "as-stored"],
            Precision::Nf4 => &["bnb-nf4"],
            Precision::Nf4Dq => &["nf4-dq", "qlora"],
            Precision::Fp4 => &["bnb-fp4", "bnb-int4", "bnb-4bit"],
            Precision::Fp4Dq => &["fp4-dq"],
            Precision::LlmInt8 => &["llm.int8", "bnb-int8", "bnb-8bit"],
            Precision::DynamicInt8 => &["torch-dynamic-int8", "qint8"],
            Precision::DynamicInt8Pc => &["dynamic_int8_per_channel"],
            _ => &[],
        }
    }

    pub fn storage(self) -> Storage {
        match self {
            Precision::F32 => Storage::Float(DType::F32),
            Precision::F16 => Storage::Float(DType::F16),
            Precision::Bf16 => Storage::Float(DType::BF16),
            Precision::Q8_0 => Storage::Blocks(GgmlDType::Q8_0),
            Precision::Q6K => Storage::Blocks(GgmlDType::Q6K),
            Precision::Q5_1 => Storage::Blocks(GgmlDType::Q5_1),
            Precision::Q5_0 => Storage::Blocks(GgmlDType::Q5_0),
            Precision::Q5K => Storage::Blocks(GgmlDType::Q5K),
            Precision::Q4_1 => Storage::Blocks(GgmlDType::Q4_1),
            Precision::Q4_0 => Storage::Blocks(GgmlDType::Q4_0),
            Precision::Q4K => Storage::Blocks(GgmlDType::Q4K),
            Precision::Q3K => Storage::Blocks(GgmlDType::Q3K),
            Precision::Q2K => Storage::Blocks(GgmlDType::Q2K),
            Precision::Native => Storage::AsStored,
            Precision::Nf4 | Precision::Nf4Dq | Precision::Fp4 | Precision::Fp4Dq => {
                Storage::Custom(Custom::Bnb4 {
                    code: if matches!(self, Precision::Nf4 | Precision::Nf4Dq) {
                        crate::format::Code4::Nf4
                    } else {
                        crate::format::Code4::Fp4
                    },
                    double: matches!(self, Precision::Nf4Dq | Precision::Fp4Dq),
                })
            }
            Precision::LlmInt8 => Storage::Custom(Custom::LlmInt8),
            Precision::DynamicInt8 => Storage::Custom(Custom::DynamicInt8 { per_channel: false }),
            Precision::DynamicInt8Pc => Storage::Custom(Custom::DynamicInt8 { per_channel: true }),
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self.storage(), Storage::Blocks(_) | Storage::Custom(_))
    }

    /// Elements per block (1 for plain floats and for `native`, which has no one format;
    /// 64 for bitsandbytes' 4-bit blocks, 1 for the row- and tensor-scaled int8 formats,
    /// whose scales are counted apart, see [`Precision::matrix_bytes`]).
    pub fn block_size(self) -> usize {
        match self.storage() {
            Storage::Float(_) | Storage::AsStored => 1,
            Storage::Blocks(q) => q.block_size(),
            Storage::Custom(Custom::Bnb4 { .. }) => 64,
            Storage::Custom(_) => 1,
        }
    }

    /// Bytes per block (the element size for plain floats; 0 for `native`, whose bytes
    /// are the file's, see the GGUF source; for the custom formats the codes' bytes and
    /// the block scale, fractional parts rounded down: use [`Precision::matrix_bytes`]).
    pub fn block_bytes(self) -> usize {
        match self.storage() {
            Storage::AsStored => 0,
            Storage::Float(d) => d.size_in_bytes(),
            Storage::Blocks(q) => q.type_size(),
            Storage::Custom(Custom::Bnb4 { double: false, .. }) => 36,
            Storage::Custom(Custom::Bnb4 { double: true, .. }) => 33,
            Storage::Custom(_) => 1,
        }
    }

    /// Nominal bits per weight of the format itself (the int8 formats' row or tensor
    /// scales, and double quantization's second level, are per matrix, not per weight:
    /// nf4_dq's 4.127 assumes 256 whole blocks of blocks, llm_int8's 8 leaves out
    /// 32 bits per row).
    pub fn bits_per_weight(self) -> f64 {
        match self.storage() {
            Storage::Custom(Custom::Bnb4 { double: true, .. }) => {
                4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0)
            }
            _ => self.block_bytes() as f64 * 8.0 / self.block_size() as f64,
        }
    }

    /// Bytes that `elements` weights take in this format (which must divide into blocks).
    pub fn bytes_for(self, elements: usize) -> usize {
        elements / self.block_size() * self.block_bytes()
    }

    /// The precision llama.cpp falls back to when a matrix's rows do not divide into
    /// this format's blocks (256-element k-quant blocks on GPT-2 XL's 1600-wide rows).
    pub fn fallback(self) -> Precision {
        match self {
            Precision::Q2K | Precision::Q3K => Precision::Q4_0,
            Precision::Q4K => Precision::Q5_0,
            Precision::Q5K => Precision::Q5_1,
            Precision::Q6K => Precision::Q8_0,
            other => other,
        }
    }

    /// Whether rows of `row_len` elements can be stored and multiplied in this format:
    /// they must divide into whole blocks, and candle's q4_1 / q5_0 / q5_1 kernels (as
    /// ggml's) take an even number of blocks.
    pub fn fits_row_len(self, row_len: usize) -> bool {
        if matches!(self.storage(), Storage::Custom(_)) {
            // blocks over the flattened matrix, as bitsandbytes: any shape
            return true;
        }
        let bs = self.block_size();
        let even_blocks = matches!(self, Precision::Q4_1 | Precision::Q5_0 | Precision::Q5_1);
        row_len.is_multiple_of(bs) && (!even_blocks || (row_len / bs).is_multiple_of(2))
    }

    /// The precision a row of `row_len` elements is stored in: this one if it fits, else
    /// its llama.cpp fallback, else q8_0, else f32.
    pub fn for_row_len(self, row_len: usize) -> Precision {
        [self, self.fallback(), Precision::Q8_0]
            .into_iter()
            .find(|p| p.fits_row_len(row_len))
            .unwrap_or(Precision::F32)
    }

    /// A comma-separated list of every accepted name, for error messages and `list`.
    pub fn valid_names() -> String {
        Precision::ALL
            .iter()
            .chain([Precision::Native].iter())
            .map(|p| {
                if p.aliases().is_empty() {
                    p.name().to_string()
                } else {
                    format!("{} ({})", p.name(), p.aliases().join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Precision::ALL
            .iter()
            .chain([Precision::Native].iter())
            .copied()
            .find(|p| p.name() == wanted || p.aliases().contains(&wanted.as_str()))
            .ok_or_else(|| {
                InputError::new(format!(
                    "unknown precision '{s}'; valid precisions are: {}",
                    Precision::valid_names()
                ))
            })
    }
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which weights a precision applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Every weight matrix a format can hold: the four linear layers of each block, the
    /// tied token embedding / LM head and the position embedding (as llama.cpp does).
    #[default]
    All,
    /// Only the four linear layers of each block (as bitsandbytes does).
    Linear,
}

impl FromStr for Policy {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Policy::All),
            "linear" => Ok(Policy::Linear),
            _ => Err(InputError::new(format!(
                "unknown quantization policy '{s}'; valid policies are: all, linear"
            ))),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::All => "all",
            Policy::Linear => "linear",
        })
    }
}

/// The dtype of the weights a precision does not apply to (norms and biases always, and
/// the embeddings under the `linear` policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestDtype {
    F32,
    /// As transformers keeps a bitsandbytes model's unquantized weights.
    F16,
    /// Each precision's own default ([`Precision::default_rest`]): f16 beside f16 and
    /// bitsandbytes' formats, f32 otherwise. Resolved when a [`Quantization`] is made;
    /// a loaded model's rest is never `auto`.
    #[default]
    Auto,
}

impl RestDtype {
    pub fn dtype(self) -> DType {
        match self {
            RestDtype::F32 | RestDtype::Auto => DType::F32,
            RestDtype::F16 => DType::F16,
        }
    }

    /// This choice for a given precision: `auto` becomes the precision's default.
    pub fn resolve(self, precision: Precision) -> RestDtype {
        match self {
            RestDtype::Auto => precision.default_rest(),
            other => other,
        }
    }
}

impl FromStr for RestDtype {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(RestDtype::F32),
            "f16" | "fp16" => Ok(RestDtype::F16),
            "auto" => Ok(RestDtype::Auto),
            _ => Err(InputError::new(format!(
                "unknown dtype '{s}' for the unquantized rest; valid: f32, f16, auto (f16 beside f16 and bitsandbytes' formats, f32 otherwise)"
            ))),
        }
    }
}

impl fmt::Display for RestDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestDtype::F32 => "f32",
            RestDtype::F16 => "f16",
            RestDtype::Auto => "auto",
        })
    }
}

/// A precision together with what it applies to and how the rest is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantization {
    pub precision: Precision,
    pub policy: Policy,
    pub rest: RestDtype,
}

impl Quantization {
    /// The precision with policy `all` and the rest in f32 (`with_rest(RestDtype::Auto)`
    /// gives the precision's own default instead, as scenarios do unless they say).
    pub fn new(precision: Precision) -> Self {
        Quantization {
            precision,
            policy: Policy::All,
            rest: RestDtype::F32,
        }
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The rest dtype (`auto` resolved for this precision).
    pub fn with_rest(mut self, rest: RestDtype) -> Self {
        self.rest = rest.resolve(self.precision);
        self
    }

    /// The f32 reference: every weight in f32 (precision f32 and the rest in f32; the
    /// policy then makes no difference). Speed-ups, savings and the quality pass are all
    /// measured against this configuration, and only this one.
    pub fn is_f32_reference(&self) -> bool {
        self.precision == Precision::F32 && self.rest == RestDtype::F32
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (policy {}, rest {})",
            self.precision, self.policy, self.rest
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            for a in p.aliases() {
                assert_eq!(a.parse::<Precision>().unwrap(), p);
            }
        }
        assert_eq!("INT8".parse::<Precision>().unwrap(), Precision::Q8_0);
        assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("int4".parse::<Precision>().unwrap(), Precision::Q4_0);
    }

    #[test]
    fn unknown_precision_lists_valid_names() {
        let err = "int3".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("'int3'"), "{err}");
        for p in Precision::ALL {
            assert!(err.contains(p.name()), "{err} lacks {}", p.name());
        }
    }

    #[test]
    fn formats_have_the_ggml_sizes() {
        assert_eq!(Precision::Q8_0.bits_per_weight(), 8.5);
        assert_eq!(Precision::Q4_0.bits_per_weight(), 4.5);
        assert_eq!(Precision::Q4K.bits_per_weight(), 4.5);
        assert_eq!(Precision::Q6K.bits_per_weight(), 6.5625);
        assert_eq!(Precision::Q2K.bits_per_weight(), 2.625);
        assert_eq!(Precision::F16.bits_per_weight(), 16.0);
        assert_eq!(Precision::Q8_0.bytes_for(64), 68);
    }

    #[test]
    fn k_quants_fall_back_on_rows_that_do_not_divide() {
        assert_eq!(Precision::Q4K.for_row_len(768), Precision::Q4K);
        assert_eq!(Precision::Q4K.for_row_len(1600), Precision::Q5_0);
        assert_eq!(Precision::Q6K.for_row_len(1600), Precision::Q8_0);
        assert_eq!(Precision::Q4_0.for_row_len(1600), Precision::Q4_0);
        assert_eq!(Precision::Q4_0.for_row_len(20), Precision::F32);
        // 96 = 3 blocks of 32: q5_0's kernel wants an even count, so q8_0 it is.
        assert_eq!(Precision::Q4K.for_row_len(96), Precision::Q8_0);
        assert_eq!(Precision::Q5_1.for_row_len(96), Precision::Q8_0);
        assert_eq!(Precision::Q4_0.for_row_len(96), Precision::Q4_0);
    }
}
