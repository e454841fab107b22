//! The precisions quantbench makes, listed once, each delegating to the format that
//! stores it (`harness/format/`: names, aliases, bytes, fallbacks, how it stores and
//! multiplies, its GGUF type); the quantization policy and the rest dtype. Adding a
//! precision is its format and a line here (docs/adding-a-format.md).

use std::fmt;
use std::str::FromStr;

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
    /// ggml's MXFP4 (gpt-oss's experts): E2M1 codes with an E8M0 exponent per 32.
    Mxfp4,
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
    /// A ggml type as llama-quantize's mixes put matrices in it, where the type's name is
    /// the mix's ([`Precision::Mix`]: iq4_xs, iq4_nl, tq1_0, tq2_0, q1_0, q2_0); not one
    /// of [`Precision::ALL`]. The types [`Precision::TYPES`] lists.
    Type(crate::format::GgmlType),
    /// Every tensor as the source file stores it (a GGUF file's own mix of types, such as
    /// a Q4_K_M file's q4_k / q6_k); not one of [`Precision::ALL`], which quantbench makes.
    Native,
    /// One of llama-quantize's file types that is not one of quantbench's formats (its
    /// mixes, such as q4_k_m, and its i-quants): the llama.cpp engine makes every one;
    /// quantbench's own engine the k-quant mixes and mxfp4_moe, as llama-quantize does.
    Mix(crate::format::mix::Mix),
}

pub use crate::format::Family;
use crate::format::WeightFormat;

impl Precision {
    /// The ggml types that are a [`Precision::Type`]: those only llama-quantize's mixes
    /// put matrices in.
    pub const TYPES: [Precision; 13] = [
        Precision::Type(crate::format::GgmlType::Iq4Xs),
        Precision::Type(crate::format::GgmlType::Iq4Nl),
        Precision::Type(crate::format::GgmlType::Iq3S),
        Precision::Type(crate::format::GgmlType::Iq3Xxs),
        Precision::Type(crate::format::GgmlType::Iq2S),
        Precision::Type(crate::format::GgmlType::Iq2Xs),
        Precision::Type(crate::format::GgmlType::Iq2Xxs),
        Precision::Type(crate::format::GgmlType::Iq1M),
        Precision::Type(crate::format::GgmlType::Iq1S),
        Precision::Type(crate::format::GgmlType::Tq1_0),
        Precision::Type(crate::format::GgmlType::Tq2_0),
        Precision::Type(crate::format::GgmlType::Q1_0),
        Precision::Type(crate::format::GgmlType::Q2_0),
    ];

    /// Every precision, from the most bits to the fewest.
    pub const ALL: [Precision; 21] = [
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
        Precision::Mxfp4,
        Precision::Nf4Dq,
        Precision::Fp4Dq,
        Precision::Q3K,
        Precision::Q2K,
    ];

