//! The ggml block layouts these kernels read, byte for byte as candle stores them: 32
//! weights per block, an f16 scale `d`, for some an f16 minimum `m`, and packed quants.
//! A weight is `d × (q − offset)` for the offset formats and `d × q + m` for the others.

use candle_core::quantized::GgmlDType;
use half::f16;

use super::activations::BLOCK;

pub use crate::format::GgmlType;

/// The 32-element block types with a kernel here.
pub const BLOCK32: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

/// The type of a candle dtype, when these kernels cover it.
pub fn block32_of(dtype: GgmlDType) -> Option<GgmlType> {
    let t = GgmlType::of(dtype);
    BLOCK32.contains(&t).then_some(t)
}

impl GgmlType {
    /// candle's dtype, for the types these kernels read (all of which candle reads).
    pub fn dtype(self) -> GgmlDType {
        self.candle()
            .expect("a type with a kernel here is one candle reads")
    }

    /// Bytes per stored block, for the types with a kernel here (0 for the others).
    pub const fn block_bytes(self) -> usize {
        match self {
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4K => 144,
            GgmlType::Q6K => 210,
            _ => 0,
        }
    }

    /// One block's unsigned quants (before the offset), its scale and its minimum, read
    /// the portable way: the reference the SIMD kernels are tested against.
    pub fn decode_block(self, blk: &[u8]) -> ([u8; BLOCK], f32, f32) {
        let half = |at: usize| f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
        let nibbles = |qs: &[u8], q: &mut [u8; BLOCK]| {
            for j in 0..BLOCK / 2 {
                q[j] = qs[j] & 0x0F;
                q[j + BLOCK / 2] = qs[j] >> 4;
            }
        };
        let high_bits = |qh: &[u8], q: &mut [u8; BLOCK]| {
            let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
            for (j, v) in q.iter_mut().enumerate() {
                *v |= (((bits >> j) & 1) as u8) << 4;
            }
        };
        let mut q = [0u8; BLOCK];
        match self {
            GgmlType::Q4_0 => {
                nibbles(&blk[2..18], &mut q);
                (q, half(0), 0.0)
            }
            GgmlType::Q4_1 => {
                nibbles(&blk[4..20], &mut q);
                (q, half(0), half(2))
            }
            GgmlType::Q5_0 => {
                nibbles(&blk[6..22], &mut q);
                high_bits(&blk[2..6], &mut q);
                (q, half(0), 0.0)
            }
            GgmlType::Q5_1 => {
                nibbles(&blk[8..24], &mut q);
                high_bits(&blk[4..8], &mut q);
                (q, half(0), half(2))
            }
            GgmlType::Q8_0 => {
                for (v, b) in q.iter_mut().zip(&blk[2..34]) {
                    *v = b ^ 0x80; // i8 + 128, as an unsigned byte
                }
                (q, half(0), 0.0)
            }
            other => unreachable!("{other} is not a 32-element block type"),
        }
    }

    /// What is subtracted from the unsigned quants (0 for the formats with a minimum).
    pub const fn offset(self) -> i32 {
        match self {
            GgmlType::Q4_0 => 8,
            GgmlType::Q5_0 => 16,
            GgmlType::Q8_0 => 128,
            _ => 0,
        }
    }

    /// The block's 32 weights as f32.
    pub fn dequantize_block(self, blk: &[u8]) -> [f32; BLOCK] {
        let (q, d, m) = self.decode_block(blk);
        let off = self.offset();
        q.map(|v| d * (v as i32 - off) as f32 + m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Our reading of every format agrees with candle's own dequantization.
    #[test]
    fn decoding_agrees_with_candle() {
        let (rows, k) = (3, 64);
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021)
            .collect();
        let t = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
        for f in BLOCK32 {
            let q = QTensor::quantize(&t, f.dtype()).unwrap();
            let theirs = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let data = q.data().unwrap();
            assert_eq!(data.len(), rows * k / BLOCK * f.block_bytes(), "{f:?}");
            let ours: Vec<f32> = data
                .chunks(f.block_bytes())
                .flat_map(|b| f.dequantize_block(b))
                .collect();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{f:?} [{i}]: {a} vs {b}"
                );
            }
        }
    }
}
