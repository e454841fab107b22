//! llama-quantize's file types that are not one of quantbench's own formats: its mixes
//! (q4_k_m keeps some tensors at q6_k, iq4_xs puts the output at q6_k, ...) and the
//! types only mixes use. A precision names one as
//! [`crate::precision::Precision::Mix`]. The llama.cpp engine makes every one through
//! llama-quantize; quantbench's own engine makes every one too
//! (`format::mix_plan` chooses each tensor's type as
//! llama-quantize does, the blocks are ggml's, byte for byte), asking for an importance
//! matrix where llama-quantize does (exit 2 without one).
//!
//! The names and numbers are llama.h's `enum llama_ftype` and llama-quantize's option
//! names (tools/quantize/quantize.cpp's `QUANT_OPTIONS`), lower-cased — but for `Q2_K`,
//! whose name quantbench's single type `q2_k` (every quantized matrix Q2_K) holds: its
//! mix is `q2_k_mix`. (llama-quantize's `Q6_K` is every matrix Q6_K, quantbench's `q6_k`;
//! its `Q3_K`, `Q4_K`, `Q5_K` are aliases of the `_M` mixes.)

use std::fmt;

/// One llama-quantize file type (`LLAMA_FTYPE_MOSTLY_*`) beyond quantbench's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mix {
    /// llama-quantize's `Q2_K` file type, named `q2_k_mix`: quantbench's `q2_k` is every
    /// quantized matrix in Q2_K.
    Q2K,
    Q2KS,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Iq1S,
    Iq1M,
    Iq2Xxs,
    Iq2Xs,
    Iq2S,
    Iq2M,
    Iq3Xxs,
    Iq3Xs,
    Iq3S,
    Iq3M,
    Iq4Nl,
    Iq4Xs,
    Tq1_0,
    Tq2_0,
    Mxfp4Moe,
    Q1_0,
    Q2_0,
}

impl Mix {
    /// Every mix, from the most bits to the fewest (roughly: llama-quantize's order).
    pub const ALL: [Mix; 26] = [
        Mix::Q5KM,
        Mix::Q5KS,
        Mix::Q4KM,
        Mix::Q4KS,
        Mix::Iq4Xs,
        Mix::Iq4Nl,
        Mix::Mxfp4Moe,
        Mix::Q3KL,
        Mix::Q3KM,
        Mix::Q3KS,
        Mix::Iq3M,
        Mix::Iq3S,
        Mix::Iq3Xs,
        Mix::Iq3Xxs,
        Mix::Q2K,
        Mix::Q2KS,
        Mix::Iq2M,
        Mix::Iq2S,
        Mix::Iq2Xs,
        Mix::Iq2Xxs,
        Mix::Tq2_0,
        Mix::Iq1M,
        Mix::Tq1_0,
        Mix::Iq1S,
        Mix::Q2_0,
        Mix::Q1_0,
    ];

    /// The name a scenario writes and records carry (llama-quantize's, lower-cased).
    pub fn name(self) -> &'static str {
        self.row().0
    }

    /// llama.h's `LLAMA_FTYPE_MOSTLY_*` number.
    pub fn llama_ftype(self) -> u32 {
        self.row().1
    }

    /// llama-quantize's own help text for it (its size and perplexity figures are
    /// llama.cpp's, for Llama 3 8B; quantbench measures its own).
    pub fn description(self) -> &'static str {
        self.row().2
    }

    fn row(self) -> (&'static str, u32, &'static str) {
        match self {
            Mix::Q2K => ("q2_k_mix", 10, "2.96G, +3.5199 ppl @ Llama-3-8B"),
            Mix::Q2KS => ("q2_k_s", 21, "2.96G, +3.1836 ppl @ Llama-3-8B"),
            Mix::Q3KS => ("q3_k_s", 11, "3.41G, +1.6321 ppl @ Llama-3-8B"),
            Mix::Q3KM => ("q3_k_m", 12, "3.74G, +0.6569 ppl @ Llama-3-8B"),
            Mix::Q3KL => ("q3_k_l", 13, "4.03G, +0.5562 ppl @ Llama-3-8B"),
            Mix::Q4KS => ("q4_k_s", 14, "4.37G, +0.2689 ppl @ Llama-3-8B"),
            Mix::Q4KM => ("q4_k_m", 15, "4.58G, +0.1754 ppl @ Llama-3-8B"),
            Mix::Q5KS => ("q5_k_s", 16, "5.21G, +0.1049 ppl @ Llama-3-8B"),
            Mix::Q5KM => ("q5_k_m", 17, "5.33G, +0.0569 ppl @ Llama-3-8B"),
            Mix::Iq2Xxs => ("iq2_xxs", 19, "2.06 bpw quantization"),
            Mix::Iq2Xs => ("iq2_xs", 20, "2.31 bpw quantization"),
            Mix::Iq3Xs => ("iq3_xs", 22, "3.3 bpw quantization"),
            Mix::Iq3Xxs => ("iq3_xxs", 23, "3.06 bpw quantization"),
            Mix::Iq1S => ("iq1_s", 24, "1.56 bpw quantization"),
            Mix::Iq4Nl => ("iq4_nl", 25, "4.50 bpw non-linear quantization"),
            Mix::Iq3S => ("iq3_s", 26, "3.44 bpw quantization"),
            Mix::Iq3M => ("iq3_m", 27, "3.66 bpw quantization mix"),
            Mix::Iq2S => ("iq2_s", 28, "2.5  bpw quantization"),
            Mix::Iq2M => ("iq2_m", 29, "2.7  bpw quantization"),
            Mix::Iq4Xs => ("iq4_xs", 30, "4.25 bpw non-linear quantization"),
            Mix::Iq1M => ("iq1_m", 31, "1.75 bpw quantization"),
            Mix::Tq1_0 => ("tq1_0", 36, "1.69 bpw ternarization"),
            Mix::Tq2_0 => ("tq2_0", 37, "2.06 bpw ternarization"),
            Mix::Mxfp4Moe => ("mxfp4_moe", 38, "MXFP4 MoE"),
            Mix::Q1_0 => ("q1_0", 40, "1.125 bpw quantization"),
            Mix::Q2_0 => ("q2_0", 41, "2.25 bpw quantization (group 64)"),
        }
    }

    /// The mix called `name` (case-insensitive), if there is one.
    pub fn parse(name: &str) -> Option<Mix> {
        let wanted = name.trim().to_ascii_lowercase();
        Mix::ALL.into_iter().find(|m| m.name() == wanted)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_unique_and_parse_back() {
        let mut names = std::collections::HashSet::new();
        let mut numbers = std::collections::HashSet::new();
        for m in Mix::ALL {
            assert!(names.insert(m.name()), "{m} twice");
            assert!(numbers.insert(m.llama_ftype()), "{m}'s number twice");
            assert_eq!(Mix::parse(&m.name().to_uppercase()), Some(m));
        }
        assert_eq!(Mix::parse("q4_k"), None);
    }
}