    /// The format that stores it (`None` for `native`, which keeps the source's).
    pub fn format(self) -> Option<&'static dyn WeightFormat> {
        use crate::format::{bnb4, float, ggml, int8};
        Some(match self {
            Precision::F32 => &float::F32,
            Precision::F16 => &float::F16,
            Precision::Bf16 => &float::BF16,
            Precision::Q8_0 => &ggml::Q8_0,
            Precision::Q6K => &ggml::Q6K,
            Precision::Q5_1 => &ggml::Q5_1,
            Precision::Q5_0 => &ggml::Q5_0,
            Precision::Q5K => &ggml::Q5K,
            Precision::Q4_1 => &ggml::Q4_1,
            Precision::Q4_0 => &ggml::Q4_0,
            Precision::Q4K => &ggml::Q4K,
            Precision::Mxfp4 => &crate::format::mxfp4::MXFP4,
            Precision::Type(t) => match t {
                crate::format::GgmlType::Iq4Xs => &crate::format::iq4::IQ4_XS,
                crate::format::GgmlType::Iq4Nl => &crate::format::iq4::IQ4_NL,
                _ => crate::format::ggml_blocks::type_format(t)?,
            },
            Precision::Q3K => &ggml::Q3K,
            Precision::Q2K => &ggml::Q2K,
            Precision::Nf4 => &bnb4::NF4_FORMAT,
            Precision::Nf4Dq => &bnb4::NF4_DQ_FORMAT,
            Precision::Fp4 => &bnb4::FP4_FORMAT,
            Precision::Fp4Dq => &bnb4::FP4_DQ_FORMAT,
            Precision::LlmInt8 => &int8::LLM_INT8,
            Precision::DynamicInt8 => &int8::DYNAMIC_INT8,
            Precision::DynamicInt8Pc => &int8::DYNAMIC_INT8_PC,
            Precision::Native | Precision::Mix(_) => return None,
        })
    }

    /// The canonical name, as written in scenarios and results.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Mix(m) => m.name(),
            _ => self.format().map_or("native", |f| f.name()),
        }
    }

    /// The family of formats it belongs to.
    pub fn family(self) -> Family {
        match self {
            Precision::Mix(_) => Family::Ggml,
            _ => self.format().map_or(Family::File, |f| f.family()),
        }
    }

    /// Whether an embedding table (and a tied LM head) can be stored in this precision.
    /// bitsandbytes and PyTorch's dynamic quantization replace linear layers only.
    pub fn holds_embeddings(self) -> bool {
        self.format().is_none_or(|f| f.holds_embeddings())
    }

    /// The dtype the unquantized rest takes when a scenario does not say: f16 for f16
    /// (a `model.half()` is f16 throughout) and for bitsandbytes' formats (transformers
    /// loads such a model in f16 unless told otherwise), f32 for the rest.
    pub fn default_rest(self) -> RestDtype {
        self.format().map_or(RestDtype::F32, |f| f.default_rest())
    }

    /// Exact bytes of an `[out, row_len]` matrix stored at this precision (after
    /// quantbench's fallbacks for rows that do not divide into blocks).
    pub fn matrix_bytes(self, out: usize, row_len: usize) -> usize {
        self.for_row_len(row_len)
            .format()
            .map_or(0, |f| f.matrix_bytes(out, row_len))
    }

    /// Other names accepted for this precision.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Precision::Mix(_) => &[],
            _ => self
                .format()
                .map_or(&["file", "as-stored"], |f| f.aliases()),
        }
    }

    /// Whether it stores fewer bits than the floats: a block format or one of
    /// bitsandbytes' or PyTorch's.
    pub fn is_quantized(self) -> bool {
        !matches!(self.family(), Family::Float | Family::File)
    }

    /// Elements per block (1 for plain floats and for `native`, which has no one format;
    /// 64 for bitsandbytes' 4-bit blocks, 1 for the row- and tensor-scaled int8 formats,
    /// whose scales are counted apart, see [`Precision::matrix_bytes`]).
    pub fn block_size(self) -> usize {
        self.format().map_or(1, |f| f.block_size())
    }

    /// Bytes per block (the element size for plain floats; 0 for `native`, whose bytes
    /// are the file's, see the GGUF source; for the custom formats the codes' bytes and
    /// the block scale, fractional parts rounded down: use [`Precision::matrix_bytes`]).
    pub fn block_bytes(self) -> usize {
        self.format().map_or(0, |f| f.block_bytes())
    }

    /// Nominal bits per weight of the format itself (the int8 formats' row or tensor
    /// scales, and double quantization's second level, are per matrix, not per weight:
    /// nf4_dq's 4.127 assumes 256 whole blocks of blocks, llm_int8's 8 leaves out
    /// 32 bits per row).
    pub fn bits_per_weight(self) -> f64 {
        self.format().map_or(0.0, |f| f.bits_per_weight())
    }

    /// Bytes that `elements` weights take in this format (which must divide into blocks).
    pub fn bytes_for(self, elements: usize) -> usize {
        elements / self.block_size() * self.block_bytes()
    }

    /// The precision llama.cpp falls back to when a matrix's rows do not divide into
    /// this format's blocks (256-element k-quant blocks on GPT-2 XL's 1600-wide rows).
    pub fn fallback(self) -> Precision {
        self.format().and_then(|f| f.fallback()).unwrap_or(self)
    }

    /// Whether rows of `row_len` elements can be stored and multiplied in this format.
    pub fn fits_row_len(self, row_len: usize) -> bool {
        self.format().is_none_or(|f| f.fits_row_len(row_len))
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
            .or_else(|| crate::format::mix::Mix::parse(&wanted).map(Precision::Mix))
            .ok_or_else(|| {
                InputError::new(format!(
                    "unknown precision '{s}'; valid precisions are: {}; and, for an engine with llama-quantize (--engine llama.cpp), its mixes and i-quants: {}",
                    Precision::valid_names(),
                    crate::format::mix::Mix::ALL.map(|m| m.name()).join(", ")
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

    /// The variant's one name: `precision/policy`, then `/rest-<dtype>` where the rest is
    /// not f32 (`q4_0/all`, `nf4/all/rest-f16`). Progress, report.md, compare, history
    /// and the exports (which put the model before it and the device after) all call a
    /// variant by it.
    pub fn key(&self) -> String {
        let mut s = format!("{}/{}", self.precision, self.policy);
        if self.rest != RestDtype::F32 {
            s += &format!("/rest-{}", self.rest);
        }
        s
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
